"""flowcraft.otel on a FlowService: exact wait ages, the scheduler's faults and ticks, and the
claim and commit of each segment as spans (through ``FlowService.listeners``)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import anyio
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flowcraft import (
    DurableScheduler,
    FlowRuntime,
    FlowService,
    ServiceEvent,
    StoreError,
    create_flow,
)
from flowcraft.otel import instrument
from flowcraft.stores import MemoryStore, StoredRun
from flowcraft.testing import FakeClock
from tests.adapters._otel_flow import approval, echo
from tests.adapters.conftest import points


def per_flow(found: dict[str, list[Any]], name: str) -> dict[str, Any]:
    return {p.attributes["flowcraft.flow.id"]: p.value for p in found.get(name, [])}


def nap(name: str = "nap") -> Any:
    flow = create_flow(name).sleep("z", duration=60).node("b", echo)
    flow.edge("z", "b")
    return flow


async def test_awaiting_since_is_when_the_wait_began_and_holds_keep_it(
    meters: tuple[MeterProvider, InMemoryMetricReader], fake_clock: FakeClock
) -> None:
    """The oldest wait age counts from the wait's ``since``: a hold or a fault moves nothing."""
    provider, reader = meters
    service = FlowService(FlowRuntime(clock=fake_clock), MemoryStore(), flows=[approval()])
    inst = instrument(service, meter_provider=provider)
    began = fake_clock.now()
    result = await service.start("expense", run_id="a")
    stored = await service.get("a")
    assert stored.awaiting_since == min(a.since for a in result.awaiting) == began
    fake_clock.advance(100)
    await service.pause("a", reason="audit")  # a hold: updated_at moves, awaiting_since not
    fake_clock.advance(50)
    held = await service.get("a")
    assert held.held
    assert held.updated_at == began + timedelta(seconds=100)
    assert held.awaiting_since == began
    await inst.refresh()
    found = points(reader)
    assert per_flow(found, "flowcraft.wait.oldest_age") == {"expense": 150.0}
    assert per_flow(found, "flowcraft.runs.awaiting") == {"expense": 1}
    stats = await service.stats()
    assert stats.awaiting_since_by_flow == {"expense": began}


async def test_refresh_reads_no_run_bodies(
    meters: tuple[MeterProvider, InMemoryMetricReader], fake_clock: FakeClock
) -> None:
    """The gauges ask stats() and health(scan=fault_scan): list() pages only up to the scan."""
    provider, _ = meters

    class Counting(MemoryStore):
        listed = 0

        async def list(self, **kw: Any) -> Any:
            page = await super().list(**kw)
            Counting.listed += len(page.runs)
            return page

    store = Counting()
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[approval()])
    inst = instrument(service, meter_provider=provider)
    for i in range(30):
        await service.start("expense", run_id=f"r{i}")
    inst.fault_scan = 5
    await inst.refresh()
    assert Counting.listed <= 5
    assert inst._snapshot.awaiting == {"expense": 30}


async def test_scheduler_faults_and_ticks_are_counted(
    meters: tuple[MeterProvider, InMemoryMetricReader], fake_clock: FakeClock
) -> None:
    """A run the durable scheduler cannot fire counts in timer.failures; ticks age."""
    provider, reader = meters
    store = MemoryStore()
    old = FlowService(FlowRuntime(clock=fake_clock), store, flows=[nap()])
    await old.start("nap", run_id="stuck")
    changed = create_flow("nap").node("other", echo)  # the deployment changed the flow
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[changed])
    heard: list[ServiceEvent] = []
    service.listeners.append(heard.append)
    instrument(service, meter_provider=provider)
    fake_clock.advance(61)
    sched = DurableScheduler(service)
    await sched.tick()
    assert sched.faults == 1
    [fault] = [e for e in heard if e.kind == "fault"]
    assert (fault.run_id, fault.flow_id) == ("stuck", "nap")
    assert fault.error is not None
    assert [e.kind for e in heard][-1] == "tick"
    found = points(reader)
    [failure] = found["flowcraft.timer.failures"]
    assert failure.value == 1
    assert failure.attributes["flowcraft.flow.id"] == "nap"
    assert failure.attributes["error.type"] == type(fault.error).__qualname__
    fake_clock.advance(7)
    [age] = points(reader)["flowcraft.scheduler.tick_age"]
    assert age.value == 7.0


async def test_a_failed_tick_counts_as_a_timer_failure(
    meters: tuple[MeterProvider, InMemoryMetricReader], fake_clock: FakeClock
) -> None:
    """A store outage fails the whole tick: the scheduler's loop reports it to listeners."""
    provider, reader = meters

    class Down(MemoryStore):
        async def due(self, now: datetime, limit: int = 100) -> list[StoredRun]:
            raise StoreError("store down")

    service = FlowService(FlowRuntime(clock=fake_clock), Down(), flows=[nap()])
    instrument(service, meter_provider=provider)
    async with service.scheduler(interval=1):
        await anyio.wait_all_tasks_blocked()
    found = points(reader)
    [failure] = found["flowcraft.timer.failures"]
    assert failure.attributes == {"flowcraft.segment.kind": "tick", "error.type": "StoreError"}
    assert "flowcraft.scheduler.tick_age" not in found  # no tick ever finished


async def test_claim_and_commit_are_children_of_the_segment_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], fake_clock: FakeClock
) -> None:
    """Each service segment: its span starts at the claim; claim and commit are its children."""
    provider, exporter = spans
    store = MemoryStore()
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[approval()])
    inst = instrument(service, tracer_provider=provider)
    await service.start("expense", run_id="a")
    await service.resume("a", {"action": "yes"})
    finished = exporter.get_finished_spans()
    by = {(s.name, s.attributes.get("flowcraft.status")): s for s in finished}
    for segment, status in (("flowcraft.run", "awaiting"), ("flowcraft.resume", "completed")):
        parent = by[(segment, status)]
        mine = parent.context.span_id
        children = [s for s in finished if s.parent is not None and s.parent.span_id == mine]
        names = {s.name for s in children}
        assert {"flowcraft.claim", "flowcraft.commit"} <= names
        claim = next(s for s in children if s.name == "flowcraft.claim")
        commit = next(s for s in children if s.name == "flowcraft.commit")
        assert parent.start_time == claim.start_time
        assert claim.attributes["flowcraft.status"] == "running"
        assert commit.attributes["flowcraft.status"] == status
        assert commit.attributes["flowcraft.run.id"] == "a"
        assert commit.start_time >= claim.end_time
    inst.uninstrument()
    assert service.listeners == []
    exporter.clear()
    await service.start("expense", run_id="b")
    assert exporter.get_finished_spans() == ()


async def test_a_listener_that_raises_is_logged_and_the_segment_goes_on(
    fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Listeners are told after each step; one that raises does not fail the service."""
    service = FlowService(FlowRuntime(clock=fake_clock), MemoryStore(), flows=[approval()])

    def boom(event: ServiceEvent) -> None:
        raise RuntimeError("listener bug")

    service.listeners.append(boom)
    result = await service.start("expense", run_id="a")
    assert result.status == "awaiting"
    assert "listener failed on claim" in caplog.text
    assert "listener failed on commit" in caplog.text
