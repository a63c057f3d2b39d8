"""Batches spread over workers (``fan_out``): items merged once, whatever the order, one gather."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft import BlueprintMismatchError, Delivery, DurableScheduler, FlowRuntime, FlowService
from flowcraft._service.fanout import CHUNK_ATTEMPTS
from flowcraft.stores import MemoryStore, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import COUNTS, KINDS, backend, spread, submit


class Queue:
    """An executor that keeps what it is handed and spreads batches (the broker of these tests)."""

    fan_out = True

    def __init__(self, per: int = 1) -> None:
        self.items_per_task = per
        self.sent: list[Delivery] = []
        self.fail = False

    async def submit(self, delivery: Delivery) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append(Delivery.from_json(delivery.to_json()))  # through JSON, as a broker


def pair(store: RunStore, q: Queue, ttl: float = 30) -> tuple[FlowService, FlowService]:
    flow = spread()
    client = FlowService(FlowRuntime(), store, [flow], executor=q, lease_ttl=ttl)
    worker = FlowService(FlowRuntime(), store, [flow], executor=q, lease_ttl=ttl)
    return client, worker


async def deliver(worker: FlowService, d: Delivery) -> bool:
    """What the Celery task does with one message."""
    if d.kind == "item":
        assert d.node_id is not None
        assert d.item is not None
        return await worker.execute_item(d.run_id, d.delivery_id, d.node_id, d.item)
    return await worker.execute(d.run_id, d.revision, d.delivery_id) is not None


async def drain(worker: FlowService, q: Queue, copies: int = 1, seed: int = 0) -> list[str]:
    """Deliver everything queued ``copies`` times in a shuffled order; kinds that executed."""
    rng = random.Random(seed)
    ran: list[str] = []
    while q.sent:
        batch = [d for d in q.sent for _ in range(copies)]
        q.sent.clear()
        rng.shuffle(batch)
        for d in batch:
            if await deliver(worker, d):
                ran.append(d.kind)
    return ran


async def story(svc: FlowService, run_id: str) -> tuple[Any, ...]:
    r = await svc.result(run_id)
    events = [(h.event, h.node_id, h.action) for h in await svc.store.history(run_id)]
    return r.status, r.outputs, r.context, [(e.type, e.message) for e in r.errors], events


async def in_process(xs: list[int], resume: dict[str, Any]) -> tuple[Any, ...]:
    svc = FlowService(FlowRuntime(), MemoryStore(), [spread()])
    r = await svc.start("spread", {"xs": xs})
    for node_id, output in resume.items():
        r = await svc.resume(r.run_id, {"output": output}, node_id)
    return await story(svc, r.run_id)


async def spread_run(
    client: FlowService, worker: FlowService, q: Queue, xs: list[int], resume: dict[str, Any],
    copies: int = 1,
) -> tuple[str, list[str]]:
    handed = await client.start("spread", {"xs": xs})
    assert handed.status == "running"
    ran = await drain(worker, q, copies, seed=len(xs))
    for node_id, output in resume.items():
        assert (await client.resume(handed.run_id, {"output": output}, node_id)).status == "running"
        ran += await drain(worker, q, copies)
    return handed.run_id, ran


@pytest.mark.parametrize("kind", KINDS)
async def test_spread_batch_ends_as_in_process_items_and_gather_once(
    kind: str, tmp_path: Path
) -> None:
    """Every message twice, in any order: each item runs once, the gather once, same end."""
    xs = [3, 1, 4, 1, 5, 9, 2]
    async with backend(kind, tmp_path) as (store, _):
        q = Queue(per=2)
        client, worker = pair(store, q)
        run_id, ran = await spread_run(client, worker, q, xs, {"aside": "ok"}, copies=2)
        assert ran.count("item") == 4  # ceil(7 / 2) chunks, each executed once
        assert ran.count("gather") == 1
        assert all(COUNTS[(f"sq_scatter/{i}", run_id)] == 1 for i in range(len(xs)))
        assert COUNTS[("total", run_id)] == 1
        got = await story(client, run_id)
    assert got == await in_process(xs, {"aside": "ok"})
    assert got[0] == "completed"
    assert got[1]["total"] == sum(x * x for x in xs)


async def test_a_pause_inside_a_spread_item_pauses_and_resumes(tmp_path: Path) -> None:
    xs = [2, -1, 3]
    async with backend("memory", tmp_path) as (store, _):
        q = Queue()
        client, worker = pair(store, q)
        handed = await client.start("spread", {"xs": xs})
        await drain(worker, q)
        paused = await client.settled(handed.run_id)
        assert paused.status == "awaiting"
        assert sorted(a.node_id for a in paused.awaiting) == ["aside", "sq_scatter/1"]
        await client.resume(handed.run_id, {"output": 100}, "sq_scatter/1")
        await drain(worker, q)
        await client.resume(handed.run_id, {"output": "ok"}, "aside")
        await drain(worker, q)
        got = await story(client, handed.run_id)
    want = await in_process(xs, {"sq_scatter/1": 100, "aside": "ok"})
    assert got == want
    assert got[1]["total"] == 4 + 100 + 9


async def test_a_failing_spread_item_fails_the_run_as_in_process(tmp_path: Path) -> None:
    xs = [1, 13, 2]
    async with backend("memory", tmp_path) as (store, _):
        q = Queue()
        client, worker = pair(store, q)
        handed = await client.start("spread", {"xs": xs})
        await drain(worker, q)
        assert COUNTS[("sq_scatter/1", handed.run_id)] == 2  # both attempts, on the worker
        got = await story(client, handed.run_id)
    assert got == await in_process(xs, {})
    assert got[0] == "failed"
    message = "batch 'sq_scatter' item 1 failed: ValueError('13 is unlucky')"
    assert got[3] == [("ValueError", message)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 9),
    per=st.integers(1, 4),
    order=st.randoms(use_true_random=False),
    copies=st.integers(1, 3),
)
def test_merges_in_any_order_with_duplicates_gather_once(
    n: int, per: int, order: random.Random, copies: int
) -> None:
    """Item deliveries executed in any order, some several times: one gather, one result."""

    async def main() -> None:
        q = Queue(per)
        client, worker = pair(MemoryStore(), q)
        handed = await client.start("spread", {"xs": list(range(n))})
        await worker.execute(*_fields(q.sent.pop()))  # the start: reaches the batch
        items = [d for d in q.sent for _ in range(copies)]
        q.sent.clear()
        order.shuffle(items)
        assert sum([await deliver(worker, d) for d in items]) == -(-n // per)
        gathers = [d for d in q.sent if d.kind == "gather"]
        assert len(gathers) == 1
        assert await deliver(worker, gathers[0])
        assert not await deliver(worker, gathers[0])  # a copy of the gather: a no-op
        done = await client.result(handed.run_id)
        assert done.outputs["total"] == sum(i * i for i in range(n))
        assert COUNTS[("total", handed.run_id)] == 1

    anyio.run(main)


def _fields(d: Delivery) -> tuple[str, int, str]:
    return d.run_id, d.revision, d.delivery_id


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_lost_item_messages_are_swept_and_gathered_once(kind: str, tmp_path: Path) -> None:
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()
        client, worker = pair(store, q, ttl=0.2)
        handed = await client.start("spread", {"xs": [1, 2, 3]})
        await worker.execute(*_fields(q.sent.pop()))
        assert [d.kind for d in q.sent] == ["item"] * 3
        first = q.sent.pop(0)
        q.sent.clear()  # two item messages lost by the broker
        assert await deliver(worker, first)
        await anyio.sleep(0.3)
        await DurableScheduler(client).tick()  # the sweep re-publishes what is not merged
        assert sorted(d.item or 0 for d in q.sent) == [1, 2]
        assert not await deliver(worker, first)  # merged already: a no-op
        await drain(worker, q)
        done = await client.settled(handed.run_id)
        assert done.status == "awaiting"  # on "aside"
        assert done.outputs["total"] == 14
        assert [COUNTS[(f"sq_scatter/{i}", handed.run_id)] for i in range(3)] == [1, 1, 1]


async def test_a_fan_out_left_without_workers_is_finished_in_process(tmp_path: Path) -> None:
    """A service without an executor recovering a fan-out runs the missing items itself."""
    async with backend("memory", tmp_path) as (store, _):
        q = Queue()
        client, worker = pair(store, q, ttl=0.2)
        handed = await client.start("spread", {"xs": [1, 2, 3]})
        await worker.execute(*_fields(q.sent.pop()))
        assert await deliver(worker, q.sent[0])  # item 0 merged; 1 and 2 never run
        await anyio.sleep(0.3)
        alone = FlowService(FlowRuntime(), store, [spread()], lease_ttl=0.2)
        await alone.recover()
        done = await alone.result(handed.run_id)
        assert done.status == "awaiting"
        assert done.outputs["total"] == 14
        assert [COUNTS[(f"sq_scatter/{i}", handed.run_id)] for i in range(3)] == [1, 1, 1]


async def test_a_cancel_sent_while_items_run_applies_at_the_gather(tmp_path: Path) -> None:
    async with backend("memory", tmp_path) as (store, _):
        q = Queue()
        client, worker = pair(store, q)
        handed = await client.start("spread", {"xs": [1, 2]})
        await worker.execute(*_fields(q.sent.pop()))
        assert (await client.cancel(handed.run_id, reason="stop", by="ann")).status == "running"
        assert await drain(worker, q) == ["item", "item", "gather"]
        done = await client.settled(handed.run_id)
        assert done.status == "cancelled"
        assert "total" not in done.outputs
        assert COUNTS[("total", handed.run_id)] == 0


async def test_without_fan_out_or_with_step_durability_a_batch_runs_in_its_segment() -> None:
    class Plain(Queue):
        fan_out = False

    for svc in (
        FlowService(FlowRuntime(), MemoryStore(), [spread()], executor=Plain()),
        FlowService(FlowRuntime(), MemoryStore(), [spread()], executor=Queue(), durability="step"),
        FlowService(FlowRuntime(), MemoryStore(), [spread()]),
    ):
        assert svc.host.scatter == 0
        assert svc.host.outbox is None


def redeployed() -> Any:
    """``spread`` as a later deploy has it: a node after the total (another blueprint)."""
    return spread().node("report", submit, name="report").edge("total", "report")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_chunk_no_worker_can_run_backs_off_then_fails_the_batch(
    kind: str, tmp_path: Path
) -> None:
    """A chunk its workers refuse (the blueprint changed under the run) is not re-published
    forever: each refusal is a fault recorded on the run that backs the sweep off, and its
    last attempt fails the item as an item raising does in one process."""
    clock = FakeClock()
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()

        def service(flow: Any) -> FlowService:
            return FlowService(FlowRuntime(clock=clock), store, [flow], executor=q, lease_ttl=30)

        client, worker, new = service(spread()), service(spread()), service(redeployed())
        handed = await client.start("spread", {"xs": [1, 2]})
        run_id = handed.run_id
        assert await deliver(worker, q.sent.pop())  # the start reaches the batch
        first, second = q.sent
        q.sent.clear()
        assert await deliver(worker, first)  # item 0 runs where the flow is unchanged
        sched = DurableScheduler(client)
        published, waits = 1, []  # deliveries of item 1, and the sweep's wait before each
        chunk = second
        while published <= 2 * CHUNK_ATTEMPTS:  # bounds the test, not the code
            try:
                ran = await deliver(new, chunk)
            except BlueprintMismatchError:
                ran = False
            else:
                break  # the last attempt: merged, failed
            stored = await client.get(run_id)
            assert (stored.status, stored.fault_count) == ("running", published)
            assert (stored.fault or "").startswith("BlueprintMismatchError: run ")
            waited = 0
            while not q.sent and waited < 3600:
                clock.advance(30)
                waited += 30
                await sched.tick()
            waits.append(waited)
            [chunk] = q.sent
            q.sent.clear()
            assert (chunk.kind, chunk.item) == ("item", 1)
            published += 1
        assert ran
        assert published == CHUNK_ATTEMPTS == 3
        assert waits == [30, 60]  # lease_ttl, then doubled
        faults = [h for h in await client.store.history(run_id) if h.event == "fault"]
        assert [(h.node_id, (h.data or {}).get("attempt")) for h in faults] == [
            ("sq_scatter", 1),
            ("sq_scatter", 2),
            ("sq_scatter", 3),
        ]
        [gather] = q.sent
        q.sent.clear()
        assert gather.kind == "gather"
        assert await deliver(worker, gather)
        done = await client.result(run_id)
        assert done.status == "failed"
        [error] = done.errors
        assert error.type == "BlueprintMismatchError"
        assert error.message.startswith("batch 'sq_scatter' item 1 failed: BlueprintMismatchError(")
        assert COUNTS[("total", run_id)] == 0
        for _ in range(5):  # and nothing is published any more
            clock.advance(3600)
            await sched.tick()
        assert q.sent == []
        assert published == 3


@pytest.mark.parametrize("kind", KINDS)
async def test_a_gather_no_worker_can_run_backs_off_then_fails_the_run(
    kind: str, tmp_path: Path
) -> None:
    """A gather its workers refuse (the blueprint changed under the run) leaves the run as it
    was before the gather (running, the gather pending for the sweep), never awaiting with
    nothing to wait for: each refusal is a fault recorded on the run that backs the sweep off,
    and the last attempt fails the run with the error."""
    clock = FakeClock()
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()

        def service(flow: Any) -> FlowService:
            return FlowService(FlowRuntime(clock=clock), store, [flow], executor=q, lease_ttl=30)

        client, worker, new = service(spread()), service(spread()), service(redeployed())
        handed = await client.start("spread", {"xs": [1, 2]})
        run_id = handed.run_id
        assert await deliver(worker, q.sent.pop())  # the start reaches the batch
        items = list(q.sent)
        q.sent.clear()
        for d in items:
            assert await deliver(worker, d)  # every item runs where the flow is unchanged
        [gather] = q.sent
        q.sent.clear()
        assert gather.kind == "gather"
        sched = DurableScheduler(client)
        attempts, waits = 0, []  # deliveries of the gather refused, and the sweep's waits
        done = None
        while attempts <= 2 * CHUNK_ATTEMPTS:  # bounds the test, not the code
            attempts += 1
            try:
                done = await new.execute(*_fields(gather))
            except BlueprintMismatchError:
                pass
            else:
                break  # the last attempt: the run fails
            stored = await client.get(run_id)
            # As before the gather: running, its gather pending, with the fault on it.
            assert (stored.status, stored.fault_count) == ("running", attempts)
            assert (stored.fault or "").startswith("BlueprintMismatchError: run ")
            assert stored.lease_until is not None
            waited = 0
            while not q.sent and waited < 3600:
                clock.advance(30)
                waited += 30
                await sched.tick()
            waits.append(waited)
            [gather] = q.sent
            q.sent.clear()
            assert gather.kind == "gather"
        assert done is not None
        assert done.status == "failed"
        assert attempts == CHUNK_ATTEMPTS == 3
        assert waits == [30, 60]  # lease_ttl, then doubled
        stored = await client.get(run_id)
        assert (stored.status, stored.fault_count, stored.lease_until) == ("failed", 3, None)
        assert (stored.fault or "").startswith("BlueprintMismatchError: run ")
        history = await client.store.history(run_id)
        faults = [h for h in history if h.event == "fault"]
        assert [(h.node_id, (h.data or {}).get("attempt")) for h in faults] == [
            ("sq_scatter", 1),
            ("sq_scatter", 2),
            ("sq_scatter", 3),
        ]
        assert history[-1].event == "failed"
        result = await client.result(run_id)
        assert result.status == "failed"
        assert result.awaiting == ()
        [error] = result.errors
        assert (error.node_id, error.type) == ("sq_scatter", "BlueprintMismatchError")
        assert error.message.startswith("batch 'sq_scatter' could not be gathered: ")
        assert COUNTS[("total", run_id)] == 0
        for _ in range(5):  # and nothing is published any more
            clock.advance(3600)
            await sched.tick()
        assert q.sent == []
        assert not await deliver(worker, gather)  # a late copy of the gather: a no-op


@pytest.mark.parametrize("kind", KINDS)
async def test_a_fan_out_recovered_where_the_flow_changed_backs_off_then_fails(
    kind: str, tmp_path: Path
) -> None:
    """Recovery finishing a fan-out in process, refused (the flow changed there): the same
    bounded faults, then the run fails and the scheduler's ``on_result`` hears it."""
    clock = FakeClock()
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()
        client = FlowService(FlowRuntime(clock=clock), store, [spread()], executor=q, lease_ttl=30)
        handed = await client.start("spread", {"xs": [1, 2]})
        run_id = handed.run_id
        assert await deliver(client, q.sent.pop())  # reaches the batch; no item ever runs
        alone = FlowService(FlowRuntime(clock=clock), store, [redeployed()], lease_ttl=30)
        heard: list[Any] = []
        sched = DurableScheduler(alone, on_result=heard.append)
        ticks, refused = 0, []  # ticks of 30 s, and the fault count seen after each
        while not heard and ticks < 100:  # bounds the test, not the code
            clock.advance(30)
            ticks += 1
            await sched.tick()
            stored = await alone.get(run_id)
            if stored.fault_count > len(refused):
                refused.append(ticks)
                assert (stored.fault or "").startswith("BlueprintMismatchError: run ")
                # Refused, the run is as before (running), or, the last time, failed.
                last = len(refused) == CHUNK_ATTEMPTS
                assert stored.status == ("failed" if last else "running")
        assert refused == [1, 2, 4]  # after the lease, then lease_ttl, then twice that
        [result] = heard
        assert (result.run_id, result.status) == (run_id, "failed")
        [error] = result.errors
        assert error.message.startswith("batch 'sq_scatter' could not be gathered: ")
        stored = await alone.get(run_id)
        assert (stored.status, stored.fault_count) == ("failed", CHUNK_ATTEMPTS)
        faults = [h for h in await store.history(run_id) if h.event == "fault"]
        assert [(h.data or {}).get("attempt") for h in faults] == [1, 2, 3]
        assert [COUNTS[(f"sq_scatter/{i}", run_id)] for i in range(2)] == [0, 0]
        assert (await client.result(run_id)).status == "failed"
        for _ in range(5):  # and nothing is tried any more
            clock.advance(3600)
            await sched.tick()
        assert len(heard) == 1
        assert (await alone.get(run_id)).fault_count == CHUNK_ATTEMPTS


