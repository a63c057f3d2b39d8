"""``PostgresStore``: runs in PostgreSQL through psycopg 3 (``pip install flowcraft[postgres]``)."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import anyio

from flowcraft._errors import RevisionConflictError, RunNotFoundError, StoreError
from flowcraft.stores._base import (
    COUNT_MAX,
    HISTORY_CHUNK,
    HistoryRecord,
    RunExistsError,
    RunPage,
    RunStats,
    StoredRun,
    check_id,
    check_int,
    check_list_args,
    check_namespace,
    check_run,
    checkpoints_of,
    decode_history_chunk,
    decode_row,
    decode_rows,
    due_limit,
    lease_end,
    out_of_range,
    page_of_sql_rows,
    to_micros,
)
from flowcraft.stores._group import Group, Write
from flowcraft.stores._sql import Dialect, build_stats

if TYPE_CHECKING:
    from types import ModuleType

    from psycopg import AsyncConnection

__all__ = ["PostgresStore"]

T = TypeVar("T")
#: A single-run write: the statement, its parameters, whether it must be synced.
_Statement: TypeAlias = tuple[str, Sequence[Any], bool]
log = logging.getLogger("flowcraft.stores")
_RETRY = frozenset({"40P01", "40001"})  # deadlock detected, serialization failure
_FOLD_AT = 1000  # count rows summed by ``stats`` before it folds the backends' shards


class PostgresStore:
    """A ``RunStore`` in PostgreSQL tables named after ``namespace``.

    Compare-and-set is one ``UPDATE ... WHERE revision = %s``; history and idempotency records
    are written in the same transaction. Needs the ``postgres`` extra (psycopg 3) and asyncio.
    Calls run on a pool of up to ``pool_size`` connections, opened as needed, so concurrent
    segments do not queue behind one connection.

    The driver prepares each statement on a connection after a few runs, and PostgreSQL keeps
    the plan it then made for the connection's life, until the tables are analyzed again. Keep
    autovacuum on (the default), or ``ANALYZE`` after a bulk load: a table analyzed while it
    was tiny (a sequential scan is cheapest) would be scanned whole by every write of a
    long-lived connection as it grows.

    Args:
        conninfo: A libpq connection string or URL, e.g. ``"postgresql://user@host/db"``.
        namespace: Prefix of the tables.
        pool_size: The most connections open (and calls in flight) at once.
    """

    #: Writes are round trips: the durable scheduler runs the next firings while one commits.
    _remote = True

    def __init__(
        self, conninfo: str = "", *, namespace: str = "flowcraft", pool_size: int = 8
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.conninfo = conninfo
        self.namespace = check_namespace(namespace)
        self.pool_size = pool_size
        self._sql = Dialect(namespace, postgres=True)
        self._free: builtins.list[AsyncConnection[tuple[Any, ...]]] = []  # idle connections
        # Idle connections with ``synchronous_commit = off`` (claims: ``durable=False``).
        self._free_lazy: builtins.list[AsyncConnection[tuple[Any, ...]]] = []
        self._group: Group[_Statement] = Group(self._flush)
        # Reads may be made again: a cancelled reader leaves at once (see ``Group``).
        self._reads: Group[tuple[str, str]] = Group(self._read_batch, shield=False)
        self._slots = anyio.Semaphore(pool_size)
        self._schema_lock = anyio.Lock()
        self._schema_ready = False

    def __repr__(self) -> str:
        return f"flowcraft.stores.PostgresStore(namespace={self.namespace!r})"

    async def _connect(self, lazy: bool = False) -> AsyncConnection[tuple[Any, ...]]:
        """A new connection of the kind asked for, the schema made once per store.

        Closed, not left to the garbage collector, if its setup fails or is cancelled.
        """
        psycopg = _psycopg()
        conn: AsyncConnection[tuple[Any, ...]] = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True
        )
        try:
            await self._set_up(conn, lazy)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await conn.close()
            raise
        return conn

    async def _set_up(self, conn: AsyncConnection[tuple[Any, ...]], lazy: bool) -> None:
        if lazy:
            # Commits on this connection return before their WAL is flushed; the flush of
            # the next synchronous commit (the segment's outcome) covers them (the WAL is one
            # sequence), so nothing a caller was answered with is unsynced.
            await conn.execute("SET synchronous_commit = off")
        if not self._schema_ready:
            async with self._schema_lock:
                if not self._schema_ready:
                    async with conn.transaction():
                        # Serialize schema creation: concurrent CREATE ... IF NOT EXISTS collide.
                        lock = "SELECT pg_advisory_xact_lock(hashtext(%s))"
                        await conn.execute(lock, (self._sql.runs,))
                        for statement in self._sql.schema:
                            await conn.execute(statement)
                    self._schema_ready = True

    async def _run(
        self,
        fn: Callable[[AsyncConnection[tuple[Any, ...]]], Awaitable[T]],
        *,
        tx: bool = False,
        durable: bool = True,
    ) -> T:
        """Run ``fn`` on a pooled connection (up to ``pool_size`` calls at once).

        ``durable=False`` takes a connection that commits asynchronously (a claim).
        """
        psycopg = _psycopg()
        free = self._free if durable else self._free_lazy
        async with self._slots:
            conn = free.pop() if free else None
            keep = False
            try:
                if conn is None or conn.closed:
                    conn = None
                    spare = self._free_lazy if durable else self._free
                    in_use = self.pool_size - self._slots.value  # this call's slot included
                    if spare and in_use + len(self._free) + len(self._free_lazy) > self.pool_size:
                        # At most pool_size connections of both kinds together: an idle one
                        # of the other kind is switched, not closed for a new one.
                        conn = await self._switched(spare.pop(), durable)
                    if conn is None:
                        conn = await self._connect(lazy=not durable)
                if tx:
                    async with conn.transaction():
                        result = await fn(conn)
                else:
                    result = await fn(conn)
                keep = True
                return result
            except psycopg.Error as exc:
                keep = not (conn is None or conn.closed or conn.broken)
                raise StoreError(f"postgres store {self.namespace!r}: {exc}") from exc
            except Exception:
                keep = True  # a refusal of ours (conflict, not found): the connection is fine
                raise
            finally:
                # A connection interrupted by cancellation may be mid-protocol, one an error
                # left in a transaction or a pipeline is not idle: drop it.
                if keep and conn is not None and not conn.closed:
                    keep = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                if conn is not None and keep and not conn.closed:
                    free.append(conn)
                elif conn is not None and not conn.closed:
                    with anyio.CancelScope(shield=True):
                        await conn.close()

    async def _switched(
        self, conn: AsyncConnection[tuple[Any, ...]], durable: bool
    ) -> AsyncConnection[tuple[Any, ...]] | None:
        """An idle connection of the other kind, switched to ``durable``'s commit setting.

        One round trip, where closing it for a new one starts a backend (milliseconds). None
        (the connection closed) if the server refuses: it must never serve the wrong kind.
        Synced is the session's own setting (``RESET``: what the server, role, database or
        connection string chose, e.g. ``remote_apply``), as on a new connection, never a
        hard-coded ``on`` that would wait for less than the server was told to.
        """
        statement = "RESET synchronous_commit" if durable else "SET synchronous_commit = off"
        try:
            await conn.execute(statement)
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await conn.close()
            if isinstance(exc, _psycopg().Error):  # e.g. dropped while idle: open a new one
                return None
            raise
        return conn

    async def _fetchall(
        self, query: str, params: Sequence[Any], *, durable: bool = True
    ) -> builtins.list[tuple[Any, ...]]:
        async def op(conn: AsyncConnection[tuple[Any, ...]]) -> builtins.list[tuple[Any, ...]]:
            # Binary results: a body (bytea) arrives as its bytes, not as hex text to parse.
            cur = await conn.execute(query, params, binary=True)
            return await cur.fetchall()

        return await self._run(op, durable=durable)

    # --- RunStore ----------------------------------------------------------------------------

    async def create(
        self, run: StoredRun, *, history: Sequence[HistoryRecord] = (), durable: bool = True
    ) -> None:
        """Store a new run; raise ``RunExistsError`` if the id is taken.

        One statement (one round trip): the insert, then its history where it landed.
        ``durable=False`` (a claim) commits without waiting for the WAL flush.
        """
        check_run(run, history)
        sql = self._sql
        query = f"WITH u AS ({sql.insert_run} ON CONFLICT (run_id) DO NOTHING RETURNING run_id)"
        values: builtins.list[Any] = [*sql.row(run)]
        if history:  # one history row holds the records
            query += (
                f", h AS (INSERT INTO {sql.history} (run_id, body) SELECT u.run_id, %s FROM u "
                "RETURNING 1)"
            )
            values.append(sql.history_row(run.run_id, history)[1])
        query += " SELECT count(*) FROM u"

        if await self._group.submit((query, values, durable), gather=True) != 1:
            raise RunExistsError(run.run_id)

    async def save(
        self,
        run: StoredRun,
        expected_revision: int,
        *,
        history: Sequence[HistoryRecord] = (),
        idempotency: tuple[str, bytes] | None = None,
        checkpoint: int = 0,
        durable: bool = True,
    ) -> None:
        """Replace the run if its stored revision is ``expected_revision``, atomically.

        ``durable=False`` (a claim) commits without waiting for the WAL flush.
        """
        check_run(run, history)
        check_int("expected_revision", expected_revision, run.run_id)
        checkpoint = min(checkpoint, COUNT_MAX)
        sql = self._sql
        params = sql.update_params(run, expected_revision, checkpoint)
        # One statement (atomic on its own, one round trip): the compare-and-set, then what
        # goes with it, each only where the update landed.
        parts = [f"WITH u AS ({sql.update_run} RETURNING run_id)"]
        values: builtins.list[Any] = [*params]
        rid = run.run_id
        if checkpoint != 1:
            # The replaced revision, if it is a checkpoint, joins the earlier ones (every
            # sub-statement reads the rows as they were before the update).
            parts.append(f", o AS ({sql.move_after_update})")
            values.extend([rid, expected_revision])
        if history:
            # The records go to the end of the run's last history row while it is small
            # (``a``), else to a new row (``h``).
            hist = sql.history
            parts.append(
                f", a AS (UPDATE {hist} SET body = body || %s WHERE EXISTS (SELECT 1 FROM u) "
                f"AND run_id = %s AND seq = (SELECT max(seq) FROM {hist} WHERE run_id = %s) "
                "AND length(body) < %s AND (get_byte(body, 0) < 128 "
                "OR get_byte(body, 0) IN (204, 205, 206)) RETURNING 1), "
                f"h AS (INSERT INTO {hist} (run_id, body) SELECT u.run_id, %s FROM u "
                "WHERE NOT EXISTS (SELECT 1 FROM a) RETURNING 1)"
            )
            chunk = sql.history_row(rid, history)[1]
            values.extend([chunk, rid, rid, HISTORY_CHUNK, chunk])
        if idempotency is not None:
            parts.append(
                f", m AS (INSERT INTO {sql.idem} (run_id, key, result) SELECT u.run_id, %s, %s "
                "FROM u ON CONFLICT (run_id, key) DO NOTHING RETURNING 1)"
            )
            values.extend(idempotency)
        if sql.must_trim(expected_revision, checkpoint):
            # The run row is the newest checkpoint: keep checkpoint - 1 earlier ones, the one
            # moved by ``o`` (which this statement does not see) among them.
            cp = sql.checkpoints
            moved = "(SELECT count(*) FROM o)" if checkpoint != 1 else "0"
            parts.append(
                f", t AS (DELETE FROM {cp} WHERE EXISTS (SELECT 1 FROM u) AND run_id = %s "
                f"AND revision <= (SELECT revision FROM {cp} WHERE run_id = %s "
                f"ORDER BY revision DESC LIMIT 1 OFFSET %s - {moved}) RETURNING 1)"
            )
            values.extend([rid, rid, checkpoint - 1])
        parts.append(" SELECT count(*) FROM u")
        query = "".join(parts)

        if await self._group.submit((query, values, durable), gather=True) != 1:
            rows = await self._fetchall(sql.get_revision, (rid,))
            if not rows:
                raise RunNotFoundError(rid, self)
            raise RevisionConflictError(rid, expected_revision, int(rows[0][0]))

    async def _flush(self, batch: builtins.list[Write[_Statement]]) -> None:
        """Run a batch of single-run writes; each result is the count of rows it wrote.

        One write runs alone (autocommit). Several run in one transaction, pipelined: one
        round trip and one WAL flush for all (synchronous if any of them must be). A
        compare-and-set that loses writes nothing and counts 0, so no write of the batch can
        abort the others; should the transaction fail anyway (a driver error, a constraint),
        each write is run again on its own and gets its own outcome.
        """
        if len(batch) > 1:
            durable = any(w.payload[2] for w in batch)

            async def op(conn: AsyncConnection[tuple[Any, ...]]) -> builtins.list[int]:
                async with conn.pipeline():
                    cursors = [await conn.execute(w.payload[0], w.payload[1]) for w in batch]
                    rows = [await cur.fetchone() for cur in cursors]
                return [0 if row is None else int(row[0]) for row in rows]

            try:
                counts = await self._run(op, tx=True, durable=durable)
            except Exception:
                log.debug("postgres store %r: a batch failed; writing one by one", self.namespace)
            else:
                for write, count in zip(batch, counts, strict=True):
                    write.result = count
                return
        for write in batch:
            query, values, durable = write.payload
            try:
                rows = await self._retrying(query, values, durable=durable)
            except Exception as exc:
                write.error = exc
            else:
                write.result = int(rows[0][0]) if rows else 0

    async def _retrying(
        self, query: str, params: Sequence[Any], *, durable: bool = True
    ) -> builtins.list[tuple[Any, ...]]:
        """``_fetchall`` of one statement, run again if rolled back as a deadlock's victim.

        PostgreSQL rolls a deadlock or serialization victim back whole: 3 tries in all.
        """
        for attempt in range(3):
            try:
                return await self._fetchall(query, params, durable=durable)
            except StoreError as exc:
                if attempt == 2 or getattr(exc.__cause__, "sqlstate", None) not in _RETRY:
                    raise
        raise AssertionError("unreachable")

    async def save_many(
        self, writes: Sequence[tuple[StoredRun, int]]
    ) -> builtins.list[Exception | None]:
        """``save`` each ``(run, expected_revision)`` in one transaction (claims of a tick).

        The updates are pipelined (one round trip); each is its own compare-and-set: None
        where it landed, else its error (a conflicting or missing run is refused alone).
        """
        sql = self._sql
        refused = [out_of_range(run, expected) for run, expected in writes]
        if any(no is not None for no in refused):  # refused alone; the others go on
            kept = [w for w, no in zip(writes, refused, strict=True) if no is None]
            done = iter(await self.save_many(kept) if kept else [])
            return [no if no is not None else next(done) for no in refused]
        params = [
            (*sql.update_params(run, expected), run.run_id, expected) for run, expected in writes
        ]
        if not params:
            return []

        async def op(conn: AsyncConnection[tuple[Any, ...]]) -> builtins.list[Exception | None]:
            landed: builtins.list[bool] = []
            async with conn.cursor() as cur:
                await cur.executemany(sql.update_moving, params, returning=True)
                while True:
                    row = await cur.fetchone()
                    landed.append(row is not None and int(row[0]) == 1)
                    if not cur.nextset():
                        break
            lost = [run.run_id for (run, _), ok in zip(writes, landed, strict=True) if not ok]
            found: dict[str, int] = {}
            if lost:
                query = f"SELECT run_id, revision FROM {sql.runs} WHERE run_id = ANY(%s)"
                rows = await (await conn.execute(query, (lost,))).fetchall()
                found = {str(r[0]): int(r[1]) for r in rows}
            out: builtins.list[Exception | None] = []
            for (run, expected), ok in zip(writes, landed, strict=True):
                if ok:
                    out.append(None)
                elif run.run_id in found:
                    out.append(RevisionConflictError(run.run_id, expected, found[run.run_id]))
                else:
                    out.append(RunNotFoundError(run.run_id, self))
            return out

        return await self._run(op, tx=True)

    async def get(self, run_id: str) -> StoredRun:
        """The stored run; raise ``RunNotFoundError`` if there is none."""
        check_id(run_id)
        rows = await self._fetchall(self._sql.get_run, (run_id,))
        if not rows:
            raise RunNotFoundError(run_id, self)
        return decode_row(rows[0])

    async def list(
        self,
        *,
        status: str | None = None,
        flow_id: str | None = None,
        reason: str | None = None,
        expired: bool | None = None,
        now: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Runs matching every filter given, oldest first, a page at a time."""
        limit = check_list_args(expired, now, limit)
        query, params = self._sql.list_query(status, flow_id, reason, expired, now, limit, cursor)
        rows = await self._fetchall(query, params)
        return page_of_sql_rows(rows, limit)

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[StoredRun]:
        """Awaiting runs whose ``due_at`` is at or before ``now``, earliest first."""
        rows = await self._fetchall(self._sql.due, (to_micros(now), due_limit(limit)))
        return decode_rows(rows)

    async def stats(self, now: datetime) -> RunStats:
        """Counts by status, by flow, awaiting by reason, and expired at ``now``."""
        sql = self._sql
        rows = await self._fetchall(sql.read_counts, (to_micros(now),))
        by: dict[str, builtins.list[tuple[str, int]]] = {"st": [], "fl": [], "rs": [], "ex": []}
        summed = 0
        for kind, name, n, shards in rows:
            by[str(kind)].append((str(name), int(n)))
            summed = max(summed, int(shards or 0))
        if summed > _FOLD_AT:
            await self._fetchall(sql.fold_counts + " RETURNING 1", ())
        expired = by["ex"][0][1] if by["ex"] else 0
        reasons = [(name, n) for name, n in by["rs"] if name and n]
        return build_stats(
            [r for r in by["st"] if r[1]],
            [r for r in by["fl"] if r[1]],
            reasons,
            expired,
            await self._fetchall(sql.stats_awaiting, ()),
        )

    async def history(self, run_id: str) -> builtins.list[HistoryRecord]:
        """The run's audit trail, oldest first."""
        check_id(run_id)
        rows = await self._fetchall(self._sql.read_history, (run_id,))
        return [h for r in rows for h in decode_history_chunk(bytes(r[0]), run_id)]

    async def checkpoints(self, run_id: str) -> builtins.list[StoredRun]:
        """The run's kept checkpoints, oldest first."""
        check_id(run_id)
        rows = await self._fetchall(self._sql.read_checkpoints, (run_id, run_id))
        return checkpoints_of(rows)

    async def remember(self, run_id: str, key: str, result: bytes) -> bool:
        """Record ``result`` under an idempotency key; False (keeping the first) if known."""
        check_id(run_id, key)

        async def op(conn: AsyncConnection[tuple[Any, ...]]) -> bool:
            cur = await conn.execute(self._sql.remember, (run_id, key, result))
            return cur.rowcount == 1

        return await self._run(op)

    async def recall(self, run_id: str, key: str) -> bytes | None:
        """The result remembered under the key, or None."""
        check_id(run_id, key)
        rows = await self._fetchall(self._sql.recall, (run_id, key))
        return bytes(rows[0][0]) if rows else None

    async def get_and_recall(self, run_id: str, key: str) -> tuple[StoredRun, bytes | None]:
        """``get`` and ``recall`` in one statement (one snapshot, one round trip).

        Calls made in the same moment (concurrent decisions) are read together, one
        statement for all of them (see ``_read_batch``).
        """
        check_id(run_id, key)
        row = await self._reads.submit((run_id, key), gather=True)
        if row is None:
            raise RunNotFoundError(run_id, self)
        result = row[-1]
        return decode_row(row), None if result is None else bytes(result)

    async def _read_batch(self, batch: builtins.list[Write[tuple[str, str]]]) -> None:
        """``get_and_recall`` of a batch: one statement, whatever its size (the row or None).

        Concurrent decisions read their runs at once: one statement, one pooled connection and
        one round trip for all, where each took its own (the driver's work per statement is
        most of the client's cost of a read). Reads arriving while a batch is in flight wait
        for the next one. Should that statement fail (one read the driver or the server
        refuses, a NUL in its key, or the server itself), each read is made again on its own
        and gets its own outcome: no read fails for another's sake.
        """
        sql = self._sql
        if len(batch) > 1:
            ids = [w.payload[0] for w in batch]
            keys = [w.payload[1] for w in batch]
            try:
                rows = await self._fetchall(sql.get_and_recall_many, (ids, keys))
            except Exception:
                log.debug("postgres store %r: a read batch failed; reading one by one",
                          self.namespace)
            else:
                for row in rows:
                    batch[int(row[0]) - 1].result = row[1:]
                return
        for write in batch:
            run_id, key = write.payload
            try:
                rows = await self._fetchall(sql.get_and_recall, (key, run_id))
            except Exception as exc:
                write.error = exc
            else:
                write.result = rows[0] if rows else None

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: datetime) -> bool:
        """Take or renew the named lease until ``now + ttl``."""
        until = to_micros(lease_end(now, ttl))
        rows = await self._fetchall(self._sql.acquire, (name, owner, until, to_micros(now)))
        return bool(rows)

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        await self._fetchall(self._sql.release + " RETURNING name", (name, owner))

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished runs last updated before ``before``; return how many.

        One statement: the runs, then their records (a statement of n rows counts them
        once, see ``Dialect._pg_counts``). A run changed meanwhile (rolled back, so no
        longer finished) is re-checked by PostgreSQL and left alone.
        """
        sql = self._sql
        query = (
            f"WITH d AS (DELETE FROM {sql.runs} WHERE {sql.is_finished} AND updated_at < %s "
            "RETURNING run_id)"
            + "".join(
                f", d{i} AS (DELETE FROM {table} WHERE run_id IN (SELECT run_id FROM d))"
                for i, table in enumerate((sql.history, sql.idem, sql.checkpoints))
            )
            + " SELECT count(*) FROM d"
        )
        # It locks the runs in its scan order: a deadlock with another writer is retried.
        rows = await self._retrying(query, (to_micros(before),))
        return int(rows[0][0])

    async def delete(self, run_id: str, expected_revision: int) -> None:
        """Delete a run and its records if its stored revision is ``expected_revision``."""
        check_id(run_id)
        check_int("expected_revision", expected_revision, run_id)
        sql = self._sql

        async def op(conn: AsyncConnection[tuple[Any, ...]]) -> None:
            cur = await conn.execute(sql.delete_run, (run_id, expected_revision))
            if cur.rowcount != 1:
                row = await (await conn.execute(sql.get_revision, (run_id,))).fetchone()
                if row is None:
                    raise RunNotFoundError(run_id, self)
                raise RevisionConflictError(run_id, expected_revision, int(row[0]))
            for statement in sql.delete[1:]:
                await conn.execute(statement, (run_id,))

        await self._run(op, tx=True)

    async def close(self) -> None:
        """Close the pooled connections."""
        free = [*self._free, *self._free_lazy]
        self._free, self._free_lazy = [], []
        for conn in free:
            await conn.close()


def _psycopg() -> ModuleType:
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the install
        msg = "PostgresStore needs psycopg 3: pip install 'flowcraft[postgres]'"
        raise StoreError(msg) from exc
    return psycopg
