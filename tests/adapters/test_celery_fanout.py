"""Batches spread over ``celery worker`` subprocesses (``CeleryExecutor(fan_out=True)``).

Two workers per broker/store pair (RabbitMQ with ``--pool=threads -c 1`` + PostgreSQL, Redis
broker + Redis store), two items per message, and **every message published twice** by the
client and by the workers: each item still runs once, the gather once, and the run ends as in
one process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from flowcraft import FlowService
from flowcraft.stores import MemoryStore
from tests.adapters import _celery_app as appmod
from tests.adapters._celery_app import Twice
from tests.adapters.test_celery import BROKERS, Workers, purge, reachable, settle, summary
from tests.service._support import drop


@pytest.fixture(scope="module", params=[("amqp", "postgres"), ("redis", "redis")], ids=str)
def spreaders(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    broker_kind, kind = request.param
    broker = BROKERS[broker_kind]
    reachable(broker, 5672 if broker_kind == "amqp" else 6379)
    reachable(kind, 5432 if kind == "postgres" else 6379)
    tag = uuid.uuid4().hex[:10]
    pool = "threads" if broker_kind == "amqp" else "solo"
    w = Workers(
        broker, kind, f"fan{tag}", f"flowcraft-fan-{tag}", tmp_path_factory.mktemp(tag), pool,
        FLOWCRAFT_CELERY_FANOUT="2", FLOWCRAFT_CELERY_TWICE="1",
    )
    w.start(2)
    try:
        yield w
    finally:
        w.stop()
        purge(broker, w.queue)
        anyio.run(drop, kind, w.ns)


def client(w: Workers) -> FlowService:
    app = appmod.make_app(w.broker)
    return appmod.make_service(w.kind, w.ns, Twice(app, w.queue, fan_out=True, items_per_task=2))


async def play(svc: FlowService, xs: list[int], decisions: list[tuple[str, Any]]) -> str:
    run = await settle(svc, await svc.start("spread", {"xs": xs}))
    for node_id, output in decisions:
        await settle(svc, await svc.resume(run.run_id, {"output": output}, node_id))
    return run.run_id


async def in_process(xs: list[int], decisions: list[tuple[str, Any]]) -> tuple[Any, ...]:
    svc = FlowService(appmod.make_runtime(), MemoryStore(), appmod.flows())
    return await summary(svc, await play(svc, xs, decisions))


async def test_batch_spread_over_two_workers_ends_as_in_process_each_item_once(
    spreaders: Workers,
) -> None:
    xs = [3, 1, 4, 1, 5, 9, 2, 6]
    decisions = [("aside", "ok")]
    svc = client(spreaders)
    try:
        run_id = await play(svc, xs, decisions)
        got = await summary(svc, run_id)
        # Spread, not run in one segment: the fan-out commit, 4 chunk merges and the gather's
        # take-over and commit are writes of their own (11 revisions; 5 without fan-out).
        assert (await svc.store.get(run_id)).revision >= 11
    finally:
        await svc.store.close()
    assert got == await in_process(xs, decisions)
    assert got[0] == "completed"
    assert got[1]["total"] == sum(x * x for x in xs)
    ran = spreaders.count()
    assert [ran[(f"sq_scatter/{i}", run_id)] for i in range(len(xs))] == [1] * len(xs)
    assert ran[("total", run_id)] == 1  # the gather, and the node after the batch, ran once


async def test_a_pause_inside_a_spread_item_pauses_and_resumes(spreaders: Workers) -> None:
    xs = [2, -1, 3]
    svc = client(spreaders)
    try:
        first = await settle(svc, await svc.start("spread", {"xs": xs}))
        assert first.status == "awaiting"
        assert sorted(a.node_id for a in first.awaiting) == ["aside", "sq_scatter/1"]
        decisions = [("sq_scatter/1", 100), ("aside", "ok")]
        for node_id, output in decisions:
            await settle(svc, await svc.resume(first.run_id, {"output": output}, node_id))
        got = await summary(svc, first.run_id)
    finally:
        await svc.store.close()
    assert got == await in_process(xs, decisions)
    assert got[1]["total"] == 4 + 100 + 9
    assert spreaders.count()[("total", first.run_id)] == 1