async def test_a_gather_refused_once_runs_on_the_next_worker_that_can(tmp_path: Path) -> None:
    """A refusal is a fault, not an end: the gather published again runs where the flow is
    the run's, once, and the fault is cleared with its commit."""
    clock = FakeClock()
    async with backend("memory", tmp_path) as (store, _):
        q = Queue()

        def service(flow: Any) -> FlowService:
            return FlowService(FlowRuntime(clock=clock), store, [flow], executor=q, lease_ttl=30)

        client, worker, new = service(spread()), service(spread()), service(redeployed())
        handed = await client.start("spread", {"xs": [1, 2]})
        run_id = handed.run_id
        assert await deliver(worker, q.sent.pop())
        items = list(q.sent)
        q.sent.clear()
        for d in items:
            assert await deliver(worker, d)
        [gather] = q.sent
        q.sent.clear()
        with pytest.raises(BlueprintMismatchError):
            await new.execute(*_fields(gather))
        assert not await deliver(worker, gather)  # the refused delivery is stale now
        clock.advance(30)
        await DurableScheduler(client).tick()
        [gather] = q.sent
        q.sent.clear()
        assert await deliver(worker, gather)
        done = await client.settled(run_id)
        assert (done.status, done.outputs["total"]) == ("awaiting", 5)
        assert [a.node_id for a in done.awaiting] == ["aside"]
        assert COUNTS[("total", run_id)] == 1
        assert (await client.get(run_id)).fault is None
        assert [h.event for h in await store.history(run_id)].count("fault") == 1


