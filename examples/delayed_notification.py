"""Delayed notification: a durable ``.sleep`` timer woken by the in-process scheduler.

A signup sends a welcome mail at once and a "how is it going?" mail one hour later. The sleep
node makes the run "awaiting" with a ``wake_at``; ``runtime.scheduler(...)`` registers that
timer and resumes the run when it is due. A ``FakeClock`` stands in for real time, so the hour
passes with ``clock.advance(3600)`` and nothing really sleeps.

Run it: ``python examples/delayed_notification.py``
"""

from __future__ import annotations

from datetime import timedelta

import anyio

from flowcraft import FlowRuntime, NodeContext, RunResult, TimerNotDueError, create_flow
from flowcraft.testing import FakeClock

SENT: list[str] = []  # stands in for an outbox


async def welcome(node: NodeContext) -> str:
    email = node.context.get("email")
    SENT.append(f"welcome -> {email}")
    return email


async def follow_up(node: NodeContext) -> str:
    email = node.input  # the sleep passes its input through
    SENT.append(f"how is it going? -> {email}")
    return "follow-up sent"


flow = (
    create_flow("delayed-notification")
    .node("welcome", welcome)
    .sleep("wait-1h", duration=timedelta(hours=1))  # also: 3600, "1h", "PT1H"
    .node("follow-up", follow_up)
    .edge("welcome", "wait-1h")
    .edge("wait-1h", "follow-up")
)


async def main() -> None:
    clock = FakeClock()
    blueprint = flow.to_blueprint()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    finished: list[RunResult] = []

    def on_result(result: RunResult) -> None:
        print(f"  scheduler resumed the run: status={result.status} at {clock.now():%H:%M}")
        finished.append(result)

    print(f"clock starts at {clock.now():%Y-%m-%d %H:%M} UTC")
    async with runtime.scheduler(interval=60, on_result=on_result) as scheduler:
        result = await runtime.run(blueprint, {"email": "ada@example.com"})
        timer = result.awaiting[0]
        print(f"  after run: status={result.status} awaiting={timer.node_id} ({timer.reason})")
        print(f"  wake_at={timer.wake_at:%H:%M}  sent so far: {SENT}")
        print(f"  scheduler.pending(): {[(t.node_id, t.kind) for t in scheduler.pending()]}")
        assert result.status == "awaiting"
        assert timer.reason == "timer"
        assert timer.wake_at == clock.now() + timedelta(hours=1)
        assert [(t.node_id, t.kind) for t in scheduler.pending()] == [("wait-1h", "timer")]

        # Resuming a timer by hand before it is due is refused (and changes nothing).
        try:
            await runtime.resume(blueprint, result.serialized_context)
        except TimerNotDueError as exc:
            print(f"  early resume refused: {type(exc).__name__}")
        else:
            raise AssertionError("expected TimerNotDueError")

        clock.advance(30 * 60)
        await anyio.wait_all_tasks_blocked()
        print(f"  advanced 30 min -> {clock.now():%H:%M}: nothing due, {len(finished)} results")
        assert not finished

        clock.advance(30 * 60)
        await anyio.wait_all_tasks_blocked()
        print(f"  scheduler.pending() now: {scheduler.pending()}")
        assert len(finished) == 1
        assert scheduler.pending() == []

    done = finished[0]
    print(f"  outputs: {done.outputs}")
    print(f"  outbox: {SENT}")
    assert done.status == "completed"
    assert done.outputs["follow-up"] == "follow-up sent"
    assert SENT == ["welcome -> ada@example.com", "how is it going? -> ada@example.com"]
    print("delayed notification: OK (follow-up sent after one virtual hour)")


if __name__ == "__main__":
    anyio.run(main)
