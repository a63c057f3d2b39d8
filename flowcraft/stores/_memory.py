"""``MemoryStore``: a ``RunStore`` in a dict, for tests and single-process use."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime

import anyio.lowlevel

from flowcraft._errors import RevisionConflictError, RunNotFoundError
from flowcraft.stores._base import (
    FINISHED,
    HistoryRecord,
    RunExistsError,
    RunPage,
    RunStats,
    StoredRun,
    check_id,
    check_int,
    check_list_args,
    check_run,
    compute_stats,
    decode_cursor,
    due_limit,
    lease_end,
    matches,
    out_of_range,
    page_of,
    to_micros,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keeps runs in this process's memory; everything is lost when it exits.

    Every operation runs without awaiting in between, so compare-and-set is atomic among the
    tasks of one event loop.
    """

    def __init__(self) -> None:
        self._runs: dict[str, StoredRun] = {}
        self._history: dict[str, list[HistoryRecord]] = {}
        self._idempotency: dict[tuple[str, str], bytes] = {}
        self._leases: dict[str, tuple[str, datetime]] = {}
        self._checkpoints: dict[str, list[StoredRun]] = {}

    def __repr__(self) -> str:
        return f"flowcraft.stores.MemoryStore(runs={len(self._runs)})"

    async def create(
        self, run: StoredRun, *, history: Sequence[HistoryRecord] = (), durable: bool = True
    ) -> None:
        """Store a new run; raise ``RunExistsError`` if the id is taken."""
        check_run(run, history)
        await anyio.lowlevel.checkpoint()
        if run.run_id in self._runs:
            raise RunExistsError(run.run_id)
        self._runs[run.run_id] = run
        self._history[run.run_id] = list(history)

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
        """Replace the run if its stored revision is ``expected_revision``."""
        check_run(run, history)
        check_int("expected_revision", expected_revision, run.run_id)
        await anyio.lowlevel.checkpoint()
        current = self._runs.get(run.run_id)
        if current is None:
            raise RunNotFoundError(run.run_id, self)
        if current.revision != expected_revision:
            raise RevisionConflictError(run.run_id, expected_revision, current.revision)
        self._runs[run.run_id] = run
        self._history.setdefault(run.run_id, []).extend(history)
        if idempotency is not None:
            self._idempotency.setdefault((run.run_id, idempotency[0]), idempotency[1])
        if checkpoint > 0:
            kept = self._checkpoints.setdefault(run.run_id, [])
            kept.append(run)
            del kept[:-checkpoint]

    async def save_many(
        self, writes: Sequence[tuple[StoredRun, int]]
    ) -> builtins.list[Exception | None]:
        """``save`` each ``(run, expected_revision)``: None where it landed, else its error."""
        await anyio.lowlevel.checkpoint()
        out: builtins.list[Exception | None] = []
        for run, expected in writes:
            current = self._runs.get(run.run_id)
            refused = out_of_range(run, expected)
            if refused is not None:
                out.append(refused)
            elif current is None:
                out.append(RunNotFoundError(run.run_id, self))
            elif current.revision != expected:
                out.append(RevisionConflictError(run.run_id, expected, current.revision))
            else:
                self._runs[run.run_id] = run
                out.append(None)
        return out

    async def get(self, run_id: str) -> StoredRun:
        """The stored run; raise ``RunNotFoundError`` if there is none."""
        check_id(run_id)
        await anyio.lowlevel.checkpoint()
        try:
            return self._runs[run_id]
        except KeyError:
            raise RunNotFoundError(run_id, self) from None

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
        after = decode_cursor(cursor)
        await anyio.lowlevel.checkpoint()
        ordered = sorted(self._runs.values(), key=lambda r: (to_micros(r.created_at), r.run_id))
        page: builtins.list[StoredRun] = []
        for run in ordered:
            if after is not None and (to_micros(run.created_at), run.run_id) <= after:
                continue
            if matches(run, status, flow_id, reason, expired, now):
                page.append(run)
                if len(page) > limit:
                    break
        return page_of(page, limit)

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[StoredRun]:
        """Awaiting runs due at or before ``now``, in ``(priority, due_at)`` order."""
        limit = due_limit(limit)
        await anyio.lowlevel.checkpoint()
        found = [
            r
            for r in self._runs.values()
            if r.status == "awaiting" and r.due_at is not None and r.due_at <= now
        ]
        found.sort(key=lambda r: (r.priority, r.due_at or now, r.run_id))
        return found[:limit]

    async def stats(self, now: datetime) -> RunStats:
        """Counts by status, by flow, awaiting by reason, and expired at ``now``."""
        await anyio.lowlevel.checkpoint()
        return compute_stats(self._runs.values(), now)

    async def history(self, run_id: str) -> builtins.list[HistoryRecord]:
        """The run's audit trail, oldest first."""
        check_id(run_id)
        await anyio.lowlevel.checkpoint()
        return list(self._history.get(run_id, ()))

    async def checkpoints(self, run_id: str) -> builtins.list[StoredRun]:
        """The run's kept checkpoints, oldest first."""
        check_id(run_id)
        await anyio.lowlevel.checkpoint()
        return list(self._checkpoints.get(run_id, ()))

    async def remember(self, run_id: str, key: str, result: bytes) -> bool:
        """Record ``result`` under an idempotency key; False (keeping the first) if known."""
        check_id(run_id, key)
        await anyio.lowlevel.checkpoint()
        if (run_id, key) in self._idempotency:
            return False
        self._idempotency[(run_id, key)] = result
        return True

    async def recall(self, run_id: str, key: str) -> bytes | None:
        """The result remembered under the key, or None."""
        check_id(run_id, key)
        await anyio.lowlevel.checkpoint()
        return self._idempotency.get((run_id, key))

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: datetime) -> bool:
        """Take or renew the named lease until ``now + ttl``."""
        until = lease_end(now, ttl)
        await anyio.lowlevel.checkpoint()
        held = self._leases.get(name)
        if held is not None and held[0] != owner and held[1] > now:
            return False
        self._leases[name] = (owner, until)
        return True

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        await anyio.lowlevel.checkpoint()
        held = self._leases.get(name)
        if held is not None and held[0] == owner:
            del self._leases[name]

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished runs last updated before ``before``; return how many."""
        to_micros(before)  # a naive time is refused as on every other store
        await anyio.lowlevel.checkpoint()
        gone = [
            r.run_id
            for r in self._runs.values()
            if r.status in FINISHED and r.updated_at < before
        ]
        for run_id in gone:
            del self._runs[run_id]
            self._history.pop(run_id, None)
            self._checkpoints.pop(run_id, None)
        if gone:
            dead = set(gone)
            for key in [k for k in self._idempotency if k[0] in dead]:
                del self._idempotency[key]
        return len(gone)

    async def delete(self, run_id: str, expected_revision: int) -> None:
        """Delete a run and its records if its stored revision is ``expected_revision``."""
        check_id(run_id)
        check_int("expected_revision", expected_revision, run_id)
        await anyio.lowlevel.checkpoint()
        current = self._runs.get(run_id)
        if current is None:
            raise RunNotFoundError(run_id, self)
        if current.revision != expected_revision:
            raise RevisionConflictError(run_id, expected_revision, current.revision)
        del self._runs[run_id]
        self._history.pop(run_id, None)
        self._checkpoints.pop(run_id, None)
        for key in [k for k in self._idempotency if k[0] == run_id]:
            del self._idempotency[key]

    async def close(self) -> None:
        """Nothing to release."""
        await anyio.lowlevel.checkpoint()
