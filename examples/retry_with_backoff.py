"""Retry with backoff, two ways.

1. As a durable cycle: "call-api" returns ``NodeResult(action="retry")`` while the API is down;
   the "retry" edge leads to a sleep node ("backoff") and from there back to "call-api". Each
   backoff is a real pause: the run is "awaiting" a timer and lives only in its serialized
   context, so a retry schedule of hours survives a restart. The scheduler wakes it; a
   ``FakeClock`` makes the waiting virtual.
2. In-process: the built-in node options ``max_retries`` / ``retry_delay`` / ``retry_backoff``
   retry a raising node inside one ``run`` call (the delays go through the runtime's clock; with
   ``FakeClock(autojump=True)`` they pass instantly).

Run it: ``python examples/retry_with_backoff.py``
"""

from __future__ import annotations

import anyio

from flowcraft import FlowRuntime, NodeContext, NodeResult, RunResult, create_flow
from flowcraft.testing import FakeClock

FAILURES_BEFORE_SUCCESS = 2
BACKOFF_SECONDS = 30


async def prepare(node: NodeContext) -> dict[str, str]:
    return {"order": node.context.get("order")}


async def call_api(node: NodeContext) -> NodeResult[str]:
    # The attempt counter lives in the run's state, so it survives every pause and resume.
    attempts = node.context.get("attempts", 0) + 1
    node.context.set("attempts", attempts)
    if attempts <= FAILURES_BEFORE_SUCCESS:
        print(f"    call-api attempt {attempts}: 503 Service Unavailable -> retry")
        return NodeResult(output="503", action="retry")
    print(f"    call-api attempt {attempts}: 200 OK")
    return NodeResult(output=f"shipped {node.context.get('order')}", action="ok")


async def done(node: NodeContext) -> str:
    return f"{node.input} after {node.context.get('attempts')} attempts"


cycle_flow = (
    create_flow("retry-cycle")
    .node("prepare", prepare)
    .node("call-api", call_api)
    .sleep("backoff", duration=f"{BACKOFF_SECONDS}s")
    .node("done", done)
    .edge("prepare", "call-api")
    .edge("call-api", "backoff", action="retry")
    .edge("backoff", "call-api")  # closes the cycle
    .edge("call-api", "done", action="ok")
)


async def durable_cycle() -> None:
    print("== 1. retry as a cycle through a sleep node, driven by the scheduler ==")
    clock = FakeClock()
    start = clock.now()
    blueprint = cycle_flow.to_blueprint()
    runtime = FlowRuntime(registry=cycle_flow.registry, clock=clock)
    results: list[RunResult] = []

    def on_result(result: RunResult) -> None:
        waiting = [a.node_id for a in result.awaiting]
        print(f"  scheduler woke 'backoff': status={result.status} awaiting={waiting}")
        results.append(result)

    async with runtime.scheduler(interval=5, on_result=on_result) as scheduler:
        first = await runtime.run(blueprint, {"order": "A-17"})
        print(f"  after run: status={first.status} awaiting={[a.node_id for a in first.awaiting]}")
        assert first.status == "awaiting"
        assert [a.node_id for a in first.awaiting] == ["backoff"]
        assert len(scheduler.pending()) == 1

        while not results or results[-1].status == "awaiting":
            assert len(results) <= FAILURES_BEFORE_SUCCESS, "the cycle should have ended"
            (timer,) = scheduler.pending()
            wait = (timer.due - clock.now()).total_seconds()
            print(f"  pending: {timer.node_id} due in {wait:g}s -> clock.advance({wait:g})")
            clock.advance(wait)
            await anyio.wait_all_tasks_blocked()
        assert scheduler.pending() == []

    final = results[-1]
    elapsed = (clock.now() - start).total_seconds()
    print(f"  final: status={final.status} done={final.outputs['done']!r}")
    print(f"  virtual time spent backing off: {elapsed:g}s")
    assert final.status == "completed"
    assert final.outputs["done"] == "shipped A-17 after 3 attempts"
    assert final.context["attempts"] == FAILURES_BEFORE_SUCCESS + 1
    assert len(results) == FAILURES_BEFORE_SUCCESS
    assert elapsed == FAILURES_BEFORE_SUCCESS * BACKOFF_SECONDS


class Flaky:
    """Raises until the third call."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, node: NodeContext) -> str:
        self.calls.append(self.clock.now().timestamp())
        print(f"    fetch attempt {node.attempt} at t+{self.calls[-1] - self.calls[0]:g}s")
        if node.attempt < 3:
            raise ConnectionError("connection reset")
        return "fetched"


async def builtin_retries() -> None:
    print("== 2. built-in max_retries / retry_delay / retry_backoff (in-process) ==")
    clock = FakeClock(autojump=True)
    flaky = Flaky(clock)
    flow = create_flow("retry-builtin").node(
        "fetch",
        flaky,
        name="examples.flaky-fetch",
        max_retries=3,
        retry_delay=1.0,
        retry_backoff=2.0,
    )
    runtime = FlowRuntime(clock=clock)
    result = await flow.run(runtime)
    gaps = [b - a for a, b in zip(flaky.calls, flaky.calls[1:], strict=False)]
    print(f"  status={result.status} output={result.outputs['fetch']!r} delays={gaps}")
    assert result.status == "completed"
    assert result.outputs["fetch"] == "fetched"
    assert gaps == [1.0, 2.0]  # retry_delay, then retry_delay * retry_backoff


async def main() -> None:
    await durable_cycle()
    await builtin_retries()
    print("retry with backoff: OK (cycle and built-in retries)")


if __name__ == "__main__":
    anyio.run(main)
