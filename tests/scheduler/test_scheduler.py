from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
from hypothesis import given
from hypothesis import strategies as st

from flowcraft import FlowRuntime, NodeContext, RunResult, create_flow
from flowcraft.testing import FakeClock


def echo(n: NodeContext) -> Any:
    return n.input


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


async def test_sleep_from_run_registers_and_fires_once() -> None:
    """A sleep reached by run() registers; advancing the clock fires it exactly once."""
    clock = FakeClock()
    flow = create_flow("f").node("a", lambda n: 7).sleep("nap", duration=60).node("b", echo)
    flow.edge("a", "nap").edge("nap", "b")
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with rt.scheduler(interval=1.0, on_result=results.append) as scheduler:
        first = await rt.run(flow.to_blueprint())
        assert [(t.run_id, t.node_id) for t in scheduler.pending()] == [(first.run_id, "nap")]
        clock.advance(59)
        await settle()
        assert results == []
        clock.advance(1)
        await settle()
        assert [r.status for r in results] == ["completed"]
        assert results[0].outputs["b"] == 7
        clock.advance(3600)
        await settle()
        assert len(results) == 1
        assert scheduler.pending() == []


async def test_timers_created_by_resume_register_too() -> None:
    """A sleep reached during a resume is scheduled (TS forgot these)."""
    clock = FakeClock()
    flow = create_flow("f").wait("approve").sleep("cool-off", duration="1h").node("go", echo)
    flow.edge("approve", "cool-off").edge("cool-off", "go")
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with rt.scheduler(interval=30, on_result=results.append) as scheduler:
        first = await rt.run(flow.to_blueprint())
        assert scheduler.pending() == []
        second = await rt.resume(flow.to_blueprint(), first.serialized_context, {"output": "yes"})
        assert second.status == "awaiting"
        assert [t.node_id for t in scheduler.pending()] == ["cool-off"]
        clock.advance(timedelta(hours=1))
        await settle()
    assert [r.outputs.get("go") for r in results] == ["yes"]


async def test_two_parallel_sleeps_both_fire_in_deadline_order() -> None:
    """Two timers of one run both fire, each once, the later from the newer context."""
    clock = FakeClock()
    flow = (
        create_flow("f")
        .node("s", lambda n: 1)
        .sleep("long", duration=120)
        .sleep("short", duration=60)
        .node("join", echo)
        .edge("s", "long")
        .edge("s", "short")
        .edge("long", "join")
        .edge("short", "join")
    )
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with rt.scheduler(interval=5, on_result=results.append) as scheduler:
        await rt.run(flow.to_blueprint())
        assert [t.node_id for t in scheduler.pending()] == ["short", "long"]
        clock.advance(600)
        await settle()
    assert [r.status for r in results] == ["awaiting", "completed"]
    assert results[-1].outputs["join"] == {"long": 1, "short": 1}
    assert [r.revision for r in results] == [2, 3]


async def test_wait_deadline_resumes_along_on_timeout() -> None:
    """A wait whose timeout passes is resumed with the on_timeout action and output None."""
    clock = FakeClock()
    flow = (
        create_flow("f")
        .wait("manager", timeout=timedelta(hours=24), on_timeout="escalate")
        .node("director", lambda n: f"escalated with {n.input!r}")
        .node("done", echo)
        .edge("manager", "director", action="escalate")
        .edge("manager", "done", action="approved")
    )
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with rt.scheduler(interval=60, on_result=results.append) as scheduler:
        first = await rt.run(flow.to_blueprint())
        assert first.awaiting[0].expires_at == clock.now() + timedelta(hours=24)
        assert scheduler.pending()[0].kind == "expiry"
        clock.advance(timedelta(hours=24))
        await settle()
    assert results[0].outputs == {"manager": None, "director": "escalated with None"}
    assert results[0].history[-1].event == "timeout"


async def test_manual_resume_replaces_the_scheduled_context() -> None:
    """After a manual resume, the timer fires from the newest context, never the stale one."""
    clock = FakeClock()
    flow = (
        create_flow("f")
        .node("s", lambda n: 0)
        .wait("human")
        .sleep("timer", duration=60)
        .node("join", echo)
        .edge("s", "human")
        .edge("s", "timer")
        .edge("human", "join")
        .edge("timer", "join")
    )
    bp = flow.to_blueprint()
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with rt.scheduler(interval=10, on_result=results.append):
        first = await rt.run(bp)
        await rt.resume(bp, first.serialized_context, {"output": "human said yes"}, "human")
        clock.advance(60)
        await settle()
        clock.advance(600)
        await settle()
    assert len(results) == 1
    assert results[0].status == "completed"
    assert results[0].outputs["join"] == {"human": "human said yes", "timer": 0}


async def test_results_outside_the_scheduler_block_are_not_tracked() -> None:
    """Only results returned while the scheduler is open register."""
    clock = FakeClock()
    flow = create_flow("f").sleep("nap", duration=1)
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    await rt.run(flow.to_blueprint())
    async with rt.scheduler() as scheduler:
        assert scheduler.pending() == []


@given(st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=12))
async def test_timers_fire_in_deadline_order_whatever_order_they_were_added(
    delays: list[int],
) -> None:
    """Runs registered in any order fire in order of their wake times."""
    clock = FakeClock()
    rt = FlowRuntime(clock=clock)
    fired: list[int] = []
    async with rt.scheduler(interval=100_000, on_result=lambda r: fired.append(r.context["order"])):
        await settle()  # the scheduler loop is asleep before anything registers
        # Each run sleeps a different span: register them in the given (unsorted) order.
        for i, delay in enumerate(delays):
            bp_i = (
                create_flow("f")
                .node("a", lambda n: 0)
                .sleep("nap", duration=delay)
                .edge("a", "nap")
            )
            await rt.run(bp_i.to_blueprint(), {"order": i}, registry=bp_i.registry)
        clock.advance(20_000)
        await settle()
    expected = [i for _, i in sorted((d, i) for i, d in enumerate(delays))]
    assert sorted(fired) == list(range(len(delays)))
    # Ties may fire in either order; distinct deadlines must be ordered.
    by_delay = dict(enumerate(delays))
    assert [by_delay[i] for i in fired] == sorted(by_delay[i] for i in expected)


async def test_scheduler_expires_a_wait_inside_a_subflow_along_on_timeout() -> None:
    """A child wait's deadline registers under "sub/w" and fires the child's on_timeout edge."""
    clock = FakeClock()
    child = (
        create_flow("child")
        .wait("w", timeout=timedelta(minutes=5), on_timeout="late")
        .node("ok", lambda n: "ok")
        .node("late", lambda n: "late")
        .edge("w", "ok", action="ok")
        .edge("w", "late", action="late")
    )
    parent = create_flow("parent").subflow("sub", "child").node("z", echo).edge("sub", "z")
    rt = FlowRuntime(blueprints={"child": child}, clock=clock, registry=parent.registry)
    results: list[Any] = []
    async with rt.scheduler(interval=10, on_result=results.append) as scheduler:
        first = await rt.run(parent.to_blueprint())
        assert [(t.node_id, t.kind) for t in scheduler.pending()] == [("sub/w", "expiry")]
        clock.advance(299)
        await anyio.wait_all_tasks_blocked()
        assert results == []
        clock.advance(1)
        await anyio.wait_all_tasks_blocked()
        assert scheduler.pending() == []
    assert first.status == "awaiting"
    assert [r.status for r in results] == ["completed"]
    assert results[0].outputs["z"] == "late"
