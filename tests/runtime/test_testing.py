from __future__ import annotations

from typing import Any

import pytest

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft.testing import FakeClock, create_stepper, run_with_trace


def echo(n: NodeContext) -> Any:
    return n.input


def diamond() -> Any:
    return (
        create_flow("d")
        .node("a", lambda n: 1)
        .node("b", lambda n: n.input + 1)
        .node("c", lambda n: n.input + 10)
        .node("d", echo)
        .wait("w")
        .node("e", echo)
        .edge("a", "b")
        .edge("a", "c")
        .edge("b", "d")
        .edge("c", "d")
        .edge("d", "w")
        .edge("w", "e")
    )


async def test_stepper_runs_one_wave_at_a_time_and_can_go_back() -> None:
    """Each next() runs the nodes ready now; prev() returns to the step before."""
    flow = diamond()
    stepper = create_stepper(FlowRuntime(), flow.to_blueprint(), registry=flow.registry)
    first = await stepper.next()
    assert set(first.outputs) == {"a"}
    second = await stepper.next()
    assert set(second.outputs) == {"a", "b", "c"}
    third = await stepper.next()
    assert third.outputs["d"] == {"b": 2, "c": 11}
    fourth = await stepper.next()  # the wait is reached: a real pause now
    assert [a.node_id for a in fourth.awaiting] == ["w"]
    assert stepper.prev() is third
    again = await stepper.next()
    assert [a.node_id for a in again.awaiting] == ["w"]
    final = await stepper.next({"output": "ok"}, "w")  # the resume runs the wave after the wait
    assert final.status == "completed"
    assert stepper.done
    assert final.outputs["e"] == "ok"
    with pytest.raises(RuntimeError, match="finished"):
        await stepper.next()


async def test_run_with_trace_prints_the_trace_of_a_failed_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failed run prints its event trace; a good one prints nothing."""

    def boom(n: NodeContext) -> None:
        raise ValueError("nope")

    bad = create_flow("bad").node("x", boom)
    result = await run_with_trace(FlowRuntime(), bad.to_blueprint(), registry=bad.registry)
    assert result.status == "failed"
    out = capsys.readouterr().out
    assert "node:error" in out
    assert "workflow:finish" in out
    good = create_flow("good").node("x", echo)
    await run_with_trace(FlowRuntime(), good.to_blueprint(), registry=good.registry)
    assert capsys.readouterr().out == ""


async def test_fake_clock_refuses_to_go_backwards() -> None:
    """FakeClock only moves forward."""
    clock = FakeClock()
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


async def test_autojump_clock_jumps_only_when_everything_is_blocked() -> None:
    """A timeout guarding work that finishes after a few checkpoints does not fire."""
    import anyio

    from flowcraft import NodeResult

    clock = FakeClock(autojump=True)
    start = clock.now()

    async def busy(n: NodeContext) -> NodeResult[str]:
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        return NodeResult(output="done")

    result = await create_flow("f").node("a", busy, timeout=5).run(FlowRuntime(clock=clock))
    assert result.outputs == {"a": "done"}
    assert clock.now() == start

    async def stuck(n: NodeContext) -> None:
        await anyio.Event().wait()

    result = await create_flow("g").node("a", stuck, timeout=5).run(FlowRuntime(clock=clock))
    assert result.errors[0].type == "TimeoutError"
    assert (clock.now() - start).total_seconds() == 5


async def test_autojump_clock_serves_several_sleepers_in_deadline_order() -> None:
    """Concurrent sleepers all wake, each at its own virtual time."""
    import anyio

    clock = FakeClock(autojump=True)
    woke: list[tuple[str, float]] = []
    start = clock.now()

    async def nap(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, (clock.now() - start).total_seconds()))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(nap, "long", 30)
            tg.start_soon(nap, "short", 10)
            tg.start_soon(nap, "mid", 20)
    assert woke == [("short", 10), ("mid", 20), ("long", 30)]


async def test_call_later_runs_once_when_the_clock_reaches_it_unless_cancelled() -> None:
    """``FakeClock.call_later``: due callbacks run inside ``advance`` in deadline order, once;
    a cancelled one never runs; sleepers due at the same time still wake."""
    clock = FakeClock()
    calls: list[str] = []
    clock.call_later(2, lambda: calls.append("b"))
    clock.call_later(1, lambda: calls.append("a"))
    dropped = clock.call_later(1.5, lambda: calls.append("never"))
    dropped.cancel()
    clock.advance(0.5)
    assert calls == []
    clock.advance(1.5)
    assert calls == ["a", "b"]
    clock.advance(10)
    assert calls == ["a", "b"]
