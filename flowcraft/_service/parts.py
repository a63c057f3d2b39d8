"""What the service's modules share: the records they store, and ``Host``, the service's parts.

``Host`` is the service's configuration and per-process bookkeeping as one explicit object:
``segment`` and ``scheduler`` receive it (or ``Firing``, what the scheduler needs of the
service) instead of importing ``FlowService``, so the package has no import circle.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

import anyio
import msgspec

from flowcraft._control import RunControl
from flowcraft._errors import FlowcraftError, ResumeDataError, UnknownFlowError
from flowcraft._flow.blueprint import Blueprint
from flowcraft._values import Resume, ResumeData, RunResult
from flowcraft.stores._base import RunStore, StoredRun

if TYPE_CHECKING:
    from flowcraft._runtime import FlowRuntime

__all__ = [
    "ENCODER",
    "CONTINUATION",
    "Control",
    "Claimed",
    "Fanout",
    "Firing",
    "Host",
    "Intent",
    "Request",
    "ServiceEvent",
    "control_key",
    "data_dict",
    "decode_intent",
    "decode_request",
    "encode_intent",
    "fingerprint",
    "handed",
    "new_token",
    "recalled",
    "refusal_error",
    "refused",
    "remembered",
]


log = logging.getLogger("flowcraft.service")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceEvent:
    """One step of a ``FlowService``'s own work, as ``FlowService.listeners`` hear it.

    ``kind``: ``"claim"`` (a segment took the run: start, resume, firing, recovery, take-over),
    ``"commit"`` (a segment stored its result), ``"fault"`` (the durable scheduler could not
    fire the run's timer: the run is faulted and backed off; ``error`` says why), ``"tick"``
    (a durable scheduler tick ended; ``error`` if it failed). ``run_id``/``flow_id`` are
    None for a tick; ``revision``/``status`` are what was written (claim, commit).
    ``start_ns``/``end_ns`` bracket the step (``time.time_ns()``: wall clock, for spans).
    """

    kind: Literal["claim", "commit", "fault", "tick"]
    run_id: str | None
    flow_id: str | None
    start_ns: int
    end_ns: int
    revision: int | None = None
    status: str | None = None
    error: BaseException | None = None


class Fanout(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Batches spread over workers: the outbox of their items and what came back so far.

    ``items``: batch node id → item count; ``per``: items per delivery (a delivery names its
    first item); ``done``: batch node id → {item index: outcome from ``run_items``};
    ``faults``: batch node id → {first item: how often a worker could not run that chunk};
    ``refusals``: how often the gather (or a recovery finishing the batches) was refused.
    """

    items: dict[str, int]
    per: int = 1
    done: dict[str, dict[int, bytes]] = {}
    faults: dict[str, dict[int, int]] = {}
    refusals: int = 0

    def complete(self) -> bool:
        """Whether every item of every batch has its outcome."""
        return all(len(self.done.get(node, {})) >= n for node, n in self.items.items())

    def pending(self) -> list[tuple[str, int]]:
        """The deliveries (batch node id, first item) whose outcomes are not in yet."""
        return [
            (node, start)
            for node, n in self.items.items()
            for start in range(0, n, self.per)
            if start not in self.done.get(node, {})
        ]


class Intent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """What a claimed run is about to execute: replayed by recovery after a crash.

    ``start``: run ``state``; ``resume``: ``data`` for ``node_id``; ``fire``: the timer or wait
    expiry of ``node_id``; ``continue``: the nodes a ``RunControl`` pause stopped (``data`` is
    what the continuation carries); ``checkpoint``: resume the stored step snapshot;
    ``batch``: the items of ``fanout`` run on workers (the stored context waits for them);
    ``gather``: every item is in, hand ``fanout.done`` to the batches and run on. ``key`` and
    ``digest`` of a decision that led to a fan-out travel with it to the gather, which stores
    the decision's outcome.

    A decision's claim counts it in the run's ``resume_count``/``last_resumed_at``;
    ``counted_from`` and ``resumed_before`` are what the two were before, so a decision refused
    after its claim (on a worker, or replayed by recovery) puts them back. A claim stored
    without them (older releases) keeps its count. ``refusals``: how often recovery's replay
    of a ``checkpoint`` was refused (``segment.refused_checkpoint``), or how often recovery
    could not read the intent a claim stored: ``unreadable`` keeps those bytes as they were
    (``raw``) while recovery backs off (``segment.unreadable_intent``).
    """

    kind: Literal[
        "start", "resume", "fire", "continue", "checkpoint", "batch", "gather", "unreadable"
    ]
    state: dict[str, Any] | None = None
    data: dict[str, Any] | None = None
    node_id: str | None = None
    by: str | None = None
    key: str | None = None
    digest: str | None = None  # ``fingerprint`` of the decision the key stands for
    fanout: Fanout | None = None
    counted_from: int | None = None
    resumed_before: datetime | None = None
    refusals: int = 0
    raw: bytes | None = None


class Refusal(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A decision refused where the caller could not hear it (a worker): the error, as data.

    ``type`` names a ``FlowcraftError`` class, ``message`` is its text, ``attrs`` its plain
    attributes (``run_id``, ``node_id``, ``action``, ...).
    """

    type: str
    message: str
    attrs: dict[str, Any] = {}


class Remembered(msgspec.Struct, frozen=True, kw_only=True, tag="flowcraft.idempotency"):
    """What an idempotency key remembers: the decision's fingerprint and the first result.

    ``refused``: the decision was refused on a worker (``context`` is empty); a caller reading
    the key back (``outcome``, or the same decision again) gets that error.
    """

    digest: str | None
    context: bytes
    refused: Refusal | None = None


class Request(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A pause or cancel request for a run executing in some process."""

    kind: Literal["pause", "cancel"]
    at: datetime
    reason: str | None = None
    by: str | None = None
    request_id: str | None = None
    expires_at: datetime | None = None  # a pause's own deadline (``pause(expires_in=)``)


ENCODER = msgspec.msgpack.Encoder()
_INTENT = msgspec.msgpack.Decoder(Intent)
_REMEMBERED = msgspec.msgpack.Decoder(Remembered)
_SORTED = msgspec.msgpack.Encoder(order="sorted")
_REQUEST = msgspec.msgpack.Decoder(Request)

#: The data the current segment continues a ``RunControl`` pause with (see ``resume_data``).
CONTINUATION: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "flowcraft_continuation", default=None
)


def handed(stored: StoredRun) -> RunResult:
    """What a call returns once the segment is in other hands (a worker's): status ``running``.

    ``serialized_context`` is empty; ``FlowService.settled(run_id)`` waits for the outcome.
    """
    return RunResult(
        # Not a ``RunStatus`` (the engine never returns it); only a hand-over does.
        status=cast(Any, "running"),
        run_id=stored.run_id,
        revision=stored.revision,
        context={},
        outputs={},
        serialized_context=b"",
        blueprint_id=stored.flow_id,
    )


def new_token() -> str:
    """A fresh claim id: 64 random bits as 16 hex digits (it tells one run's writes apart)."""
    return secrets.token_hex(8)


def control_key(claim: str) -> str:
    """The store key under which pause/cancel requests for the segment ``claim`` wait.

    Printable on purpose: PostgreSQL text cannot hold NUL bytes.
    """
    return f"flowcraft:control:{claim}"


def data_dict(data: ResumeData, run_id: str, node_id: str | None) -> dict[str, Any] | None:
    """Resume data as the plain dict an ``Intent`` stores; ``ResumeDataError`` if it is not one."""
    if data is None:
        return None
    if isinstance(data, Resume):
        out: dict[str, Any] = {"output": data.output, "action": data.action, "by": data.by}
        return {k: v for k, v in out.items() if v is not None}
    if not isinstance(data, Mapping):
        raise ResumeDataError(
            run_id, node_id, f"expected a mapping or Resume, got {type(data).__name__}"
        )
    return dict(data)


def encode_intent(intent: Intent, run_id: str) -> bytes:
    """The stored bytes of an intent; a payload msgspec cannot encode is a ``ResumeDataError``."""
    try:
        return ENCODER.encode(intent)
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
        detail = f"cannot be stored ({type(exc).__name__}: {exc})"
        raise ResumeDataError(run_id, intent.node_id, detail) from exc


def fingerprint(data: dict[str, Any] | None, node_id: str | None) -> str:
    """A digest of a decision (node and data, key order ignored): same decision, same digest."""
    try:
        raw = _SORTED.encode([node_id, data])
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError):
        raw = repr((node_id, data)).encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def remembered(digest: str | None, context: bytes) -> bytes:
    """The bytes stored under an idempotency key."""
    return ENCODER.encode(Remembered(digest=digest, context=context))


