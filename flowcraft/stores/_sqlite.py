"""``SqliteStore``: the embedded default, stdlib ``sqlite3`` in WAL mode behind worker threads."""

from __future__ import annotations

import builtins
import contextlib
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread

from flowcraft._errors import RevisionConflictError, RunNotFoundError, StoreError
from flowcraft.stores._base import (
    COUNT_MAX,
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

__all__ = ["SqliteStore"]

T = TypeVar("T")
_SYNCHRONOUS = ("NORMAL", "FULL", "EXTRA")
_CHECKPOINT_EVERY = 256  # inline commits between WAL checkpoints (the loop connection makes none)
_INLINE_BATCH = 64  # the most writes one transaction on the event loop takes
_INLINE_PAGE = 200  # the largest list page read on the event loop


def _busy(exc: sqlite3.OperationalError) -> bool:
    """SQLite would have waited (locked by another connection).

    An error sqlite3 raises itself (a TEXT column that is not UTF-8) has no error code.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _text(raw: bytes) -> str | bytes:
    """A TEXT value; bytes that are not UTF-8 stay bytes (``decode_row``: a corrupted row)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def _run_rows(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    """``fn`` reading run rows, read again with ``_text`` if a TEXT column is not UTF-8.

    sqlite3 fails the whole query on such a value (an error without a SQLite error code);
    read as bytes, the row is a ``StoreCorruptionError`` and lists and ``due`` skip it.
    """

    def read(conn: sqlite3.Connection) -> T:
        try:
            return fn(conn)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) is not None:
                raise
        conn.text_factory = _text
        try:
            return fn(conn)
        finally:
            conn.text_factory = str

    return read


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class _Op:
    """A queued write: its function, and whether it may commit on the event loop."""

    __slots__ = ("fn", "inline")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], inline: bool) -> None:
        self.fn = fn
        self.inline = inline  # short and needs no sync of its own


