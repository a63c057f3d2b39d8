"""Approvals per second through Celery (1, 2, 4 worker processes) vs the in-process service,
and the overhead per segment against a bare Celery task. Redis broker; Redis and PostgreSQL
stores; plus RabbitMQ with one worker, ``--pool=solo`` against ``--pool=threads -c 1``.

    python -m benchmarks.celery_bench [--runs N] [--rounds R]

Every setup runs once per round, in the same order each round (interleaved), with fresh
workers and a fresh store namespace; the table gives the median of the rounds and the spread
(min-max). Each measurement runs in one event loop (a store's connections belong to it).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from redis import Redis

from flowcraft import FlowService
from tests.adapters import _celery_app as appmod
from tests.adapters.test_celery import AMQP, REDIS_BROKER, Workers, client, purge
from tests.service._support import drop


async def approvals(svc: FlowService, n: int) -> float:
    """Seconds for n runs: start → awaiting → approve → completed, all in flight at once.

    With an executor every call only hands over; one poller then waits for the outcomes.
    """
    t0 = time.perf_counter()
    ids: list[str] = []

    async def start() -> None:
        ids.append((await svc.start("approval", {})).run_id)

    async def approve(run_id: str) -> None:
        await svc.resume(run_id, {"action": "approved"})

    for step in ("start", "approve"):
        async with anyio.create_task_group() as tg:
            for i in range(n):
                if step == "start":
                    tg.start_soon(start)
                else:
                    tg.start_soon(approve, ids[i])
        for run_id in ids:
            r = await svc.settled(run_id)
            assert r.status == ("awaiting" if step == "start" else "completed"), r
    return time.perf_counter() - t0


async def measure(svc: FlowService, n: int, warm: int) -> float:
    try:
        if warm:
            await approvals(svc, warm)  # workers up and connected
        return await approvals(svc, n)
    finally:
        await svc.store.close()


def bare(w: Workers, n: int) -> float:
    """Seconds for n bare tasks (one Redis INCR each on a reused connection), sent at once."""
    app = appmod.make_app(w.broker)
    key = f"bare{uuid.uuid4().hex}"
    r = Redis.from_url("redis://127.0.0.1:6379/13")
    t0 = time.perf_counter()
    with app.producer_or_acquire() as producer:
        for _ in range(n):
            app.send_task("flowcraft-tests.bare", args=[key], queue=w.queue, producer=producer)
    while int(r.get(key) or 0) < n:
        time.sleep(0.002)  # noqa: TID251  (a benchmark driver, not flowcraft)
    dt = time.perf_counter() - t0
    r.delete(key)
    r.close()
    return dt


def through_celery(
    broker: str, kind: str, workers: int, n: int, tmp: Path, pool: str = "solo"
) -> tuple[float, float | None]:
    """(approvals/s, bare ms/message at 1 worker or None)."""
    tag = uuid.uuid4().hex[:8]
    ns = f"bench{tag}"
    w = Workers(broker, kind, ns, f"bench-{tag}", tmp, pool=pool)
    w.start(workers)
    try:
        dt = anyio.run(measure, client(w), n, 5)
        b = None
        if workers == 1:
            bare(w, 10)  # warm-up
            b = bare(w, 2 * n) / (2 * n) * 1e3
        return n / dt, b
    finally:
        w.stop()
        purge(broker, w.queue)
        anyio.run(drop, kind, ns)


def in_process(kind: str, n: int) -> float:
    ns = f"bench{uuid.uuid4().hex[:8]}"
    try:
        return n / anyio.run(measure, appmod.make_service(kind, ns), n, 0)
    finally:
        anyio.run(drop, kind, ns)


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):8.1f}  ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200, help="approval runs per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--stores", default="redis,postgres")
    parser.add_argument("--no-amqp", action="store_true")
    args = parser.parse_args()
    n = args.runs
    tmp = Path(tempfile.mkdtemp())
    setups: list[tuple[str, str, str, int, str]] = []  # label, broker, store, workers, pool
    for kind in args.stores.split(","):
        setups.append((f"in-process, {kind}", "", kind, 0, ""))
        for k in (1, 2, 4):
            setups.append((f"redis broker, {kind}, {k} solo", REDIS_BROKER, kind, k, "solo"))
    if not args.no_amqp:
        for pool in ("solo", "threads"):
            setups.append((f"rabbitmq, postgres, 1 {pool}", AMQP, "postgres", 1, pool))
    rates: dict[str, list[float]] = {s[0]: [] for s in setups}
    seg: dict[str, list[float]] = {}
    bares: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for label, broker, kind, k, pool in setups:
            if k == 0:
                rate = in_process(kind, n)
            else:
                rate, b = through_celery(broker, kind, k, n, tmp, pool)
                if b is not None:
                    seg.setdefault(label, []).append(1e3 / (2 * rate))
                    bares.setdefault(label, []).append(b)
            rates[label].append(rate)
            print(f"round {r + 1} {label:34} {rate:8.1f} approvals/s", flush=True)
    print(f"\n{n} approvals (2 segments each), median of {args.rounds} rounds (min-max)")
    for label, xs in rates.items():
        print(f"{label:34} {spread(xs)} approvals/s")
    print("\nat 1 worker: ms per segment vs ms per bare task message")
    for label in seg:
        print(f"{label:34} {spread(seg[label])} ms/segment  vs bare {spread(bares[label])} ms")


if __name__ == "__main__":
    main()
