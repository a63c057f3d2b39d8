"""A runtime's settings reach every part of it at once, however and whenever they are set."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec
import pytest

from flowcraft import Blueprint, FlowEvent, FlowRuntime, NodeContext, SystemClock, create_flow
from flowcraft.testing import FakeClock, InMemoryEventLogger, run_with_trace

START = datetime(2030, 5, 1, tzinfo=UTC)


def _sleepy() -> Any:
    return (
        create_flow("sleepy")
        .node("a", lambda n: "x")
        .sleep("nap", duration=60)
        .node("b", lambda n: f"woke {n.input}")
        .edge("a", "nap")
        .edge("nap", "b")
    )


@pytest.mark.compares_fast_paths
@pytest.mark.parametrize("fast", ["1", "0"])
async def test_setting_the_clock_after_construction_moves_every_timestamp_and_timer(
    fast: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWCRAFT_FAST_PATHS", fast)
    flow = _sleepy()
    rt = FlowRuntime(registry=flow.registry)
    clock = FakeClock(START)
    rt.clock = clock
    first = await flow.run(rt)
    assert first.awaiting[0].since == START
    assert first.awaiting[0].wake_at == START + timedelta(seconds=60)
    results: list[Any] = []
    async with rt.scheduler(interval=1.0, on_result=results.append) as sched:
        assert sched.pending() == []  # registered only while open
        await flow.run(rt)
        assert [t.due for t in sched.pending()] == [START + timedelta(seconds=60)]
        clock.advance(59)
        await anyio.wait_all_tasks_blocked()
        assert results == []  # the scheduler sleeps on the new clock, not the system one
        clock.advance(1)
        await anyio.wait_all_tasks_blocked()
        assert [r.outputs["b"] for r in results] == ["woke x"]
        assert results[0].history[-1].at == START + timedelta(seconds=60)


async def test_a_timeout_uses_the_clock_set_after_construction() -> None:
    async def slow(n: NodeContext) -> str:
        await clock.sleep(10)
        return "late"

    flow = create_flow("t").node("slow", slow, timeout=5)
    rt = FlowRuntime(registry=flow.registry)
    clock = FakeClock(START, autojump=True)
    rt.clock = clock  # a real-clock timeout would wait 5 real seconds; the fake one jumps
    result = await flow.run(rt)
    assert result.status == "failed"
    assert "timed out after 5s" in result.errors[0].message
    assert result.errors[0].timestamp == START + timedelta(seconds=5)


async def test_middleware_and_event_bus_set_later_are_used_by_the_next_run() -> None:
    seen: list[str] = []

    class Spy:
        async def before_node(self, node: NodeContext) -> None:
            seen.append(node.node_id)

    flow = create_flow("m").node("a", lambda n: 1).node("b", lambda n: 2).edge("a", "b")
    rt = FlowRuntime(registry=flow.registry)
    await flow.run(rt)
    assert seen == []
    rt.middleware = (Spy(),)
    logger = InMemoryEventLogger()
    rt.event_bus = logger
    await flow.run(rt)
    assert seen == ["a", "b"]
    assert [e.type for e in logger.events][:2] == ["workflow:start", "node:start"]


async def test_a_traced_copy_leaves_the_original_runtime_unobserved() -> None:
    events: list[FlowEvent] = []

    class Bus:
        def emit(self, event: FlowEvent) -> None:
            events.append(event)

    flow = create_flow("c").node("a", lambda n: 1)
    rt = FlowRuntime(registry=flow.registry, event_bus=None)
    await run_with_trace(rt, flow.to_blueprint(), registry=flow.registry)
    assert rt.event_bus is None
    clone = copy.copy(rt)
    clone.event_bus = Bus()
    await flow.run(rt)
    assert events == []
    await flow.run(clone)
    assert events[0].type == "workflow:start"


async def test_a_traced_run_feeds_the_schedulers_open_on_the_original() -> None:
    clock = FakeClock(START)
    flow = _sleepy()
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    async with rt.scheduler(interval=1.0) as sched:
        traced = await run_with_trace(rt, flow.to_blueprint(), registry=flow.registry)
        assert [t.run_id for t in sched.pending()] == [traced.run_id]
        clone = copy.copy(rt)
        other = await flow.run(clone)
        assert {t.run_id for t in sched.pending()} == {traced.run_id, other.run_id}


def test_a_copy_keeps_the_runtime_subclass() -> None:
    class MyRuntime(FlowRuntime):
        pass

    assert type(copy.copy(MyRuntime())) is MyRuntime


async def test_a_clock_replaced_while_a_scheduler_is_open_drives_it() -> None:
    first, second = FakeClock(START), FakeClock(START)
    flow = _sleepy()
    rt = FlowRuntime(registry=flow.registry, clock=first)
    results: list[Any] = []
    async with rt.scheduler(interval=3600, on_result=results.append):
        await anyio.wait_all_tasks_blocked()  # the loop sleeps on the first clock
        rt.clock = second
        await flow.run(rt)
        await anyio.wait_all_tasks_blocked()
        second.advance(60)
        await anyio.wait_all_tasks_blocked()
        assert [r.status for r in results] == ["completed"]


async def test_a_run_in_flight_keeps_the_settings_it_started_with() -> None:
    seen: list[str] = []
    gate = anyio.Event()

    class Spy:
        async def before_node(self, node: NodeContext) -> None:
            seen.append(node.node_id)

    async def wait_for_gate(n: NodeContext) -> str:
        await gate.wait()
        return "a"

    flow = (
        create_flow("inflight")
        .node("a", wait_for_gate)
        .node("b", lambda n: "b")
        .node("c", lambda n: "c", max_retries=2)
        .edge("a", "b")
        .edge("b", "c")
    )
    rt = FlowRuntime(registry=flow.registry)
    async with anyio.create_task_group() as tg:
        tg.start_soon(flow.run, rt)
        await anyio.wait_all_tasks_blocked()
        rt.middleware = (Spy(),)
        gate.set()
    assert seen == []  # the run began without middleware and finished without it
    await flow.run(rt)
    assert seen == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [("concurrency", 0, None), ("middleware", None, ()), ("dependencies", None, {})],
)
def test_settings_are_normalized_as_the_constructor_does(
    name: str, value: object, expected: object
) -> None:
    rt = FlowRuntime()
    setattr(rt, name, value)
    assert getattr(rt, name) == expected


def test_a_clock_set_to_none_is_the_system_clock() -> None:
    rt = FlowRuntime(clock=FakeClock(START))
    rt.clock = None  # type: ignore[assignment]
    assert isinstance(rt.clock, SystemClock)


async def test_an_unvalidated_blueprint_repeating_a_start_node_runs_it_once() -> None:
    calls: list[str] = []
    bp = msgspec.json.decode(
        b'{"id":"d","nodes":[{"id":"x","uses":"a"},{"id":"x","uses":"a"}],"edges":[]}',
        type=Blueprint,
    )
    result = await FlowRuntime(registry={"a": lambda n: calls.append(n.node_id)}).run(bp)
    assert result.status == "completed"
    assert calls == ["x"]


@pytest.mark.parametrize("interval", [0, 0.0, -1, timedelta(0), float("nan")])
async def test_a_runtime_scheduler_interval_not_above_zero_is_refused(interval: Any) -> None:
    """``scheduler(0)`` would tick without ever pausing: a ``ValueError`` naming
    ``interval``, before any scheduler starts."""
    runtime = FlowRuntime()
    with pytest.raises(ValueError, match="interval must be a number of seconds, more than 0"):
        async with runtime.scheduler(interval):
            pytest.fail("a scheduler started")
    assert runtime.schedulers == []
