"""A 1,000-item batch of CPU-bound items spread over 1 vs 2 Celery worker processes.

    python -m benchmarks.celery_fanout [--items 1000] [--work 40000] [--per 25] [--rounds 3]

Each item is ``crunch`` (``tests/adapters/_celery_app.py``): ``work`` iterations of pure Python
(a few ms). Setups, interleaved per round with fresh workers and store namespace: the
in-process ``FlowService`` (items run one after another in one process: the floor), and
``CeleryExecutor(fan_out=True, items_per_task=per)`` with 1 and 2 ``--pool=solo`` workers on
the Redis broker with the Redis store. Measured: ``start`` until the run is settled
(completed), after a warm-up run of 20 items. Prints the median of the rounds (min-max) and the
speed-up of 2 workers over 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import anyio

from flowcraft import FlowService
from tests.adapters import _celery_app as appmod
from tests.adapters.test_celery import REDIS_BROKER, Workers, purge
from tests.service._support import drop


async def batch(svc: FlowService, items: int, work: int) -> float:
    """Seconds from ``start`` to the completed run of one ``items``-item batch."""
    t0 = time.perf_counter()
    handed = await svc.start("crunch", {"xs": [work] * items})
    done = handed if handed.status != "running" else await svc.settled(handed.run_id)
    dt = time.perf_counter() - t0
    assert done.status == "completed", done
    assert len(done.outputs["work_scatter"]) == items
    return dt


def cpu(pids: list[int]) -> list[float]:
    """CPU seconds (user + system) each process has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out = []
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        out.append((int(fields[11]) + int(fields[12])) / tick)
    return out


CPU: dict[str, list[float]] = {}  # per setup: CPU seconds of each worker during the batch


async def measure(
    svc: FlowService, items: int, work: int, pids: list[int] | None = None, label: str = ""
) -> float:
    try:
        await batch(svc, 20, work)  # workers up and connected
        before = cpu(pids or [])
        dt = await batch(svc, items, work)
        if pids:
            used = [b - a for a, b in zip(before, cpu(pids), strict=True)]
            CPU.setdefault(label, []).extend(sorted(used))
        return dt
    finally:
        await svc.store.close()


def spread(workers: int, items: int, work: int, per: int, tmp: Path) -> float:
    tag = uuid.uuid4().hex[:8]
    ns = f"bench{tag}"
    w = Workers(REDIS_BROKER, "redis", ns, f"bench-{tag}", tmp, FLOWCRAFT_CELERY_FANOUT=str(per))
    w.start(workers)
    try:
        app = appmod.make_app(w.broker)
        executor = appmod.CeleryExecutor(app, w.queue, fan_out=True, items_per_task=per)
        svc = appmod.make_service("redis", ns, executor)
        pids = [p.pid for p in w.procs]
        return anyio.run(measure, svc, items, work, pids, f"{workers} worker")
    finally:
        w.stop()
        purge(REDIS_BROKER, w.queue)
        anyio.run(drop, "redis", ns)


def in_process(items: int, work: int) -> float:
    ns = f"bench{uuid.uuid4().hex[:8]}"
    try:
        return anyio.run(measure, appmod.make_service("redis", ns), items, work)
    finally:
        anyio.run(drop, "redis", ns)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--work", type=int, default=40000, help="iterations per item")
    parser.add_argument("--per", type=int, default=25, help="items per message")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    times: dict[str, list[float]] = {"in-process": [], "1 worker": [], "2 workers": []}
    for r in range(args.rounds):
        for label in times:
            if label == "in-process":
                dt = in_process(args.items, args.work)
            else:
                dt = spread(int(label[0]), args.items, args.work, args.per, tmp)
            times[label].append(dt)
            print(f"round {r + 1} {label:12} {dt:7.2f} s", flush=True)
    print(f"\n{args.items} items x {args.work} iterations, {args.per} items per message, "
          f"median of {args.rounds} rounds (min-max)")
    for label, xs in times.items():
        print(f"{label:12} {statistics.median(xs):7.2f} s  ({min(xs):.2f}-{max(xs):.2f})")
    for label, used in CPU.items():
        print(f"CPU s per worker process, {label}(s): {' '.join(f'{u:.2f}' for u in used)}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    ratios = [a / b for a, b in zip(times["1 worker"], times["2 workers"], strict=True)]
    print(f"speed-up 2 vs 1 worker: {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f}, per round)")


if __name__ == "__main__":
    main()
