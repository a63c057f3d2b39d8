"""``FlowService.health()`` on every store: reachability, scheduler, counts, faults, oldest run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import anyio
import msgspec
import pytest

from flowcraft import (
    BlueprintMismatchError,
    FlowRuntime,
    RunFault,
    ServiceHealth,
    StoreError,
    create_flow,
)
from flowcraft.stores import DurableScheduler, FlowService, MemoryStore, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import flows, reminder, spread, submit


async def test_health_of_an_empty_service_is_ok(store: RunStore, fake_clock: FakeClock) -> None:
    """Nothing stored: reachable, ok, no lag, no faults, no oldest run."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    health = await service.health()
    assert isinstance(health, ServiceHealth)
    assert (health.ok, health.store_reachable, health.scheduler_running) == (True, True, False)
    assert (health.scheduler_lag, health.faults, health.oldest_awaiting) == (0.0, (), None)
    assert health.checked_at == fake_clock.now()


async def test_health_counts_runs_names_the_oldest_and_measures_the_lag(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Counts by status, the oldest awaiting run, and how overdue the first timer is."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("reminder", run_id="sleepy")
    fake_clock.advance(5)
    await service.start("approval", run_id="a1")
    await service.start("approval", run_id="a2")
    await service.resume("a2", {"action": "approved"})
    fake_clock.advance(100)  # the reminder (60 s) is 45 s overdue
    health = await service.health()
    assert health.by_status == {"awaiting": 2, "completed": 1}
    assert health.oldest_awaiting == "sleepy"
    assert health.scheduler_lag == pytest.approx(45.0)
    await DurableScheduler(service).tick()
    after = await service.health()
    assert (after.scheduler_lag, after.oldest_awaiting) == (0.0, "a1")


async def test_health_says_exactly_since_when_the_longest_wait_has_lasted(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """``oldest_awaiting_since`` is the wait's start (``awaiting_since``), not the last write.

    A hold writes the run (``paused_at``, ``updated_at``) without starting a new wait; a
    run created first is not the one waiting longest once it moved on to a later wait.
    """
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    t0 = fake_clock.now()
    await service.start("two-waits", run_id="first")  # awaits "a" and "b" since t0
    fake_clock.advance(5)
    await service.start("approval", run_id="second")  # since t0 + 5
    fake_clock.advance(5)
    await service.pause("first", reason="audit")  # held: written at t0 + 10, still since t0
    fake_clock.advance(5)
    health = await service.health()
    assert (health.oldest_awaiting, health.oldest_awaiting_since) == ("first", t0)
    stats = await service.stats()
    assert health.oldest_awaiting_since == min(stats.awaiting_since_by_flow.values())
    await service.release("first")
    await service.resume("first", {"output": 1}, "a")  # "b" still awaits, since t0
    health = await service.health()
    assert (health.oldest_awaiting, health.oldest_awaiting_since) == ("first", t0)
    await service.cancel("first")
    health = await service.health()
    assert (health.oldest_awaiting, health.oldest_awaiting_since) == (
        "second",
        t0 + timedelta(seconds=5),
    )


async def test_health_lists_runs_whose_timer_failed_with_the_reason(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A timer that cannot fire (changed blueprint) shows up with its reason; ok is False."""
    old = FlowService(FlowRuntime(clock=fake_clock), store, flows=[reminder()])
    await old.start("reminder", run_id="stuck")
    changed = create_flow("reminder").node("other", submit, name="other")
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[changed])
    fake_clock.advance(61)
    sched = DurableScheduler(service)
    await sched.tick()
    health = await service.health()
    assert not health.ok
    [fault] = health.faults
    assert isinstance(fault, RunFault)
    assert (fault.run_id, fault.flow_id, fault.count) == ("stuck", "reminder", 1)
    assert "BlueprintMismatchError" in fault.reason
    assert fault.retry_at is not None
    assert fault.retry_at > fake_clock.now()


async def test_health_reports_the_scheduler_running_in_this_process(
    fake_clock: FakeClock,
) -> None:
    """Inside ``service.scheduler()``: running, with the time of its last tick."""
    service = FlowService(FlowRuntime(clock=fake_clock), MemoryStore(), flows=flows())
    async with service.scheduler(interval=1.0) as sched:
        await anyio.wait_all_tasks_blocked()
        assert sched.ticks == 1
        health = await service.health()
        assert health.scheduler_running
        assert health.last_tick_at == fake_clock.now()
    assert not (await service.health()).scheduler_running


class Down(MemoryStore):
    """A store whose server is gone."""

    async def stats(self, now: object) -> object:  # type: ignore[override]
        raise StoreError("connection refused")


async def test_health_of_an_unreachable_store_says_so_and_does_not_raise(
    fake_clock: FakeClock,
) -> None:
    """A store outage is an answer (store_reachable=False, the reason), not an exception."""
    service = FlowService(FlowRuntime(clock=fake_clock), Down(), flows=flows())
    health = await service.health()
    assert (health.ok, health.store_reachable) == (False, False)
    assert health.store_error is not None
    assert "connection refused" in health.store_error


# --- fan-out faults ----------------------------------------------------------------------------


def _fanout_services(store: RunStore, clock: FakeClock) -> tuple[FlowService, FlowService, Any]:
    """A client and a worker of ``spread`` and one where the flow changed, sharing a queue."""
    from tests.service.test_fanout import Queue, redeployed

    q = Queue()

    def service(flow: Any) -> FlowService:
        return FlowService(FlowRuntime(clock=clock), store, [flow], executor=q, lease_ttl=30)

    return service(spread()), service(redeployed()), q


async def test_health_reports_a_chunk_no_worker_can_run_until_it_merges(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A spread chunk its worker refuses is a fault of the running run: ``health`` names it
    (``kind="chunk"``, the reason, when the sweep publishes it again) and is not ok; once a
    worker that can run it merges it, the fault is no longer reported."""
    from tests.service.test_fanout import deliver

    client, new, q = _fanout_services(store, fake_clock)
    handed = await client.start("spread", {"xs": [1, 2]})
    assert await deliver(client, q.sent.pop())  # the start reaches the batch
    first, second = q.sent
    q.sent.clear()
    assert await deliver(client, first)
    with pytest.raises(BlueprintMismatchError):
        await deliver(new, second)
    health = await client.health()
    assert not health.ok
    [fault] = health.faults
    assert (fault.run_id, fault.flow_id, fault.kind, fault.count) == (
        handed.run_id, "spread", "chunk", 1
    )
    assert fault.reason.startswith("BlueprintMismatchError: ")
    stored = await client.get(handed.run_id)
    assert stored.status == "running"
    assert fault.retry_at == stored.lease_until
    assert fault.retry_at is not None
    assert fault.retry_at > fake_clock.now()
    assert await deliver(client, second)  # a worker with the run's flow merges it
    assert (await client.health()).faults == ()


async def test_health_reports_a_refused_gather(store: RunStore, fake_clock: FakeClock) -> None:
    """A gather its worker refuses leaves the run running with the gather pending: ``health``
    reports it (``kind="gather"``) until a worker gathers it."""
    from tests.service.test_fanout import deliver

    client, new, q = _fanout_services(store, fake_clock)
    handed = await client.start("spread", {"xs": [1, 2]})
    assert await deliver(client, q.sent.pop())
    items = list(q.sent)
    q.sent.clear()
    for d in items:
        assert await deliver(client, d)
    [gather] = q.sent
    q.sent.clear()
    with pytest.raises(BlueprintMismatchError):
        await deliver(new, gather)
    health = await client.health()
    assert not health.ok
    [fault] = health.faults
    assert (fault.run_id, fault.kind, fault.count) == (handed.run_id, "gather", 1)
    assert fault.retry_at is not None
    assert fault.retry_at > fake_clock.now()
    fake_clock.advance(30)
    await DurableScheduler(client).tick()  # the sweep publishes the gather again
    [gather] = q.sent
    q.sent.clear()
    assert await deliver(client, gather)
    after = await client.health()
    assert (after.ok, after.faults) == (True, ())
    assert (await client.get(handed.run_id)).status == "awaiting"  # on to the next wait


async def test_health_does_not_report_a_timer_fault_its_claim_carries(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A running run whose ``fault`` is a leftover (a timer fault, the run since claimed and
    running fine) is not reported: only a fault its intent still counts is."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r")
    stored = await store.get("r")
    running = msgspec.structs.replace(
        stored, status="running", revision=stored.revision + 1, fault="OSError: gone",
        fault_count=1, lease_until=fake_clock.now() + timedelta(seconds=30),
    )
    await store.save(running, stored.revision)
    assert (await service.health()).faults == ()
