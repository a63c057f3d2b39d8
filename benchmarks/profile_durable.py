"""Where a durable resume spends its time: ``python -m benchmarks.profile_durable [N] [LEVEL]``.

Starts N approval runs on a ``SqliteStore`` (``synchronous=LEVEL``, default FULL) without
profiling, then profiles only the N resumes (claim, the ``pay`` node, commit) with cProfile and
prints the top entries by own time and by cumulative time. Time the event loop spends waiting
for the store's worker thread (the SQLite call and its fsync) shows up under ``select``.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

import anyio

from flowcraft import FlowRuntime
from flowcraft.stores import FlowService, SqliteStore

from .durable_side import _approval_flow


async def main(n: int, level: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteStore(Path(tmp) / "p.db", synchronous=level)  # type: ignore[arg-type]
        service = FlowService(FlowRuntime(), store, flows=[_approval_flow()])
        for i in range(n):
            await service.start("approval", run_id=f"r{i}")
        prof = cProfile.Profile()
        t = time.perf_counter()
        prof.enable()
        for i in range(n):
            await service.resume(f"r{i}", {"action": "approved"}, idempotency_key="k")
        prof.disable()
        took = time.perf_counter() - t
        await store.close()
    print(f"{n} resumes, synchronous={level}: {took / n * 1e6:.0f} µs each under the profiler")
    stats = pstats.Stats(prof).strip_dirs()
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumtime").print_stats(25)


if __name__ == "__main__":
    anyio.run(
        main,
        int(sys.argv[1]) if len(sys.argv) > 1 else 500,
        sys.argv[2] if len(sys.argv) > 2 else "FULL",
    )
