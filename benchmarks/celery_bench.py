"""Approvals per second through Celery (1, 2, 4 solo worker processes) vs the in-process service,
and the overhead per segment against a bare Celery task. RabbitMQ broker, PostgreSQL store.

    python -m benchmarks.celery_bench [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from pathlib import Path

import anyio
from redis import Redis

from flowcraft import FlowService
from tests.adapters import _celery_app as appmod
from tests.adapters.test_celery import AMQP, Workers, client, purge
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


def bare(w: Workers, n: int) -> float:
    app = appmod.make_app(w.broker)
    key = f"bare{uuid.uuid4().hex}"  # each task opens a Redis connection: an upper bound
    r = Redis.from_url("redis://127.0.0.1:6379/13")
    t0 = time.perf_counter()
    for _ in range(n):
        app.send_task("flowcraft-tests.bare", args=[key], queue=w.queue)
    while int(r.get(key) or 0) < n:
        time.sleep(0.01)  # noqa: TID251  (a benchmark driver, not flowcraft)
    dt = time.perf_counter() - t0
    r.delete(key)
    return dt


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    tmp = Path(tempfile.mkdtemp())
    ns = f"bench{uuid.uuid4().hex[:8]}"
    inproc = appmod.make_service("postgres", ns)
    dt = anyio.run(approvals, inproc, n)
    anyio.run(inproc.store.close)
    print(f"in-process (postgres): {n / dt:8.1f} approvals/s  ({n} runs, 2 segments each)")
    for workers in (1, 2, 4):
        tag = uuid.uuid4().hex[:8]
        w = Workers(AMQP, "postgres", ns, f"bench-{tag}", tmp)
        w.start(workers)
        try:
            svc = client(w)
            anyio.run(approvals, svc, 5)  # warm-up: workers up and connected
            dt = anyio.run(approvals, svc, n)
            line = f"celery x{workers}:          {n / dt:8.1f} approvals/s"
            if workers == 1:
                seg = dt / (2 * n)
                b = bare(w, 2 * n) / (2 * n)
                line += f"  ({seg * 1e3:.2f} ms/segment vs bare task {b * 1e3:.2f} ms/message)"
            print(line, flush=True)
            anyio.run(svc.store.close)
        finally:
            w.stop()
            purge(AMQP, w.queue)
    anyio.run(drop, "postgres", ns)


if __name__ == "__main__":
    main()
