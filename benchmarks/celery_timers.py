"""10,000 sleeping runs leave no message on the broker: timers are the durable scheduler's.

    python -m benchmarks.celery_timers [--runs 10000] [--broker redis|amqp]

Starts ``runs`` runs of the ``long`` flow (a one-hour sleep) in-process on a fresh Redis store
namespace (``FlowService.start`` without an executor, many at once), then opens a client with
``CeleryExecutor`` on the same store and lets its durable scheduler tick (timers and the sweep)
three times. Prints one JSON line: how many runs sleep, how many messages the executor
published, and what the broker holds for the queue (no worker consumes it: every message sent,
with or without an ETA, would still be there).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

import anyio

from flowcraft import FlowService
from flowcraft.celery import CeleryExecutor
from tests.adapters import _celery_app as appmod
from tests.adapters.test_celery import AMQP, REDIS_BROKER
from tests.service._support import drop


async def sleepers(ns: str, n: int) -> float:
    """Start ``n`` sleeping runs; seconds taken."""
    svc = appmod.make_service("redis", ns)
    t0 = time.perf_counter()
    try:
        limiter = anyio.CapacityLimiter(64)

        async def one() -> None:
            async with limiter:
                r = await svc.start("long", {})
                assert r.status == "awaiting", r

        async with anyio.create_task_group() as tg:
            for _ in range(n):
                tg.start_soon(one)
        stats = await svc.stats()
        assert stats.awaiting_by_reason.get("timer") == n, stats
    finally:
        await svc.store.close()
    return time.perf_counter() - t0


async def ticks(svc: FlowService) -> int:
    try:
        async with svc.scheduler(0.1) as sched:
            with anyio.fail_after(120):
                while sched.ticks < 3:  # noqa: ASYNC110 - a driver polling a counter
                    await anyio.sleep(0.05)
            return int(sched.ticks)
    finally:
        await svc.store.close()


def on_broker(broker: str, queue: str) -> int:
    """Messages the broker holds for ``queue``: ready, and (Redis) unacknowledged."""
    if broker.startswith("redis"):
        from redis import Redis

        r = Redis.from_url(broker)
        try:
            unacked = [m for m in r.hvals("unacked") if queue.encode() in m]
            return int(r.llen(queue)) + len(unacked)
        finally:
            r.close()
    from kombu import Connection

    with Connection(broker) as conn:
        declared = conn.default_channel.queue_declare(queue=queue, passive=True)
        return int(declared.message_count)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--broker", choices=["redis", "amqp"], default="redis")
    args = parser.parse_args()
    broker = REDIS_BROKER if args.broker == "redis" else AMQP
    ns = f"timers{uuid.uuid4().hex[:8]}"
    queue = f"timers-{uuid.uuid4().hex[:8]}"
    app = appmod.make_app(broker)
    with app.connection_for_write() as conn:  # the queue exists, empty, before anything runs
        conn.default_channel.queue_declare(queue=queue, durable=True, auto_delete=False)
    try:
        started = anyio.run(sleepers, ns, args.runs)
        executor = CeleryExecutor(app, queue)
        n_ticks = anyio.run(ticks, appmod.make_service("redis", ns, executor))
        print(json.dumps({
            "sleeping_runs": args.runs,
            "start_s": round(started, 1),
            "scheduler_ticks": n_ticks,
            "published": executor.published,
            "on_broker": on_broker(broker, queue),
            "broker": args.broker,
        }))
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(queue)
        anyio.run(drop, "redis", ns)


if __name__ == "__main__":
    main()
