"""``FlowService(..., executor=...)``: claims are handed over, workers execute them once."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from flowcraft import (
    Delivery,
    DeliveryError,
    DurableScheduler,
    FlowRuntime,
    FlowService,
    IdempotencyKeyReusedError,
    UnknownActionError,
)
from flowcraft.stores import RunStore
from tests.service._support import KINDS, backend, flows


class Queue:
    """An executor that keeps what it is handed (the broker of these tests)."""

    def __init__(self) -> None:
        self.sent: list[Delivery] = []
        self.fail = False

    async def submit(self, delivery: Delivery) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.sent.append(Delivery.from_json(delivery.to_json()))  # through JSON, as a broker


def services(store: RunStore, q: Queue, ttl: float = 30) -> tuple[FlowService, FlowService]:
    client = FlowService(FlowRuntime(), store, flows(), executor=q, lease_ttl=ttl)
    worker = FlowService(FlowRuntime(), store, flows(), executor=q, lease_ttl=ttl)
    return client, worker


async def drain(worker: FlowService, q: Queue, copies: int = 1) -> int:
    """Execute every queued delivery ``copies`` times; how many executed."""
    done = 0
    while q.sent:
        d = q.sent.pop(0)
        for _ in range(copies):
            if await worker.execute(d.run_id, d.revision, d.delivery_id) is not None:
                done += 1
    return done


@pytest.mark.parametrize("kind", KINDS)
async def test_start_and_resume_hand_over_and_duplicates_are_no_ops(
    kind: str, tmp_path: Path
) -> None:
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()
        client, worker = services(store, q)
        first = await client.start("approval", {"secret": "s3cr3t-value"})
        assert first.status == "running"
        assert [d.kind for d in q.sent] == ["start"]
        assert "s3cr3t" not in str(q.sent[0].to_json())  # never the state
        assert await drain(worker, q, copies=3) == 1
        stored = await client.settled(first.run_id)
        assert stored.status == "awaiting"
        handed = await client.resume(first.run_id, {"action": "approved"}, idempotency_key="k")
        assert handed.status == "running"
        assert await drain(worker, q, copies=2) == 1
        done = await client.settled(first.run_id)
        assert done.status == "completed"
        events = [h.event for h in await store.history(first.run_id)]
        assert "recover" not in events
        # The same decision again: the first result, nothing handed over.
        again = await client.resume(first.run_id, {"action": "approved"}, idempotency_key="k")
        assert again.status == "completed"
        assert q.sent == []


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_lost_publish_is_swept_and_stale_delivery_does_nothing(
    kind: str, tmp_path: Path
) -> None:
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()
        client, worker = services(store, q, ttl=0.2)
        q.fail = True
        run = await client.start("approval", {})
        assert q.sent == []  # the publish failed after the claim was stored
        q.fail = False
        await anyio.sleep(0.3)
        sched = DurableScheduler(client)
        await sched.tick()
        assert [d.kind for d in q.sent] == ["start"]
        swept = q.sent[0]
        assert await drain(worker, q) == 1
        assert (await client.settled(run.run_id)).status == "awaiting"
        assert await worker.execute(run.run_id, swept.revision, swept.delivery_id) is None


async def test_timers_are_published_when_due_never_delayed(tmp_path: Path) -> None:
    async with backend("memory", tmp_path) as (store, _):
        q = Queue()
        client, worker = services(store, q)
        from tests.service._support import reminder

        flow = reminder("quick", 0.2)
        client.host.flows["quick"] = (flow.to_blueprint(), flow.registry)
        worker.host.flows["quick"] = (flow.to_blueprint(), flow.registry)
        run = await client.start("quick", {})
        await drain(worker, q)
        sched = DurableScheduler(client)
        await sched.tick()
        assert q.sent == []  # not due: nothing on the queue
        await anyio.sleep(0.3)
        await sched.tick()
        assert [d.kind for d in q.sent] == ["fire"]
        await drain(worker, q)
        assert (await client.settled(run.run_id)).status == "completed"


def test_delivery_format_is_versioned_json() -> None:
    d = Delivery(run_id="r", revision=3, delivery_id="c", kind="resume", flow_id="f")
    assert d.to_json() == {
        "run_id": "r", "revision": 3, "delivery_id": "c", "kind": "resume", "flow_id": "f",
        "node_id": None, "v": 1,
    }
    assert Delivery.from_json(d.to_json()) == d
    item = Delivery(
        run_id="r", revision=3, delivery_id="c", kind="item", flow_id="f", node_id="b", item=4,
        v=2,
    )
    assert item.to_json()["item"] == 4
    assert Delivery.from_json(item.to_json()) == item
    with pytest.raises(DeliveryError):
        Delivery.from_json({**d.to_json(), "v": 3})
    with pytest.raises(DeliveryError):
        Delivery.from_json(b"\x80not json")
    with pytest.raises(DeliveryError, match="recursion"):  # a message nested too deeply
        Delivery.from_json("[" * 5000 + "]" * 5000)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_decision_refused_on_the_worker_is_read_back_by_its_caller(
    kind: str, tmp_path: Path
) -> None:
    """The caller got ``running``; the worker refused: ``outcome`` raises the specific error."""
    async with backend(kind, tmp_path) as (store, _):
        q = Queue()
        client, worker = services(store, q)
        run = await client.start("approval", {})
        await drain(worker, q)
        before = await client.settled(run.run_id)
        handed = await client.resume(run.run_id, {"action": "maybe"}, idempotency_key="k")
        assert handed.status == "running"  # validated on the worker, not here
        d = q.sent.pop()
        with pytest.raises(UnknownActionError, match="'maybe'"):
            await worker.execute(d.run_id, d.revision, d.delivery_id)
        after = await client.settled(run.run_id)
        assert after.status == "awaiting"
        assert after.serialized_context == before.serialized_context  # left as it was
        with pytest.raises(UnknownActionError, match="no edge for action 'maybe'") as caught:
            await client.outcome(run.run_id, "k")
        assert (caught.value.node_id, caught.value.action) == ("approve", "maybe")
        assert caught.value.known == ("approved", "rejected")
        with pytest.raises(UnknownActionError):  # the same decision again: the same answer
            await client.resume(run.run_id, {"action": "maybe"}, idempotency_key="k")
        assert q.sent == []
        with pytest.raises(IdempotencyKeyReusedError):
            await client.resume(run.run_id, {"action": "approved"}, idempotency_key="k")
        await client.resume(run.run_id, {"action": "approved"}, idempotency_key="k2")
        await drain(worker, q)
        assert (await client.outcome(run.run_id, "k2") or before).status == "completed"
