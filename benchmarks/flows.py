"""The benchmark flows built with flowcraft, and one-call operations over them."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from flowcraft import Flow, FlowRuntime, NodeContext, create_flow
from flowcraft.testing import FakeClock

RESUME = {"output": {"approved": True}, "action": "approved"}


async def submit(node: NodeContext) -> str:
    return "submitted"


async def process(node: NodeContext) -> str:
    return "paid" if node.input["approved"] else "refused"


async def step(node: NodeContext) -> int:
    return 1


def step_sync(node: NodeContext) -> int:
    return 1


async def step_suspending(node: NodeContext) -> int:
    await anyio.lowlevel.checkpoint()  # yields to the event loop once: this branch needs a task
    return 1


def approval_flow() -> Flow:
    return (
        create_flow("approval")
        .node("submit", submit)
        .wait("approve")
        .node("process", process)
        .edge("submit", "approve")
        .edge("approve", "process", action="approved")
    )


def chain_flow(n: int, *, sync: bool = False) -> Flow:
    fn = step_sync if sync else step
    flow = create_flow(f"chain{n}{'-sync' if sync else ''}")
    for i in range(n):
        flow.node(f"n{i}", fn)
        if i:
            flow.edge(f"n{i - 1}", f"n{i}")
    return flow


def fanout_flow(n: int, *, suspending: bool = False) -> Flow:
    """1 -> n -> join; ``suspending``: every branch yields to the event loop once."""
    branch = step_suspending if suspending else step
    flow = create_flow(f"fanout{n}").node("src", step).node("join", step, join="all")
    for i in range(n):
        flow.node(f"b{i}", branch).edge("src", f"b{i}").edge(f"b{i}", "join")
    return flow


def timer_flow() -> Flow:
    return (
        create_flow("timer")
        .node("a", step)
        .sleep("nap", duration=30)
        .node("b", step)
        .edge("a", "nap")
        .edge("nap", "b")
    )


def _runtime(flow: Flow, **kw: Any) -> FlowRuntime:
    return FlowRuntime(registry=flow.registry, max_steps=1_000_000, **kw)


def approval_op() -> Any:
    """One approval: run → awaiting → bytes → resume from bytes → completed."""
    flow = approval_flow()
    bp = flow.to_blueprint()
    rt = _runtime(flow)

    async def op() -> Any:
        first = await rt.run(bp)
        final = await rt.resume(bp, first.serialized_context, RESUME, "approve")
        return final

    return op


async def check_approval() -> None:
    final = await approval_op()()
    if final.status != "completed" or final.outputs.get("process") != "paid":
        raise RuntimeError(f"flowcraft approval ended {final.status}: {final.outputs}")


async def approval_context() -> bytes:
    flow = approval_flow()
    first = await _runtime(flow).run(flow.to_blueprint())
    if first.status != "awaiting":
        raise RuntimeError(f"flowcraft approval did not pause: {first.status}")
    return first.serialized_context


def run_op(flow: Flow, expect_outputs: int) -> Any:
    """One whole run of ``flow``; the first call checks it completed every node."""
    bp = flow.to_blueprint()
    rt = _runtime(flow)
    checked = False

    async def op() -> Any:
        nonlocal checked
        result = await rt.run(bp)
        if not checked:
            if result.status != "completed" or len(result.outputs) != expect_outputs:
                raise RuntimeError(
                    f"flowcraft {bp.id} ended {result.status} with {len(result.outputs)} outputs"
                )
            checked = True
        return result

    return op


async def timers(n: int) -> tuple[float, float]:
    """Seconds per run to register ``n`` sleeping runs, and per timer to fire them all.

    The runs start inside ``runtime.scheduler(...)`` (each registers its sleep); then the
    FakeClock jumps past the deadline and the scheduler's own loop fires every timer.
    """
    import time

    flow = timer_flow()
    bp = flow.to_blueprint()
    clock = FakeClock()
    rt = _runtime(flow, clock=clock)
    fired = 0
    done = anyio.Event()

    def on_result(result: Any) -> None:
        nonlocal fired
        if result.status != "completed":
            raise RuntimeError(f"timer run ended {result.status}")
        fired += 1
        if fired == n:
            done.set()

    async with rt.scheduler(interval=3600, on_result=on_result) as sched:
        t0 = time.perf_counter()
        for _ in range(n):
            await rt.run(bp)
        t1 = time.perf_counter()
        if len(sched.pending()) != n:
            raise RuntimeError(f"{len(sched.pending())} timers registered, expected {n}")
        clock.advance(30)
        with anyio.fail_after(600):
            await done.wait()
        t2 = time.perf_counter()
    return (t1 - t0) / n, (t2 - t1) / n
