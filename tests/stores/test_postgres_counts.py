"""PostgresStore keeps stats counts by trigger: exact under races, conflicts, deletes, rollbacks."""

from __future__ import annotations

import contextlib
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import anyio

from flowcraft import RevisionConflictError
from flowcraft.stores import PostgresStore, StoredRun
from flowcraft.stores._base import compute_stats
from tests.service._support import POSTGRES_DSN, drop, unavailable

T0 = datetime(2030, 1, 1, tzinfo=UTC)
STATUSES = ["awaiting", "running", "completed", "cancelled"]


async def _store(namespace: str) -> PostgresStore:
    store = PostgresStore(POSTGRES_DSN, namespace=namespace, pool_size=4)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        await store.close()
        unavailable("postgres store", exc)
    return store


async def _scan(store: PostgresStore) -> Any:
    return compute_stats(list((await store.list(limit=1000)).runs), T0)


async def test_counts_match_a_full_scan_after_racing_writes_conflicts_deletes_and_rollbacks() -> (
    None
):
    """Concurrent compare-and-sets on a pool (many losing), deletes, a rolled-back write,
    folding and reopening: stats stay exactly what a full scan counts."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = await _store(namespace)
    rng = random.Random(7)
    try:
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
                    status=status,  # type: ignore[arg-type]
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
        assert await store.stats(T0) == await _scan(store)

        # A write rolled back (after the trigger ran) leaves the counts as they were.
        async def rolled_back(conn: Any) -> None:
            async with conn.transaction(force_rollback=True):
                await conn.execute(f"UPDATE {namespace}_runs SET status = 'failed'")
                await conn.execute(f"DELETE FROM {namespace}_runs WHERE run_id = 'r1'")

        await store._run(rolled_back)
        assert await store.stats(T0) == await _scan(store)

        # Folding the backends' shards into one keeps every count.
        await store._fetchall(store._sql.fold_counts + " RETURNING 1", ())
        assert await store.stats(T0) == await _scan(store)
        await store.delete_finished(datetime(2031, 1, 1, tzinfo=UTC))
        assert await store.stats(T0) == await _scan(store)
    finally:
        await store.close()
    reopened = await _store(namespace)
    try:
        assert await reopened.stats(T0) == await _scan(reopened)
    finally:
        await reopened.close()
        await drop("postgres", namespace)


async def test_a_table_without_the_trigger_is_counted_once_when_opened() -> None:
    """Runs stored before the counts existed (trigger missing) are counted on first connect."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = await _store(namespace)
    try:
        for i in range(5):
            await store.create(
                StoredRun(
                    run_id=f"r{i}",
                    flow_id="f",
                    status="awaiting" if i % 2 else "completed",
                    revision=0,
                    created_at=T0,
                    updated_at=T0,
                    reasons=("wait",) if i % 2 else (),
                )
            )

        async def old_table(conn: Any) -> None:
            await conn.execute(f"DROP TRIGGER {namespace}_counts_trg ON {namespace}_runs")
            await conn.execute(f"DROP TRIGGER {namespace}_counts_new ON {namespace}_runs")

        await store._run(old_table)
        for i in range(5, 8):  # stored while nothing counts
            await store.create(
                StoredRun(
                    run_id=f"r{i}",
                    flow_id="g",
                    status="failed",
                    revision=0,
                    created_at=T0,
                    updated_at=T0,
                )
            )
    finally:
        await store.close()
    reopened = await _store(namespace)
    try:
        stats = await reopened.stats(T0)
        assert stats == await _scan(reopened)
        assert stats.by_status == {"awaiting": 2, "completed": 3, "failed": 3}
    finally:
        await reopened.close()
        await drop("postgres", namespace)