@pytest.mark.parametrize("attempts", [1, 4])
@pytest.mark.parametrize("kind", KINDS)
async def test_fault_attempts_is_how_often_a_chunk_is_tried_before_it_fails_the_batch(
    kind: str, attempts: int, tmp_path: Path
) -> None:
    """``FlowService(fault_attempts=N)``: a chunk no worker can run is tried N times (the
    first N - 1 refusals raise and back off), then its items fail the batch."""
    clock = FakeClock()
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()

        def service(flow: Any) -> FlowService:
            return FlowService(
                FlowRuntime(clock=clock), store, [flow], executor=q, lease_ttl=30,
                fault_attempts=attempts,
            )

        client, worker, new = service(spread()), service(spread()), service(redeployed())
        run_id = (await client.start("spread", {"xs": [1, 2]})).run_id
        assert await deliver(worker, q.sent.pop())
        first, chunk = q.sent
        q.sent.clear()
        assert await deliver(worker, first)
        sched = DurableScheduler(client)
        raised = 0
        while raised < 10:  # bounds the test, not the code
            try:
                await deliver(new, chunk)
            except BlueprintMismatchError:
                raised += 1
            else:
                break
            while not q.sent:
                clock.advance(30)
                await sched.tick()
            [chunk] = q.sent
            q.sent.clear()
        assert raised == attempts - 1
        assert (await client.get(run_id)).fault_count == attempts
        [gather] = q.sent
        q.sent.clear()
        assert await deliver(worker, gather)
        done = await client.result(run_id)
        assert done.status == "failed"
        assert [e.type for e in done.errors] == ["BlueprintMismatchError"]


