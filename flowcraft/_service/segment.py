"""One segment of a durable run: claim → execute → commit (DESIGN §8).

A *segment* is the work between two stored states (a start, a resume, a timer firing, the
continuation of a paused run, a recovery). Every segment:

1. **Claims** the run: one compare-and-set write (``claim``) moves it to ``running`` and stores,
   in that same write, the ``Intent``, the owner, the lease expiry and the idempotency key. The
   awaiting fields (context, timers, pause metadata) stay as they were, so the claim can be
   undone exactly. A claim that loses its compare-and-set executes nothing.
2. **Executes** under the lease (``Segment``): a watcher renews the lease (a compare-and-set
   write that moves the revision) and applies pause/cancel requests left in the store under
   the claim's id; only the claim's owner writes the run while the lease is live.
3. **Commits** the result with compare-and-set on the revision the segment last wrote, with
   its history and idempotency record in the same write.

A segment the runtime refuses (it raises before changing anything: unknown action, bad data,
changed blueprint, ...) restores the run exactly as it was before the claim, revision included
(``restore``; a start is deleted). Every write carries the claim id, so a write whose reply was
lost (connection dropped, a driver retry that then conflicts) is recognised as one's own.
"""

from __future__ import annotations

import asyncio  # noqa: TID251 (see Segment._watched)
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import anyio
import msgspec

from flowcraft._clock import SystemClock
from flowcraft._errors import (
    ContextTooLargeError,
    FlowcraftError,
    IntentCorruptionError,
    ResumeDataError,
    RevisionConflictError,
    RunNotFoundError,
    StoreCorruptionError,
    StoreError,
)
from flowcraft._service.parts import (
    CONTINUATION,
    Control,
    Fanout,
    Host,
    Intent,
    Request,
    control_key,
    decode_intent,
    decode_request,
    encode_intent,
    handed,
    new_control,
    new_token,
    refused,
    remembered,
)
from flowcraft._values import RunResult
from flowcraft.stores._base import HistoryRecord, StoredRun

__all__ = [
    "NOT_AWAITING",
    "Refused",
    "Segment",
    "Unreadable",
    "cas",
    "claim",
    "claim_many",
    "restore",
    "spread",
    "stored_from",
    "stored_intent",
    "unreadable_intent",
]

log = logging.getLogger("flowcraft.service")

_CHECKPOINT = "checkpoint"  # the note of nodes an engine snapshot left to run

#: The awaiting fields of a stored run, cleared: what a run executing (a checkpoint, a fan-out
#: in flight) carries instead of its waits, timers and pause metadata.
NOT_AWAITING: dict[str, Any] = {
    "awaiting": (),
    "reasons": (),
    "wake_at": None,
    "expires_at": None,
    "due_at": None,
    "pause_deadline": None,
    "paused_at": None,
    "paused_by": None,
    "pause_reason": None,
    "pause_request_id": None,
}


class Refused(NamedTuple):
    """What a segment refused on validation writes instead of undoing its claim (``refusal``).

    ``run`` is compare-and-set on the segment's revision with ``history`` and ``idempotency``;
    ``result``: the run ended with that write (returned instead of the refusal being raised).
    """

    run: StoredRun
    history: Sequence[HistoryRecord] = ()
    idempotency: tuple[str, bytes] | None = None
    result: RunResult | None = None


#: Refusals of a recovered step checkpoint's replay before the run is stored failed, by
#: default (``FlowService(fault_attempts=)``).
REFUSALS = 3
_BACKOFF_MAX = 3600.0


def backoff_until(host: Host, attempt: int, stored: StoredRun) -> datetime:
    """The lease after a fault's ``attempt``-th refusal: ``lease_ttl * 2**(attempt - 1)`` on.

    Recovery (and the fan-out sweep) leaves the run alone until then.
    """
    delay = min(host.lease_ttl * 2 ** (attempt - 1), max(host.lease_ttl, _BACKOFF_MAX))
    until = host.now() + timedelta(seconds=delay)
    if stored.lease_until is not None and stored.lease_until > until:
        until = stored.lease_until  # another fault backs it off longer
    return until


