"""How ``FlowService`` executes one run durably: what it stores, and the execution itself.

``execute`` runs a call under the run's lease while a watcher renews the lease and applies
pause/cancel requests other processes left in the store (``send``); with ``durability="step"``
``Checkpoints`` stores every engine snapshot with compare-and-set; the outcome is stored as a
``StoredRun`` with the history entries it added; ``recover_run`` replays the stored ``Intent``
of a run whose process died. The functions take the service first and keep no state of their
own (per-run controls and requests live on the service); ``_service``'s module docstring says
what all this guarantees.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

import anyio
import msgspec

from flowcraft._control import RunControl
from flowcraft._errors import ResumeError, RevisionConflictError, StoreError
from flowcraft._values import Resume, ResumeData, RunResult
from flowcraft.stores._base import HistoryRecord, StoredRun

if TYPE_CHECKING:
    from flowcraft._service.service import FlowService

__all__ = [
    "ENCODER",
    "Checkpoints",
    "Intent",
    "Request",
    "control_key",
    "data_dict",
    "execute",
    "recover_run",
    "send",
]

log = logging.getLogger("flowcraft.service")

_CHECKPOINT = "checkpoint"  # the note of nodes an engine snapshot left to run


class Intent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a running run was asked to do: replayed by recovery after a crash."""

    kind: Literal["start", "resume", "checkpoint"]  # checkpoint: resume the stored context
    state: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    node_id: str | None = None
    by: str | None = None
    key: str | None = None


