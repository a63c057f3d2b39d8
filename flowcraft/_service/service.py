"""``FlowService``: durable runs on a ``RunStore``, with a durable scheduler.

What is exactly-once and what is at-least-once:

* **Exactly-once**: state transitions and applied resumes. Every write of a run is a
  compare-and-set on the stored revision, so of two writers starting from the same revision one
  wins and nothing of the other is stored. A resume sent again with the same
  ``idempotency_key`` returns the first result and runs nothing.
* **At-least-once**: node side effects. A node may run again when its process dies before the
  result is stored (the run is recovered from its last checkpoint), or in the losing process of a
  race. Make side effects idempotent (pass ``node.run_id`` to the systems you call).

What is stored, and so what a crash can cost, depends on ``durability``:

* ``"pause"`` (the default) writes a run when it starts (its intent), when it pauses or awaits,
  and when it finishes. A run whose process dies is recovered by replaying its intent from the
  last stored state: every node since the last pause runs again.
* ``"step"`` also writes a checkpoint after every node finishes (one compare-and-set per node; the
  run stays ``"running"`` under its owner's lease). A run whose process dies is recovered from
  its last checkpoint: nodes finished before it are not run again; the nodes that were running
  or ready when the process died run again (at-least-once). The checkpoint after a run's last
  node is not written (the final result is stored right after it), so a crash in that short gap
  re-runs the last node. Each checkpoint also appends the history entries made since the
  previous write. If a checkpoint finds the stored revision moved (another process recovered or
  changed the run, e.g. after this process stalled past its lease), this process cancels its
  execution, stores nothing more and raises ``RevisionConflictError``: a run is never forked.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import anyio
import msgspec

from flowcraft._control import RunControl
from flowcraft._errors import (
    NotAwaitingError,
    ResumeError,
    RevisionConflictError,
    StoreError,
    UnknownFlowError,
)
from flowcraft._flow.blueprint import Blueprint
from flowcraft._flow.builder import Flow
from flowcraft._runtime import FlowRuntime
from flowcraft._service.segment import (
    ENCODER,
    Intent,
    Request,
    control_key,
    data_dict,
    execute,
    recover_run,
    send,
)
from flowcraft._values import ResumeData, RunResult
from flowcraft.stores._base import FINISHED, HistoryRecord, RunPage, RunStats, RunStore, StoredRun

if TYPE_CHECKING:
    from flowcraft._service.scheduler import DurableScheduler

__all__ = ["FlowService", "UnknownFlowError"]

Durability: TypeAlias = Literal["pause", "step"]
FlowSpec: TypeAlias = "Flow | tuple[Blueprint, Mapping[str, object]]"
Duration: TypeAlias = "float | timedelta"
SCHEDULER = "scheduler"


def _seconds(value: Duration) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class FlowService:
    """The durable front door: start, resume, pause and cancel runs kept in a ``RunStore``.

    Args:
        runtime: The (stateless) runtime executing runs; its clock drives expiries and leases.
        store: Where runs live (``SqliteStore()`` is the embedded default).
        flows: ``Flow`` builders, or ``(blueprint, registry)`` pairs, by flow id.
        durability: ``"pause"`` persists at every pause and at the end; ``"step"`` also writes
            the resume intent before executing it and a checkpoint after every node, so a run
            whose process dies is recovered from its last finished node.
        max_pause: How long a run may await before it counts as expired: one duration for every
            flow, or a mapping by flow id (key ``"*"`` for the others).
        cancel_expired: Let the scheduler cancel expired runs (otherwise they are only listed).
        lease_ttl: Seconds a process owns a run it executes; renewed while it runs.
        poll_interval: Seconds between checks for pause/cancel requests from other processes.
    """

    def __init__(
        self,
        runtime: FlowRuntime,
        store: RunStore,
        flows: Sequence[FlowSpec] = (),
        *,
        durability: Durability = "pause",
        max_pause: Duration | Mapping[str, Duration] | None = None,
        cancel_expired: bool = False,
        lease_ttl: float = 30.0,
        poll_interval: float = 1.0,
        owner: str | None = None,
    ) -> None:
        if durability not in ("pause", "step"):
            raise ValueError(f"durability must be 'pause' or 'step', not {durability!r}")
        self.runtime = runtime
        self.store = store
        self.durability: Durability = durability
        self.cancel_expired = cancel_expired
        self.lease_ttl = lease_ttl
        self.poll_interval = poll_interval
        self.owner = owner or uuid.uuid4().hex
        self._flows: dict[str, tuple[Blueprint, Mapping[str, object]]] = {}
        for spec in flows:
            bp, reg = (spec.to_blueprint(), spec.registry) if isinstance(spec, Flow) else spec
            self._flows[bp.id] = (bp, reg)
        if max_pause is None or isinstance(max_pause, float | int | timedelta):
            self._max_pause = {"*": max_pause} if max_pause is not None else {}
        else:
            self._max_pause = dict(max_pause)
        self._controls: dict[str, RunControl] = {}
        self.busy: set[str] = set()  # runs a scheduler/recovery task of this service works on
        self._requests: dict[str, Request] = {}

    def __repr__(self) -> str:
        return f"flowcraft.FlowService(store={self.store!r}, flows={sorted(self._flows)!r})"

    # --- public API --------------------------------------------------------------------------

    async def start(
        self, flow_id: str, state: Mapping[str, Any] | None = None, *, run_id: str | None = None
    ) -> RunResult:
        """Start a run of ``flow_id``, store it, and execute it until it finishes or awaits.

        The run is stored (status ``"running"``) before its first node executes, so it can be
        listed, paused from another process, and recovered if this process dies.
        """
        bp, reg = self._flow(flow_id)
        run_id = run_id or uuid.uuid4().hex
        now = self.runtime.clock.now()
        initial = dict(state) if state else {}
        marker = StoredRun(
            run_id=run_id,
            flow_id=flow_id,
            status="running",
            revision=0,
            created_at=now,
            updated_at=now,
            intent=ENCODER.encode(Intent(kind="start", state=initial)),
        )
        self._controls[run_id] = RunControl()
        try:
            await self.store.create(marker, history=[HistoryRecord(at=now, event="start")])
            await self.store.acquire_lease(f"run:{run_id}", self.owner, self.lease_ttl, now)
            return await execute(
                self,
                marker,
                lambda c: self.runtime.run(bp, initial, registry=reg, run_id=run_id, control=c),
            )
        finally:
            self._controls.pop(run_id, None)

    async def resume(
        self,
        run_id: str,
        data: ResumeData = None,
        node_id: str | None = None,
        *,
        by: str | None = None,
        idempotency_key: str | None = None,
    ) -> RunResult:
        """Resume a stored run and store the outcome with compare-and-set.

        With ``idempotency_key``, a decision delivered again returns the first result and runs
        nothing. Of two different concurrent resumes one wins; the other raises
        ``RevisionConflictError`` (or ``NodeNotAwaitingError`` once the winner is stored) and
        nothing of it is stored. A held run (``pause`` of an awaiting run) is released by
        ``resume(run_id)`` with no data.
        """
        if idempotency_key is not None:
            first = await self.store.recall(run_id, idempotency_key)
            if first is not None:
                return self._rebuild(await self.store.get(run_id), first)
        stored = await self.store.get(run_id)
        if stored.status == "running":
            raise NotAwaitingError(run_id, "running")
        if (
            stored.held
            and data is None
            and node_id is None
            and stored.status == "awaiting"
            and "pause" not in stored.reasons
        ):
            return await self._release(stored, by)
        bp, reg = self._flow(stored.flow_id)
        base = stored
        if self.durability == "step":
            intent = Intent(
                kind="resume", data=data_dict(data), node_id=node_id, by=by, key=idempotency_key
            )
            now = self.runtime.clock.now()
            base = self._replace(
                stored, status="running", intent=ENCODER.encode(intent), updated_at=now
            )
            await self.store.save(base, stored.revision)
            await self.store.acquire_lease(f"run:{run_id}", self.owner, self.lease_ttl, now)
        self._controls[run_id] = RunControl()
        try:
            return await execute(
                self,
                base,
                lambda c: self.runtime.resume(
                    bp, stored.context, data, node_id, registry=reg, control=c, by=by
                ),
                key=idempotency_key,
                restore=stored if base is not stored else None,
            )
        except ResumeError:
            if idempotency_key is not None:  # a duplicate delivery was stored meanwhile
                first = await self.store.recall(run_id, idempotency_key)
                if first is not None:
                    return self._rebuild(stored, first)
            raise
        finally:
            self._controls.pop(run_id, None)

    async def pause(
        self,
        run_id: str,
        *,
        reason: str | None = None,
        by: str | None = None,
        request_id: str | None = None,
    ) -> StoredRun:
        """Pause a run, recording who, when, why and the request id.

        A running run pauses at its next node boundary, in this or another process (requests
        travel through the store). An awaiting run is held: its timers and expiries do not
        fire until ``resume(run_id)`` with no data releases it.

        Raises:
            NotAwaitingError: the run already finished.
        """
        now = self.runtime.clock.now()
        request = Request(kind="pause", at=now, reason=reason, by=by, request_id=request_id)
        control = self._controls.get(run_id)
        if control is not None:
            self._requests[run_id] = request
            control.pause(reason, by)
            return await self.store.get(run_id)
        while True:
            stored = await self.store.get(run_id)
            if stored.status in FINISHED:
                raise NotAwaitingError(run_id, stored.status)
            if stored.status == "running":
                return await send(self, stored, request)
            await self.store.remember(run_id, control_key(stored.revision), ENCODER.encode(request))
            held = self._replace(
                stored,
                held=True,
                due_at=None,
                paused_at=now,
                paused_by=by,
                pause_reason=reason,
                pause_request_id=request_id,
            )
            record = HistoryRecord(
                at=now, event="hold", by=by, reason=reason, request_id=request_id
            )
            try:
                await self.store.save(held, stored.revision, history=[record])
            except RevisionConflictError:
                continue
            return held

    async def cancel(
        self, run_id: str, *, reason: str | None = None, by: str | None = None
    ) -> StoredRun:
        """Cancel a run: an awaiting run at once, a running one at its next await point.

        Everything the run did so far stays in its context. Raises ``NotAwaitingError`` when
        the run already finished.
        """
        now = self.runtime.clock.now()
        request = Request(kind="cancel", at=now, reason=reason, by=by)
        control = self._controls.get(run_id)
        if control is not None:
            self._requests[run_id] = request
            control.cancel()
            return await self.store.get(run_id)
        while True:
            stored = await self.store.get(run_id)
            if stored.status in FINISHED:
                raise NotAwaitingError(run_id, stored.status)
            if stored.status == "running":
                return await send(self, stored, request)
            try:
                return await self._cancel_stored(stored, reason, by, event="cancel")
            except RevisionConflictError:
                continue

    async def get(self, run_id: str) -> StoredRun:
        """The stored run (status, awaiting nodes, pause metadata, context bytes)."""
        return await self.store.get(run_id)

    async def result(self, run_id: str) -> RunResult:
        """The stored run as a ``RunResult`` (outputs, state, awaiting records)."""
        stored = await self.store.get(run_id)
        if not stored.context:
            raise StoreError(f"run {run_id!r} has not stored a context yet (it is still starting)")
        return self._rebuild(stored, stored.context)

    async def list(
        self,
        status: str | None = None,
        flow_id: str | None = None,
        reason: str | None = None,
        expired: bool | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> RunPage:
        """Stored runs matching every filter given, oldest first, a page at a time.

        ``expired=True`` lists awaiting runs past their ``max_pause``.
        """
        return await self.store.list(
            status=status,
            flow_id=flow_id,
            reason=reason,
            expired=expired,
            now=self.runtime.clock.now(),
            limit=limit,
            cursor=cursor,
        )

    async def history(self, run_id: str) -> builtins.list[HistoryRecord]:
        """The run's audit trail: starts, pauses, resumes, timers, cancellations, who and why."""
        await self.store.get(run_id)
        return await self.store.history(run_id)

    async def cleanup(self, finished_before: datetime | Duration) -> int:
        """Delete finished runs last updated before a time (or older than a duration)."""
        if not isinstance(finished_before, datetime):
            finished_before = self.runtime.clock.now() - timedelta(
                seconds=_seconds(finished_before)
            )
        return await self.store.delete_finished(finished_before)

    async def stats(self) -> RunStats:
        """Counts by status, by flow, awaiting by reason, and expired."""
        return await self.store.stats(self.runtime.clock.now())

    @asynccontextmanager
    async def scheduler(
        self,
        interval: Duration = 1.0,
        on_result: Callable[[RunResult], Any] | None = None,
        *,
        batch: int = 100,
    ) -> AsyncIterator[DurableScheduler]:
        """Fire due timers, expire waits and recover crashed runs from the store while open.

        Several schedulers (in several processes) may run at once: per-run leases and
        compare-and-set make each firing happen once. Overdue timers fire on the first tick.
        """
        from flowcraft._service.scheduler import DurableScheduler

        sched = DurableScheduler(self, _seconds(interval), on_result, batch)
        async with anyio.create_task_group() as tg:
            tg.start_soon(sched.loop)
            try:
                yield sched
            finally:
                tg.cancel_scope.cancel()

    async def recover(self) -> builtins.list[RunResult]:
        """Re-execute runs left ``running`` by a dead process, from their last checkpoint."""
        results: builtins.list[RunResult] = []
        cursor: str | None = None
        while True:
            page = await self.store.list(status="running", limit=100, cursor=cursor)
            for stored in page.runs:
                run_id = stored.run_id
                if run_id in self._controls or run_id in self.busy:
                    continue
                self.busy.add(run_id)
                try:
                    now = self.runtime.clock.now()
                    lease = f"run:{run_id}"
                    if await self.store.acquire_lease(lease, self.owner, self.lease_ttl, now):
                        results.append(await recover_run(self, stored))
                except (RevisionConflictError, NotAwaitingError):
                    continue  # another process got there first
                finally:
                    self.busy.discard(run_id)
            cursor = page.next_cursor
            if cursor is None:
                return results

    # --- internals ---------------------------------------------------------------------------

    def _flow(self, flow_id: str) -> tuple[Blueprint, Mapping[str, object]]:
        try:
            return self._flows[flow_id]
        except KeyError:
            raise UnknownFlowError(flow_id, sorted(self._flows)) from None

    def _pause_limit(self, flow_id: str) -> timedelta | None:
        limit = self._max_pause.get(flow_id, self._max_pause.get("*"))
        return None if limit is None else timedelta(seconds=_seconds(limit))

    @staticmethod
    def _replace(stored: StoredRun, **changes: Any) -> StoredRun:
        return msgspec.structs.replace(stored, revision=stored.revision + 1, **changes)

    async def _release(self, stored: StoredRun, by: str | None) -> RunResult:
        """Lift a hold: timers and expiries count again."""
        now = self.runtime.clock.now()
        due = [d for d in (stored.wake_at, stored.expires_at) if d is not None]
        if stored.pause_deadline is not None and self.cancel_expired:
            due.append(stored.pause_deadline)
        released = self._replace(stored, held=False, due_at=min(due, default=None), updated_at=now)
        await self.store.save(
            released, stored.revision, history=[HistoryRecord(at=now, event="release", by=by)]
        )
        return self._rebuild(released, released.context)

    async def _cancel_stored(
        self, stored: StoredRun, reason: str | None, by: str | None, *, event: str
    ) -> StoredRun:
        """Cancel an awaiting run (not executing anywhere): write a cancelled context."""
        bp, reg = self._flow(stored.flow_id)
        now = self.runtime.clock.now()
        result = await self.runtime.cancel(bp, stored.context, reason=reason, by=by, registry=reg)
        data = result.serialized_context
        cancelled = StoredRun(
            run_id=stored.run_id,
            flow_id=stored.flow_id,
            status="cancelled",
            revision=stored.revision + 1,
            created_at=stored.created_at,
            updated_at=now,
            context=data,
        )
        record = HistoryRecord(at=now, event=event, by=by, reason=reason, revision=result.revision)
        await self.store.save(cancelled, stored.revision, history=[record])
        return cancelled

    def due_node(self, stored: StoredRun, now: datetime) -> tuple[str, bool] | None:
        """The awaiting node due first at ``now`` as ``(node_id, is_expiry)``, if any."""
        best: tuple[datetime, str, bool] | None = None
        for a in self._rebuild(stored, stored.context).awaiting:
            when, expiry = (a.wake_at, False) if a.reason == "timer" else (a.expires_at, True)
            if when is not None and when <= now and (best is None or when < best[0]):
                best = (when, a.node_id, expiry)
        return None if best is None else (best[1], best[2])

    async def fire(self, stored: StoredRun, node_id: str, expiry: bool) -> RunResult:
        """Resume a due timer, or time out an expired wait along its ``on_timeout`` action."""
        bp, reg = self._flow(stored.flow_id)
        rt = self.runtime
        self._controls[stored.run_id] = RunControl()
        try:
            return await execute(
                self,
                stored,
                lambda c: rt.fire(
                    bp, stored.context, node_id, registry=reg, control=c, by=SCHEDULER
                ),
            )
        finally:
            self._controls.pop(stored.run_id, None)

    def _rebuild(self, stored: StoredRun, data: bytes) -> RunResult:
        bp, reg = self._flow(stored.flow_id)
        return self.runtime.inspect(bp, data, registry=reg)