def failed_as_is(
    before: StoredRun, latest: StoredRun, now: datetime, fault: dict[str, Any]
) -> StoredRun:
    """``before`` stored failed with ``fault``, its context as it is.

    Claim and waits cleared: a refusal that could not become the run's own failed result.
    """
    return msgspec.structs.replace(
        before,
        status="failed",
        revision=latest.revision + 1,
        updated_at=now,
        intent=b"",
        owner=None,
        lease_until=None,
        claim=new_token(),
        claim_key=None,
        **NOT_AWAITING,
        awaiting_since=None,
        **fault,
    )


def fault_of(
    host: Host, run: StoredRun, exc: Exception, data: dict[str, Any]
) -> tuple[datetime, HistoryRecord, dict[str, Any]]:
    """A fault of ``run`` now: the time, its ``fault`` history record, its fault fields."""
    reason = f"{type(exc).__name__}: {exc}"
    now = host.now()
    record = HistoryRecord(at=now, event="fault", by=host.owner, reason=reason, data=data)
    return now, record, {"fault": reason, "fault_count": run.fault_count + 1}


def refused_checkpoint(
    host: Host, before: StoredRun, intent: Intent, latest: StoredRun, exc: Exception
) -> Refused:
    """What a refused replay of a step checkpoint writes (``Segment.abandon``).

    The checkpoint's nodes ran, so undoing the claim to the run as its decision found it
    would run them again, and the checkpoint itself waits on nothing (undone to awaiting, the
    run was stuck). The run goes back to ``before`` (running, the checkpoint pending) with the
    fault recorded (``fault``, ``fault_count``, a ``fault`` history record with the attempt)
    and its lease backed off, so recovery tries again later: the run's own flow redeployed
    lets it go on. The ``fault_attempts``-th refusal stores it failed, its context as it is.
    """
    attempt = intent.refusals + 1
    now, record, fault = fault_of(host, before, exc, {"checkpoint": True, "attempt": attempt})
    reason = record.reason
    if attempt < host.fault_attempts:
        run = msgspec.structs.replace(
            before,
            revision=latest.revision + 1,
            updated_at=now,
            lease_until=backoff_until(host, attempt, before),
            intent=encode_intent(
                msgspec.structs.replace(intent, refusals=attempt), before.run_id
            ),
            **fault,
        )
        log.warning(
            "flowcraft service: recovering run %s from its checkpoint was refused "
            "(attempt %d of %d, again after %s): %s",
            before.run_id,
            attempt,
            host.fault_attempts,
            run.lease_until,
            reason,
        )
        return Refused(run, [record])
    log.error(
        "flowcraft service: recovering run %s from its checkpoint was refused %d times; "
        "the run is stored failed: %s",
        before.run_id,
        attempt,
        reason,
    )
    run = failed_as_is(before, latest, now, fault)
    return Refused(run, [record, HistoryRecord(at=now, event="failed", reason=reason)])


class Unreadable(NamedTuple):
    """Why recovery cannot replay a running run's intent.

    ``raw``: the bytes its claim stored; ``refusals``: the attempts already made; ``detail``:
    what is wrong with them.
    """

    raw: bytes
    refusals: int
    detail: str


def _misfit(intent: Intent, stored: StoredRun) -> str | None:
    """What makes a decoded intent one no claim of ``stored`` can have stored, or None.

    Replaying it would apply something twice (a start over a run that went on) or lose the
    run (a decision refused on a run with no context is undone by deleting it).
    """
    kind = intent.kind
    if kind == "unreadable":
        return "an unreadable intent kept inside another"
    if kind == "start":
        return "a start, but the run has a context already" if stored.context else None
    if not stored.context:
        return f"a {kind!r} intent, but the run has no context yet"
    if kind in ("batch", "gather") and intent.fanout is None:
        return f"a {kind!r} intent without its fan-out"
    return None