@pytest.mark.parametrize("kind", KINDS)
async def test_one_fault_attempt_fails_the_run_at_its_first_refused_gather(
    kind: str, tmp_path: Path
) -> None:
    """With ``fault_attempts=1`` a refused gather fails the run at once: no back-off, nothing
    published again."""
    clock = FakeClock()
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()

        def service(flow: Any) -> FlowService:
            return FlowService(
                FlowRuntime(clock=clock), store, [flow], executor=q, lease_ttl=30,
                fault_attempts=1,
            )

        client, worker, new = service(spread()), service(spread()), service(redeployed())
        run_id = (await client.start("spread", {"xs": [1, 2]})).run_id
        assert await deliver(worker, q.sent.pop())
        items = list(q.sent)
        q.sent.clear()
        for d in items:
            assert await deliver(worker, d)
        [gather] = q.sent
        q.sent.clear()
        done = await new.execute(*_fields(gather))
        assert done is not None
        assert done.status == "failed"
        stored = await client.get(run_id)
        assert (stored.status, stored.fault_count) == ("failed", 1)
        clock.advance(3600)
        await DurableScheduler(client).tick()
        assert q.sent == []


@pytest.mark.parametrize("bad", [0, -1])
def test_fault_attempts_below_one_is_refused(bad: int) -> None:
    """0 or fewer tries would fail a run before its work ran once: a ValueError at once."""
    with pytest.raises(ValueError, match=f"fault_attempts must be at least 1 .*not {bad}"):
        FlowService(FlowRuntime(), MemoryStore(), fault_attempts=bad)


