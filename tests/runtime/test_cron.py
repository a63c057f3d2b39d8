"""Cron sleeps in the engine: the wake time is computed when the run reaches the sleep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from flowcraft import Blueprint, FlowRuntime, NodeContext, RunResult, TimerNotDueError, create_flow
from flowcraft.stores import DurableScheduler, FlowService, MemoryStore
from flowcraft.testing import FakeClock

PARIS_SATURDAY_NOON = datetime(2024, 3, 30, 11, 0, tzinfo=UTC)  # 12:00 CET; DST starts that night
WAKE = datetime(2024, 3, 31, 1, 0, tzinfo=UTC)  # 02:00 does not exist: 03:00 CEST, gap's end


def mark(node: NodeContext) -> Any:
    return {"seen": node.input, "at": node.context.get("at")}


def nightly() -> Any:
    flow = (
        create_flow("nightly")
        .node("prepare", lambda n: "report", name="prepare")
        .sleep("at-two", cron="0 2 * * *", tz="Europe/Paris")
        .node("send", mark, name="send")
    )
    return flow.edge("prepare", "at-two").edge("at-two", "send")


async def test_reaching_a_cron_sleep_records_the_next_match_as_wake_at() -> None:
    """The run awaits the timer with ``wake_at`` = next 02:00 Paris (03:00 on DST night)."""
    flow = nightly()
    rt = FlowRuntime(registry=flow.registry, clock=FakeClock(PARIS_SATURDAY_NOON))
    first = await rt.run(flow.to_blueprint())
    assert first.status == "awaiting"
    [timer] = first.awaiting
    assert (timer.node_id, timer.reason, timer.wake_at) == ("at-two", "timer", WAKE)


async def test_a_cron_sleep_refuses_an_early_resume_and_passes_its_input_on() -> None:
    """Before ``wake_at``: ``TimerNotDueError``; at it: the run continues with the input."""
    clock = FakeClock(PARIS_SATURDAY_NOON)
    flow = nightly()
    bp = flow.to_blueprint()
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    first = await rt.run(bp)
    clock.advance((WAKE - PARIS_SATURDAY_NOON).total_seconds() - 1)
    with pytest.raises(TimerNotDueError, match="not due until 2024-03-31T01:00:00"):
        await rt.resume(bp, first.serialized_context, node_id="at-two")
    clock.advance(1)
    final = await rt.resume(bp, first.serialized_context, node_id="at-two")
    assert final.status == "completed"
    assert final.outputs["send"]["seen"] == "report"


async def test_the_in_process_scheduler_fires_a_cron_sleep_at_its_match() -> None:
    """The scheduler needs nothing new: it fires ``wake_at``."""
    clock = FakeClock(PARIS_SATURDAY_NOON)
    flow = nightly()
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with rt.scheduler(interval=60, on_result=results.append) as scheduler:
        await rt.run(flow.to_blueprint())
        assert [t.due for t in scheduler.pending()] == [WAKE]
        await anyio.wait_all_tasks_blocked()
        clock.advance((WAKE - PARIS_SATURDAY_NOON).total_seconds() - 60)
        await anyio.wait_all_tasks_blocked()
        assert results == []
        clock.advance(60)
        await anyio.wait_all_tasks_blocked()
    assert [r.status for r in results] == ["completed"]


async def test_a_loop_through_a_cron_sleep_wakes_once_per_match() -> None:
    """Each pass computes the next match from the time it arrives: every hour on the hour."""
    clock = FakeClock(datetime(2024, 6, 1, 9, 20, tzinfo=UTC))
    counted: list[datetime] = []

    def count(node: NodeContext) -> Any:
        counted.append(clock.now())
        n = node.context.get("n", 0) + 1
        node.context.set("n", n)
        return {"output": n, "action": "again" if n < 3 else "done"}

    flow = (
        create_flow("hourly")
        .node("count", count, name="count")
        .sleep("tick", cron="0 * * * *")
        .node("end", lambda n: n.input, name="end")
        .edge("count", "tick", action="again")
        .edge("tick", "count")
        .edge("count", "end", action="done")
    )
    bp = flow.to_blueprint()
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    result = await rt.run(bp)
    wakes = []
    while result.status == "awaiting":
        [timer] = result.awaiting
        assert timer.wake_at is not None
        wakes.append(timer.wake_at)
        clock.advance((timer.wake_at - clock.now()).total_seconds())
        result = await rt.resume(bp, result.serialized_context, node_id="tick")
    assert result.outputs["end"] == 3
    hour = datetime(2024, 6, 1, 10, tzinfo=UTC)
    assert wakes == [hour, hour + timedelta(hours=1)]
    assert counted == [datetime(2024, 6, 1, 9, 20, tzinfo=UTC), *wakes]


async def test_a_json_blueprint_with_a_cron_sleep_runs() -> None:
    """A blueprint loaded from JSON with ``params: {cron, tz}`` computes the same wake."""
    flow = nightly()
    bp = Blueprint.from_json(flow.to_blueprint().to_json())
    rt = FlowRuntime(registry=flow.registry, clock=FakeClock(PARIS_SATURDAY_NOON))
    assert (await rt.run(bp)).awaiting[0].wake_at == WAKE


async def test_a_cron_sleep_fires_end_to_end_through_the_service() -> None:
    """Memory store, durable scheduler, fake clock: stored, not early, fired once, continued."""
    clock = FakeClock(PARIS_SATURDAY_NOON)
    service = FlowService(FlowRuntime(clock=clock), MemoryStore(), flows=[nightly()])
    started = await service.start("nightly", run_id="n1")
    assert started.status == "awaiting"
    assert started.awaiting[0].wake_at == WAKE
    scheduler = DurableScheduler(service)
    clock.advance((WAKE - PARIS_SATURDAY_NOON).total_seconds() - 1)
    assert await scheduler.tick() == 0
    assert (await service.get("n1")).status == "awaiting"
    clock.advance(1)
    assert await scheduler.tick() == 1
    assert await scheduler.tick() == 0
    final = await service.result("n1")
    assert final.status == "completed"
    assert final.outputs["send"]["seen"] == "report"
    history = await service.history("n1")
    fired = [h for h in history if h.node_id == "at-two" and h.event == "resume"]
    assert [(h.by, h.at) for h in fired] == [("scheduler", WAKE)]