def stored_intent(stored: StoredRun) -> tuple[Intent, bytes] | Unreadable:
    """The intent recovery replays for ``stored`` and its bytes, or why it cannot.

    An intent recovery could not read before (kept as ``unreadable``) is read again, so a
    release that reads it (or a restored record) goes on where the claim left off.
    """
    raw, refusals = stored.intent, 0
    try:
        intent = decode_intent(raw)
        if intent.kind == "unreadable":
            raw, refusals = intent.raw or b"", intent.refusals
            intent = decode_intent(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return Unreadable(raw, refusals, f"{type(exc).__name__}: {exc}")
    misfit = _misfit(intent, stored)
    if misfit is not None:
        return Unreadable(raw, refusals, misfit)
    return intent, raw


def unreadable_intent(
    host: Host, stored: StoredRun, bad: Unreadable
) -> tuple[StoredRun, list[HistoryRecord], IntentCorruptionError]:
    """What recovery writes for a run whose intent it cannot read, and the error it raises.

    Nothing of the claimed segment runs (what it was is unknown). Like a refused checkpoint
    (``refused_checkpoint``), it is a fault of the run: ``fault``, ``fault_count``, a
    ``fault`` history record with the attempt, the lease backed off, the bytes kept in an
    ``unreadable`` intent (a later try reads them again). The ``fault_attempts``-th try
    stores the run failed as its claim found it, the unread bytes left in its ``intent``.
    """
    attempt = bad.refusals + 1
    failed = attempt >= host.fault_attempts
    error = IntentCorruptionError(
        stored.run_id, bad.detail, attempt=attempt, attempts=host.fault_attempts, failed=failed
    )
    now, record, fault = fault_of(host, stored, error, {"intent": True, "attempt": attempt})
    reason = record.reason
    if not failed:
        kept = Intent(kind="unreadable", raw=bad.raw, refusals=attempt)
        run = msgspec.structs.replace(
            stored,
            revision=stored.revision + 1,
            updated_at=now,
            lease_until=backoff_until(host, attempt, stored),
            intent=encode_intent(kept, stored.run_id),
            **fault,
        )
        log.warning(
            "flowcraft service: recovery cannot read the intent of run %s (attempt %d of %d, "
            "again after %s): %s",
            stored.run_id,
            attempt,
            host.fault_attempts,
            run.lease_until,
            bad.detail,
        )
        return run, [record], error
    log.error(
        "flowcraft service: recovery could not read the intent of run %s %d times; the run "
        "is stored failed: %s",
        stored.run_id,
        attempt,
        bad.detail,
    )
    run = msgspec.structs.replace(failed_as_is(stored, stored, now, fault), intent=bad.raw)
    return run, [record, HistoryRecord(at=now, event="failed", reason=reason)], error


def _is_checkpoint(reason: str, description: str | None) -> bool:
    return reason == "pause" and description == _CHECKPOINT


async def _landed(host: Host, run: StoredRun) -> bool:
    """Whether ``run`` (written by this process) is what the store holds now."""
    try:
        now = await host.store.get(run.run_id)
    except RunNotFoundError:
        return False
    return now.revision == run.revision and now.claim == run.claim and now.status == run.status


async def cas(
    host: Host,
    run: StoredRun,
    expected: int,
    *,
    history: Sequence[HistoryRecord] = (),
    idempotency: tuple[str, bytes] | None = None,
    checkpoint: bool = False,
    durable: bool = True,
) -> None:
    """``store.save`` that recognises its own write when the reply was lost.

    ``checkpoint`` keeps ``run`` in the run's checkpoint history (``keep_checkpoints``).
    ``durable=False`` (a claim) lets a store that can commit it without its own sync
    (``Host.lazy_claims``); the segment's commit syncs it.

    A conflict whose stored revision carries this write's claim id is this write, applied
    earlier (a driver retried it); a ``StoreError`` is checked once against the store.
    """
    try:
        if checkpoint and host.keep_checkpoints > 0:
            await host.store.save(
                run,
                expected,
                history=history,
                idempotency=idempotency,
                checkpoint=host.keep_checkpoints,
            )
        elif not durable and host.lazy_claims:
            await host.store.save(  # type: ignore[call-arg]
                run, expected, history=history, idempotency=idempotency, durable=False
            )
        else:
            await host.store.save(run, expected, history=history, idempotency=idempotency)
    except RevisionConflictError:
        if run.claim is not None and await _landed(host, run):
            return
        raise
    except (RunNotFoundError, StoreCorruptionError):
        raise
    except StoreError:
        try:
            if run.claim is not None and await _landed(host, run):
                return
        except StoreError:
            pass
        raise


async def claim(
    host: Host, stored: StoredRun, intent: Intent, key: str | None, *, resumed: bool = False
) -> StoredRun:
    """Claim an awaiting run for a segment; ``RevisionConflictError`` if another got it first.

    ``resumed`` (a decision or continuation) counts in ``resume_count``/``last_resumed_at``,
    and the intent keeps what they were: a refused segment restores the prior run (or, on
    recovery, puts them back: ``recovered_prior``), so the count is undone with it.
    """
    now = host.now()
    if resumed:
        intent = msgspec.structs.replace(
            intent, counted_from=stored.resume_count, resumed_before=stored.last_resumed_at
        )
        stored = msgspec.structs.replace(
            stored, resume_count=stored.resume_count + 1, last_resumed_at=now
        )
    claimed = msgspec.structs.replace(
        stored,
        status="running",
        revision=stored.revision + 1,
        intent=encode_intent(intent, stored.run_id),
        owner=host.owner,
        lease_until=now + timedelta(seconds=host.lease_ttl),
        claim=new_token(),
        claim_key=key,
    )
    start = time.time_ns() if host.listeners else 0
    await cas(host, claimed, stored.revision, durable=False)
    if host.listeners:
        host.notify("claim", claimed, start)
    log.debug(
        "flowcraft: claim run %s (flow %s) rev %d",
        claimed.run_id,
        claimed.flow_id,
        claimed.revision,
    )
    return claimed


async def claim_many(
    host: Host, items: Sequence[tuple[StoredRun, bytes]]
) -> list[StoredRun | None]:
    """Claim many awaiting runs (``(stored, intent)``) in one store write, where it can.

    A store with ``save_many`` applies every claim in one transaction (SQLite, PostgreSQL) or
    one round trip of atomic scripts (Redis), each its own compare-and-set like ``claim``.
    Returns the claimed run, or None where the claim did not land (another writer got the run
    first, it was deleted, or the store failed and the write is not found there): nothing
    runs for those. A claim that landed but whose reply was lost leaves the run claimed under
    its intent, so lease recovery fires it, once.
    """
    now = host.now()
    until = now + timedelta(seconds=host.lease_ttl)
    claimed = [
        msgspec.structs.replace(
            stored,
            status="running",
            revision=stored.revision + 1,
            intent=intent,
            owner=host.owner,
            lease_until=until,
            claim=new_token(),
            claim_key=None,
        )
        for stored, intent in items
    ]
    many = getattr(host.store, "save_many", None)
    errors: list[Exception | None]
    if many is None:
        errors = []
        for run, (stored, _) in zip(claimed, items, strict=True):
            try:
                await cas(host, run, stored.revision)
                errors.append(None)
            except (StoreError, RunNotFoundError) as exc:
                errors.append(exc)
    else:
        writes = [(run, stored.revision) for run, (stored, _) in zip(claimed, items, strict=True)]
        try:
            errors = await many(writes)
        except StoreError as exc:
            errors = [exc] * len(writes)
    out: list[StoredRun | None] = []
    for run, error in zip(claimed, errors, strict=True):
        if error is None:
            out.append(run)
            continue
        landed = False
        if many is not None and not isinstance(error, RunNotFoundError | StoreCorruptionError):
            try:
                landed = await _landed(host, run)  # our write, applied before its reply was lost
            except StoreError:
                landed = False
        if not landed and not isinstance(error, RevisionConflictError | RunNotFoundError):
            log.warning("flowcraft service: claim of run %s not stored: %s", run.run_id, error)
        out.append(run if landed else None)
    return out


async def restore(
    host: Host,
    latest: StoredRun,
    prior: StoredRun | None,
    *,
    idempotency: tuple[str, bytes] | None = None,
) -> None:
    """Undo a claim whose segment was refused: the run is exactly ``prior`` again.

    Writing ``prior`` back under its own revision is safe: its content is byte-for-byte the
    state every reader of that revision saw. ``prior=None`` (a refused start) deletes the run.
    ``idempotency`` is remembered in the same write (a refusal, see ``Segment.abandon``).
    """
    try:
        if prior is None:
            await host.store.delete(latest.run_id, latest.revision)
        else:
            await cas(host, prior, latest.revision, idempotency=idempotency)
    except StoreError:
        log.exception("flowcraft service: could not restore run %s", latest.run_id)


def recovered_prior(host: Host, latest: StoredRun) -> StoredRun | None:
    """What to restore when a recovered segment is refused: the run awaiting, claim cleared.

    A refused decision or continuation is not counted: ``resume_count``/``last_resumed_at``
    go back to what its claim found (kept in the intent).
    """
    if not latest.context:
        return None  # a start that never stored a context
    counts: dict[str, Any] = {}
    try:
        intent = decode_intent(latest.intent)
    except (msgspec.DecodeError, msgspec.ValidationError):
        intent = None  # the replay decoded it; a claim that changed since keeps its count
    if intent is not None and intent.counted_from is not None:
        counts = {
            "resume_count": intent.counted_from,
            "last_resumed_at": intent.resumed_before,
        }
    return msgspec.structs.replace(
        latest,
        status="awaiting",
        revision=latest.revision + 1,
        intent=b"",
        owner=None,
        lease_until=None,
        claim=new_token(),
        claim_key=None,
        updated_at=host.now(),
        **counts,
    )


class Segment:
    """Executes one claimed segment: lease renewal, requests, checkpoints, commit.

    ``latest`` is the run as this segment last wrote it; every write goes through ``lock``
    and is a compare-and-set on ``latest.revision``. ``lost`` is set when another process took
    the run over (our lease lapsed): nothing more is written.
    """

    def __init__(
        self,
        host: Host,
        claimed: StoredRun,
        prior: StoredRun | None,
        key: str | None,
        *,
        recovered: bool = False,
        digest: str | None = None,
        executed: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.latest = claimed
        #: Called once the call has ended (its nodes ran), before the outcome is committed.
        self.executed = executed
        self.prior = prior
        self.recovered = recovered
        self.key = key
        self.digest = digest
        self.lock = anyio.Lock()
        self.lost: RevisionConflictError | None = None
        self.control: Control = new_control()
        checkpoint = Intent(kind="checkpoint", key=key, digest=digest)
        self.checkpoint_intent = encode_intent(checkpoint, claimed.run_id)
        self.taken = 0  # snapshots handed over, in the order the engine took them
        self.written = 0  # the newest of them stored
        self.checkpointed = False
        self.ended = False  # the call is over: ``watch`` returns at its next look
        self.renewing = False  # ``watch`` is writing a renewal: it must learn how that went
        self.fanned: dict[str, int] = {}  # batches left to workers: node id -> item count
        #: Set for a segment whose claim is not undone when it is refused (a fan-out's gather:
        #: ``fanout.refused``): ``refusal(latest, error)`` is what to write instead.
        self.refusal: Callable[[StoredRun, Exception], Refused] | None = None
        if host.scatter > 0:
            self.control.on_scatter = self.scatter

    def scatter(self, node_id: str, count: int) -> bool:
        """``RunControl.on_scatter``: every batch's items go to workers (``fanout``)."""
        self.fanned[node_id] = count
        return True

    async def run(
        self,
        call: Callable[[Any], Awaitable[RunResult]],
        *,
        continuation: dict[str, Any] | None = None,
        extra: Sequence[HistoryRecord] = (),
    ) -> RunResult:
        """Execute ``call(control)`` under the claim and commit its result.

        Shielded from the caller's cancellation (a timeout around ``resume``, a client gone):
        a claimed segment runs to its commit, once, and the cancellation is delivered after
        it. Abandoned mid-node, it would stay ``running`` until its lease lapsed and recovery
        replayed its nodes. A node's own ``timeout=`` still bounds it; requests made with
        ``FlowService.pause``/``cancel`` still reach it.
        """
        with anyio.CancelScope(shield=True):
            result = await self._run(call, continuation, extra)
        return result

    async def _run(
        self,
        call: Callable[[Any], Awaitable[RunResult]],
        continuation: dict[str, Any] | None,
        extra: Sequence[HistoryRecord],
    ) -> RunResult:
        host = self.host
        run_id = self.latest.run_id
        host.controls[run_id] = self.control
        if host.durability == "step":
            self.control.on_checkpoint = self.checkpoint
        failure: Exception | None = None
        token = CONTINUATION.set(continuation)
        try:
            try:
                result = await self._watched(call)
            except Exception as exc:  # re-raised below
                failure = exc
            if self.executed is not None:
                self.executed()
            if self.lost is not None:
                raise self.lost  # another process owns the run now: store nothing
            if failure is not None:
                if isinstance(failure, TypeError | ValueError | RecursionError) and not isinstance(
                    failure, FlowcraftError
                ):
                    failure = _bad_payload(run_id, failure)
                ended = await self.abandon(failure)
                if ended is not None:
                    return ended
                raise failure
            limit = host.max_bytes()
            size = len(result.serialized_context)
            if size > limit:
                too_large = ContextTooLargeError(run_id, size, limit)
                ended = await self.abandon(too_large, keyed=False)
                if ended is not None:
                    return ended
                raise too_large
            await self.commit(result, extra)
            if self.fanned and result.status == "awaiting":
                if host.outbox is not None:
                    await host.outbox(self.latest)
                return handed(self.latest)
            return result
        finally:
            CONTINUATION.reset(token)
            host.controls.pop(run_id, None)
            host.settled(run_id)

    async def _watched(self, call: Callable[[Any], Awaitable[RunResult]]) -> RunResult:
        """``call(control)`` with ``watch`` beside it once it has run for a watch step.

        Most segments end within microseconds, long before their first lease renewal is
        due, so on asyncio the watcher is only spawned if the call is still running after
        one step of the clock (a timer handle, cancelled when the call ends): the system
        clock's through the loop, a ``FakeClock``'s through ``FakeClock.call_later``. Under
        another clock, an autojumping ``FakeClock`` (whose time moves when sleepers wait) or
        another event loop, the watcher runs beside the call from the start and sleeps that
        step first: the same schedule.
        """
        clock = self.host.runtime.clock
        running = _asyncio_loop()
        if running is not None:
            if type(clock) is SystemClock:
                return await self._watched_later(call, running, running.call_later)
            later = getattr(clock, "call_later", None)  # FakeClock, unless it autojumps
            if later is not None and not getattr(clock, "autojump", False):
                return await self._watched_later(call, running, later)
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.watch)
            try:
                result = await call(self.control)
            except Exception as exc:  # raised below, outside the task group
                failure = exc
            finally:
                self.ended = True
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return result

    async def _watched_later(
        self,
        call: Callable[[Any], Awaitable[RunResult]],
        loop: asyncio.AbstractEventLoop,
        later: Callable[[float, Callable[[], None]], Any],
    ) -> RunResult:
        """``_watched`` on asyncio: spawn the watcher from a timer handle, if ever due.

        ``later(seconds, callback)`` schedules on the clock's time and returns a handle with
        ``cancel()``: the loop's ``call_later`` for the system clock, ``FakeClock.call_later``.
        """
        watcher: asyncio.Task[None] | None = None

        def begin() -> None:
            nonlocal watcher
            watcher = loop.create_task(self.watch(delay=False))

        handle = later(self._step(), begin)
        try:
            return await call(self.control)
        finally:
            handle.cancel()
            if watcher is not None:
                # Cancelled, and told to stop: a cancellation a library swallows (seen with
                # redis-py under load: the watcher slept on, renewing the lease of a segment
                # that had ended, and the run stayed ``running`` for good) is sent again,
                # and the watcher returns at its next look whatever happens to it.
                # Never while it writes a renewal, though: that cancellation is native, no
                # store's shield holds it back, and a renewal that landed unbeknownst to the
                # watcher leaves ``latest`` a revision behind, so the commit would conflict
                # and the segment's decision be lost. The write ends on its own; ``ended``
                # (read before any write begins) keeps another from starting.
                self.ended = True
                with anyio.CancelScope(shield=True):
                    while not watcher.done():
                        if not self.renewing:
                            watcher.cancel()
                        await asyncio.wait([watcher], timeout=self._step())
                if not watcher.cancelled() and watcher.exception() is not None:
                    log.error(
                        "flowcraft service: watching run %s failed",
                        self.latest.run_id,
                        exc_info=watcher.exception(),
                    )

    def _step(self) -> float:
        """Seconds between two looks at the lease and the run's requests."""
        return min(self.host.poll_interval, self.host.lease_ttl / 3)

    async def abandon(self, failure: Exception, *, keyed: bool = True) -> RunResult | None:
        """The segment stored nothing worth keeping: undo its claim (or keep its checkpoint).

        A recovered or handed-over decision with an idempotency key that is refused
        (``failure``, a ``FlowcraftError``; ``keyed``) leaves the refusal under its key, in the
        same write: its caller is elsewhere and reads it back with ``FlowService.outcome``.
        A segment with a ``refusal`` writes what that makes of the run instead of undoing
        its claim; returns the result when that ended the run (else None: raise ``failure``).
        """
        async with self.lock:
            if self.lost is not None:
                return None
            if self.checkpointed:
                # Nodes ran and their checkpoint is stored: keep it, awaiting, resumable.
                result = self.host.rebuild(self.latest, self.latest.context)
                run = stored_from(self.host, self.latest, result, self.host.now(), None)
                try:
                    await cas(self.host, run, self.latest.revision)
                except StoreError:
                    log.exception("flowcraft service: run %s left running", run.run_id)
                return None
            if self.refusal is not None:
                return await self._refuse(self.refusal(self.latest, failure))
            prior = recovered_prior(self.host, self.latest) if self.recovered else self.prior
            idem = None
            if (
                keyed
                and self.recovered
                and self.key is not None
                and isinstance(failure, FlowcraftError)
            ):
                idem = (self.key, refused(self.digest, failure))
            await restore(self.host, self.latest, prior, idempotency=idem)
            return None

    async def _refuse(self, refusal: Refused) -> RunResult | None:
        """Write ``refusal`` (under ``lock``); its result, if it ended the run and landed."""
        host = self.host
        run = refusal.run
        host.requests.pop(run.run_id, None)  # a request stays in the store for the next claim
        try:
            await cas(
                host,
                run,
                self.latest.revision,
                history=refusal.history,
                idempotency=refusal.idempotency,
                checkpoint=refusal.result is not None,
            )
        except StoreError:
            log.exception("flowcraft service: refusal of run %s not stored", run.run_id)
            return None
        self.latest = run
        return refusal.result

    async def commit(self, result: RunResult, extra: Sequence[HistoryRecord]) -> None:
        """Store the result with compare-and-set on the revision this segment last wrote."""
        host = self.host
        async with self.lock:
            if self.lost is not None:
                raise self.lost
            latest = self.latest
            now = host.now()
            history = new_history(host, latest, result)
            history.extend(extra)
            if result.status in ("completed", "failed"):
                history.append(HistoryRecord(at=now, event=result.status, revision=result.revision))
            stored = stored_from(host, latest, result, now, host.requests.pop(latest.run_id, None))
            idem = None
            fanned = bool(self.fanned) and result.status == "awaiting"
            if fanned:
                # Still running: the batch's items go to workers, the gather stores the outcome
                # (and the decision's idempotency record); no checkpoint of a half-done batch.
                stored = spread(host, stored, self.fanned, self.key, self.digest)
            elif self.key is not None:
                idem = (self.key, remembered(self.digest, result.serialized_context))
            start = time.time_ns() if host.listeners else 0
            await cas(
                host,
                stored,
                latest.revision,
                history=history,
                idempotency=idem,
                checkpoint=not fanned,
            )
            self.latest = stored
            if host.listeners:
                host.notify("commit", stored, start)
            log.info(
                "flowcraft: commit run %s (flow %s) rev %d: %s%s",
                stored.run_id,
                stored.flow_id,
                stored.revision,
                stored.status,
                f" on {', '.join(stored.awaiting)}" if stored.awaiting else "",
            )

    async def _write(self, run: StoredRun, history: Sequence[HistoryRecord] = ()) -> bool:
        """A mid-segment write (lease renewal, checkpoint); False once the run was lost."""
        try:
            await cas(self.host, run, self.latest.revision, history=history)
        except RevisionConflictError as exc:
            # Another process took the run over (recovered it after our lease lapsed, or
            # changed it): stop here rather than fork it.
            log.warning("flowcraft service: run %s was taken over; stopping", run.run_id)
            self.lost = exc
            self.control.cancel()
            return False
        self.latest = run
        return True

    async def checkpoint(self, snapshot: bytes) -> None:
        """``RunControl.on_checkpoint``: store ``snapshot`` unless a newer one already is."""
        self.taken += 1
        seq = self.taken
        host = self.host
        result = host.rebuild(self.latest, snapshot)
        if not any(_is_checkpoint(a.reason, a.description) for a in result.awaiting):
            # Nothing left to run (the result is stored next), or only real waits: resuming
            # this snapshot with no data would not continue the run, so it is not a checkpoint.
            return
        async with self.lock:
            latest = self.latest
            if self.lost is not None or seq < self.written:
                return
            run = msgspec.structs.replace(
                latest,
                revision=latest.revision + 1,
                updated_at=host.now(),
                context=snapshot,
                intent=self.checkpoint_intent,
                **NOT_AWAITING,
                held=False,
            )
            try:
                if await self._write(run, new_history(host, latest, result)):
                    self.written = seq
                    self.checkpointed = True
            except StoreError:
                log.exception("flowcraft service: checkpoint of run %s not stored", run.run_id)

    async def watch(self, *, delay: bool = True) -> None:
        """Renew the lease and apply pause/cancel requests made from other processes.

        ``delay=False``: look at once (the caller already waited one step).
        """
        host = self.host
        clock = host.runtime.clock
        ttl = timedelta(seconds=host.lease_ttl)
        step = self._step()
        key = control_key(self.latest.claim or "")
        unreadable: bytes | None = None
        while not self.ended:
            if delay:
                await clock.sleep(step)
            delay = True
            try:
                raw = await host.store.recall(self.latest.run_id, key)
                now = clock.now()
                async with self.lock:
                    latest = self.latest
                    until = latest.lease_until
                    if self.ended:
                        return
                    if self.lost is None and (until is None or until - now < ttl / 2):
                        renewed = msgspec.structs.replace(
                            latest, revision=latest.revision + 1, lease_until=now + ttl
                        )
                        self.renewing = True
                        try:
                            if not await self._write(renewed):
                                return
                        finally:
                            self.renewing = False
            except StoreError:
                log.exception("flowcraft service: watching run %s", self.latest.run_id)
                continue
            if raw is not None and raw != unreadable:
                request = decode_request(raw, self.latest.run_id)
                if request is None:  # logged once; the lease is still ours to renew
                    unreadable = raw
                    continue
                host.requests[self.latest.run_id] = request
                if request.kind == "cancel":
                    self.control.cancel()
                else:
                    self.control.pause(request.reason, request.by)
                return


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, or None (another event loop, e.g. trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _bad_payload(run_id: str, exc: Exception) -> ResumeDataError:
    err = ResumeDataError(run_id, None, f"{type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err


def new_history(host: Host, base: StoredRun, result: RunResult) -> list[HistoryRecord]:
    """The entries ``result`` adds to the history stored with ``base``.

    A multiset difference, since pending pauses are listed after entries made later.
    Checkpoint bookkeeping (the frontier an engine snapshot pauses, and its continuation
    when a run is recovered from it) is not part of the run's story and is left out.
    """
    seen = Counter(host.rebuild(base, base.context).history if base.context else ())
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


def spread(
    host: Host, stored: StoredRun, items: dict[str, int], key: str | None, digest: str | None
) -> StoredRun:
    """``stored`` (a segment's result) as a fan-out: running, its items in the outbox."""
    now = host.now()
    fan = Fanout(items=dict(items), per=max(1, host.scatter))
    intent = Intent(kind="batch", key=key, digest=digest, fanout=fan)
    return msgspec.structs.replace(
        stored,
        status="running",
        intent=encode_intent(intent, stored.run_id),
        owner=host.owner,
        lease_until=now + timedelta(seconds=host.lease_ttl),
        claim_key=key,
        **NOT_AWAITING,
        awaiting_since=None,
    )


def stored_from(
    host: Host, base: StoredRun, result: RunResult, now: datetime, request: Request | None
) -> StoredRun:
    """The stored run of a segment's result (claim cleared, indexes computed)."""
    awaiting = result.awaiting
    wake = [a.wake_at for a in awaiting if a.wake_at is not None]
    expiry = [a.expires_at for a in awaiting if a.expires_at is not None]
    deadline = None
    paused = request if request is not None and request.kind == "pause" else None
    if result.status == "awaiting":
        limit = host.pause_limit(base.flow_id)
        deadline = None if limit is None else now + limit
        if paused is not None and paused.expires_at is not None:
            deadline = paused.expires_at
    due = [*wake, *expiry]
    if deadline is not None:
        due.append(deadline)  # the scheduler expires the run then (``on_expiry``)
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
        paused_at=(paused.at if paused else now) if result.status == "awaiting" else None,
        paused_by=paused.by if paused else (first.requested_by if first else None),
        pause_reason=paused.reason if paused else (first.description if first else None),
        pause_request_id=paused.request_id if paused else None,
        claim=base.claim,
        resume_count=base.resume_count,
        last_resumed_at=base.last_resumed_at,
        priority=base.priority,
        awaiting_since=min((a.since for a in awaiting), default=now)
        if result.status == "awaiting"
        else None,
    )