class SqliteStore:
    """A ``RunStore`` in one SQLite file: no server, safe across processes (WAL, busy timeout).

    Args:
        path: The database file; ``SqliteStore()`` uses ``./flowcraft.db``.
        namespace: Prefix of the tables, so several stores can share one file.
        timeout: Seconds a writer waits for another process's lock before failing.
        synchronous: SQLite's ``PRAGMA synchronous`` for this store's connection. The file is
            in WAL mode. ``"NORMAL"`` (the default) does not sync the log at each commit:
            every commit is atomic and survives the application crashing, but the last
            commits before a power loss or an operating-system crash may be rolled back.
            ``"FULL"`` syncs the log at every commit that answers a caller (a segment's
            outcome: a start that paused, a resume that completed; holds, releases, cancels,
            rollbacks), so what a caller was told survives a power loss too, at the cost of
            one ``fsync`` per such write (LangGraph's ``SqliteSaver`` and DBOS run SQLite at
            ``FULL``). A segment's *claim* is committed without its own ``fsync``: the log is
            one sequence, so the outcome's ``fsync`` syncs the claim with it. A power loss
            between the two loses the claim and leaves the run as it was before it (the
            caller never got an answer and sends the decision again; a process crash loses
            nothing, as at ``NORMAL``). ``"EXTRA"`` is accepted as SQLite defines it.

    Point reads and single-run writes that would not wait run on the calling event loop on a
    second connection (a worker-thread round trip costs more than the statement); anything
    that would wait for a lock, and every synced commit, runs on a worker thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "flowcraft.db",
        *,
        namespace: str = "flowcraft",
        timeout: float = 30.0,
        synchronous: Literal["NORMAL", "FULL", "EXTRA"] = "NORMAL",
    ) -> None:
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(
                f"synchronous must be one of {', '.join(_SYNCHRONOUS)}, not {synchronous!r}"
            )
        self.synchronous = synchronous
        self.path = os.fspath(path)
        self.namespace = check_namespace(namespace)
        self._sql = Dialect(namespace, postgres=False)
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._group: Group[_Op] = Group(self._flush_batch)
        self._loop_conn: sqlite3.Connection | None = None  # point reads/writes, no thread hop
        self._loop_lock = threading.Lock()  # taken without blocking: one caller at a time
        self._loop_commits = 0

    def __repr__(self) -> str:
        return f"flowcraft.stores.SqliteStore({self.path!r}, namespace={self.namespace!r})"

    # --- plumbing ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            create, *rest = self._sql.schema
            conn.execute(create)
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({self._sql.runs})")}
            if "priority" not in columns:  # a file made before priorities existed
                conn.execute(self._sql.add_priority)
            if "awaiting_since" not in columns:  # a file made before awaiting_since existed
                conn.execute(self._sql.add_since)
                conn.execute(self._sql.backfill_since)
            if "kept" not in columns:  # a file whose checkpoints table holds the current run
                conn.execute(self._sql.add_kept)
            for statement in rest:
                conn.execute(statement)
            kept = {row[1] for row in conn.execute(f"PRAGMA table_info({self._sql.checkpoints})")}
            for column in self._sql.checkpoint_columns("INTEGER"):
                if column.split()[0] not in kept:  # a file whose checkpoints are whole bodies
                    conn.execute(f"ALTER TABLE {self._sql.checkpoints} ADD COLUMN {column}")
            self._count_runs(conn)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        return conn

    def _count_runs(self, conn: sqlite3.Connection) -> None:
        """Keep run counts by status, flow and awaiting reasons in a table, by triggers.

        Every write of a run updates the counts in its own transaction (a rolled-back write
        rolls its counts back), so ``stats`` reads a handful of rows instead of grouping over
        every stored run. A file made before the table existed is counted once, here.
        """
        runs, counts = self._sql.runs, f"{self.namespace}_counts"
        known = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (counts,)
        ).fetchone()
        if known is not None:
            return
        conn.execute(
            f"CREATE TABLE {counts} (kind TEXT NOT NULL, name TEXT NOT NULL, "
            "n INTEGER NOT NULL, PRIMARY KEY (kind, name))"
        )

        def bump(row: str, sign: str) -> str:
            up = (
                f"INSERT INTO {counts} (kind, name, n) VALUES ('{{k}}', {row}.{{c}}, {sign}1) "
                f"ON CONFLICT (kind, name) DO UPDATE SET n = n {sign} 1"
            )
            return (
                up.format(k="st", c="status")
                + "; "
                + up.format(k="fl", c="flow_id")
                + "; "
                + up.format(k="rs", c="reasons")
                + "; "
            )

        conn.execute(
            f"CREATE TRIGGER {counts}_ins AFTER INSERT ON {runs} BEGIN {bump('NEW', '+')} END"
        )
        conn.execute(
            f"CREATE TRIGGER {counts}_del AFTER DELETE ON {runs} BEGIN {bump('OLD', '-')} END"
        )
        conn.execute(
            f"CREATE TRIGGER {counts}_upd AFTER UPDATE OF status, flow_id, reasons ON {runs} "
            "WHEN OLD.status IS NOT NEW.status OR OLD.flow_id IS NOT NEW.flow_id "
            f"OR OLD.reasons IS NOT NEW.reasons BEGIN {bump('OLD', '-')} {bump('NEW', '+')} END"
        )
        for kind, column in (("st", "status"), ("fl", "flow_id"), ("rs", "reasons")):
            conn.execute(
                f"INSERT INTO {counts} (kind, name, n) SELECT '{kind}', {column}, COUNT(*) "
                f"FROM {runs} GROUP BY {column}"
            )

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                try:
                    if self._conn is None:
                        self._conn = self._connect()
                    return fn(self._conn)
                except sqlite3.Error as exc:
                    raise StoreError(f"sqlite store {self.path!r}: {exc}") from exc

        return await anyio.to_thread.run_sync(call)

    def _error(self, exc: BaseException) -> StoreError:
        """A ``StoreError`` naming this store, the driver's error as its cause."""
        err = StoreError(f"sqlite store {self.path!r}: {exc}")
        err.__cause__ = exc
        return err

    def _loop_connection(self) -> sqlite3.Connection:
        """The event loop's connection: never waits (busy timeout 0), never syncs a file."""
        conn = self._loop_conn
        if conn is None:
            conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._loop_conn = conn
        return conn

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A point read: on the event loop when it can run at once, else on the worker thread.

        A worker-thread round trip costs more than a read by key (~140 µs against ~20 µs on
        a 2-core VM). The loop's connection never waits: whenever it would (the schema not
        checked yet, the connection in use by another thread, a busy database) the read
        takes the worker thread instead.
        """
        if self._conn is not None and self._loop_lock.acquire(blocking=False):
            try:
                return fn(self._loop_connection())
            except sqlite3.OperationalError as exc:
                if not _busy(exc):
                    raise StoreError(f"sqlite store {self.path!r}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite store {self.path!r}: {exc}") from exc
            finally:
                self._loop_lock.release()
        return await self._run(fn)

    async def _write_one(self, fn: Callable[[sqlite3.Connection], T], durable: bool) -> T:
        """A single-run write; it may commit on the loop unless it must be synced (``FULL``)."""
        return await self._write(fn, inline=not durable or self.synchronous == "NORMAL")

    async def _write(self, fn: Callable[[sqlite3.Connection], T], *, inline: bool = False) -> T:
        """Run ``fn`` in an immediate (write-locked) transaction, committed before returning.

        Group commit: writes that arrive while a transaction is in flight are queued and the
        next one runs them together, each under its own savepoint. A write that raises (a
        revision conflict, a constraint) is rolled back to its savepoint alone; the others
        commit. Each caller returns once the transaction holding its write has committed, so
        durability is that of one write; concurrent writers share one commit.

        A batch of ``inline`` writes only (single-run writes needing no sync of their own:
        every write at ``NORMAL``, claims at ``FULL``) commits on the event loop, on the
        loop's connection, after one yield that lets writers ready in the same loop turn join
        it: no thread round trip, and one transaction for all of them. It takes the worker
        thread instead whenever that would wait (the write lock held elsewhere). The loop's
        connection never checkpoints the log; every ``_CHECKPOINT_EVERY`` inline commits the
        worker thread does.
        """
        return await self._group.submit(_Op(fn, inline), gather=inline)  # type: ignore[no-any-return]

    async def _flush_batch(self, batch: builtins.list[Write[_Op]]) -> None:
        """A batch of inline writes on the loop when it can run at once, else on the thread."""
        here = len(batch) <= _INLINE_BATCH and all(w.payload.inline for w in batch)
        if not (here and self._flush_inline(batch)):
            await anyio.to_thread.run_sync(self._flush, batch)
        if self._loop_commits >= _CHECKPOINT_EVERY:
            self._loop_commits = 0
            with contextlib.suppress(StoreError):  # the next checkpoint will do
                await self._run(_checkpoint)

    def _flush_inline(self, batch: builtins.list[Write[_Op]]) -> bool:
        """Run a batch on the loop's connection; False (nothing done) if that would wait."""
        if self._conn is None or not self._loop_lock.acquire(blocking=False):
            return False
        try:
            conn = self._loop_connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if _busy(exc):
                    return False
                raise
            self._apply(conn, batch)
            self._loop_commits += 1
            return True
        except sqlite3.Error as exc:
            for op in batch:
                op.error = self._error(exc)
            return True
        finally:
            self._loop_lock.release()

    def _flush(self, batch: builtins.list[Write[_Op]]) -> None:
        """Run a batch of writes in one transaction (in a worker thread)."""
        with self._lock:
            try:
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                for op in batch:
                    op.error = self._error(exc)
                return
            self._apply(conn, batch)

    def _apply(self, conn: sqlite3.Connection, batch: builtins.list[Write[_Op]]) -> None:
        """Run the batch in the open transaction (a savepoint each) and commit it."""
        single = len(batch) == 1
        try:
            for op in batch:
                if not single:
                    conn.execute("SAVEPOINT w")
                try:
                    op.result = op.payload.fn(conn)
                except Exception as exc:
                    if single:
                        raise
                    conn.execute("ROLLBACK TO w")
                    op.error = exc
                if not single:
                    conn.execute("RELEASE w")
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for op in batch:
                op.error = exc if single else self._error(exc)
        for op in batch:
            if isinstance(op.error, sqlite3.Error):
                op.error = self._error(op.error)

    # --- RunStore ----------------------------------------------------------------------------

    async def create(
        self, run: StoredRun, *, history: Sequence[HistoryRecord] = (), durable: bool = True
    ) -> None:
        """Store a new run; raise ``RunExistsError`` if the id is taken.

        ``durable=False`` (a claim) commits without syncing the log at ``FULL``: the next
        durable commit syncs it with its own.
        """
        check_run(run, history)
        sql = self._sql

        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(sql.insert_run, sql.row(run))
            except sqlite3.IntegrityError as exc:  # the primary key: every other column is set
                raise RunExistsError(run.run_id) from exc
            if history:
                conn.execute(sql.insert_history, sql.history_row(run.run_id, history))

        await self._write_one(op, durable)

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

        ``durable=False`` (a claim) commits without syncing the log at ``FULL``.
        """
        check_run(run, history)
        check_int("expected_revision", expected_revision, run.run_id)
        checkpoint = min(checkpoint, COUNT_MAX)
        sql = self._sql
        params = sql.update_params(run, expected_revision, checkpoint)
        rid = run.run_id

        def op(conn: sqlite3.Connection) -> None:
            if checkpoint != 1:  # the replaced revision, if a checkpoint, joins the earlier ones
                conn.execute(sql.move_checkpoint, (rid, expected_revision))
            cur = conn.execute(sql.update_run, params)
            if cur.rowcount != 1 and conn.execute(sql.update_all, params).rowcount != 1:
                row = conn.execute(sql.get_revision, (rid,)).fetchone()
                if row is None:
                    raise RunNotFoundError(rid, self)
                raise RevisionConflictError(rid, expected_revision, int(row[0]))
            if history:
                self._append_history(conn, rid, history)
            if idempotency is not None:
                conn.execute(sql.remember, (rid, *idempotency))
            if sql.must_trim(expected_revision, checkpoint):
                # The run row is the newest: keep checkpoint - 1 earlier ones.
                conn.execute(sql.trim_checkpoints, (rid, rid, checkpoint - 1))

        await self._write_one(op, durable)

    def _append_history(
        self, conn: sqlite3.Connection, run_id: str, history: Sequence[HistoryRecord]
    ) -> None:
        """Add records to the end of the run's last history row while it is small, or a row."""
        sql = self._sql
        chunk = sql.history_row(run_id, history)
        if conn.execute(sql.append_to_last, (chunk[1], run_id)).rowcount != 1:
            conn.execute(sql.insert_history, chunk)

    async def save_many(
        self, writes: Sequence[tuple[StoredRun, int]]
    ) -> builtins.list[Exception | None]:
        """``save`` each ``(run, expected_revision)`` in one transaction (claims of a tick).

        Each is its own compare-and-set: None where it landed, else its error (a conflicting
        or missing run is refused alone; the others commit).
        """
        sql = self._sql
        refused = [out_of_range(run, expected) for run, expected in writes]
        params = [
            None if no is not None else sql.update_params(run, expected)
            for (run, expected), no in zip(writes, refused, strict=True)
        ]

        def op(conn: sqlite3.Connection) -> builtins.list[Exception | None]:
            out: builtins.list[Exception | None] = []
            for (run, expected), values, no in zip(writes, params, refused, strict=True):
                if values is None:
                    out.append(no)
                    continue
                conn.execute(sql.move_checkpoint, (run.run_id, expected))
                if (
                    conn.execute(sql.update_run, values).rowcount == 1
                    or conn.execute(sql.update_all, values).rowcount == 1
                ):
                    out.append(None)
                    continue
                row = conn.execute(sql.get_revision, (run.run_id,)).fetchone()
                if row is None:
                    out.append(RunNotFoundError(run.run_id, self))
                else:
                    out.append(RevisionConflictError(run.run_id, expected, int(row[0])))
            return out

        return await self._write(op)

    async def get(self, run_id: str) -> StoredRun:
        """The stored run; raise ``RunNotFoundError`` if there is none."""
        check_id(run_id)
        query = self._sql.get_run
        row = await self._read(_run_rows(lambda c: c.execute(query, (run_id,)).fetchone()))
        if row is None:
            raise RunNotFoundError(run_id, self)
        return decode_row(row)

    async def get_and_recall(self, run_id: str, key: str) -> tuple[StoredRun, bytes | None]:
        """``get`` and ``recall`` in one statement (one snapshot)."""
        check_id(run_id, key)
        query = self._sql.get_and_recall
        row = await self._read(lambda c: c.execute(query, (key, run_id)).fetchone())
        if row is None:
            raise RunNotFoundError(run_id, self)
        return decode_row(row), None if row[-1] is None else bytes(row[-1])

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
        # A page is a short index range: read it on the loop like a point read (the worker
        # thread's round trip cost more than the page), unless it is a large one.
        read = self._read if limit <= _INLINE_PAGE else self._run
        rows = await read(_run_rows(lambda c: c.execute(query, params).fetchall()))
        return page_of_sql_rows(rows, limit)

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[StoredRun]:
        """Awaiting runs whose ``due_at`` is at or before ``now``, earliest first."""
        params = (to_micros(now), due_limit(limit))
        query = self._sql.due
        rows = await self._run(_run_rows(lambda c: c.execute(query, params).fetchall()))
        return decode_rows(rows)

    async def stats(self, now: datetime) -> RunStats:
        """Counts by status, by flow, awaiting by reason, and expired at ``now``."""
        sql = self._sql

        def op(conn: sqlite3.Connection) -> RunStats:
            expired = conn.execute(sql.stats_expired, (to_micros(now),)).fetchone()[0]
            rows = conn.execute(
                f"SELECT kind, name, n FROM {self.namespace}_counts WHERE n > 0"
            ).fetchall()
            by: dict[str, list[tuple[str, int]]] = {"st": [], "fl": [], "rs": []}
            for kind, name, n in rows:
                by[kind].append((name, n))
            reasons = [(name, n) for name, n in by["rs"] if name]
            awaiting = conn.execute(sql.stats_awaiting).fetchall()
            return build_stats(by["st"], by["fl"], reasons, int(expired), awaiting)

        return await self._run(op)

    async def history(self, run_id: str) -> builtins.list[HistoryRecord]:
        """The run's audit trail, oldest first."""
        check_id(run_id)
        rows = await self._run(lambda c: c.execute(self._sql.read_history, (run_id,)).fetchall())
        return [h for r in rows for h in decode_history_chunk(bytes(r[0]), run_id)]

    async def checkpoints(self, run_id: str) -> builtins.list[StoredRun]:
        """The run's kept checkpoints, oldest first."""
        check_id(run_id)
        query = self._sql.read_checkpoints
        rows = await self._run(_run_rows(lambda c: c.execute(query, (run_id, run_id)).fetchall()))
        return checkpoints_of(rows)

    async def remember(self, run_id: str, key: str, result: bytes) -> bool:
        """Record ``result`` under an idempotency key; False (keeping the first) if known."""
        check_id(run_id, key)
        params = (run_id, key, result)
        count = await self._write(lambda c: c.execute(self._sql.remember, params).rowcount)
        return bool(count == 1)

    async def recall(self, run_id: str, key: str) -> bytes | None:
        """The result remembered under the key, or None."""
        check_id(run_id, key)
        row = await self._read(lambda c: c.execute(self._sql.recall, (run_id, key)).fetchone())
        return None if row is None else bytes(row[0])

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: datetime) -> bool:
        """Take or renew the named lease until ``now + ttl``."""
        until = to_micros(lease_end(now, ttl))
        params = (name, owner, until, to_micros(now))
        rows = await self._write(lambda c: c.execute(self._sql.acquire, params).fetchall())
        return bool(rows)

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        await self._write(lambda c: c.execute(self._sql.release, (name, owner)))

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished runs last updated before ``before``; return how many."""
        sql = self._sql

        def op(conn: sqlite3.Connection) -> int:
            ids = [r[0] for r in conn.execute(sql.finished, (to_micros(before),)).fetchall()]
            for statement in sql.delete:
                conn.executemany(statement, [(i,) for i in ids])
            return len(ids)

        return await self._write(op)

    async def delete(self, run_id: str, expected_revision: int) -> None:
        """Delete a run and its records if its stored revision is ``expected_revision``."""
        check_id(run_id)
        check_int("expected_revision", expected_revision, run_id)
        sql = self._sql

        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute(sql.delete_run, (run_id, expected_revision))
            if cur.rowcount != 1:
                row = conn.execute(sql.get_revision, (run_id,)).fetchone()
                if row is None:
                    raise RunNotFoundError(run_id, self)
                raise RevisionConflictError(run_id, expected_revision, int(row[0]))
            for statement in sql.delete[1:]:
                conn.execute(statement, (run_id,))

        await self._write(op)

    async def close(self) -> None:
        """Close the connection."""

        def op() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        with self._loop_lock:
            if self._loop_conn is not None:
                self._loop_conn.close()
                self._loop_conn = None
        await anyio.to_thread.run_sync(op)
