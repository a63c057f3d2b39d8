"""Timer priority (DESIGN §9): the scheduler fires due runs in ``(priority, due_at)`` order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from flowcraft import FlowRuntime, OutOfRangeError, RunResult
from flowcraft.stores import DurableScheduler, FlowService, RunStore, StoredRun
from flowcraft.testing import FakeClock
from tests.service._support import flows


def make(store: RunStore, clock: FakeClock) -> FlowService:
    return FlowService(FlowRuntime(clock=clock), store, flows=flows())


async def test_the_scheduler_fires_the_lowest_priority_first_then_the_earliest_due(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Runs fire by priority (lowest first), ties by due time, whatever order they started in."""
    service = make(store, fake_clock)
    plan = [("late-p0", 0), ("bulk-p5", 5), ("urgent", -3), ("early-p0", 0), ("bulk-p1", 1)]
    for run_id, priority in plan:
        await service.start("reminder", run_id=run_id, priority=priority)
        fake_clock.advance(1)  # each next run falls due a second later
    fake_clock.advance(3600)  # all due; "late-p0" fell due before "early-p0" (started first)
    order: list[str] = []
    sched = DurableScheduler(
        service, on_result=lambda r: order.append(r.run_id), batch=2, concurrency=1
    )
    while await sched.tick():
        pass
    assert order == ["urgent", "late-p0", "early-p0", "bulk-p1", "bulk-p5"]
    for run_id, priority in plan:
        stored = await service.get(run_id)
        assert (stored.status, stored.priority) == ("completed", priority)


