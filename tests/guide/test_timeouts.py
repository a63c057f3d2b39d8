"""A sync node with a timeout runs in a worker thread: the limit holds, the loop never blocks."""

from __future__ import annotations

import threading

import anyio

from flowcraft import FlowRuntime, NodeContext, RunResult, create_flow
from flowcraft.testing import FakeClock


async def test_blocking_sync_node_times_out_and_other_branches_run_meanwhile() -> None:
    """The blocked node fails with TimeoutError; its sibling finished while it blocked."""
    release = threading.Event()
    late: list[str] = []

    def blocking(node: NodeContext) -> str:
        release.wait(10)
        late.append("returned")
        return "too late"

    async def quick(node: NodeContext) -> str:
        await anyio.lowlevel.checkpoint()
        return "quick"

    flow = (
        create_flow("t")
        .node("start", lambda n: None)
        .node("slow", blocking, timeout=0.2)
        .node("fast", quick)
        .edge("start", "slow")
        .edge("start", "fast")
    )
    clock = FakeClock()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []

    async def run() -> None:
        results.append(await runtime.run(flow.to_blueprint()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await anyio.wait_all_tasks_blocked()
        clock.advance(0.2)
    (result,) = results
    assert result.status == "failed"
    assert result.errors[0].node_id == "slow"
    assert result.errors[0].type == "TimeoutError"
    assert "timed out after 0.2s" in result.errors[0].message
    assert result.outputs["fast"] == "quick"
    release.set()  # the abandoned thread ends; its result is discarded
    assert "slow" not in result.outputs


async def test_sync_node_with_timeout_that_finishes_in_time_completes() -> None:
    """In time, the thread's result is the node's output, and state writes land."""

    def work(node: NodeContext) -> dict[str, str]:
        node.context.set("seen", threading.current_thread() is not threading.main_thread())
        return {"output": "done", "action": "ok"}

    flow = (
        create_flow("t")
        .node("work", work, timeout=5)
        .node("next", lambda n: n.input)
        .edge("work", "next", action="ok")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["next"] == "done"
    assert result.context["seen"] is True


async def test_sync_node_without_timeout_stays_inline() -> None:
    """No timeout: the function runs on the event loop thread, as before."""

    def work(node: NodeContext) -> bool:
        return threading.current_thread() is threading.main_thread()

    result = await create_flow("t").node("work", work).run(FlowRuntime())
    assert result.outputs["work"] is True
