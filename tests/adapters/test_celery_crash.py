"""``flowcraft.celery`` across crashes: a worker SIGKILLed mid-node, a client that died between
storing its claim and publishing it. RabbitMQ broker, PostgreSQL store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft.celery import CeleryExecutor
from tests.adapters.test_celery import AMQP, WAIT, Workers, client, purge, reachable, settle
from tests.service._support import drop

TTL = 10  # the workers' lease (seconds); the killed worker's lapses this long after it died


@pytest.fixture
def one_worker(tmp_path: Path) -> Iterator[Workers]:
    reachable(AMQP, 5672)
    reachable("postgres", 5432)
    tag = uuid.uuid4().hex[:10]
    # The slow node waits for the gate file (no fixed window to kill the worker in); the
    # workers' lease is long enough that a worker starved by a busy machine keeps its run.
    w = Workers(AMQP, "postgres", f"crash{tag}", f"flowcraft-crash-{tag}", tmp_path,
                FLOWCRAFT_CELERY_GATE=str(tmp_path / "gate"), FLOWCRAFT_CELERY_TTL=str(TTL))
    try:
        yield w
    finally:
        w.stop()
        purge(AMQP, w.queue)
        anyio.run(drop, "postgres", w.ns)


async def test_sigkill_mid_node_run_finishes_transition_applied_once(one_worker: Workers) -> None:
    w = one_worker
    w.start(1)
    svc = client(w)
    try:
        handed = await svc.start("slow", {})
        run_id = handed.run_id
        with anyio.fail_after(WAIT):
            while w.count()[("slow-start", run_id)] == 0:
                await anyio.sleep(0.05)
        w.kill()  # SIGKILL inside the node: the message is requeued, the lease left to lapse
        (w.tmp / "gate").touch()  # the node's next run goes through at once
        w.start(1)
        async with svc.scheduler(0.2):  # the sweep re-publishes once the lease lapsed
            done = await settle(svc, handed)
        assert done.status == "awaiting"
        assert [a.node_id for a in done.awaiting] == ["next"]
        ran = w.count()
        assert ran[("slow-end", run_id)] == 1
        assert ran[("slow-start", run_id)] == 2  # the node re-ran once, after the crash
        story = [h.event for h in await svc.store.history(run_id)]
        assert story.count("start") == 1
        assert story.count("pause") == 1  # the transition to "next" applied once
        assert "recover" in story
    finally:
        await svc.store.close()


class Crashing(CeleryExecutor):
    """A client that dies after its claim is stored, before the message is sent."""

    def publish(self, body: dict[str, Any]) -> None:
        raise ConnectionError("process died before publishing")


async def test_crash_between_claim_and_publish_is_swept(one_worker: Workers) -> None:
    w = one_worker
    w.start(1)
    dead = client(w, Crashing)
    svc = client(w)
    try:
        first = await settle(svc, await svc.start("approval", {}))
        handed = await dead.resume(first.run_id, {"action": "approved"})
        assert handed.status == "running"  # claimed and stored, never published
        assert (await svc.store.get(first.run_id)).status == "running"
        async with svc.scheduler(0.2):
            done = await settle(svc, handed)
        assert done.status == "completed"
        assert done.outputs["pay"] == "paid"
        assert w.count()[("pay", first.run_id)] == 1
    finally:
        await svc.store.close()
        await dead.store.close()


@pytest.fixture
def spreading_worker(tmp_path: Path) -> Iterator[Workers]:
    reachable(AMQP, 5672)
    reachable("postgres", 5432)
    tag = uuid.uuid4().hex[:10]
    w = Workers(AMQP, "postgres", f"crash{tag}", f"flowcraft-crash-{tag}", tmp_path, "threads",
                FLOWCRAFT_CELERY_SLOW="3", FLOWCRAFT_CELERY_FANOUT="1")
    try:
        yield w
    finally:
        w.stop()
        purge(AMQP, w.queue)
        anyio.run(drop, "postgres", w.ns)


async def test_sigkill_mid_batch_item_run_finishes_gather_once(spreading_worker: Workers) -> None:
    w = spreading_worker
    w.start(1)
    svc = client(w)
    try:
        handed = await svc.start("slow-spread", {"xs": [0, 1, 2]})
        run_id = handed.run_id
        with anyio.fail_after(WAIT):
            while w.count()[("slow-start", run_id)] == 0:
                await anyio.sleep(0.05)
        w.kill()  # SIGKILL inside item 1: its message is requeued, its lease left to lapse
        w.start(1)
        async with svc.scheduler(0.2):  # the sweep re-publishes the item not merged
            done = await settle(svc, handed)
        assert done.status == "completed"
        assert done.outputs["sq_scatter"] == [0, 10, 20]
        ran = w.count()
        assert ran[("slow-start", run_id)] == 2  # the item re-ran once, after the crash
        assert ran[("slow-end", run_id)] == 1
        assert ran[("sq_scatter/0", run_id)] == 1
        assert ran[("sq_scatter/2", run_id)] == 1
        assert ran[("done", run_id)] == 1  # the gather, and the node after it, ran once
    finally:
        await svc.store.close()
