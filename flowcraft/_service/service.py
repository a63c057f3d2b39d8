"""``FlowService``: durable runs on a ``RunStore``, with a durable scheduler.

What is exactly-once and what is at-least-once (DESIGN §8, ``segment``'s docstring says how):

* **Exactly-once**: decisions, timer firings and state transitions. Every segment *claims* the
  run with one compare-and-set before any node runs, so of N concurrent deliveries of the same
  decision one executes; the node after the wait runs once. A duplicate with the same
  ``idempotency_key`` (concurrent or later) returns the first result, waiting for it while it
  runs. A different decision for a wait already decided raises ``AlreadyDecidedError`` naming
  the action that won, who decided and when. Decisions for *different* waits of one run
  arriving together are applied one after the other, each once, without errors.
* **At-least-once**: node side effects, only across crashes. A node may run again when its
  process dies before the result is stored (the run is recovered, after its lease expires,
  from its last stored state). Make side effects idempotent (pass ``node.run_id`` on).

What is stored, and so what a crash can cost, depends on ``durability``:

* ``"pause"`` (the default) writes a run when a segment claims it and when the segment ends
  (awaits, pauses or finishes). A run whose process dies is recovered by replaying its claim's
  intent: every node since the last stored state runs again.
* ``"step"`` also writes a checkpoint after every node finishes (one compare-and-set per node;
  the run stays ``"running"`` under its owner's lease). A run whose process dies is recovered
  from its last checkpoint: nodes finished before it are not run again. If a checkpoint finds
  the run taken over (this process stalled past its lease and another recovered it), this
  process stops, stores nothing more and raises ``RevisionConflictError``: a run never forks.

Hold and release: ``pause(run_id)`` of an awaiting run *holds* it (its timers do not fire);
decisions and ``resume(run_id)`` on a held run raise ``RunHeldError`` (who, when, why) and
change nothing; ``release(run_id)`` ends the hold. A run paused *while running* (``pause`` of a
running run, or ``RunControl``) is not held: ``resume(run_id, data)`` continues it, and the
continued nodes read ``data`` through ``FlowService.resume_data()``.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal, TypeAlias

import anyio
import msgspec

from flowcraft._errors import (
    AlreadyDecidedError,
    AmbiguousResumeError,
    CheckpointNotFoundError,
    FlowcraftError,
    IdempotencyKeyReusedError,
    IntentCorruptionError,
    InvalidDurationError,
    NodeNotAwaitingError,
    NotAwaitingError,
    OutOfRangeError,
    PauseExpiredError,
    ResumeDataError,
    ResumeError,
    RevisionConflictError,
    RunActiveError,
    RunBusyError,
    RunHeldError,
    RunNotFoundError,
    SerializationError,
    StoreCorruptionError,
    StoreError,
    UnknownFlowError,
)
from flowcraft._events import FlowEvent
from flowcraft._flow.blueprint import Blueprint
from flowcraft._flow.builder import Flow
from flowcraft._flow.durations import parse_duration
from flowcraft._runtime import FlowRuntime
from flowcraft._service import executor as ex
from flowcraft._service import fanout as fo
from flowcraft._service.health import ServiceHealth, check
from flowcraft._service.parts import (
    CONTINUATION,
    Claimed,
    Host,
    Intent,
    Request,
    ServiceEvent,
    Slot,
    control_key,
    data_dict,
    decode_request,
    encode_intent,
    fingerprint,
    new_token,
    recalled,
    refusal_error,
)
from flowcraft._service.scheduler import DurableScheduler
from flowcraft._service.segment import (
    Segment,
    Unreadable,
    cas,
    claim,
    claim_many,
    refused_checkpoint,
    stored_from,
    stored_intent,
    unreadable_intent,
)
from flowcraft._values import ResumeData, RunResult
from flowcraft.stores._base import (
    FINISHED,
    PRIORITY_MAX,
    PRIORITY_MIN,
    HistoryRecord,
    RunExistsError,
    RunPage,
    RunStats,
    RunStore,
    StoredRun,
    check_id,
)

__all__ = ["BulkResult", "FlowService", "UnknownFlowError"]

log = logging.getLogger("flowcraft.service")

Durability: TypeAlias = Literal["pause", "step"]
FlowSpec: TypeAlias = "Flow | tuple[Blueprint, Mapping[str, object]]"
Duration: TypeAlias = "float | timedelta | str"
SCHEDULER = "scheduler"
_WAIT_POLL = 0.05  # seconds between looks at a run another process is executing
_MAX_FIRINGS_PER_RUN = 100  # per tick; a run with more due deadlines continues next tick
_BACKOFF_MAX = 3600.0


class BulkResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``pause_many``/``release_many``/``cancel_many`` did, run by run.

    ``matched`` are the runs the filter selected (oldest first); ``changed`` those the call
    changed (with ``dry_run=True``: those it would change); ``outcomes`` says per run what
    happened (``"held"``, ``"already held"``, ``"released"``, ``"not held"``, ``"cancelled"``,
    ``"cancel requested"``, ``"finished"``, ``"gone"``, or ``"error: ..."``).
    """

    action: str
    dry_run: bool
    matched: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    outcomes: dict[str, str] = {}


def _takes_durable(store: RunStore) -> bool:
    """Whether ``store.create``/``save`` take ``durable=`` (the built-in stores do)."""
    try:
        return all(
            "durable" in inspect.signature(getattr(store, name)).parameters
            for name in ("create", "save")
        )
    except (TypeError, ValueError, AttributeError):
        return False


def _still_held(rolled: StoredRun, held: StoredRun, now: datetime) -> StoredRun:
    """``rolled`` (a rollback of the held run ``held``) with the hold kept, as ``pause`` set it."""
    kept = held.pause_deadline
    deadline = kept if kept is not None and kept > now else rolled.pause_deadline
    return msgspec.structs.replace(
        rolled,
        held=True,
        due_at=deadline,  # timers wait for the release; only the hold's deadline is due
        pause_deadline=deadline,
        paused_at=held.paused_at,
        paused_by=held.paused_by,
        pause_reason=held.pause_reason,
        pause_request_id=held.pause_request_id,
    )


def _expires_first(
    stored: StoredRun, target: tuple[datetime, str, bool] | None, now: datetime
) -> bool:
    """Whether a due run is expired (``on_expiry``) before anything of it fires.

    ``target`` is its first due timer or wait expiry (``FlowService._due_at``; None: nothing
    fires, e.g. held). The pause deadline wins when it has passed (and the run was not expired
    yet) and nothing was due at or before it: a timer due at the very instant of the deadline
    fires, and the run then awaits under a new deadline. ``fire_due`` and ``claim_due`` (the
    batched claims of a tick) both decide by this.
    """
    deadline = stored.pause_deadline
    if stored.expired_at is not None or deadline is None or deadline > now:
        return False
    return target is None or target[0] > deadline


def _seconds(value: Duration, where: str = "duration") -> float:
    """Seconds from a number, a ``timedelta`` or a ``"5m"``/``"1h30m"``/ISO-8601 string."""
    return parse_duration(value, where)


#: The longest ``lease_ttl``/``poll_interval``/``busy_timeout`` (about 31 years): a time
#: beyond it could pass year 9999, the last a datetime holds.
_SECONDS_MAX = 1e9


def _check_text(**values: object) -> None:
    """``TypeError`` naming the argument unless each value is a string or None.

    Ids, names and reasons end up in the stored run and its history: a value of another type
    would be written where every later read expects a string (a record no read decodes).
    """
    for name, value in values.items():
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a string or None, not {value!r}; nothing changed")


def _check_int(name: str, value: object) -> None:
    """``TypeError`` naming the argument unless ``value`` is an int."""
    if type(value) is not int:
        raise TypeError(f"{name} must be an int, not {value!r}; nothing changed")


