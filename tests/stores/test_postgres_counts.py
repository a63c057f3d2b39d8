"""PostgresStore keeps stats counts by trigger: exact under races, conflicts, deletes, rollbacks."""

from __future__ import annotations

import contextlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import msgspec

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
            for trigger in ("trg", "ins", "del"):
                await conn.execute(f"DROP TRIGGER {namespace}_counts_{trigger} ON {namespace}_runs")

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


def _run(i: int, status: str, flow: str = "f") -> StoredRun:
    return StoredRun(
        run_id=f"r{i}",
        flow_id=flow,
        status=status,  # type: ignore[arg-type]
        revision=0,
        created_at=T0,
        updated_at=T0,
        reasons=("wait",) if status == "awaiting" else (),
    )


async def test_bulk_inserts_and_deletes_are_counted_once_per_statement() -> None:
    """A statement of thousands of rows (a copy into the table, ``delete_finished``) keeps
    the counts exact, and changes each counts row once, not once per run."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = await _store(namespace)
    runs = f"{namespace}_runs"
    try:
        await store.create(_run(0, "completed"))
        await store.create(_run(1, "awaiting", flow="g"))

        async def bulk_copy(conn: Any) -> int:
            cur = await conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position",
                (runs,),
            )
            cols = [r[0] for r in await cur.fetchall()]
            select = ", ".join(
                "t.run_id || '-' || g.n" if c == "run_id" else f"t.{c}" for c in cols
            )
            # 3,000 copies of each template, in one statement each, in one transaction
            async with conn.transaction():
                for template in ("r0", "r1"):
                    await conn.execute(
                        f"INSERT INTO {runs} ({', '.join(cols)}) SELECT {select} "
                        f"FROM generate_series(1, 3000) AS g(n), {runs} AS t "
                        f"WHERE t.run_id = '{template}'"
                    )
                # Writes of the counts table in this transaction: a few per statement
                # (its status, flow and reasons rows), not three per run.
                cur = await conn.execute(
                    "SELECT n_tup_ins + n_tup_upd FROM pg_stat_xact_user_tables "
                    "WHERE relname = %s",
                    (f"{namespace}_counts",),
                )
                row = await cur.fetchone()
                return int(row[0])

        assert await store._run(bulk_copy) <= 24  # counted per run: 18,000
        stats = await store.stats(T0)
        assert stats == await _scan_all(store)
        assert stats.by_status == {"completed": 3001, "awaiting": 3001}

        deleted = await store.delete_finished(datetime(2031, 1, 1, tzinfo=UTC))
        assert deleted == 3001
        stats = await store.stats(T0)
        assert stats == await _scan_all(store)
        assert stats.by_status == {"awaiting": 3001}
        assert stats.by_flow == {"g": 3001}
    finally:
        await store.close()
        await drop("postgres", namespace)


async def _scan_all(store: PostgresStore) -> Any:
    runs: list[StoredRun] = []
    cursor = None
    while True:
        page = await store.list(limit=1000, cursor=cursor)
        runs.extend(page.runs)
        cursor = page.next_cursor
        if cursor is None:
            return compute_stats(runs, T0)


async def test_tables_counted_per_row_move_to_per_statement_counts_when_opened() -> None:
    """A table made by an earlier release (insert/delete counted by a per-row trigger,
    ``_counts_new``) is moved to the per-statement triggers on open, its counts kept."""
    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = await _store(namespace)
    counts, runs = f"{namespace}_counts", f"{namespace}_runs"
    try:
        for i in range(6):
            await store.create(_run(i, "awaiting" if i % 2 else "completed"))

        async def earlier_release(conn: Any) -> None:
            # The triggers as the earlier release made them.
            await conn.execute(f"DROP TRIGGER {counts}_ins ON {runs}")
            await conn.execute(f"DROP TRIGGER {counts}_del ON {runs}")
            await conn.execute(
                f"""CREATE OR REPLACE FUNCTION {counts}_fn() RETURNS trigger
                LANGUAGE plpgsql AS $fn$ BEGIN
                  IF TG_OP = 'INSERT' THEN
                    INSERT INTO {counts} (kind, name, shard, n) VALUES
                      ('st', NEW.status, 0, 1), ('fl', NEW.flow_id, 0, 1),
                      ('rs', NEW.reasons, 0, 1)
                    ON CONFLICT (kind, name, shard) DO UPDATE SET n = {counts}.n + excluded.n;
                  ELSIF TG_OP = 'DELETE' THEN
                    INSERT INTO {counts} (kind, name, shard, n) VALUES
                      ('st', OLD.status, 0, -1), ('fl', OLD.flow_id, 0, -1),
                      ('rs', OLD.reasons, 0, -1)
                    ON CONFLICT (kind, name, shard) DO UPDATE SET n = {counts}.n + excluded.n;
                  ELSE
                    INSERT INTO {counts} (kind, name, shard, n) VALUES
                      ('st', OLD.status, 0, -1), ('fl', OLD.flow_id, 0, -1),
                      ('rs', OLD.reasons, 0, -1), ('st', NEW.status, 0, 1),
                      ('fl', NEW.flow_id, 0, 1), ('rs', NEW.reasons, 0, 1)
                    ON CONFLICT (kind, name, shard) DO UPDATE SET n = {counts}.n + excluded.n;
                  END IF;
                  RETURN NULL;
                END $fn$"""
            )
            await conn.execute(
                f"CREATE TRIGGER {counts}_new AFTER INSERT OR DELETE ON {runs} "
                f"FOR EACH ROW EXECUTE FUNCTION {counts}_fn()"
            )

        await store._run(earlier_release)
        await store.create(_run(6, "failed"))  # counted by the earlier release's trigger
    finally:
        await store.close()
    reopened = await _store(namespace)
    try:

        async def triggers(conn: Any) -> dict[str, bool]:
            cur = await conn.execute(
                "SELECT tgname, (tgtype & 1) = 1 FROM pg_trigger "
                "WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal",
                (runs,),
            )
            return {str(name): bool(per_row) for name, per_row in await cur.fetchall()}

        # insert/delete now per statement; the update trigger still per row
        assert await reopened._run(triggers) == {
            f"{counts}_ins": False,
            f"{counts}_del": False,
            f"{counts}_trg": True,
        }
        await reopened.create(_run(7, "awaiting"))
        run3 = await reopened.get("r3")
        await reopened.save(
            msgspec.structs.replace(run3, status="completed", reasons=(), revision=1), 0
        )
        stats = await reopened.stats(T0)
        assert stats == await _scan(reopened)
        assert stats.by_status == {"awaiting": 3, "completed": 4, "failed": 1}
        assert await reopened.delete_finished(datetime(2031, 1, 1, tzinfo=UTC)) == 5
        stats = await reopened.stats(T0)
        assert stats == await _scan(reopened)
        assert stats.by_status == {"awaiting": 3}
    finally:
        await reopened.close()
        await drop("postgres", namespace)


async def test_delete_finished_that_deadlocks_with_another_writer_is_run_again() -> None:
    """Another transaction holds one finished run and then asks for one ``delete_finished``
    already locked: PostgreSQL rolls ``delete_finished`` back as the deadlock's victim, and it
    is run again once the other writer is done (no ``StoreError``, every run deleted)."""
    import psycopg

    namespace = f"t{uuid.uuid4().hex[:12]}"
    store = await _store(namespace)
    runs = f"{namespace}_runs"
    try:
        for i in range(2):  # r0 older than r1: the delete's scan locks r0 first
            await store.create(
                msgspec.structs.replace(_run(i, "completed"), updated_at=T0 + timedelta(seconds=i))
            )
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN) as other:
            await other.execute("SET deadlock_timeout = '30s'")  # the victim is the delete
            await other.execute(f"UPDATE {runs} SET revision = revision WHERE run_id = 'r1'")
            async with anyio.create_task_group() as tg:
                deleted: list[int] = []

                async def delete() -> None:
                    deleted.append(await store.delete_finished(datetime(2031, 1, 1, tzinfo=UTC)))

                tg.start_soon(delete)
                await anyio.sleep(0.5)  # the delete holds r0 and waits for r1
                # r0 is the delete's: this waits until the deadlock check (1 s) rolls it back
                await other.execute(f"UPDATE {runs} SET revision = revision WHERE run_id = 'r0'")
                await other.commit()
        assert deleted == [2]
        assert (await store.stats(T0)).by_status == {}
    finally:
        await store.close()
        await drop("postgres", namespace)