class Request(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A pause or cancel request for a run executing in some process."""

    kind: Literal["pause", "cancel"]
    at: datetime
    reason: str | None = None
    by: str | None = None
    request_id: str | None = None


ENCODER = msgspec.msgpack.Encoder()
_INTENT = msgspec.msgpack.Decoder(Intent)
_REQUEST = msgspec.msgpack.Decoder(Request)


def _is_checkpoint(reason: str, description: str | None) -> bool:
    return reason == "pause" and description == _CHECKPOINT


def control_key(revision: int) -> str:
    """The store key of a request sent to the run executing from stored ``revision``."""
    return f"\0control:{revision}"


def data_dict(data: ResumeData) -> dict[str, Any] | None:
    """Resume data as the plain dict an ``Intent`` stores."""
    if data is None:
        return None
    if isinstance(data, Resume):
        out: dict[str, Any] = {"output": data.output, "action": data.action, "by": data.by}
        return {k: v for k, v in out.items() if v is not None}
    return dict(data)


class Checkpoints:
    """Step durability for one execution: stores each engine snapshot with compare-and-set.

    ``latest`` is the run as last written (the execution's base until a checkpoint is stored),
    so the final result's compare-and-set expects the revision the checkpoints moved it to.
    """

    def __init__(
        self, svc: FlowService, base: StoredRun, control: RunControl, key: str | None
    ) -> None:
        self.svc = svc
        self.latest = base
        self.control = control
        self.intent = ENCODER.encode(Intent(kind="checkpoint", key=key))
        self.lock = anyio.Lock()
        self.taken = 0  # snapshots handed over, in the order the engine took them
        self.written = 0  # the newest of them stored
        self.lost: RevisionConflictError | None = None

    async def write(self, snapshot: bytes) -> None:
        """``RunControl.on_checkpoint``: store ``snapshot`` unless a newer one already is."""
        self.taken += 1
        seq = self.taken
        svc = self.svc
        latest = self.latest
        result = svc._rebuild(latest, snapshot)
        if not any(_is_checkpoint(a.reason, a.description) for a in result.awaiting):
            # Nothing left to run (the result is stored next), or only real waits: resuming
            # this snapshot with no data would not continue the run, so it is not a checkpoint.
            return
        async with self.lock:
            latest = self.latest
            if self.lost is not None or seq < self.written:
                return
            now = svc.runtime.clock.now()
            run = msgspec.structs.replace(
                latest,
                status="running",
                revision=latest.revision + 1,
                updated_at=now,
                context=snapshot,
                intent=self.intent,
                awaiting=(),
                reasons=(),
                wake_at=None,
                expires_at=None,
                due_at=None,
                pause_deadline=None,
                paused_at=None,
                paused_by=None,
                pause_reason=None,
                pause_request_id=None,
                held=False,
            )
            history = _new_history(svc, latest, result)
            try:
                await svc.store.save(run, latest.revision, history=history)
            except RevisionConflictError as exc:
                # Another process took the run over (recovered it after our lease lapsed, or
                # changed it): stop here rather than fork it.
                log.warning("flowcraft service: run %s was taken over; stopping", latest.run_id)
                self.lost = exc
                self.control.cancel()
                return
            except StoreError:
                log.exception("flowcraft service: checkpoint of run %s not stored", latest.run_id)
                return
            self.latest = run
            self.written = seq


async def send(svc: FlowService, stored: StoredRun, request: Request) -> StoredRun:
    """Leave a pause/cancel request for the process executing a running run.

    It is remembered under the stored revision; step checkpoints move that revision, so it
    is sent again under each newer one until the revision holds still (the executing
    process checks every revision it wrote since its last look).
    """
    first = stored
    while True:
        await svc.store.remember(
            stored.run_id, control_key(stored.revision), ENCODER.encode(request)
        )
        now = await svc.store.get(stored.run_id)
        if now.status != "running" or now.revision == stored.revision:
            return first
        stored = now


async def recover_run(svc: FlowService, stored: StoredRun) -> RunResult:
    """Replay the stored intent of a run whose process died (its lease is held)."""
    intent = _INTENT.decode(stored.intent)
    bp, reg = svc._flow(stored.flow_id)
    run_id = stored.run_id
    now = svc.runtime.clock.now()
    base = svc._replace(stored, updated_at=now)
    await svc.store.save(
        base, stored.revision, history=[HistoryRecord(at=now, event="recover", by=svc.owner)]
    )
    svc._controls[run_id] = RunControl()
    try:
        if intent.kind == "checkpoint":
            # Continue from the last checkpoint: the nodes it left to run run (again).
            return await execute(
                svc,
                base,
                lambda c: svc.runtime.resume(
                    bp, stored.context, None, None, registry=reg, control=c
                ),
                key=intent.key,
            )
        if intent.kind == "start":
            state = intent.state or {}
            return await execute(
                svc,
                base,
                lambda c: svc.runtime.run(bp, state, registry=reg, run_id=run_id, control=c),
            )
        return await execute(
            svc,
            base,
            lambda c: svc.runtime.resume(
                bp,
                stored.context,
                intent.data,
                intent.node_id,
                registry=reg,
                control=c,
                by=intent.by,
            ),
            key=intent.key,
        )
    finally:
        svc._controls.pop(run_id, None)


async def execute(
    svc: FlowService,
    base: StoredRun,
    call: Callable[[RunControl], Awaitable[RunResult]],
    *,
    key: str | None = None,
    restore: StoredRun | None = None,
) -> RunResult:
    """Run ``call`` under this run's control, watching for requests, then store the result."""
    run_id = base.run_id
    control = svc._controls[run_id]
    checkpoints: Checkpoints | None = None
    if svc.durability == "step":
        checkpoints = Checkpoints(svc, base, control, key)
        control.on_checkpoint = checkpoints.write
    failure: Exception | None = None
    async with anyio.create_task_group() as tg:
        tg.start_soon(_watch, svc, base, control, checkpoints)
        try:
            result = await call(control)
        except Exception as exc:  # re-raised below, outside the task group's exception group
            failure = exc
        finally:
            tg.cancel_scope.cancel()
    latest = base if checkpoints is None else checkpoints.latest
    if checkpoints is not None and checkpoints.lost is not None:
        svc._requests.pop(run_id, None)
        raise checkpoints.lost  # another process owns the run now: store nothing
    if failure is not None:
        if isinstance(failure, ResumeError) and restore is not None and latest is base:
            # A refused resume changes nothing: undo the checkpoint.
            undo = msgspec.structs.replace(restore, revision=base.revision + 1)
            await svc.store.save(undo, base.revision)
        raise failure
    try:
        return await _store_result(svc, latest, result, key, svc._requests.pop(run_id, None))
    except RevisionConflictError:
        if key is not None:
            first = await svc.store.recall(run_id, key)
            if first is not None:  # a duplicate delivery won the race: same answer
                return svc._rebuild(base, first)
        raise
    finally:
        if latest.status == "running":
            await svc.store.release_lease(f"run:{run_id}", svc.owner)


async def _watch(
    svc: FlowService, base: StoredRun, control: RunControl, checkpoints: Checkpoints | None
) -> None:
    """Renew the run's lease and apply pause/cancel requests made from other processes.

    A request is remembered under the stored revision its sender saw; checkpoints move that
    revision while the run executes, so every revision written since the last look is
    checked (senders re-send under the newer revision until it stops moving).
    """
    clock = svc.runtime.clock
    checked = base.revision
    while True:
        await clock.sleep(svc.poll_interval)
        latest = base if checkpoints is None else checkpoints.latest
        raw: bytes | None = None
        try:
            if latest.status == "running":
                await svc.store.acquire_lease(
                    f"run:{base.run_id}", svc.owner, svc.lease_ttl, clock.now()
                )
            for revision in range(checked, latest.revision + 1):
                raw = await svc.store.recall(base.run_id, control_key(revision))
                if raw is not None:
                    break
        except StoreError:
            log.exception("flowcraft service: watching run %s", base.run_id)
            continue
        checked = latest.revision
        if raw is not None:
            request = _REQUEST.decode(raw)
            svc._requests[base.run_id] = request
            if request.kind == "cancel":
                control.cancel()
            else:
                control.pause(request.reason, request.by)
            return


async def _store_result(
    svc: FlowService,
    base: StoredRun,
    result: RunResult,
    key: str | None,
    request: Request | None,
    extra: Sequence[HistoryRecord] = (),
) -> RunResult:
    now = svc.runtime.clock.now()
    history = _new_history(svc, base, result)
    history.extend(extra)
    if result.status in ("completed", "failed"):
        history.append(HistoryRecord(at=now, event=result.status, revision=result.revision))
    stored = _stored_from(svc, base, result, now, request)
    idem = (key, result.serialized_context) if key is not None else None
    await svc.store.save(stored, base.revision, history=history, idempotency=idem)
    return result


def _new_history(svc: FlowService, base: StoredRun, result: RunResult) -> list[HistoryRecord]:
    """The entries ``result`` adds to the history stored with ``base``.

    A multiset difference, since pending pauses are listed after entries made later.
    Checkpoint bookkeeping (the frontier an engine snapshot pauses, and its continuation
    when a run is recovered from it) is not part of the run's story and is left out.
    """
    seen = Counter(svc._rebuild(base, base.context).history if base.context else ())
    history: list[HistoryRecord] = []
    previous: Any = None
    for h in result.history:
        entry, previous = previous, h
        if h.event == "pause" and h.reason == _CHECKPOINT:
            continue
        if (
            h.event == "resume"
            and entry is not None
            and entry.event == "pause"
            and entry.reason == _CHECKPOINT
            and entry.node_id == h.node_id
        ):
            continue
        if seen[h] > 0:
            seen[h] -= 1
            continue
        history.append(
            HistoryRecord(
                at=h.at,
                event=h.event,
                node_id=h.node_id or None,
                by=h.by,
                reason=h.reason,
                action=h.action,
                revision=result.revision,
            )
        )
    return history


def _stored_from(
    svc: FlowService, base: StoredRun, result: RunResult, now: datetime, request: Request | None
) -> StoredRun:
    awaiting = result.awaiting
    wake = [a.wake_at for a in awaiting if a.wake_at is not None]
    expiry = [a.expires_at for a in awaiting if a.expires_at is not None]
    deadline = None
    if result.status == "awaiting":
        limit = svc._pause_limit(base.flow_id)
        deadline = None if limit is None else now + limit
    due = [*wake, *expiry]
    if deadline is not None and svc.cancel_expired:
        due.append(deadline)
    paused = request if request is not None and request.kind == "pause" else None
    first = awaiting[0] if awaiting else None
    return StoredRun(
        run_id=base.run_id,
        flow_id=base.flow_id,
        status=result.status,
        revision=base.revision + 1,
        created_at=base.created_at,
        updated_at=now,
        context=result.serialized_context,
        awaiting=tuple(a.node_id for a in awaiting),
        reasons=tuple(a.reason for a in awaiting),
        wake_at=min(wake, default=None),
        expires_at=min(expiry, default=None),
        due_at=min(due, default=None) if result.status == "awaiting" else None,
        pause_deadline=deadline,
        paused_at=now if result.status == "awaiting" else None,
        paused_by=paused.by if paused else (first.requested_by if first else None),
        pause_reason=paused.reason if paused else (first.description if first else None),
        pause_request_id=paused.request_id if paused else None,
    )