def _check_seconds(name: str, value: float, *, zero: bool) -> None:
    """A ``FlowService`` option in seconds: a real number, positive (or 0 if ``zero``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    low_ok = value >= 0 if zero else value > 0
    if not low_ok or not value <= _SECONDS_MAX:  # ``not <=``: NaN is refused too
        least = "0 or more" if zero else "more than 0"
        raise ValueError(
            f"{name} must be a number of seconds, {least} and at most {_SECONDS_MAX:g}, "
            f"not {value!r}"
        )


class FlowService:
    """The durable front door: start, resume, pause, release and cancel runs kept in a store.

    Args:
        runtime: The (stateless) runtime executing runs; its clock drives expiries and leases.
        store: Where runs live (``SqliteStore()`` is the embedded default).
        flows: ``Flow`` builders, or ``(blueprint, registry)`` pairs, by flow id.
        durability: ``"pause"`` persists at every claim, pause and end; ``"step"`` also writes
            a checkpoint after every node, so a run whose process dies is recovered from its
            last finished node.
        max_pause: How long a run may await before it counts as expired: one duration for every
            flow, or a mapping by flow id (key ``"*"`` for the others).
        on_expiry: What the durable scheduler does with a run awaiting past its pause deadline
            (``max_pause``, or a pause's ``expires_in``): ``"cancel"`` it, or ``"keep"`` it
            stored (listed as expired, removed by ``cleanup(expired=True)``). Either way a
            decision after the deadline raises ``PauseExpiredError``, the bus hears
            ``workflow:expire`` and the scheduler's ``on_result`` gets the run.
        cancel_expired: The older spelling of ``on_expiry="cancel"``.
        keep_checkpoints: How many stored contexts of each run to keep for ``checkpoints``,
            ``rollback`` and ``fork`` (0 keeps none).
        lease_ttl: Seconds a process owns a run it executes; renewed while it runs. A run whose
            lease lapsed is recovered by the next scheduler tick. Also the first back-off of a
            fault (below), doubled per attempt, at most an hour (or ``lease_ttl`` if longer).
        poll_interval: Seconds between checks for pause/cancel requests from other processes.
        owner: This process's name in claims (default: a random id).
        busy_timeout: Seconds a decision waits for a run another segment is executing before
            ``RunBusyError`` (0: do not wait).
        fault_attempts: How often durable work of a run that cannot run where it is delivered
            is tried before the run fails with the error: a chunk of a batch spread over
            workers that no worker can run (its items then fail the batch), the gather of
            such a batch, recovery's replay of a ``durability="step"`` checkpoint (say, the
            flow changed under the run), and recovery of a running run whose stored intent
            cannot be read (``IntentCorruptionError``: nothing of it runs). Each failed try is
            a fault recorded on the run (``fault``, ``fault_count``, a history record,
            ``health()``) and backed off; a redeploy of the run's flow (or a release that reads
            the intent) in the meantime lets it go on. Default 3; at least 1 (1: the first
            fault fails the run).
        executor: Hand claimed segments to workers instead of executing them here (DESIGN §12,
            ``flowcraft/_service/executor.py``): ``start``, ``resume``, timer fires and
            recovery claim the run, publish a ``Delivery`` and return a result with status
            ``"running"`` at once; ``settled(run_id)`` awaits the outcome and workers call
            ``execute``. With an executor whose ``fan_out`` is true (and ``durability=
            "pause"``), the items of every ``.batch`` are spread over the workers too
            (``execute_item``) and gathered once.
    """

    def __init__(
        self,
        runtime: FlowRuntime,
        store: RunStore,
        flows: Sequence[FlowSpec] = (),
        *,
        durability: Durability = "pause",
        max_pause: Duration | Mapping[str, Duration] | None = None,
        on_expiry: Literal["cancel", "keep"] | None = None,
        cancel_expired: bool = False,
        keep_checkpoints: int = 100,
        lease_ttl: float = 30.0,
        poll_interval: float = 1.0,
        owner: str | None = None,
        busy_timeout: float = 300.0,
        executor: ex.Executor | None = None,
        fault_attempts: int = fo.CHUNK_ATTEMPTS,
    ) -> None:
        if on_expiry is None:
            on_expiry = "cancel" if cancel_expired else "keep"
        if on_expiry not in ("cancel", "keep"):
            raise ValueError(f"on_expiry must be 'cancel' or 'keep', not {on_expiry!r}")
        if keep_checkpoints < 0:
            raise ValueError(f"keep_checkpoints must be 0 or more, not {keep_checkpoints}")
        if durability not in ("pause", "step"):
            raise ValueError(f"durability must be 'pause' or 'step', not {durability!r}")
        if type(fault_attempts) is not int:
            raise TypeError(f"fault_attempts must be an int, not {fault_attempts!r}")
        if fault_attempts < 1:
            raise ValueError(
                f"fault_attempts must be at least 1 (tries before a faulting run fails), not "
                f"{fault_attempts}"
            )
        _check_seconds("lease_ttl", lease_ttl, zero=False)
        _check_seconds("poll_interval", poll_interval, zero=False)
        _check_seconds("busy_timeout", busy_timeout, zero=True)
        table: dict[str, tuple[Blueprint, Mapping[str, object]]] = {}
        for spec in flows:
            bp, reg = (spec.to_blueprint(), spec.registry) if isinstance(spec, Flow) else spec
            table[bp.id] = (bp, reg)
        # Durations are read here, so a malformed one fails now, not at the first expiry check.
        limits: dict[str, float | timedelta] = {}
        if isinstance(max_pause, Mapping):
            limits = {k: _seconds(v, f"max_pause[{k!r}]") for k, v in max_pause.items()}
        elif max_pause is not None:
            limits = {"*": _seconds(max_pause, "max_pause")}
        self.host = Host(
            runtime=runtime,
            store=store,
            owner=owner or uuid.uuid4().hex,
            lease_ttl=lease_ttl,
            poll_interval=poll_interval,
            durability=durability,
            on_expiry=on_expiry,
            keep_checkpoints=keep_checkpoints,
            fault_attempts=fault_attempts,
            flows=table,
            pause_limits=limits,
        )
        self.busy_timeout = busy_timeout
        self._lazy = _takes_durable(store)
        self.executor = executor
        self._controls = self.host.controls
        self._schedulers: builtins.list[DurableScheduler] = []

    def __repr__(self) -> str:
        return f"flowcraft.FlowService(store={self.store!r}, flows={sorted(self.host.flows)!r})"

    @property
    def executor(self) -> ex.Executor | None:
        """Where segments execute: None runs them here; an executor hands them to workers."""
        return self._executor

    @executor.setter
    def executor(self, value: ex.Executor | None) -> None:
        self._executor = value
        # A claim handed to an executor is the caller's answer ("accepted"): it must be synced
        # on its own. Run here, a claim is synced by the segment's commit (the answer).
        self.host.lazy_claims = value is None and self._lazy
        # Batches spread over workers (``fanout``) when the executor asks for it. Not with
        # durability="step": a checkpoint could catch a batch half spread; those run here.
        host = self.host
        host.scatter, host.outbox = 0, None
        if value is not None and getattr(value, "fan_out", False) and host.durability == "pause":
            per = int(getattr(value, "items_per_task", 1))
            if per < 1:
                raise ValueError(f"items_per_task must be 1 or more, not {per}")
            host.scatter = per
            host.outbox = partial(fo.publish_items, host, value)

    @property
    def runtime(self) -> FlowRuntime:
        """The runtime executing this service's runs."""
        return self.host.runtime

    @property
    def store(self) -> RunStore:
        """The store runs live in."""
        return self.host.store

    @property
    def owner(self) -> str:
        """This process's name in claims."""
        return self.host.owner

    @property
    def listeners(self) -> builtins.list[Callable[[ServiceEvent], object]]:
        """Callables told of each claim, commit, timer fault and scheduler tick (``ServiceEvent``).

        Called synchronously, in the task doing the step, right after it; append to add one
        (``flowcraft.otel`` does). Nothing is built when the list is empty.
        """
        return self.host.listeners

    @property
    def durability(self) -> Durability:
        """``"pause"`` or ``"step"``."""
        return self.host.durability

    def flow(self, flow_id: str) -> tuple[Blueprint, Mapping[str, object]]:
        """The blueprint and registry this service runs ``flow_id`` with.

        Raises:
            UnknownFlowError: the service was not given that flow (it lists the known ones).
        """
        return self.host.flow(flow_id)

    @property
    def flow_ids(self) -> tuple[str, ...]:
        """The ids of the flows this service runs, sorted."""
        return tuple(sorted(self.host.flows))

    def result_of(self, stored: StoredRun) -> RunResult:
        """A stored run (as ``get`` or ``list`` returned it) as a ``RunResult``; reads no store.

        ``result(run_id)`` reads the run first; this decodes a ``StoredRun`` already in hand.

        Raises:
            StoreError: the run has not stored a context yet (it is still starting).
            UnknownFlowError: the run's flow is not one of this service's.
        """
        if not stored.context:
            raise StoreError(
                f"run {stored.run_id!r} has not stored a context yet (it is still starting)"
            )
        return self.host.rebuild(stored, stored.context)

    @staticmethod
    def resume_data() -> dict[str, Any] | None:
        """Inside a node: the data the current segment continues a paused run with.

        ``resume(run_id, data)`` of a run paused while running (``pause`` of a running run, or
        ``RunControl.pause``) continues the stopped nodes; they read ``data`` here (the same
        dict, ``{"output": ..., "action": ..., ...}`` as sent). It is also in the history
        (event ``"continue"``, field ``data``) and replayed if the segment is recovered.
        None outside such a segment.
        """
        return CONTINUATION.get()

    # --- public API --------------------------------------------------------------------------

    async def start(
        self,
        flow_id: str,
        state: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        priority: int = 0,
    ) -> RunResult:
        """Start a run of ``flow_id``, store it, and execute it until it finishes or awaits.

        The run is created already claimed (``"running"`` under this process's lease), so it
        can be listed, paused from another process, and recovered if this process dies.
        ``priority`` is kept on the run for its whole life: the durable scheduler fires due
        runs in ``(priority, due_at)`` order, the **lowest** first (default 0; use negative
        numbers for urgent runs, positive ones for background work). Stores keep it as a signed
        64-bit integer: a priority outside ``-2**63 .. 2**63 - 1`` raises ``OutOfRangeError``
        (a ``ValueError``, as the stores do for it).
        """
        _check_text(flow_id=flow_id, run_id=run_id)
        if state is not None and not isinstance(state, Mapping):
            raise TypeError(
                f"state of a new run of flow {flow_id!r} must be a mapping (the run's initial "
                f"state, e.g. {{'amount': 1500}}), got {type(state).__name__}; pass the run id "
                "as run_id="
            )
        if type(priority) is not int:
            raise TypeError(f"priority must be an int, got {priority!r}")
        if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
            raise OutOfRangeError(
                "priority",
                priority,
                run_id=run_id,
                todo=f"Pass a smaller number for the new run of flow {flow_id!r} (0 is the "
                "default).",
            )
        host = self.host
        bp, reg = host.flow(flow_id)
        run_id = run_id or uuid.uuid4().hex
        now = host.now()
        initial = dict(state) if state else {}
        try:
            intent = encode_intent(Intent(kind="start", state=initial), run_id)
        except ResumeError as exc:  # the intent's own message speaks of resume data: not here
            detail = getattr(exc, "detail", str(exc))
            raise SerializationError(f"the initial state of run {run_id!r}", detail) from exc
        claimed = StoredRun(
            run_id=run_id,
            flow_id=flow_id,
            status="running",
            revision=0,
            created_at=now,
            updated_at=now,
            intent=intent,
            owner=host.owner,
            lease_until=now + timedelta(seconds=host.lease_ttl),
            claim=new_token(),
            priority=priority,
        )
        start_ns = time.time_ns() if host.listeners else 0
        history = [HistoryRecord(at=now, event="start")]
        try:
            if host.lazy_claims:
                await self.store.create(claimed, history=history, durable=False)  # type: ignore[call-arg]
            else:
                await self.store.create(claimed, history=history)
        except RunExistsError:
            if not await self._landed(claimed):
                raise
        except StoreError:
            if not await self._landed(claimed):
                raise
        log.info("flowcraft: start run %s (flow %s)", run_id, flow_id)
        if host.listeners:
            host.notify("claim", claimed, start_ns)
        if self.executor is not None:
            return await ex.dispatch(host, self.executor, claimed)
        segment = Segment(host, claimed, None, None)
        return await segment.run(
            lambda c: self.runtime.run(bp, initial, registry=reg, run_id=run_id, control=c)
        )

    async def resume(
        self,
        run_id: str,
        data: ResumeData = None,
        node_id: str | None = None,
        *,
        by: str | None = None,
        idempotency_key: str | None = None,
        expected_revision: int | None = None,
    ) -> RunResult:
        """Apply a decision to a stored run: claim it, execute, store the outcome.

        With ``idempotency_key``, a decision delivered again (at the same moment or later)
        returns the first result and runs nothing. The key stands for one decision: sent
        again with other data (action, output or node; key order and ``by`` do not count) it
        raises ``IdempotencyKeyReusedError`` and changes nothing. A different decision for a
        wait already decided raises ``AlreadyDecidedError`` (who, what, when). While another
        segment of the run executes, the call waits for it and then applies its decision (up to
        ``busy_timeout``). A held run raises ``RunHeldError``; ``resume(run_id)`` with no data
        never releases a hold (use ``release``).

        ``expected_revision`` makes the decision conditional on the run's **stored** revision
        (``StoredRun.revision``, what ``get`` returns; it moves on every write of the run:
        claims, commits, holds, releases, rollbacks, lease renewals). It is checked against the
        very row the claim's compare-and-set is made on, so no other write can land between the
        check and the claim: if the stored revision differs, ``RevisionConflictError(run_id,
        expected, actual)`` is raised and nothing changes (a run another segment is executing
        has moved on: it is not waited for). A claim lost to another writer re-reads the run
        and checks again. A decision already delivered under ``idempotency_key`` is replayed
        whatever the revision.
        """
        check_id(run_id)
        _check_text(node_id=node_id, by=by, idempotency_key=idempotency_key)
        if expected_revision is not None:
            _check_int("expected_revision", expected_revision)
        host = self.host
        key = idempotency_key
        expected = expected_revision
        payload = data_dict(data, run_id, node_id)
        digest = fingerprint(payload, node_id) if key is not None else None
        started = host.now()
        while True:
            settled = host.settled_event(run_id)
            if key is None:
                stored = await self.store.get(run_id)
            else:
                both = getattr(self.store, "get_and_recall", None)
                if both is not None:
                    stored, first = await both(run_id, key)
                else:
                    stored = await self.store.get(run_id)
                    first = await self.store.recall(run_id, key)
                if first is not None:
                    memo = recalled(first)
                    if memo.digest is not None and memo.digest != digest:
                        raise IdempotencyKeyReusedError(run_id, key)
                    if memo.refused is not None:
                        raise refusal_error(memo.refused)  # refused on a worker, as sent
                    return host.rebuild(stored, memo.context)
            if expected is not None and stored.revision != expected:
                raise RevisionConflictError(run_id, expected, stored.revision)
            if stored.status == "running":
                await self._wait(stored, settled, started)
                continue
            if stored.status in FINISHED:
                raise await self._decided(stored, node_id, NotAwaitingError(run_id, stored.status))
            if stored.expired_at is not None or stored.expired(host.now()):
                raise PauseExpiredError(run_id, stored.pause_deadline, host.on_expiry)
            if stored.held:
                raise RunHeldError(run_id, stored.paused_by, stored.paused_at, stored.pause_reason)
            if node_id is not None and "/" not in node_id and node_id not in stored.awaiting:
                missing = NodeNotAwaitingError(run_id, node_id, stored.awaiting)
                raise await self._decided(stored, node_id, missing)
            landed: builtins.list[StoredRun] = []
            try:
                return await self._apply(
                    stored, data, payload, node_id, by, key, digest, landed=landed
                )
            except RevisionConflictError:
                if landed:
                    # Our claim won (the check held); the segment lost the run afterwards (a
                    # takeover): what follows is no longer this precondition's business.
                    expected = None
                continue  # another segment claimed it first: look again

    async def execute(self, run_id: str, revision: int, delivery_id: str) -> RunResult | None:
        """A worker's entry point: execute the claim a ``Delivery`` names, here and now.

        Takes the claim over (one compare-and-set) and replays its stored intent under this
        process's lease. Returns None, executing nothing, when the delivery is stale or a
        duplicate: the run is gone, not ``running``, or at another revision or claim (another
        copy took it, or the sweep re-published it). Errors of the segment itself (a refused
        decision: the run is restored) are raised as without an executor. A refused gather of
        a fan-out is a fault of the run instead: the error is raised once it is recorded (the
        sweep publishes the gather again after a backoff), and its ``fault_attempts``-th
        refusal returns the run failed with that error.
        """
        check_id(run_id)
        try:
            stored = await self.store.get(run_id)
        except RunNotFoundError:
            return None
        if not ex.is_current(stored, revision, delivery_id):
            return None
        try:
            return await self._recover_one(stored, taking=True)
        except RevisionConflictError:
            return None  # another copy of the delivery took the claim first

    async def execute_item(self, run_id: str, delivery_id: str, node_id: str, item: int) -> bool:
        """A worker's entry point for a ``Delivery`` of kind ``"item"``: run a batch's items.

        Runs the items ``item, item + 1, ...`` (``items_per_task`` of them) of the batch
        ``node_id`` under a lease of their own and merges their outcomes into the run by
        compare-and-set; the merge that completes the batch stores the gather and publishes
        it. Returns False, running nothing, when the items are merged already (a duplicate or
        redelivered message), running elsewhere (a copy), or the run moved on (stale).

        Items that cannot run here at all (the ``FlowcraftError`` ``run_items`` raises: the flow
        changed under the run, this worker lacks it, ...) are a fault of the run: recorded on it
        (``fault``, ``fault_count``, a ``fault`` history record) and raised; the sweep publishes
        them again after a backoff (``lease_ttl``, doubled per attempt). Their
        ``fault_attempts``-th attempt (the third by default) fails them with that error
        instead, and the batch ends as in one process when an item raises: the run fails
        naming the item.
        """
        check_id(run_id)
        return await fo.execute_item(self.host, self.executor, run_id, delivery_id, node_id, item)

    async def settled(self, run_id: str) -> RunResult:
        """The run once no segment executes it (polls the store; bound it with a timeout).

        How a caller of a service with an executor awaits what ``start``/``resume`` handed over.
        """
        check_id(run_id)
        stored = await ex.settled(self.host, run_id)
        return self.host.rebuild(stored, stored.context)

    async def outcome(self, run_id: str, idempotency_key: str) -> RunResult | None:
        """The result of the decision delivered under ``idempotency_key``, or None if none was.

        What a caller that lost track of its own decision (a retried request, a double submit)
        reads back without delivering anything again. With an executor, how the caller of
        ``resume(..., idempotency_key=k)`` (handed ``"running"``) learns the outcome: once
        ``settled``, this returns the result, or raises the specific error (same class,
        message and attributes) when the worker refused the decision (``UnknownActionError``,
        ``ResumeDataError``, ...; the run was left as it was).
        """
        check_id(run_id, idempotency_key)
        first = await self.store.recall(run_id, idempotency_key)
        if first is None:
            return None
        memo = recalled(first)
        if memo.refused is not None:
            raise refusal_error(memo.refused)
        stored = await self.store.get(run_id)
        return self.host.rebuild(stored, memo.context)

    async def pause(
        self,
        run_id: str,
        *,
        reason: str | None = None,
        by: str | None = None,
        request_id: str | None = None,
        expires_in: Duration | None = None,
    ) -> StoredRun:
        """Pause a run, recording who, when, why and the request id.

        A running run pauses at its next node boundary, in this or another process (requests
        travel through the store); ``resume(run_id)`` continues it. An awaiting run is *held*:
        its timers and expiries do not fire and decisions raise ``RunHeldError`` until
        ``release(run_id)``. ``expires_in`` sets the run's ``pause_deadline``. Holds reach the
        event bus as ``workflow:pause`` with ``{"hold": True, "reason", "by", "request_id"}``.

        Raises:
            NotAwaitingError: the run already finished.
        """
        check_id(run_id)
        _check_text(reason=reason, by=by, request_id=request_id)
        host = self.host
        now = host.now()
        until = None
        if expires_in is not None:
            seconds = _seconds(expires_in, "expires_in")
            try:
                until = now + timedelta(seconds=seconds)
            except OverflowError:
                raise InvalidDurationError(
                    "expires_in", expires_in, f"run {run_id!r}: the deadline is past year 9999",
                    hint="Pass a shorter expires_in; nothing was paused.",
                ) from None
        request = Request(
            kind="pause", at=now, reason=reason, by=by, request_id=request_id, expires_at=until
        )
        log.info("flowcraft: pause run %s by %s (%s)", run_id, by or "-", reason or "no reason")
        sent = False
        while True:
            control = host.controls.get(run_id)
            if control is not None:
                host.requests[run_id] = request
                control.pause(reason, by)
                return await self.store.get(run_id)
            stored = await self.store.get(run_id)
            if stored.status in FINISHED:
                raise NotAwaitingError(run_id, stored.status)
            if stored.status == "running":
                sent = True
                if await self._send(stored, request):
                    return stored
                continue
            if stored.held or (sent and stored.paused_at == now and "pause" in stored.reasons):
                return stored  # already held, or the request we sent paused it
            deadline = stored.pause_deadline if until is None else until
            held = msgspec.structs.replace(
                stored,
                revision=stored.revision + 1,
                updated_at=now,
                held=True,
                # Timers wait for the release; only the hold's own deadline stays due.
                due_at=deadline if stored.expired_at is None else None,
                paused_at=now,
                paused_by=by,
                pause_reason=reason,
                pause_request_id=request_id,
                pause_deadline=deadline,
                claim=new_token(),
            )
            record = HistoryRecord(
                at=now, event="hold", by=by, reason=reason, request_id=request_id
            )
            try:
                await cas(host, held, stored.revision, history=[record])
            except RevisionConflictError:
                continue
            log.info("flowcraft: hold run %s (flow %s)", run_id, stored.flow_id)
            await self._emit(
                "workflow:pause",
                held,
                {"hold": True, "reason": reason, "by": by, "request_id": request_id},
            )
            return held

    async def release(
        self,
        run_id: str,
        *,
        by: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
    ) -> RunResult:
        """End the hold of a held run: its timers and expiries count again.

        Releasing a run that is not held changes nothing. Overdue timers fire at the next
        scheduler tick. The ``release`` history record carries ``reason`` (why it was
        released), else the hold's reason. Reaches the event bus as ``workflow:resume`` with
        ``{"release": True, "by", "request_id", "reason"}``.

        Raises:
            NotAwaitingError: the run already finished.
        """
        check_id(run_id)
        _check_text(by=by, request_id=request_id, reason=reason)
        host = self.host
        while True:
            stored = await self.store.get(run_id)
            if stored.status in FINISHED:
                raise NotAwaitingError(run_id, stored.status)
            if not stored.held:
                if stored.status == "running" or not stored.context:
                    return await self.result(run_id)
                return host.rebuild(stored, stored.context)
            now = host.now()
            due = [d for d in (stored.wake_at, stored.expires_at) if d is not None]
            if stored.pause_deadline is not None:
                due.append(stored.pause_deadline)
            if stored.expired_at is not None:
                due = []  # expired and kept: nothing fires any more
            first = host.rebuild(stored, stored.context).awaiting
            released = msgspec.structs.replace(
                stored,
                revision=stored.revision + 1,
                updated_at=now,
                held=False,
                due_at=min(due, default=None),
                paused_at=first[0].since if first else None,
                paused_by=first[0].requested_by if first else None,
                pause_reason=first[0].description if first else None,
                pause_request_id=None,
                claim=new_token(),
            )
            why = stored.pause_reason if reason is None else reason
            record = HistoryRecord(
                at=now, event="release", by=by, reason=why, request_id=request_id
            )
            try:
                await cas(host, released, stored.revision, history=[record])
            except RevisionConflictError:
                continue
            log.info("flowcraft: release run %s (flow %s) by %s", run_id, stored.flow_id, by or "-")
            await self._emit(
                "workflow:resume",
                released,
                {"release": True, "by": by, "request_id": request_id, "reason": why},
            )
            return host.rebuild(released, released.context)

    async def cancel(
        self, run_id: str, *, reason: str | None = None, by: str | None = None
    ) -> StoredRun:
        """Cancel a run: an awaiting (or held) run at once, a running one at its next node.

        Everything the run did so far stays in its context. Raises ``NotAwaitingError`` when
        the run already finished.
        """
        check_id(run_id)
        _check_text(reason=reason, by=by)
        host = self.host
        now = host.now()
        request = Request(kind="cancel", at=now, reason=reason, by=by)
        sent = False
        while True:
            control = host.controls.get(run_id)
            if control is not None:
                host.requests[run_id] = request
                control.cancel()
                return await self.store.get(run_id)
            stored = await self.store.get(run_id)
            if stored.status in FINISHED:
                if sent and stored.status == "cancelled":
                    return stored
                raise NotAwaitingError(run_id, stored.status)
            if stored.status == "running":
                sent = True
                if await self._send(stored, request):
                    return stored
                continue
            try:
                return await self._cancel_stored(stored, reason, by, event="cancel")
            except RevisionConflictError:
                continue

    async def get(self, run_id: str) -> StoredRun:
        """The stored run (status, awaiting nodes, pause metadata, fault, context bytes).

        A ``run_id`` that is not a string is a ``TypeError`` naming it, on every store.
        """
        check_id(run_id)
        return await self.store.get(run_id)

    async def result(self, run_id: str) -> RunResult:
        """The stored run as a ``RunResult`` (outputs, state, awaiting records)."""
        check_id(run_id)
        return self.result_of(await self.store.get(run_id))

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

        ``expired=True`` lists awaiting runs past their ``max_pause``. Runs whose stored
        record cannot be decoded are left out (and logged).
        """
        return await self.store.list(
            status=status,
            flow_id=flow_id,
            reason=reason,
            expired=expired,
            now=self.host.now(),
            limit=limit,
            cursor=cursor,
        )

    async def history(self, run_id: str) -> builtins.list[HistoryRecord]:
        """The run's audit trail: starts, pauses, resumes, timers, holds, who and why."""
        check_id(run_id)
        await self.store.get(run_id)
        return await self.store.history(run_id)

    # --- bulk operations (maintenance windows) ----------------------------------------------

    async def pause_many(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
        reason: str | None = None,
        by: str | None = None,
        request_id: str | None = None,
        expires_in: Duration | None = None,
    ) -> BulkResult:
        """Hold every awaiting run ``filter`` selects (``list``'s keywords), each on its own.

        Each run is paused by its own compare-and-set, as ``pause`` does; an already held run
        is left as it is, so calling again changes nothing. ``dry_run=True`` changes nothing
        and says what would change.
        """
        _check_text(reason=reason, by=by, request_id=request_id)

        async def act(stored: StoredRun) -> str:
            if stored.held:
                return "already held"
            if dry_run:
                return "held"
            await self.pause(
                stored.run_id, reason=reason, by=by, request_id=request_id, expires_in=expires_in
            )
            return "held"

        return await self._bulk("pause", filter, dry_run, act, {"held"}, awaiting_only=True)

    async def release_many(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
        by: str | None = None,
        request_id: str | None = None,
        reason: str | None = None,
    ) -> BulkResult:
        """Release every *held* run ``filter`` selects; runs not held are left untouched.

        Ending a maintenance window never approves a wait: only holds are ended.
        """
        _check_text(by=by, request_id=request_id, reason=reason)

        async def act(stored: StoredRun) -> str:
            if not stored.held:
                return "not held"
            if not dry_run:
                await self.release(stored.run_id, by=by, request_id=request_id, reason=reason)
            return "released"

        return await self._bulk("release", filter, dry_run, act, {"released"}, awaiting_only=True)

    async def cancel_many(
        self,
        filter: Mapping[str, Any] | None = None,
        *,
        dry_run: bool = False,
        reason: str | None = None,
        by: str | None = None,
    ) -> BulkResult:
        """Cancel every unfinished run ``filter`` selects, each as ``cancel`` does."""
        _check_text(reason=reason, by=by)

        async def act(stored: StoredRun) -> str:
            if stored.status in FINISHED:
                return "finished"
            if dry_run:
                return "cancelled"
            after = await self.cancel(stored.run_id, reason=reason, by=by)
            return "cancelled" if after.status == "cancelled" else "cancel requested"

        changed = {"cancelled", "cancel requested"}
        return await self._bulk("cancel", filter, dry_run, act, changed, awaiting_only=False)

    async def _bulk(
        self,
        action: str,
        filter: Mapping[str, Any] | None,
        dry_run: bool,
        act: Callable[[StoredRun], Awaitable[str]],
        changes: set[str],
        *,
        awaiting_only: bool,
    ) -> BulkResult:
        keys = dict(filter or {})
        unknown = set(keys) - {"status", "flow_id", "reason", "expired"}
        if unknown:
            raise ValueError(
                f"{action}_many: unknown filter keys {sorted(unknown)}; use status, flow_id, "
                "reason, expired (the keywords of list())"
            )
        if awaiting_only and keys.get("status") not in (None, "awaiting"):
            raise ValueError(f"{action}_many acts on awaiting runs: status must be 'awaiting'")
        if awaiting_only:
            keys["status"] = "awaiting"
        matched: builtins.list[str] = []
        cursor: str | None = None
        while True:
            page = await self.list(**keys, limit=200, cursor=cursor)
            matched.extend(r.run_id for r in page)
            cursor = page.next_cursor
            if cursor is None:
                break
        outcomes: dict[str, str] = {}
        for run_id in matched:
            try:
                outcomes[run_id] = await act(await self.store.get(run_id))
            except RunNotFoundError:
                outcomes[run_id] = "gone"
            except NotAwaitingError:
                outcomes[run_id] = "finished"
            except FlowcraftError as exc:
                outcomes[run_id] = f"error: {type(exc).__name__}: {exc}"
        changed = tuple(r for r in matched if outcomes[r] in changes)
        log.info(
            "flowcraft: %s_many%s matched %d runs, changed %d",
            action, " (dry run)" if dry_run else "", len(matched), len(changed),
        )
        return BulkResult(
            action=action,
            dry_run=dry_run,
            matched=tuple(matched),
            changed=changed,
            outcomes=outcomes,
        )

    async def checkpoints(self, run_id: str) -> builtins.list[StoredRun]:
        """The run's kept checkpoints, oldest first: the stored run after each segment ended.

        Each is a ``StoredRun`` (``revision``, ``updated_at``, ``status``, ``awaiting``,
        ``context``); the newest ``keep_checkpoints`` are kept. ``rollback`` and ``fork``
        take a revision from here. Load one with ``FlowService.runtime.inspect``.
        """
        check_id(run_id)
        await self.store.get(run_id)
        return await self.store.checkpoints(run_id)

    async def rollback(
        self, run_id: str, revision: int, *, by: str | None = None, reason: str | None = None
    ) -> RunResult:
        """Make an earlier checkpoint the current state of the run, as a new revision.

        One compare-and-set from the run's current revision (so it wins or changes nothing,
        like a claim): the checkpoint's context, timers recomputed from now, a ``rollback``
        history record (``data``: from and to revision), and a new checkpoint. A finished run
        can be rolled back to an awaiting checkpoint and decided again.

        A held run stays held (DESIGN §8: only ``release`` ends a hold; a checkpoint is the
        run's context, the hold is not part of it): who held it, when, why and the hold's
        pause deadline are kept (a deadline already past starts again from now, as for any
        rollback), and its timers and decisions wait for the release. Rolled back to a
        finished checkpoint, the run cannot stay held: the same write records a ``release``
        by ``by`` after the ``rollback``.

        Raises:
            RunActiveError: a process is executing the run (pause or wait for it first).
            CheckpointNotFoundError: no checkpoint at ``revision`` is kept.
        """
        check_id(run_id)
        _check_text(by=by, reason=reason)
        _check_int("revision", revision)
        host = self.host
        while True:
            stored = await self.store.get(run_id)
            if stored.status == "running":
                raise RunActiveError(run_id, stored.owner, "rollback")
            point = await self._checkpoint(run_id, revision)
            result = host.rebuild(stored, point.context)
            now = host.now()
            base = msgspec.structs.replace(stored, claim=new_token())
            rolled = stored_from(host, base, result, now, None)
            history = [
                HistoryRecord(
                    at=now,
                    event="rollback",
                    by=by,
                    reason=reason,
                    revision=result.revision,
                    data={"from_revision": stored.revision, "to_revision": revision},
                )
            ]
            if stored.held and rolled.status == "awaiting":
                rolled = _still_held(rolled, stored, now)
            elif stored.held:
                history.append(
                    HistoryRecord(at=now, event="release", by=by, reason=stored.pause_reason)
                )
            try:
                await cas(host, rolled, stored.revision, history=history, checkpoint=True)
            except RevisionConflictError:
                continue
            log.info(
                "flowcraft: rollback run %s (flow %s) to revision %d by %s",
                run_id, stored.flow_id, revision, by or "-",
            )
            return result

    async def fork(
        self,
        run_id: str,
        revision: int,
        *,
        new_run_id: str | None = None,
        by: str | None = None,
        reason: str | None = None,
    ) -> RunResult:
        """Start a new run from a checkpoint of ``run_id``; the original is not touched.

        The new run (``new_run_id`` or a random id) carries the checkpoint's state, outputs
        and history under its own id; its history starts with a ``fork`` record naming the
        source run and revision. Raises ``CheckpointNotFoundError`` for an unknown revision.
        """
        check_id(run_id)
        _check_text(new_run_id=new_run_id, by=by, reason=reason)
        _check_int("revision", revision)
        host = self.host
        stored = await self.store.get(run_id)
        point = await self._checkpoint(run_id, revision)
        bp, reg = host.flow(stored.flow_id)
        rt = self.runtime
        env = rt.load(rt.plan(bp, reg), point.context)
        new_id = new_run_id or uuid.uuid4().hex
        context = rt.codec.encode(msgspec.structs.replace(env, run_id=new_id))
        result = host.rebuild(stored, context)
        now = host.now()
        base = StoredRun(
            run_id=new_id,
            flow_id=stored.flow_id,
            status=result.status,
            revision=-1,
            created_at=now,
            updated_at=now,
            claim=new_token(),
            priority=stored.priority,
        )
        forked = stored_from(host, base, result, now, None)
        record = HistoryRecord(
            at=now,
            event="fork",
            by=by,
            reason=reason,
            revision=result.revision,
            data={"from_run": run_id, "from_revision": revision},
        )
        await self.store.create(forked, history=[record])
        if host.keep_checkpoints > 0:
            # The fork's first checkpoint: it can be rolled back to where it started.
            first = msgspec.structs.replace(forked, revision=1, claim=new_token())
            await cas(host, first, forked.revision, checkpoint=True)
        log.info("flowcraft: fork run %s from %s@%d", new_id, run_id, revision)
        return result

    async def _checkpoint(self, run_id: str, revision: int) -> StoredRun:
        kept = await self.store.checkpoints(run_id)
        for point in kept:
            if point.revision == revision:
                return point
        raise CheckpointNotFoundError(run_id, revision, tuple(p.revision for p in kept))

    async def cleanup(
        self, finished_before: datetime | Duration | None = None, *, expired: bool = False
    ) -> int:
        """Delete finished runs last updated before a time (or older than a duration).

        With ``expired=True``, also delete runs awaiting past their pause deadline (expired
        suspensions, whether the scheduler kept them or has not reached them yet). Returns how
        many runs were deleted. A run that changes while being deleted is left alone.
        """
        count = 0
        if finished_before is not None:
            if not isinstance(finished_before, datetime):
                seconds = _seconds(finished_before)
                try:
                    finished_before = self.host.now() - timedelta(seconds=seconds)
                except OverflowError:
                    raise InvalidDurationError(
                        "finished_before", finished_before, "the time is before year 1",
                        hint="Pass a shorter duration (or a datetime); nothing was deleted.",
                    ) from None
            count += await self.store.delete_finished(finished_before)
        if expired:
            while True:
                page = await self.list(expired=True, limit=100)
                gone = 0
                for stored in page.runs:
                    try:
                        await self.store.delete(stored.run_id, stored.revision)
                    except (RevisionConflictError, RunNotFoundError):
                        continue
                    gone += 1
                count += gone
                if not gone or page.next_cursor is None:
                    break
        log.info("flowcraft: cleanup deleted %d runs", count)
        return count

    async def delete(self, run_id: str, *, force: bool = False) -> None:
        """Delete one run with its history, checkpoints and idempotency records.

        A run a process is executing (``"running"`` under a live lease) is refused with
        ``RunActiveError`` unless ``force=True``; its process then fails its next write.

        Raises:
            RunNotFoundError: no such run.
        """
        check_id(run_id)
        while True:
            stored = await self.store.get(run_id)
            live = stored.status == "running" and not stored.lease_expired(self.host.now())
            if live and not force:
                raise RunActiveError(run_id, stored.owner, "delete")
            try:
                await self.store.delete(run_id, stored.revision)
            except RevisionConflictError:
                continue
            log.info("flowcraft: delete run %s (flow %s)", run_id, stored.flow_id)
            return

    async def stats(self) -> RunStats:
        """Counts by status, by flow, awaiting by reason, and expired."""
        return await self.store.stats(self.host.now())

    @asynccontextmanager
    async def scheduler(
        self,
        interval: Duration = 1.0,
        on_result: Callable[[RunResult], Any] | None = None,
        *,
        batch: int = 100,
        concurrency: int = 8,
    ) -> AsyncIterator[DurableScheduler]:
        """Fire due timers, expire waits and recover crashed runs from the store while open.

        Several schedulers (in several processes) may run at once: claims make each firing
        happen once. Overdue timers fire on the first tick, lowest ``priority`` first, up to
        ``concurrency`` at once. ``interval`` must be more than 0 (``ValueError``).
        """
        seconds = _seconds(interval, "interval")
        _check_seconds("interval", seconds, zero=False)  # 0 would tick without a pause
        sched = DurableScheduler(self, seconds, on_result, batch, concurrency)
        self._schedulers.append(sched)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(sched.loop)
                try:
                    yield sched
                finally:
                    tg.cancel_scope.cancel()
        finally:
            self._schedulers.remove(sched)

    async def health(self, *, scan: int = 1000) -> ServiceHealth:
        """One look at the service, as a ``ServiceHealth``.

        Store reachable, scheduler running and its lag, runs by status, runs whose timer failed
        to fire and running runs whose fan-out (a chunk no worker can run, a refused gather)
        or recovered checkpoint is refused, or whose stored intent recovery cannot read
        (``IntentCorruptionError``), and why (``RunFault.kind``), the oldest awaiting
        run. Never raises for a store outage: it answers ``store_reachable=False`` with the
        reason. Faults are looked for among the first ``scan`` awaiting runs and the first
        ``scan`` running ones (oldest first).
        """
        last = [s.last_tick_at for s in self._schedulers if s.last_tick_at is not None]
        return await check(self.host, bool(self._schedulers), max(last, default=None), scan)

    async def recover(self) -> builtins.list[RunResult]:
        """Take over runs whose lease expired (their process died) and replay their intent.

        A run whose lease is live is never touched; a finished run is never claimed. A replay
        the runtime refuses restores the run to the state its claim started from.
        """
        host = self.host
        results: builtins.list[RunResult] = []
        cursor: str | None = None
        while True:
            page = await self.store.list(status="running", limit=100, cursor=cursor)
            for stored in page.runs:
                run_id = stored.run_id
                if run_id in host.controls or run_id in host.busy:
                    continue
                if not stored.lease_expired(host.now()):
                    continue
                host.busy.add(run_id)
                try:
                    results.append(await self._recover_one(stored))
                except RevisionConflictError:
                    continue  # another process got there first
                except IntentCorruptionError:
                    continue  # recorded on the run and logged, once per attempt
                except FlowcraftError:
                    log.exception("flowcraft service: recovering run %s", run_id)
                finally:
                    host.busy.discard(run_id)
            cursor = page.next_cursor
            if cursor is None:
                return results

    # --- what the durable scheduler calls (``Firing``) ----------------------------------------

    async def fire_due(
        self, run_id: str, seen: StoredRun | None = None
    ) -> tuple[builtins.list[RunResult], int]:
        """Fire the due timers and wait expiries of one run; expire it past its pause deadline.

        ``seen`` is the run as the caller just read it (the scheduler's ``due`` page): it is
        claimed as is (a stale copy loses the compare-and-set and nothing runs). Returns the
        results (expiries included, for ``on_result``) and how many were expiries.
        """
        host = self.host
        results: builtins.list[RunResult] = []
        expired = 0
        for _ in range(_MAX_FIRINGS_PER_RUN):
            stored = seen if seen is not None else await self.store.get(run_id)
            seen = None
            now = host.now()
            if stored.status != "awaiting":
                break
            if stored.due_at is None or stored.due_at > now:
                break  # nothing due, or backed off after a fault
            target = None if stored.held else self._due_at(stored, now)
            if _expires_first(stored, target, now):
                try:
                    results.append(await self._expire(stored))
                except RevisionConflictError:
                    break
                expired += 1
                break
            if target is None:
                await self._redue(stored, now)
                break
            try:
                results.append(await self._fire(stored, (target[1], target[2])))
            except RevisionConflictError:
                break  # someone else changed the run; look again next tick
            if results[-1].status != "awaiting":
                break  # finished: nothing more can be due
        return results, expired

    async def claim_due(self, runs: builtins.list[StoredRun]) -> builtins.list[Claimed | bool]:
        """Claim the plain timer firings among ``runs`` (a ``due`` page) in one store write.

        Per run: ``Claimed`` (fire it with ``fire_claimed``), True (anything else: an expiry, a
        held run, an executor; ``fire_due`` decides as ever) or False (another writer got it).
        """
        host = self.host
        now = host.now()
        plans: builtins.list[Claimed | bool] = [True] * len(runs)
        todo: builtins.list[tuple[int, str, tuple[StoredRun, bytes]]] = []
        for i, stored in enumerate(runs):
            if self.executor is not None or stored.held or stored.status != "awaiting":
                continue
            if stored.due_at is None or stored.due_at > now:
                continue
            try:
                target = self._due_at(stored, now)
            except Exception:
                continue  # fire_due meets it again and records the fault
            if target is None or _expires_first(stored, target, now):
                continue  # nothing to fire, or the run expires first: fire_due does that
            intent = Intent(kind="fire", node_id=target[1], by=SCHEDULER)
            todo.append((i, target[1], (stored, encode_intent(intent, stored.run_id))))
        claimed = await claim_many(host, [item for _, _, item in todo])
        for (i, node_id, (stored, _)), run in zip(todo, claimed, strict=True):
            plans[i] = False if run is None else Claimed(stored, run, node_id)
        return plans

    async def fire_claimed(
        self, claimed: Claimed, slot: Slot | None = None
    ) -> tuple[builtins.list[RunResult], int]:
        """Fire a run ``claim_due`` claimed, then whatever else is due for it (``fire_due``).

        ``slot`` (the scheduler's ``concurrency``) is released once the nodes have run: the
        commit does not hold it, so the next firings run while this one's outcome is written
        (and the store writes many outcomes at once). It is held again before more fires.
        """
        host = self.host
        stored, run, node_id = claimed.prior, claimed.claimed, claimed.node_id
        ttl = timedelta(seconds=host.lease_ttl)
        now = host.now()
        if run.lease_until is None or run.lease_until - now < ttl / 2:
            # The claim waited for its turn: renew its lease before any node runs.
            renewed = msgspec.structs.replace(run, revision=run.revision + 1, lease_until=now + ttl)
            try:
                await cas(host, renewed, run.revision)
            except RevisionConflictError:
                return [], 0  # taken over meanwhile: nothing ran here
            run = renewed
        bp, reg = host.flow(stored.flow_id)
        context = stored.context
        executed = None if slot is None else slot.release
        result = await Segment(host, run, stored, None, executed=executed).run(
            lambda c: self.runtime.fire(bp, context, node_id, registry=reg, control=c, by=SCHEDULER)
        )
        if result.status != "awaiting":
            return [result], 0
        if slot is not None:
            await slot.hold()
        more, expired = await self.fire_due(stored.run_id)
        return [result, *more], expired

    async def record_fault(self, run_id: str, exc: BaseException) -> None:
        """Record why a run's timer could not fire, and back its next attempt off."""
        host = self.host
        for _ in range(3):
            try:
                stored = await self.store.get(run_id)
            except StoreCorruptionError:
                return
            if stored.status != "awaiting":
                return
            now = host.now()
            count = stored.fault_count + 1
            delay = min(2.0 ** (count - 1), _BACKOFF_MAX)
            reason = f"{type(exc).__name__}: {exc}"
            faulted = msgspec.structs.replace(
                stored,
                revision=stored.revision + 1,
                fault=reason,
                fault_count=count,
                due_at=now + timedelta(seconds=delay),
                claim=new_token(),
            )
            record = HistoryRecord(at=now, event="fault", by=SCHEDULER, reason=reason)
            try:
                await cas(host, faulted, stored.revision, history=[record])
            except RevisionConflictError:
                continue
            return

    async def _redue(self, stored: StoredRun, now: datetime) -> None:
        """Correct the ``due_at`` of a run found due with nothing due (a corrupted column).

        Left as it was, the run would come back first in every ``due`` page, every tick, and
        a page of such runs would keep the scheduler from firing anyone else's timers.
        """
        due: list[datetime] = []
        if not stored.held:  # a held run's timers wait for its release
            for a in self.host.rebuild(stored, stored.context).awaiting:
                when = a.wake_at if a.reason == "timer" else a.expires_at
                if when is not None:
                    due.append(when)
        if stored.pause_deadline is not None and stored.expired_at is None:
            due.append(stored.pause_deadline)
        fixed = min(due, default=None)
        log.warning(
            "flowcraft service: run %s was due at %s with nothing due; its next due time is "
            "now %s",
            stored.run_id,
            stored.due_at,
            fixed,
        )
        run = msgspec.structs.replace(
            stored, revision=stored.revision + 1, due_at=fixed, claim=new_token()
        )
        with contextlib.suppress(RevisionConflictError):
            await cas(self.host, run, stored.revision)

    def due_node(self, stored: StoredRun, now: datetime) -> tuple[str, bool] | None:
        """The awaiting node due first at ``now`` as ``(node_id, is_expiry)``, if any."""
        best = self._due_at(stored, now)
        return None if best is None else (best[1], best[2])

    def _due_at(self, stored: StoredRun, now: datetime) -> tuple[datetime, str, bool] | None:
        best: tuple[datetime, str, bool] | None = None
        for a in self.host.rebuild(stored, stored.context).awaiting:
            when, expiry = (a.wake_at, False) if a.reason == "timer" else (a.expires_at, True)
            if when is not None and when <= now and (best is None or when < best[0]):
                best = (when, a.node_id, expiry)
        return best

    async def _expire(self, stored: StoredRun) -> RunResult:
        """Apply ``on_expiry`` to a run past its pause deadline; emit ``workflow:expire``."""
        host = self.host
        now = host.now()
        # A deadline of a pause call (held, or paused at a node) is its expires_in.
        why = "expires_in" if stored.held or "pause" in stored.reasons else "max_pause"
        if host.on_expiry == "cancel":
            _, result = await self._cancel_run(stored, why, SCHEDULER, event="expire")
        else:
            kept = msgspec.structs.replace(
                stored,
                revision=stored.revision + 1,
                updated_at=now,
                due_at=None,
                expired_at=now,
                claim=new_token(),
            )
            record = HistoryRecord(at=now, event="expire", by=SCHEDULER, reason=why)
            await cas(host, kept, stored.revision, history=[record])
            result = host.rebuild(kept, kept.context)
        log.info(
            "flowcraft: expire run %s (flow %s): %s, %s",
            stored.run_id,
            stored.flow_id,
            why,
            host.on_expiry,
        )
        deadline = stored.pause_deadline
        await self._emit(
            "workflow:expire",
            stored,
            {
                "reason": why,
                "on_expiry": host.on_expiry,
                "deadline": deadline.isoformat() if deadline else None,
                "status": result.status,
            },
        )
        return result

    # --- internals ---------------------------------------------------------------------------

    def _rebuild(self, stored: StoredRun, data: bytes) -> RunResult:
        return self.host.rebuild(stored, data)

    async def _landed(self, run: StoredRun) -> bool:
        try:
            now = await self.store.get(run.run_id)
        except (RunNotFoundError, StoreError):
            return False
        return now.revision == run.revision and now.claim == run.claim

    async def _apply(
        self,
        stored: StoredRun,
        data: ResumeData,
        payload: dict[str, Any] | None,
        node_id: str | None,
        by: str | None,
        key: str | None,
        digest: str | None,
        *,
        landed: builtins.list[StoredRun] | None = None,
    ) -> RunResult:
        """Claim an awaiting run for a decision and execute it (``RevisionConflictError``: lost).

        ``landed`` receives the claimed run once the claim's compare-and-set won.
        """
        host = self.host
        bp, reg = host.flow(stored.flow_id)
        continuing = (
            payload is not None
            and node_id is None
            and bool(stored.reasons)
            and all(r == "pause" for r in stored.reasons)
        )
        kind: Literal["resume", "continue"] = "continue" if continuing else "resume"
        intent = Intent(kind=kind, data=payload, node_id=node_id, by=by, key=key, digest=digest)
        claimed = await claim(host, stored, intent, key, resumed=True)
        if landed is not None:
            landed.append(claimed)
        log.info(
            "flowcraft: %s run %s (flow %s) node %s by %s",
            kind,
            stored.run_id,
            stored.flow_id,
            node_id or "-",
            by or "-",
        )
        if self.executor is not None:
            return await ex.dispatch(host, self.executor, claimed)
        context = stored.context
        extra = []
        if continuing:
            extra.append(HistoryRecord(at=host.now(), event="continue", by=by, data=payload))
            call = self._continuation(bp, reg, context, data, by)
        else:

            def call(c: Any) -> Awaitable[RunResult]:
                return self.runtime.resume(
                    bp, context, data, node_id, registry=reg, control=c, by=by
                )

        try:
            return await Segment(host, claimed, stored, key, digest=digest).run(
                call, continuation=payload if continuing else None, extra=extra
            )
        except (NodeNotAwaitingError, NotAwaitingError) as exc:
            raise await self._decided(stored, node_id, exc) from exc
        except ResumeDataError as exc:
            if node_id is not None or "wait" in stored.reasons or "pause" in stored.reasons:
                raise
            # Only timers are left: a decision here is late for a wait that was decided.
            raise await self._decided(stored, node_id, exc) from exc

    def _continuation(
        self,
        bp: Blueprint,
        reg: Mapping[str, object],
        context: bytes,
        data: ResumeData,
        by: str | None,
    ) -> Callable[[Any], Awaitable[RunResult]]:
        """Continue the nodes a pause stopped; ``data`` is theirs through ``resume_data()``.

        A node that paused itself (``node.pause()``) takes the data as its output; nodes a
        ``RunControl`` pause stopped take none (the runtime refuses it before changing
        anything), so they are continued without it.
        """
        rt = self.runtime

        async def call(c: Any) -> RunResult:
            try:
                return await rt.resume(bp, context, data, None, registry=reg, control=c, by=by)
            except (ResumeDataError, AmbiguousResumeError):
                return await rt.resume(bp, context, None, None, registry=reg, control=c, by=by)

        return call

    async def _fire(self, stored: StoredRun, target: tuple[str, bool]) -> RunResult:
        """Claim a due run and fire one timer or wait expiry."""
        host = self.host
        node_id = target[0]
        bp, reg = host.flow(stored.flow_id)
        intent = Intent(kind="fire", node_id=node_id, by=SCHEDULER)
        claimed = await claim(host, stored, intent, None)
        if self.executor is not None:
            return await ex.dispatch(host, self.executor, claimed)
        context = stored.context
        return await Segment(host, claimed, stored, None).run(
            lambda c: self.runtime.fire(bp, context, node_id, registry=reg, control=c, by=SCHEDULER)
        )

    async def _recover_one(self, stored: StoredRun, *, taking: bool = False) -> RunResult:
        """Claim a run whose lease expired and replay its stored intent.

        ``taking``: a worker takes over a delivered claim (``execute``); no ``recover`` record.
        """
        host = self.host
        run_id = stored.run_id
        found = stored_intent(stored)
        if isinstance(found, Unreadable):
            # What the claim was for is unknown: run nothing, record a fault, back off.
            run, history, error = unreadable_intent(host, stored, found)
            await cas(host, run, stored.revision, history=history)
            raise error
        intent, raw = found
        if raw is not stored.intent:
            stored = msgspec.structs.replace(stored, intent=raw)  # read at last: replay it
        if self.executor is not None and not taking:
            if intent.kind == "batch":
                return await fo.resweep(host, self.executor, stored)
            return await ex.redispatch(host, self.executor, stored)
        bp, reg = host.flow(stored.flow_id)
        now = host.now()
        claimed = msgspec.structs.replace(
            stored,
            revision=stored.revision + 1,
            owner=host.owner,
            lease_until=now + timedelta(seconds=host.lease_ttl),
            claim=new_token(),
        )
        record = HistoryRecord(at=now, event="recover", by=host.owner)
        start_ns = time.time_ns() if host.listeners else 0
        await cas(host, claimed, stored.revision, history=[] if taking else [record])
        if host.listeners:
            host.notify("claim", claimed, start_ns)
        log.info(
            "flowcraft: %s run %s (flow %s) from %s: %s",
            "take" if taking else "recover",
            run_id,
            stored.flow_id,
            stored.owner,
            intent.kind,
        )
        digest = intent.digest
        if digest is None and intent.key is not None and intent.kind in ("resume", "continue"):
            digest = fingerprint(intent.data, intent.node_id)  # a claim stored before digests
        segment = Segment(host, claimed, None, intent.key, recovered=True, digest=digest)
        # A pause or cancel sent to the dead owner (under its claim) is this segment's now.
        pending = await self.store.recall(run_id, control_key(stored.claim or ""))
        request = None if pending is None else decode_request(pending, run_id)
        if request is not None:
            host.requests[run_id] = request
            if request.kind == "cancel":
                segment.control.cancel()
            else:
                segment.control.pause(request.reason, request.by)
        ctx = stored.context
        rt = self.runtime
        if intent.kind == "start":
            state = intent.state or {}
            return await segment.run(
                lambda c: rt.run(bp, state, registry=reg, run_id=run_id, control=c)
            )
        if intent.kind == "checkpoint":
            # Continue from the last checkpoint: the nodes it left to run run (again). Refused,
            # it is a fault of the run, tried again later, until it fails (not undone).
            segment.refusal = partial(refused_checkpoint, host, stored, intent)
            return await segment.run(
                lambda c: rt.resume(bp, ctx, None, None, registry=reg, control=c)
            )
        if intent.kind == "fire":
            node = intent.node_id or ""
            return await segment.run(
                lambda c: rt.fire(bp, ctx, node, registry=reg, control=c, by=intent.by)
            )
        if intent.kind in ("batch", "gather"):
            # Hand the batches what came back; ``gather`` runs any item still missing (a
            # fan-out recovered without workers). Refused, the run is not undone to awaiting
            # (it waits on nothing before its gather) but goes back to ``stored`` with a fault,
            # for the sweep to try again later, until it fails (``fanout.refused``).
            done = intent.fanout.done if intent.fanout is not None else {}
            segment.refusal = partial(fo.refused, host, stored, intent)
            return await segment.run(
                lambda c: rt.gather(bp, ctx, done, registry=reg, control=c)
            )
        data = intent.data
        if intent.kind == "continue":
            call = self._continuation(bp, reg, ctx, data, intent.by)
            return await segment.run(call, continuation=data)
        return await segment.run(
            lambda c: rt.resume(
                bp, ctx, data, intent.node_id, registry=reg, control=c, by=intent.by
            )
        )

    async def _wait(self, stored: StoredRun, settled: anyio.Event, started: datetime) -> None:
        """Wait for the segment executing ``stored`` to end (or recover it if its owner died)."""
        host = self.host
        now = host.now()
        if stored.lease_expired(now) and stored.run_id not in host.busy:
            host.busy.add(stored.run_id)
            try:
                await self._recover_one(stored)
                return
            except RevisionConflictError:
                return  # someone else recovers it: look again
            except FlowcraftError:
                pass
            finally:
                host.busy.discard(stored.run_id)
            # Refused and restored: look again. Still running, it cannot be recovered here (its
            # flow is unknown, its intent unreadable): wait as for a live lease, never retry
            # in a tight loop until ``busy_timeout``.
            if (await self.store.get(stored.run_id)).status != "running":
                return
        waited = (now - started).total_seconds()
        if waited > self.busy_timeout or self.busy_timeout == 0:
            raise RunBusyError(stored.run_id, stored.owner, waited)
        clock = host.runtime.clock
        async with anyio.create_task_group() as tg:

            async def nap() -> None:
                await clock.sleep(min(_WAIT_POLL, self.host.poll_interval))
                tg.cancel_scope.cancel()

            async def wake() -> None:
                await settled.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(nap)
            tg.start_soon(wake)

    async def _decided(
        self, stored: StoredRun, node_id: str | None, exc: ResumeError
    ) -> ResumeError:
        """``AlreadyDecidedError`` naming the decision that completed the wait, if one did."""
        target = node_id.split("/", 1)[0] if node_id else None
        history = await self.store.history(stored.run_id)
        # A decision without a node_id is for a wait: a timer that fired later did not win it.
        # The flow's sleeps count even when the history lacks their pause (a fork's history
        # starts at the fork).
        flow = self.host.flows.get(stored.flow_id)
        timers: set[str | None] = set()
        if flow is not None:
            timers.update(n.id for n in flow[0].nodes if n.uses == "sleep")
        timers |= {h.node_id for h in history if h.event == "pause" and h.reason == "timer"}
        for h in reversed(history):
            if h.event in ("cancel", "expire") and target is None:
                return exc
            if target is None and h.node_id in timers:
                continue
            if h.event in ("resume", "timeout") and h.node_id and target in (None, h.node_id):
                return AlreadyDecidedError(
                    stored.run_id, h.node_id, h.action, h.by, h.at, status=stored.status
                )
        return exc

    async def _send(self, stored: StoredRun, request: Request) -> bool:
        """Leave a request for the segment executing ``stored``; True if it will see it."""
        await self.store.remember(
            stored.run_id, control_key(stored.claim or ""), msgspec.msgpack.encode(request)
        )
        now = await self.store.get(stored.run_id)
        return now.status == "running" and now.claim == stored.claim

    async def _emit(self, kind: str, stored: StoredRun, payload: dict[str, Any]) -> None:
        bus = self.runtime.event_bus
        if bus is None:
            return
        event = FlowEvent(
            type=kind,
            run_id=stored.run_id,
            blueprint_id=stored.flow_id,
            payload={k: v for k, v in payload.items() if v is not None},
        )
        try:
            res = bus.emit(event)
            if inspect.isawaitable(res):
                await res
        except Exception:
            log.exception("flowcraft service: event bus failed on %s", kind)

    async def _cancel_stored(
        self, stored: StoredRun, reason: str | None, by: str | None, *, event: str
    ) -> StoredRun:
        """Cancel an awaiting run (not executing anywhere): write a cancelled context."""
        cancelled, _ = await self._cancel_run(stored, reason, by, event=event)
        log.info("flowcraft: cancel run %s (flow %s) by %s", stored.run_id, stored.flow_id, by)
        return cancelled

    async def _cancel_run(
        self, stored: StoredRun, reason: str | None, by: str | None, *, event: str
    ) -> tuple[StoredRun, RunResult]:
        host = self.host
        bp, reg = host.flow(stored.flow_id)
        now = host.now()
        result = await self.runtime.cancel(bp, stored.context, reason=reason, by=by, registry=reg)
        cancelled = StoredRun(
            run_id=stored.run_id,
            flow_id=stored.flow_id,
            status="cancelled",
            revision=stored.revision + 1,
            created_at=stored.created_at,
            updated_at=now,
            context=result.serialized_context,
            claim=new_token(),
            resume_count=stored.resume_count,
            last_resumed_at=stored.last_resumed_at,
            paused_at=stored.paused_at,
            paused_by=stored.paused_by,
            pause_reason=stored.pause_reason,
            pause_request_id=stored.pause_request_id,
        )
        record = HistoryRecord(at=now, event=event, by=by, reason=reason, revision=result.revision)
        await cas(host, cancelled, stored.revision, history=[record], checkpoint=True)
        return cancelled, result
