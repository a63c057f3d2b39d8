"""Hold and release (DESIGN §8): held runs refuse decisions and keep their timers still."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime, NodeContext, NodeResult, RunHeldError, create_flow
from flowcraft.stores import DurableScheduler, FlowService, MemoryStore, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import Bus, backend, flows

GATE: dict[str, anyio.Event] = {}


async def test_a_held_run_refuses_decisions_and_resume_without_data_never_releases(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Decisions on a held run raise RunHeldError naming who, when, why; nothing changes."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    held = await service.pause("r1", reason="fraud check", by="ops", request_id="req-1")
    with pytest.raises(RunHeldError, match=r"held by ops.*fraud check") as caught:
        await service.resume("r1", {"action": "approved"})
    assert (caught.value.by, caught.value.reason) == ("ops", "fraud check")
    with pytest.raises(RunHeldError):
        await service.resume("r1")
    assert await service.get("r1") == held
    released = await service.release("r1", by="lead", request_id="req-2")
    assert released.status == "awaiting"
    final = await service.resume("r1", {"action": "approved"}, by="ann")
    assert final.outputs["pay"] == "paid"
    events = [(h.event, h.by, h.reason, h.request_id) for h in await service.history("r1")]
    assert ("hold", "ops", "fraud check", "req-1") in events
    assert ("release", "lead", "fraud check", "req-2") in events


async def test_a_release_records_its_own_reason_when_given(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """release(reason=) is what the release record carries; without one, the hold's."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    await service.pause("r1", reason="fraud check", by="ops")
    await service.release("r1", by="lead", reason="cleared by audit")
    await service.pause("r1", reason="second look", by="ops")
    await service.release("r1", by="lead")
    releases = [(h.by, h.reason) for h in await service.history("r1") if h.event == "release"]
    assert releases == [("lead", "cleared by audit"), ("lead", "second look")]
    with pytest.raises(TypeError, match="reason must be a string"):
        await service.release("r1", reason=5)  # type: ignore[arg-type]


async def test_held_timers_do_not_fire_until_released(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """The scheduler skips a held run; after release the overdue timer fires once."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("reminder", run_id="t1")
    await service.pause("t1", reason="investigating", by="ops")
    fake_clock.advance(600)
    sched = DurableScheduler(service)
    assert await sched.tick() == 0
    assert (await service.get("t1")).status == "awaiting"
    await service.release("t1", by="ops")
    assert await sched.tick() == 1
    assert await sched.tick() == 0
    assert (await service.get("t1")).status == "completed"


async def test_holds_and_releases_reach_the_event_bus(
    fake_clock: FakeClock, tmp_path: Path
) -> None:
    """workflow:pause / workflow:resume events carry hold/release, reason, by, request_id."""
    bus = Bus()
    async with backend("memory", tmp_path) as (store, _):
        service = FlowService(
            FlowRuntime(clock=fake_clock, event_bus=bus), store, flows=flows()
        )
        await service.start("approval", run_id="r1")
        bus.events.clear()
        await service.pause("r1", reason="audit", by="ops", request_id="q1")
        await service.release("r1", by="ops", request_id="q2")
        await service.pause("r1", reason="audit 2", by="ops", request_id="q3")
        await service.release("r1", by="ops", request_id="q4", reason="cleared")
    assert [(e.type, e.payload) for e in bus.events] == [
        ("workflow:pause", {"hold": True, "reason": "audit", "by": "ops", "request_id": "q1"}),
        (
            "workflow:resume",
            {"release": True, "by": "ops", "request_id": "q2", "reason": "audit"},
        ),
        ("workflow:pause", {"hold": True, "reason": "audit 2", "by": "ops", "request_id": "q3"}),
        (
            "workflow:resume",
            {"release": True, "by": "ops", "request_id": "q4", "reason": "cleared"},
        ),
    ]


async def slow(node: NodeContext) -> str:
    GATE["started"].set()
    await GATE["open"].wait()
    return "slow done"


async def review(node: NodeContext) -> Any:
    # The data is a {"output": ...} dict, which a node returning it would have read as a
    # NodeResult (TS-shaped results): wrap it to keep it as the output itself.
    return NodeResult(output=FlowService.resume_data())


def review_flow() -> Any:
    return (
        create_flow("review")
        .node("slow", slow, name="slow")
        .node("review", review, name="review")
        .edge("slow", "review")
    )


async def test_continuing_a_run_paused_while_running_carries_data_the_flow_reads(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Pause while running, resume with {reviewed_by}: the continued node reads it."""
    GATE.update(started=anyio.Event(), open=anyio.Event())
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[review_flow()])
    results: list[Any] = []

    async def run() -> None:
        results.append(await service.start("review", run_id="p1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await GATE["started"].wait()
        await service.pause("p1", reason="review", by="ops", request_id="q9")
        GATE["open"].set()
    assert results[0].status == "awaiting"
    stored = await service.get("p1")
    assert not stored.held
    assert stored.pause_request_id == "q9"
    data = {"output": {"reviewed_by": "ann"}}
    final = await service.resume("p1", data, by="ann")
    assert final.status == "completed"
    assert final.outputs["review"] == data
    cont = [h for h in await service.history("p1") if h.event == "continue"]
    assert [(h.by, h.data) for h in cont] == [("ann", data)]


async def test_a_hold_without_by_at_the_instant_the_run_started_holds_it(
    fake_clock: FakeClock,
) -> None:
    """pause(run_id) in the same clock tick as the start (no by) holds the run; it was a no-op."""
    service = FlowService(FlowRuntime(clock=fake_clock), MemoryStore(), flows=flows())
    await service.start("approval", run_id="r1")
    held = await service.pause("r1", reason="audit")
    assert held.held
    assert (await service.get("r1")).held
    with pytest.raises(RunHeldError):
        await service.resume("r1", {"action": "approved"})


async def test_outcome_reads_back_the_decision_made_under_a_key(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A caller that lost its reply reads the result under its key; nothing runs again."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    assert await service.outcome("r1", "k1") is None
    decided = await service.resume("r1", {"action": "approved"}, by="ann", idempotency_key="k1")
    before = await service.get("r1")
    again = await service.outcome("r1", "k1")
    assert again is not None
    assert again.serialized_context == decided.serialized_context
    assert again.outputs["pay"] == "paid"
    assert await service.outcome("r1", "other") is None
    assert await service.get("r1") == before  # reading back wrote nothing
