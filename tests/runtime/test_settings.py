"""A runtime's settings reach every part of it at once, however and whenever they are set."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from flowcraft import FlowEvent, FlowRuntime, NodeContext, create_flow
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