@pytest.mark.parametrize("bad", [2.5, "3", None])
def test_fault_attempts_must_be_an_int(bad: Any) -> None:
    """A count of tries is an int."""
    with pytest.raises(TypeError, match="fault_attempts must be an int"):
        FlowService(FlowRuntime(), MemoryStore(), fault_attempts=bad)


def test_fault_attempts_is_keyword_only_and_defaults_to_three() -> None:
    """The default is unchanged (``CHUNK_ATTEMPTS``); it cannot be passed by position."""
    import inspect

    param = inspect.signature(FlowService).parameters["fault_attempts"]
    assert param.kind is inspect.Parameter.KEYWORD_ONLY
    assert param.default == CHUNK_ATTEMPTS == 3
    assert FlowService(FlowRuntime(), MemoryStore()).host.fault_attempts == 3


@pytest.mark.parametrize(
    ("option", "bad"),
    [
        ("lease_ttl", 0), ("lease_ttl", -1), ("lease_ttl", float("inf")),
        ("lease_ttl", float("nan")), ("lease_ttl", 1e12), ("poll_interval", 0),
        ("busy_timeout", -1), ("busy_timeout", float("inf")),
    ],
)
def test_the_time_options_refuse_numbers_no_lease_or_wait_can_use(option: str, bad: float) -> None:
    """A lease of 0 (or past year 9999), a poll interval of 0, a negative wait: ValueError
    naming the option, not an ``OverflowError`` at the first claim."""
    with pytest.raises(ValueError, match=f"{option} must be a number of seconds"):
        FlowService(FlowRuntime(), MemoryStore(), **{option: bad})