async def test_priority_is_kept_across_segments_and_defaults_to_zero(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A run keeps its priority through claims and commits; unset, it is 0."""
    service = make(store, fake_clock)
    await service.start("approval", run_id="a", priority=7)
    await service.start("approval", run_id="b")
    assert (await service.get("a")).priority == 7
    assert (await service.get("b")).priority == 0
    result = await service.resume("a", {"action": "approved"})
    assert isinstance(result, RunResult)
    assert (await service.get("a")).priority == 7


async def test_a_priority_that_is_not_an_int_is_refused_and_nothing_is_stored(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """priority="high" raises TypeError before the run is created."""
    service = make(store, fake_clock)
    with pytest.raises(TypeError, match="priority must be an int"):
        await service.start("approval", run_id="x", priority="high")  # type: ignore[arg-type]
    assert len(await service.list()) == 0


async def test_store_due_orders_by_priority_then_due_at_and_respects_limit(
    store: RunStore,
) -> None:
    """``RunStore.due`` itself returns (priority, due_at, run_id) order, cut at ``limit``."""
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    specs = [("a", 2, 1), ("b", 0, 5), ("c", 0, 2), ("d", -1, 9), ("e", 2, 0), ("f", 0, 99)]
    for run_id, priority, second in specs:
        await store.create(
            StoredRun(
                run_id=run_id,
                flow_id="f",
                status="awaiting",
                revision=0,
                created_at=t0,
                updated_at=t0,
                due_at=t0 + timedelta(seconds=second),
                priority=priority,
            )
        )
    now = t0 + timedelta(seconds=10)  # "f" is not due yet
    assert [r.run_id for r in await store.due(now)] == ["d", "c", "b", "e", "a"]
    assert [r.run_id for r in await store.due(now, limit=3)] == ["d", "c", "b"]
    # A run that stops awaiting leaves the due index of its priority.
    d = await store.get("d")
    done = msgspec.structs.replace(d, status="completed", revision=1, due_at=None)
    await store.save(done, 0)
    assert [r.run_id for r in await store.due(now, limit=2)] == ["c", "b"]
    await store.delete("a", 0)
    assert [r.run_id for r in await store.due(now)] == ["c", "b", "e"]


async def test_a_tick_claims_its_timers_in_one_batch_and_leaves_a_conflicting_run_alone(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Batched claims: each due run fires exactly once; one changed by another writer after
    the due page was read loses its compare-and-set alone and is not fired by this tick."""
    service = make(store, fake_clock)
    for i in range(5):
        await service.start("reminder", run_id=f"n{i}")
    fake_clock.advance(3600)
    due = await store.due(fake_clock.now(), 10)
    assert sorted(r.run_id for r in due) == [f"n{i}" for i in range(5)]
    # Another writer touches n2 after the page was read (a new revision, same state).
    n2 = await store.get("n2")
    await store.save(msgspec.structs.replace(n2, revision=n2.revision + 1), n2.revision)
    plans = await service.claim_due(due)
    assert [p is False for p in plans] == [r.run_id == "n2" for r in due]
    assert (await store.get("n2")).status == "awaiting"  # untouched by the batch
    fired: list[str] = []
    for plan in plans:
        if plan is not False and plan is not True:
            results, _ = await service.fire_claimed(plan)
            fired.extend(r.run_id for r in results)
    assert sorted(fired) == ["n0", "n1", "n3", "n4"]
    # The next tick fires n2, once; nothing fires twice.
    order: list[str] = []
    sched = DurableScheduler(service, on_result=lambda r: order.append(r.run_id))
    while await sched.tick():
        pass
    assert order == ["n2"]
    for i in range(5):
        assert (await service.get(f"n{i}")).status == "completed"


@pytest.mark.parametrize("priority", [2**63, 2**64, 2**70, -(2**63) - 1, -(2**70)])
async def test_a_priority_beyond_64_bits_is_refused_and_nothing_is_stored(
    store: RunStore, fake_clock: FakeClock, priority: int
) -> None:
    """A priority no store can keep raises ``OutOfRangeError`` (a ValueError, what the stores
    raise for it) naming the range, before any write."""
    service = make(store, fake_clock)
    with pytest.raises(OutOfRangeError, match=r"must fit a signed 64-bit integer") as caught:
        await service.start("approval", run_id="x", priority=priority)
    assert isinstance(caught.value, ValueError)
    assert (caught.value.field, caught.value.value) == ("priority", priority)
    assert str(-(2**63)) in str(caught.value)
    assert str(2**63 - 1) in str(caught.value)
    assert len(await service.list()) == 0


async def test_the_64_bit_bounds_are_valid_priorities_and_fire_in_order(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """-2**63 and 2**63 - 1 are stored as given and the lowest still fires first."""
    service = make(store, fake_clock)
    await service.start("reminder", run_id="last", priority=2**63 - 1)
    await service.start("reminder", run_id="first", priority=-(2**63))
    assert (await service.get("last")).priority == 2**63 - 1
    assert (await service.get("first")).priority == -(2**63)
    fake_clock.advance(3600)
    order: list[str] = []
    sched = DurableScheduler(service, on_result=lambda r: order.append(r.run_id), concurrency=1)
    while await sched.tick():
        pass
    assert order == ["first", "last"]


@pytest.mark.parametrize("state", ["r-1", 42, [("a", 1)]])
async def test_a_start_state_that_is_no_mapping_is_a_type_error_naming_it(state: Any) -> None:
    """``start("flow", "r-1")`` (a run id passed as the state) says what ``state`` must be
    instead of a raw ``dict()`` error; nothing is stored."""
    from flowcraft.stores import MemoryStore

    store = MemoryStore()
    service = FlowService(FlowRuntime(), store, flows=[flows()[0]])
    with pytest.raises(TypeError, match=r"state of a new run of flow .* must be a mapping"):
        await service.start(flows()[0].id, state)
    assert len(await store.list()) == 0


@pytest.mark.parametrize("batch", [0, -1])
def test_a_scheduler_batch_below_one_is_refused(batch: int) -> None:
    """``DurableScheduler(batch=0)`` would never fire anything: it is a ValueError at once."""
    from flowcraft.stores import MemoryStore

    service = FlowService(FlowRuntime(), MemoryStore())
    with pytest.raises(ValueError, match=f"batch must be at least 1, got {batch}"):
        DurableScheduler(service, batch=batch)
