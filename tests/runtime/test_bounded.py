"""A context stays bounded: recent history only, and no value kept twice."""

from __future__ import annotations

from typing import Any

from flowcraft import FlowRuntime, FlowService, RunResult, create_flow
from flowcraft.stores import MemoryStore


def review_loop() -> Any:
    """Draft -> review wait; "revise" goes back to the draft, "accept" ends the run."""
    return (
        create_flow("review-loop")
        .node("draft", lambda n: "v")
        .wait("review")
        .node("done", lambda n: "accepted")
        .edge("draft", "review")
        .edge("review", "draft", action="revise")
        .edge("review", "done", action="accept")
    )


async def cycles(rt: FlowRuntime, flow: Any, result: RunResult, n: int) -> RunResult:
    for _ in range(n):
        result = await flow.resume(rt, result, {"action": "revise"}, "review")
    return result


async def test_a_thousand_review_cycles_keep_the_context_within_twice_ten_cycles() -> None:
    flow = review_loop()
    rt = FlowRuntime(registry=flow.registry)
    ten = await cycles(rt, flow, await flow.run(rt), 10)
    thousand = await cycles(rt, flow, ten, 990)
    assert thousand.revision == 1001
    assert len(thousand.serialized_context) <= 2 * len(ten.serialized_context)
    assert len(thousand.history) <= 32 + 3  # the kept entries, this call's, the open pause
    assert thousand.history[-1].event == "pause"  # the newest entries are the ones kept


async def test_without_a_limit_every_entry_stays() -> None:
    flow = review_loop()
    rt = FlowRuntime(registry=flow.registry, history_limit=None)
    result = await cycles(rt, flow, await flow.run(rt), 40)
    assert len([h for h in result.history if h.event == "resume"]) == 40


async def test_a_ten_kilobyte_output_before_a_wait_is_kept_once() -> None:
    big = "x" * 10_000
    flow = (
        create_flow("big")
        .node("make", lambda n: big)
        .wait("check")
        .node("after", lambda n: "ok")
        .edge("make", "check")
        .edge("check", "after")
    )
    rt = FlowRuntime(registry=flow.registry)
    first = await flow.run(rt)
    assert 10_000 < len(first.serialized_context) < 10_500


async def test_the_service_keeps_the_whole_history_the_context_leaves_out() -> None:
    flow = review_loop()
    service = FlowService(FlowRuntime(), MemoryStore(), flows=[flow])
    await service.start("review-loop", run_id="r1")
    for _ in range(40):
        await service.resume("r1", {"action": "revise"}, "review")
    final = await service.resume("r1", {"action": "accept"}, "review")
    assert len(final.history) < 41  # the context holds the recent part only
    stored = [h for h in await service.history("r1") if h.event == "resume"]
    assert len(stored) == 41
