"""SqliteStore keeps stats counts by triggers: exact under races, conflicts and deletes."""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime
from pathlib import Path

import anyio

from flowcraft import RevisionConflictError
from flowcraft.stores import SqliteStore, StoredRun
from flowcraft.stores._base import compute_stats

T0 = datetime(2030, 1, 1, tzinfo=UTC)
STATUSES = ["awaiting", "running", "completed", "cancelled"]


async def test_counts_match_a_full_scan_after_racing_writes_conflicts_and_deletes(
    tmp_path: Path,
) -> None:
    """Concurrent compare-and-sets (many losing), deletes and reopening: stats stay exact."""
    store = SqliteStore(tmp_path / "s.db")
    rng = random.Random(7)
    for i in range(40):
        await store.create(
            StoredRun(
                run_id=f"r{i}",
                flow_id=f"f{i % 3}",
                status="running",
                revision=0,
                created_at=T0,
                updated_at=T0,
            )
        )

    async def writer(i: int) -> None:
        for _ in range(5):
            run = await store.get(f"r{i % 40}")
            status = rng.choice(STATUSES)
            reasons = ("wait", "timer")[: rng.randint(0, 2)] if status == "awaiting" else ()
            new = StoredRun(
                run_id=run.run_id,
                flow_id=rng.choice(["f0", "f1", "f9"]),
                status=status,
                revision=run.revision + 1,
                created_at=T0,
                updated_at=T0,
                reasons=reasons,
                awaiting=reasons,
            )
            with contextlib.suppress(RevisionConflictError):
                await store.save(new, run.revision)

    async with anyio.create_task_group() as tg:
        for i in range(80):
            tg.start_soon(writer, i)
    for i in range(0, 40, 7):
        run = await store.get(f"r{i}")
        await store.delete(run.run_id, run.revision)
    everything = list((await store.list(limit=1000)).runs)
    assert await store.stats(T0) == compute_stats(everything, T0)
    await store.close()
    reopened = SqliteStore(tmp_path / "s.db")
    assert await reopened.stats(T0) == compute_stats(everything, T0)
    await reopened.close()
