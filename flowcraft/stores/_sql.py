"""SQL shared by ``SqliteStore`` and ``PostgresStore``: schema, and parametrized queries.

Table names come from the validated namespace; every value goes through a placeholder.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flowcraft.stores._base import (
    FINISHED,
    HISTORY_CHUNK,
    HistoryRecord,
    RunStats,
    StoredRun,
    awaiting_since,
    decode_cursor,
    encode_run_row,
    from_micros,
    history_chunk,
    opt_micros,
    reasons_text,
    to_micros,
)

__all__ = ["Dialect"]

_REASONS = ("wait", "timer", "pause")  # what a run awaits (``Awaiting.reason``)
_STATUSES = ("running", "awaiting", "completed", "failed", "cancelled")  # ``StoredStatus``
_HAS_DEADLINE = "status = 'awaiting' AND pause_deadline IS NOT NULL"


class Dialect:
    """Query text for one namespace in one SQL dialect (``?`` or ``%s`` placeholders)."""

    def __init__(self, namespace: str, *, postgres: bool) -> None:
        self.runs = f"{namespace}_runs"
        self.history = f"{namespace}_history"
        self.idem = f"{namespace}_idempotency"
        self.leases = f"{namespace}_leases"
        self.checkpoints = f"{namespace}_checkpoints"
        self.p = "%s" if postgres else "?"
        blob = "BYTEA" if postgres else "BLOB"
        big = "BIGINT" if postgres else "INTEGER"
        seq = "BIGSERIAL PRIMARY KEY" if postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"
        self.backfill_since = (
            f"UPDATE {self.runs} SET awaiting_since = updated_at "
            "WHERE status = 'awaiting' AND awaiting_since IS NULL"
        )
        done = ", ".join(f"'{s}'" for s in sorted(FINISHED))
        self.is_finished = f"status IN ({done})"
        self.contains = "strpos(reasons, %s) > 0" if postgres else "instr(reasons, ?) > 0"
        self.schema = [
            f"""CREATE TABLE IF NOT EXISTS {self.runs} (
                run_id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, status TEXT NOT NULL,
                revision {big} NOT NULL, reasons TEXT NOT NULL, due_at {big},
                pause_deadline {big}, created_at {big} NOT NULL, updated_at {big} NOT NULL,
                body {blob} NOT NULL, priority {big} NOT NULL DEFAULT 0,
                awaiting_since {big}, kept INTEGER NOT NULL DEFAULT 0)""",
            # Tables made before priorities existed gain the column (SQLite: ``SqliteStore``).
            *(
                [f"ALTER TABLE {self.runs} ADD COLUMN IF NOT EXISTS priority BIGINT NOT NULL "
                 "DEFAULT 0"]
                if postgres
                else []
            ),
            # Tables made before ``awaiting_since`` existed gain it, counted from the last write
            # of each awaiting run (SQLite: ``SqliteStore``).
            *(
                [f"ALTER TABLE {self.runs} ADD COLUMN IF NOT EXISTS awaiting_since BIGINT",
                 self.backfill_since]
                if postgres
                else []
            ),
            # Tables made before ``kept`` existed gain it: their checkpoints table holds the
            # current revision too (kept = 0 says the row itself is no checkpoint to add).
            *(
                [f"ALTER TABLE {self.runs} ADD COLUMN IF NOT EXISTS kept INTEGER NOT NULL "
                 "DEFAULT 0"]
                if postgres
                else []
            ),
            # ``due`` ranges over the due runs only and orders them by priority on this
            # covering index: a tick costs O(due runs), whatever is stored beside them.
            f"DROP INDEX IF EXISTS {self.runs}_due",
            f"CREATE INDEX IF NOT EXISTS {self.runs}_due_priority ON {self.runs} "
            "(due_at, priority, run_id) WHERE due_at IS NOT NULL",
            # list() and list(flow_id=) walk these in created_at order (runs created in the
            # same microsecond sorted by id after): keys of 8 (16) bytes, not 30 to 50.
            f"CREATE INDEX IF NOT EXISTS {self.runs}_created ON {self.runs} (created_at)",
            f"DROP INDEX IF EXISTS {self.runs}_order",
            f"CREATE INDEX IF NOT EXISTS {self.runs}_flow_created ON {self.runs} "
            "(flow_id, created_at)",
            f"DROP INDEX IF EXISTS {self.runs}_flow_order",
            # list(status=) walks the partial index of that status in created_at order (runs
            # created in the same microsecond sorted by id): a run has an entry in one of them,
            # where one index keyed by status took every run and, in PostgreSQL, the dead
            # entry of each start's claim beside its live one.
            *(
                f"CREATE INDEX IF NOT EXISTS {self.runs}_st_{st} ON {self.runs} "
                f"(created_at) WHERE status = '{st}'"
                for st in _STATUSES
            ),
            f"DROP INDEX IF EXISTS {self.runs}_status_order",
            # delete_finished ranges over finished runs only; the expired count and
            # list(expired=True) over awaiting runs with a deadline only.
            f"CREATE INDEX IF NOT EXISTS {self.runs}_finished ON {self.runs} (updated_at) "
            f"WHERE {self.is_finished}",
            f"DROP INDEX IF EXISTS {self.runs}_status",
            f"CREATE INDEX IF NOT EXISTS {self.runs}_expiry ON {self.runs} (pause_deadline) "
            f"WHERE {_HAS_DEADLINE}",
            f"DROP INDEX IF EXISTS {self.runs}_deadline",
            # stats' awaiting count and oldest wait per flow read only this (partial) index.
            f"CREATE INDEX IF NOT EXISTS {self.runs}_awaiting ON {self.runs} "
            "(flow_id, awaiting_since) WHERE status = 'awaiting'",
            # list(reason=) walks one of these partial indexes (awaiting runs with that
            # reason, in created_at order) instead of every awaiting run.
            *(
                f"CREATE INDEX IF NOT EXISTS {self.runs}_reason_{r} ON {self.runs} "
                f"(created_at) WHERE {self._has_reason(r)}"
                for r in _REASONS
            ),
            *(f"DROP INDEX IF EXISTS {self.runs}_rs_{r}" for r in _REASONS),
            f"""CREATE TABLE IF NOT EXISTS {self.history} (
                seq {seq}, run_id TEXT NOT NULL, body {blob} NOT NULL)""",
            # A run's history is a few rows (records are appended to the last one): found by
            # run_id, sorted by seq after (SQLite keeps the rowid, seq, in the entry anyway).
            f"CREATE INDEX IF NOT EXISTS {self.history}_by_run ON {self.history} (run_id)",
            f"DROP INDEX IF EXISTS {self.history}_run",
            f"""CREATE TABLE IF NOT EXISTS {self.idem} (
                run_id TEXT NOT NULL, key TEXT NOT NULL, result {blob} NOT NULL,
                PRIMARY KEY (run_id, key))""",
            f"""CREATE TABLE IF NOT EXISTS {self.checkpoints} (
                run_id TEXT NOT NULL, revision {big} NOT NULL, body {blob} NOT NULL,
                flow_id TEXT, status TEXT, created_at {big}, updated_at {big},
                PRIMARY KEY (run_id, revision))""",
            # Tables made before bodies left the row's columns out gain them (SQLite:
            # ``SqliteStore``); their rows keep whole bodies and leave these empty.
            *(
                [f"ALTER TABLE {self.checkpoints} ADD COLUMN IF NOT EXISTS {c}"
                 for c in self.checkpoint_columns(big)]
                if postgres
                else []
            ),
            f"""CREATE TABLE IF NOT EXISTS {self.leases} (
                name TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at {big} NOT NULL)""",
            *([self._pg_counts(namespace)] if postgres else []),
        ]
        p = self.p
        self.add_priority = f"ALTER TABLE {self.runs} ADD COLUMN priority {big} NOT NULL DEFAULT 0"
        self.add_since = f"ALTER TABLE {self.runs} ADD COLUMN awaiting_since {big}"
        self.add_kept = f"ALTER TABLE {self.runs} ADD COLUMN kept INTEGER NOT NULL DEFAULT 0"
        cols = (
            "run_id, flow_id, status, revision, reasons, due_at, pause_deadline, created_at, "
            "updated_at, awaiting_since, body, priority"
        )
        self.insert_run = f"INSERT INTO {self.runs} ({cols}) VALUES ({', '.join([p] * 12)})"
        # ``update_params`` order: flow_id, status, revision, reasons, due_at, pause_deadline,
        # created_at, updated_at, awaiting_since, body, priority, kept, run_id, expected.
        self.update_all = (
            f"UPDATE {self.runs} SET flow_id = {p}, status = {p}, revision = {p}, reasons = {p}, "
            f"due_at = {p}, pause_deadline = {p}, created_at = {p}, updated_at = {p}, "
            f"awaiting_since = {p}, body = {p}, priority = {p}, kept = {p} "
            f"WHERE run_id = {p} AND revision = {p}"
        )
        # SQLite rewrites the entries of every index on a column the SET assigns, changed or
        # not: a run's flow and creation time never change, so the update leaves them out of
        # SET (they stay where the compare-and-set looks) and the (created_at) and (flow_id,
        # created_at) indexes are not written: a fifth fewer log pages per durable commit.
        # A save that does change them (not the service's) lands by ``update_all`` instead.
        # PostgreSQL compares values itself (its HOT updates): one statement does.
        self.update_run = (
            self.update_all
            if postgres
            else f"UPDATE {self.runs} SET status = ?2, revision = ?3, reasons = ?4, due_at = ?5, "
            "pause_deadline = ?6, updated_at = ?8, awaiting_since = ?9, body = ?10, "
            "priority = ?11, kept = ?12 WHERE run_id = ?13 AND revision = ?14 AND flow_id = ?1 "
            "AND created_at = ?7"
        )
        self.get_revision = f"SELECT revision FROM {self.runs} WHERE run_id = {p}"
        # What ``decode_row`` reads: the body leaves out the fields these columns hold.
        self.cols = "run_id, flow_id, status, revision, created_at, updated_at, body"
        rcols = ", ".join(f"r.{c}" for c in self.cols.split(", "))
        self.get_run = f"SELECT {self.cols} FROM {self.runs} WHERE run_id = {p}"
        self.delete_run = f"DELETE FROM {self.runs} WHERE run_id = {p} AND revision = {p}"
        self.insert_history = f"INSERT INTO {self.history} (run_id, body) VALUES ({p}, {p})"
        self.read_history = f"SELECT body FROM {self.history} WHERE run_id = {p} ORDER BY seq"
        # A write's records go to the end of the run's last history row while it is small.
        self.last_history = (
            f"SELECT seq, length(body), substr(body, 1, 1) FROM {self.history} WHERE run_id = {p} "
            "ORDER BY seq DESC LIMIT 1"
        )
        concat = "body || %s" if postgres else "CAST(body || ? AS BLOB)"
        self.append_history = f"UPDATE {self.history} SET body = {concat} WHERE seq = {p}"
        # SQLite: ``last_history`` and ``append_history`` in one statement (``framed`` in SQL);
        # no row changed means the records need a row of their own.
        self.append_to_last = (
            f"UPDATE {self.history} SET body = {concat} WHERE seq = (SELECT max(seq) FROM "
            f"{self.history} WHERE run_id = {p}) "
            f"AND length(body) BETWEEN 1 AND {HISTORY_CHUNK - 1} "
            "AND (substr(body, 1, 1) < x'80' OR substr(body, 1, 1) IN (x'cc', x'cd', x'ce'))"
        )
        self.remember = (
            f"INSERT INTO {self.idem} (run_id, key, result) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (run_id, key) DO NOTHING"
        )
        self.recall = f"SELECT result FROM {self.idem} WHERE run_id = {p} AND key = {p}"
        # ``get`` and ``recall`` in one statement: the run's columns, then the result or NULL.
        self.get_and_recall = (
            f"SELECT {', '.join(f'r.{c}' for c in self.cols.split(', '))}, "
            f"(SELECT i.result FROM {self.idem} i WHERE i.run_id = r.run_id AND i.key = {p}) "
            f"FROM {self.runs} r WHERE r.run_id = {p}"
        )
        if postgres:
            # ``get_and_recall`` of several runs in one statement: the position of each
            # (run, key) asked for, then its row; a run not stored has none.
            self.get_and_recall_many = (
                f"SELECT q.i, {rcols}, (SELECT i.result FROM {self.idem} i "
                "WHERE i.run_id = r.run_id AND i.key = q.key) "
                "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q(run_id, key, i) "
                f"JOIN {self.runs} r ON r.run_id = q.run_id"
            )
        # The inner query reads only the covering due index; bodies are fetched for the page.
        self.due = (
            f"SELECT {rcols} FROM {self.runs} r JOIN (SELECT run_id, priority AS pr, "
            f"due_at AS da FROM {self.runs} WHERE due_at IS NOT NULL AND due_at <= {p} "
            f"ORDER BY priority, due_at, run_id LIMIT {p}) k ON r.run_id = k.run_id "
            "ORDER BY k.pr, k.da, k.run_id"
        )
        self.acquire = (
            f"INSERT INTO {self.leases} (name, owner, expires_at) VALUES ({p}, {p}, {p}) "
            "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
            f"expires_at = excluded.expires_at WHERE {self.leases}.owner = excluded.owner "
            f"OR {self.leases}.expires_at <= {p} RETURNING name"
        )
        self.release = f"DELETE FROM {self.leases} WHERE name = {p} AND owner = {p}"
        self.finished = (
            f"SELECT run_id FROM {self.runs} WHERE {self.is_finished} AND updated_at < {p}"
        )
        self.delete = [
            f"DELETE FROM {t} WHERE run_id = {p}"
            for t in (self.runs, self.history, self.idem, self.checkpoints)
        ]
        # Checkpoints: the run row itself is the newest checkpoint while ``kept`` (the
        # ``keep_checkpoints`` it was saved with) is above 0; the checkpoints table holds only
        # earlier revisions, each moved there by the write that replaces it (``move``).
        cp = self.checkpoints
        self.move_checkpoint = (
            f"INSERT INTO {cp} ({self.cols}) SELECT {self.cols} "
            f"FROM {self.runs} WHERE run_id = {p} AND revision = {p} AND kept > 0 "
            "ON CONFLICT (run_id, revision) DO NOTHING"
        )
        # PostgreSQL, as a sub-statement after ``u`` (the update, returning run_id): it reads
        # the row as it was before the update.
        self.move_after_update = (
            f"INSERT INTO {cp} ({self.cols}) SELECT {rcols} "
            f"FROM {self.runs} r JOIN u ON u.run_id = r.run_id WHERE r.run_id = {p} "
            f"AND r.revision = {p} AND r.kept > 0 ON CONFLICT (run_id, revision) DO NOTHING "
            "RETURNING 1"
        )
        # A compare-and-set that moves the replaced checkpoint, returning 1 where it landed.
        self.update_moving = (
            f"WITH u AS ({self.update_run} RETURNING run_id), o AS ({self.move_after_update}) "
            "SELECT count(*) FROM u"
        )
        # Keep the newest N: delete at and below the (N+1)-th newest revision.
        self.trim_checkpoints = (
            f"DELETE FROM {cp} WHERE run_id = {p} AND revision <= (SELECT revision FROM {cp} "
            f"WHERE run_id = {p} ORDER BY revision DESC LIMIT 1 OFFSET {p})"
        )
        self.read_checkpoints = (
            f"SELECT {self.cols} FROM {cp} WHERE run_id = {p} UNION ALL "
            f"SELECT {self.cols} FROM {self.runs} WHERE run_id = {p} AND kept > 0"
        )
        self.stats_status = f"SELECT status, COUNT(*) FROM {self.runs} GROUP BY status"
        self.stats_flow = f"SELECT flow_id, COUNT(*) FROM {self.runs} GROUP BY flow_id"
        self.stats_reason = (
            f"SELECT reasons, COUNT(*) FROM {self.runs} WHERE status = 'awaiting' GROUP BY reasons"
        )
        self.stats_awaiting = (
            f"SELECT flow_id, COUNT(*), MIN(awaiting_since) FROM {self.runs} "
            "WHERE status = 'awaiting' GROUP BY flow_id"
        )
        self.stats_expired = (
            f"SELECT COUNT(*) FROM {self.runs} WHERE {_HAS_DEADLINE} AND pause_deadline <= {p}"
        )

    @staticmethod
    def checkpoint_columns(big: str) -> list[str]:
        """Columns of the checkpoints table added after it was first made."""
        return ["flow_id TEXT", "status TEXT", f"created_at {big}", f"updated_at {big}"]

    def _has_reason(self, reason: str) -> str:
        """The predicate of the partial index of ``reason`` (one of ``_REASONS``)."""
        find = "strpos" if self.p == "%s" else "instr"
        return f"status = 'awaiting' AND {find}(reasons, ',{reason},') > 0"

    def _pg_counts(self, namespace: str) -> str:
        """PostgreSQL run counts by status, flow and reasons, kept by a trigger (``stats``).

        Every write of a run changes the counts in its own transaction, so they are exact
        under races, conflicts, deletes and rollbacks. Each backend adds to its own rows
        (``shard`` = its pid), so concurrent writers never wait on one another's counts;
        ``stats`` sums the shards and ``fold_counts`` merges them now and then. Made (and the
        stored runs counted once) when the trigger is missing: a new table, or an old one.

        Inserts and deletes are counted once per statement, from its transition table: a
        statement of many rows (a bulk copy, ``delete_finished``) changes each counts row
        once. Counted per row, every one of n rows updated the same counts row again in one
        transaction, each update walking the versions the earlier ones left: O(n²), 8 s for
        16k deleted runs. Updates stay per row (a column list and a ``WHEN`` skip the writes
        that change no count, which a transition table cannot). Tables of the per-row
        triggers (``_counts_new``) are moved to these when opened.
        """
        runs, counts = self.runs, f"{namespace}_counts"
        self.counts = counts
        up = f"ON CONFLICT (kind, name, shard) DO UPDATE SET n = {counts}.n + excluded.n"

        def values(row: str, sign: str) -> str:
            return (
                f"('st', {row}.status, {sign}1), ('fl', {row}.flow_id, {sign}1), "
                f"('rs', {row}.reasons, {sign}1)"
            )

        def put(rows: str) -> str:
            return (
                f"INSERT INTO {counts} (kind, name, shard, n) SELECT k, nm, pg_backend_pid(), "
                f"SUM(d) FROM (VALUES {rows}) v(k, nm, d) GROUP BY k, nm HAVING SUM(d) <> 0 "
                f"ORDER BY k, nm {up};"
            )

        def put_all(table: str, sign: str) -> str:
            """The counts of every row of a transition table, one write per counts row."""
            return (
                f"INSERT INTO {counts} (kind, name, shard, n) SELECT k, nm, pg_backend_pid(), "
                f"{sign}COUNT(*) FROM (SELECT 'st', status FROM {table} UNION ALL "
                f"SELECT 'fl', flow_id FROM {table} UNION ALL SELECT 'rs', reasons FROM {table}) "
                f"v(k, nm) GROUP BY k, nm ORDER BY k, nm {up};"
            )

        triggers = f"""
  CREATE OR REPLACE FUNCTION {counts}_fn() RETURNS trigger LANGUAGE plpgsql AS $fn$
  BEGIN
    {put(values("OLD", "-") + ", " + values("NEW", "+"))}
    RETURN NULL;
  END $fn$;
  CREATE OR REPLACE FUNCTION {counts}_set_fn() RETURNS trigger LANGUAGE plpgsql AS $fn$
  BEGIN
    IF TG_OP = 'INSERT' THEN {put_all("new_runs", "")}
    ELSE {put_all("old_runs", "-")}
    END IF;
    RETURN NULL;
  END $fn$;
  DROP TRIGGER IF EXISTS {counts}_new ON {runs};
  DROP TRIGGER IF EXISTS {counts}_ins ON {runs};
  DROP TRIGGER IF EXISTS {counts}_del ON {runs};
  CREATE TRIGGER {counts}_ins AFTER INSERT ON {runs} REFERENCING NEW TABLE AS new_runs
    FOR EACH STATEMENT EXECUTE FUNCTION {counts}_set_fn();
  CREATE TRIGGER {counts}_del AFTER DELETE ON {runs} REFERENCING OLD TABLE AS old_runs
    FOR EACH STATEMENT EXECUTE FUNCTION {counts}_set_fn();"""

        # Folding moves other backends' rows into shard 0, skipping rows in use (no waits).
        self.fold_counts = (
            f"WITH moved AS (DELETE FROM {counts} WHERE shard <> 0 AND ctid IN (SELECT ctid "
            f"FROM {counts} WHERE shard <> 0 FOR UPDATE SKIP LOCKED) RETURNING kind, name, n) "
            f"INSERT INTO {counts} (kind, name, shard, n) SELECT kind, name, 0, SUM(n) "
            f"FROM moved GROUP BY kind, name ORDER BY kind, name {up}"
        )
        # The counts, then the expired count (kind 'ex'), with how many rows were summed.
        self.read_counts = (
            f"SELECT kind, name, SUM(n), SUM(COUNT(*)) OVER () FROM {counts} GROUP BY kind, name "
            f"UNION ALL SELECT 'ex', '', COUNT(*), 0 FROM {runs} WHERE status = 'awaiting' "
            "AND pause_deadline IS NOT NULL AND pause_deadline <= %s"
        )
        return f"""DO $do$ BEGIN
IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{counts}_trg'
               AND tgrelid = to_regclass('{runs}')) THEN
  DROP TABLE IF EXISTS {counts};
  CREATE TABLE {counts} (kind TEXT NOT NULL, name TEXT NOT NULL, shard INTEGER NOT NULL,
                         n BIGINT NOT NULL, PRIMARY KEY (kind, name, shard));
{triggers}
  DROP TRIGGER IF EXISTS {counts}_trg ON {runs};
  CREATE TRIGGER {counts}_trg AFTER UPDATE OF status, flow_id, reasons ON {runs} FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status OR OLD.flow_id IS DISTINCT FROM NEW.flow_id
          OR OLD.reasons IS DISTINCT FROM NEW.reasons)
    EXECUTE FUNCTION {counts}_fn();
  INSERT INTO {counts} (kind, name, shard, n)
    SELECT 'st', status, 0, COUNT(*) FROM {runs} GROUP BY status
    UNION ALL SELECT 'fl', flow_id, 0, COUNT(*) FROM {runs} GROUP BY flow_id
    UNION ALL SELECT 'rs', reasons, 0, COUNT(*) FROM {runs} GROUP BY reasons;
ELSIF EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{counts}_new'
              AND tgrelid = to_regclass('{runs}')) THEN
  -- Counted per row until now: the same counts, from here on per statement.
{triggers}
END IF;
END $do$"""

    def row(self, run: StoredRun) -> tuple[Any, ...]:
        """The column values of ``run`` in ``insert_run`` order."""
        due = opt_micros(run.due_at) if run.status == "awaiting" else None
        return (
            run.run_id,
            run.flow_id,
            run.status,
            run.revision,
            reasons_text(run),
            due,
            opt_micros(run.pause_deadline),
            to_micros(run.created_at),
            to_micros(run.updated_at),
            opt_micros(awaiting_since(run)),
            encode_run_row(run),
            run.priority,
        )

    def update_params(self, run: StoredRun, expected: int, kept: int = 0) -> tuple[Any, ...]:
        """Parameters of ``update_run``; ``kept`` > 0 makes the new revision a checkpoint."""
        row = self.row(run)
        return (*row[1:], kept, run.run_id, expected)

    @staticmethod
    def must_trim(expected: int, checkpoint: int) -> bool:
        """Whether a write keeping ``checkpoint`` checkpoints may have earlier ones to drop.

        Earlier checkpoints are revisions up to ``expected``, so there are at most
        ``expected + 1``: trimming to ``checkpoint - 1`` cannot drop any before that.
        """
        return checkpoint > 0 and expected + 1 > checkpoint - 1

    def history_row(self, run_id: str, history: Sequence[HistoryRecord]) -> tuple[Any, ...]:
        """Parameters of ``insert_history`` for a write's records (one row)."""
        return (run_id, history_chunk(history))

    def list_query(
        self,
        status: str | None,
        flow_id: str | None,
        reason: str | None,
        expired: bool | None,
        now: datetime | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[str, list[Any]]:
        """A parametrized ``list`` query fetching ``limit + 1`` rows (to know if more follow)."""
        p = self.p
        where: list[str] = []
        params: list[Any] = []
        if status in _STATUSES:
            where.append(f"status = '{status}'")  # the very predicate of its index
        elif status is not None:
            where.append(f"status = {p}")
            params.append(status)
        if flow_id is not None:
            where.append(f"flow_id = {p}")
            params.append(flow_id)
        if reason in _REASONS:
            where.append(self._has_reason(reason))  # the very predicate of its index
        elif reason is not None:
            where.append(f"status = 'awaiting' AND {self.contains}")
            params.append(f",{reason},")
        if expired is not None:
            assert now is not None
            cond = f"{_HAS_DEADLINE} AND pause_deadline <= {p}"
            where.append(f"({cond})" if expired else f"NOT ({cond})")
            params.append(to_micros(now))
        after = decode_cursor(cursor)
        if after is not None:
            # A row comparison: an index range in both dialects (an OR of two is not); the
            # bound on created_at alone ranges the partial indexes keyed by created_at only.
            where.append(f"created_at >= {p} AND (created_at, run_id) > ({p}, {p})")
            params.extend([after[0], after[0], after[1]])
        sql = f"SELECT {self.cols} FROM {self.runs}"
        if self.p == "?":
            # SQLite, without statistics, would rather walk the (created_at, run_id) index
            # than a partial one keyed by created_at alone.
            if reason in _REASONS:
                sql += f" INDEXED BY {self.runs}_reason_{reason}"
            elif status in _STATUSES:
                sql += f" INDEXED BY {self.runs}_st_{status}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY created_at, run_id LIMIT {p}"
        params.append(limit + 1)
        return sql, params


def build_stats(
    statuses: Sequence[tuple[Any, ...]],
    flows: Sequence[tuple[Any, ...]],
    reasons: Sequence[tuple[Any, ...]],
    expired: int,
    awaiting: Sequence[tuple[Any, ...]] = (),
) -> RunStats:
    """``RunStats`` from the rows of the stats queries."""
    by_reason: dict[str, int] = {}
    for text, count in reasons:
        for reason in str(text).strip(",").split(","):
            if reason:
                by_reason[reason] = by_reason.get(reason, 0) + int(count)
    by_status = {str(s): int(c) for s, c in statuses}
    return RunStats(
        total=sum(by_status.values()),
        by_status=by_status,
        by_flow={str(f): int(c) for f, c in flows},
        awaiting_by_reason=by_reason,
        expired=expired,
        awaiting_by_flow={str(f): int(c) for f, c, _ in awaiting},
        awaiting_since_by_flow={
            str(f): from_micros(int(m)) for f, _, m in awaiting if m is not None
        },
    )