_PLAIN = (str, int, float, bool, type(None))


def refused(digest: str | None, exc: FlowcraftError) -> bytes:
    """The bytes stored under an idempotency key for a decision a worker refused."""
    attrs: dict[str, Any] = {}
    for name, value in vars(exc).items():
        if name.startswith("_"):
            continue
        if isinstance(value, _PLAIN):
            attrs[name] = value
        elif isinstance(value, tuple | list) and all(isinstance(v, _PLAIN) for v in value):
            attrs[name] = list(value)
    refusal = Refusal(type=type(exc).__name__, message=str(exc), attrs=attrs)
    return ENCODER.encode(Remembered(digest=digest, context=b"", refused=refusal))


def _error_class(name: str) -> type[FlowcraftError] | None:
    """The ``FlowcraftError`` subclass called ``name`` (the error tree is walked, not imported)."""
    stack: list[type[FlowcraftError]] = [FlowcraftError]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            return cls
        stack.extend(cls.__subclasses__())
    return None


def refusal_error(refusal: Refusal) -> FlowcraftError:
    """The error a refused decision raised on its worker, rebuilt for the caller.

    The same class (so ``except UnknownActionError`` works), message and plain attributes;
    a class this version does not know becomes a ``FlowcraftError`` with the message.
    """
    cls = _error_class(refusal.type)
    if cls is None:
        return FlowcraftError(f"{refusal.type}: {refusal.message}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, refusal.message)
    for name, value in refusal.attrs.items():
        setattr(exc, name, tuple(value) if isinstance(value, list) else value)
    return exc


def recalled(raw: bytes) -> Remembered:
    """What an idempotency key remembers; a bare context (stored before digests) has none."""
    try:
        return _REMEMBERED.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return Remembered(digest=None, context=raw)


def decode_intent(raw: bytes) -> Intent:
    """The intent stored with a claim."""
    return _INTENT.decode(raw)


def decode_request(raw: bytes, run_id: str) -> Request | None:
    """A remembered pause/cancel request, or None (logged) if it does not decode.

    A corrupted request must not stop what reads it: the watcher renewing a segment's lease,
    or the recovery of the run.
    """
    try:
        return _REQUEST.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.error(
            "flowcraft service: run %s: a pause/cancel request that does not decode was "
            "ignored (%s); send it again with FlowService.pause or cancel",
            run_id,
            exc,
        )
        return None


#: What the service hands the runtime to hear pause/cancel requests and checkpoints.
Control = RunControl


def new_control() -> RunControl:
    """A fresh ``RunControl`` for one segment."""
    return RunControl()


# In-process wake-ups: a segment that ends sets the event of its run, so callers of the same
# process waiting for that run (duplicates, decisions for other waits) retry at once instead of
# at the next poll. Keyed by store object: services sharing a store share the events.
_SETTLED: weakref.WeakKeyDictionary[Any, dict[str, anyio.Event]] = weakref.WeakKeyDictionary()


@dataclass(eq=False)
class Host:
    """The parts of a ``FlowService`` its segments and scheduler work with."""

    runtime: FlowRuntime
    store: RunStore
    owner: str
    lease_ttl: float
    poll_interval: float
    durability: Literal["pause", "step"]
    on_expiry: Literal["cancel", "keep"]
    flows: dict[str, tuple[Blueprint, Mapping[str, object]]]
    pause_limits: dict[str, float | timedelta]
    controls: dict[str, Control] = field(default_factory=dict)
    requests: dict[str, Request] = field(default_factory=dict)
    busy: set[str] = field(default_factory=set)
    keep_checkpoints: int = 100
    #: ``FlowService(fault_attempts=)``: tries of a chunk, a gather or a checkpoint replay.
    fault_attempts: int = 3
    listeners: list[Callable[[ServiceEvent], object]] = field(default_factory=list)
    #: Items per delivery when batches are spread over workers (0: a segment runs its batches).
    scatter: int = 0
    #: Publishes the deliveries of a fan-out a segment just stored (set with ``scatter``).
    outbox: Callable[[StoredRun], Awaitable[None]] | None = None
    # Claims may commit without their own sync (``durable=False``): the store takes the flag and
    # the claim is not an answer to anyone (no executor hands it over as "accepted").
    lazy_claims: bool = False

    def now(self) -> datetime:
        """The runtime clock's time."""
        return self.runtime.clock.now()

    def notify(
        self,
        kind: Literal["claim", "commit", "fault", "tick"],
        run: StoredRun | None,
        start_ns: int,
        error: BaseException | None = None,
    ) -> None:
        """Tell ``listeners`` (call only when there are some); a listener that raises is logged."""
        event = ServiceEvent(
            kind=kind,
            run_id=run.run_id if run is not None else None,
            flow_id=run.flow_id if run is not None else None,
            start_ns=start_ns,
            end_ns=time.time_ns(),
            revision=run.revision if run is not None and kind != "fault" else None,
            status=run.status if run is not None and kind != "fault" else None,
            error=error,
        )
        for listener in tuple(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("flowcraft service: listener failed on %s", kind)

    def flow(self, flow_id: str) -> tuple[Blueprint, Mapping[str, object]]:
        """The blueprint and registry of a registered flow (``UnknownFlowError`` otherwise)."""
        try:
            return self.flows[flow_id]
        except KeyError:
            raise UnknownFlowError(flow_id, sorted(self.flows)) from None

    def pause_limit(self, flow_id: str) -> timedelta | None:
        """``max_pause`` of a flow."""
        limit = self.pause_limits.get(flow_id, self.pause_limits.get("*"))
        if limit is None:
            return None
        return limit if isinstance(limit, timedelta) else timedelta(seconds=float(limit))

    def rebuild(self, stored: StoredRun, data: bytes) -> RunResult:
        """A stored context as a ``RunResult``."""
        bp, reg = self.flow(stored.flow_id)
        return self.runtime.inspect(bp, data, registry=reg)

    def max_bytes(self) -> int:
        """The runtime's ``max_context_bytes`` (checked before a context is stored)."""
        return self.runtime.max_context_bytes

    def settled_event(self, run_id: str) -> anyio.Event:
        """The event set when the current segment of ``run_id`` (in this process) ends."""
        events = _SETTLED.setdefault(self.store, {})
        event = events.get(run_id)
        if event is None:
            event = events[run_id] = anyio.Event()
        return event

    def settled(self, run_id: str) -> None:
        """Wake this process's waiters on ``run_id``."""
        events = _SETTLED.get(self.store)
        if events is not None:
            event = events.pop(run_id, None)
            if event is not None:
                event.set()


class Claimed(msgspec.Struct, frozen=True):
    """A due run the scheduler claimed in a batch: the run before and after, and what fires."""

    prior: StoredRun
    claimed: StoredRun
    node_id: str


class Slot(Protocol):
    """A firing's place among the scheduler's ``concurrency``, held while its nodes run."""

    def release(self) -> None:
        """Give the place up (the nodes ran; the commit is left): once, however often called."""
        ...

    async def hold(self) -> None:
        """Take a place again before more nodes run (no-op while one is held)."""
        ...


class Firing(Protocol):
    """What the durable scheduler needs of the service."""

    @property
    def host(self) -> Host:
        """The service's parts."""
        ...

    async def recover(self) -> list[RunResult]:
        """Take over runs whose lease expired."""
        ...

    async def fire_due(
        self, run_id: str, seen: StoredRun | None = None
    ) -> tuple[list[RunResult], int]:
        """Fire what is due for one run: its results and how many runs it expired."""
        ...

    async def record_fault(self, run_id: str, exc: BaseException) -> None:
        """Back a failing run off and record why on it."""
        ...

    async def claim_due(self, runs: list[StoredRun]) -> list[Claimed | bool]:
        """Claim the plain timer firings among ``runs`` in one store write.

        Per run: a ``Claimed`` to pass to ``fire_claimed``; True for ``fire_due`` (an expiry, a
        held run...); False when another writer got the run first (nothing to do).
        """
        ...

    async def fire_claimed(
        self, claimed: Claimed, slot: Slot | None = None
    ) -> tuple[list[RunResult], int]:
        """Fire a run ``claim_due`` claimed, then whatever else is due for it, like ``fire_due``.

        ``slot`` is released once the firing's nodes have run, while its outcome commits, and
        held again before anything else due for the run fires.
        """
        ...
