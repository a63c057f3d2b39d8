"""The ``RunStore`` protocol and the records every store keeps."""

from __future__ import annotations

import base64
import builtins
import logging
import re
import struct
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

import msgspec

from flowcraft._errors import OutOfRangeError, RunExistsError, StoreCorruptionError

__all__ = [
    "FINISHED",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "HistoryRecord",
    "RunExistsError",
    "RunPage",
    "RunStats",
    "RunStore",
    "StoredRun",
    "StoredStatus",
]

#: A stored run's status: a ``RunStatus``, or ``"running"`` while a process executes it.
StoredStatus: TypeAlias = Literal["running", "awaiting", "completed", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
#: The priorities a store keeps: a signed 64-bit integer (PostgreSQL ``BIGINT``, SQLite).
PRIORITY_MIN, PRIORITY_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger("flowcraft.stores")
_NAMESPACE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,40}$")


class StoredRun(msgspec.Struct, frozen=True, omit_defaults=True):
    """One run as a store keeps it: the context bytes plus what lists and schedulers index.

    ``revision`` is the store's write counter, compared-and-set by ``RunStore.save``. ``due_at``
    is the earliest moment the durable scheduler has something to do for the run (a timer, a
    wait expiry, an auto-cancel after ``max_pause``); ``pause_deadline`` is when an awaiting run
    counts as expired. A ``held`` run was paused while awaiting: its timers wait for a release.
    ``intent`` is a write-ahead record of what a running run was asked to do,
    so another process can recover it after a crash.

    A segment (start, resume, timer, recovery...) *claims* the run before any node runs: one
    compare-and-set that sets ``status="running"`` and stores ``intent``, ``owner``,
    ``lease_until`` and ``claim_key`` (the idempotency key of the decision, if any) together.
    ``claim`` is the id of the segment that wrote this revision (it lets a writer whose reply
    was lost recognise its own write). While running, the awaiting fields keep the state the
    claim started from, so a refused segment restores it exactly. ``fault`` is why the durable
    scheduler could not fire the run's timer last time (it backs off ``fault_count`` times), or
    why a worker could not run a chunk of the run's batch spread over workers.
    ``resume_count`` counts the decisions and continuations applied to the run (the last at
    ``last_resumed_at``; one refused after its claim, on a worker or by recovery too, is not
    counted); ``expired_at`` is when the scheduler expired it (``on_expiry="keep"``).
    ``priority`` orders the durable scheduler's work: due runs fire in ``(priority, due_at)``
    order, the lowest priority first (default 0; negative numbers go before it); it is a signed
    64-bit integer (``PRIORITY_MIN`` to ``PRIORITY_MAX``).
    ``awaiting_since`` is when an awaiting run began waiting: the ``since`` of its oldest
    outstanding wait, set by the segment that stored it awaiting (holds, faults and expiries
    keep it); ``RunStats.awaiting_since_by_flow`` reads it from an index.
    """

    run_id: str
    flow_id: str
    status: StoredStatus
    revision: int
    created_at: datetime
    updated_at: datetime
    context: bytes = b""
    awaiting: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    wake_at: datetime | None = None
    expires_at: datetime | None = None
    due_at: datetime | None = None
    pause_deadline: datetime | None = None
    paused_at: datetime | None = None
    paused_by: str | None = None
    pause_reason: str | None = None
    pause_request_id: str | None = None
    held: bool = False
    intent: bytes = b""
    owner: str | None = None
    lease_until: datetime | None = None
    claim: str | None = None
    claim_key: str | None = None
    fault: str | None = None
    fault_count: int = 0
    resume_count: int = 0
    last_resumed_at: datetime | None = None
    expired_at: datetime | None = None
    priority: int = 0
    awaiting_since: datetime | None = None

    def lease_expired(self, now: datetime) -> bool:
        """Whether a running run's lease has lapsed (its owner died or stalled)."""
        return self.status == "running" and (self.lease_until is None or self.lease_until <= now)

    def __repr__(self) -> str:
        return (
            f"flowcraft.stores.StoredRun(run_id={self.run_id!r}, flow_id={self.flow_id!r}, "
            f"status={self.status!r}, revision={self.revision}, awaiting={list(self.awaiting)!r}, "
            f"due_at={self.due_at}, context={len(self.context)} bytes)"
        )

    def expired(self, now: datetime) -> bool:
        """Whether the run awaits past its ``pause_deadline`` (``max_pause``)."""
        return (
            self.status == "awaiting"
            and self.pause_deadline is not None
            and self.pause_deadline <= now
        )


class HistoryRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of a run's audit trail: what happened, to which node, when, by whom, why."""

    at: datetime
    event: str
    node_id: str | None = None
    by: str | None = None
    reason: str | None = None
    action: str | None = None
    revision: int | None = None
    request_id: str | None = None
    data: dict[str, Any] | None = None


class RunPage(msgspec.Struct, frozen=True, kw_only=True):
    """One page of ``RunStore.list``, iterable and sized; pass ``next_cursor`` back for more."""

    runs: tuple[StoredRun, ...]
    next_cursor: str | None = None

    def __iter__(self) -> Iterator[StoredRun]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


class RunStats(msgspec.Struct, frozen=True, kw_only=True):
    """Counts over every stored run.

    ``awaiting_by_flow`` counts awaiting runs per flow; ``awaiting_since_by_flow`` is, per
    flow, the earliest ``awaiting_since`` of its awaiting runs (how long the longest wait has
    lasted). Both are read from an index of awaiting runs, never from run bodies.
    """

    total: int = 0
    by_status: dict[str, int] = {}
    by_flow: dict[str, int] = {}
    awaiting_by_reason: dict[str, int] = {}
    expired: int = 0
    awaiting_by_flow: dict[str, int] = {}
    awaiting_since_by_flow: dict[str, datetime] = {}


@runtime_checkable
class RunStore(Protocol):
    """Where ``FlowService`` keeps runs. Every write of a run is a compare-and-set on revision.

    Implementations: ``MemoryStore``, ``SqliteStore`` (the embedded default), ``RedisStore``,
    ``PostgresStore``. A new store inherits the contract suite in ``tests/test_stores.py``.

    Optional: ``create`` and ``save`` may take a keyword ``durable: bool = True``. The service
    passes ``durable=False`` for a *claim* when it executes the segment itself: such a write
    must be as atomic and as visible as any other, but may return before it is synced to
    disk, because the segment's commit (a durable write, the first answer anyone gets) comes
    after it and syncs it too (``SqliteStore`` and ``PostgresStore`` do so; a store whose
    writes are all synced the same way may ignore it). A store may also offer
    ``get_and_recall(run_id, key) -> (StoredRun, bytes | None)``: ``get`` and ``recall`` in
    one round trip, which a decision with an idempotency key then uses.
    """

    async def create(self, run: StoredRun, *, history: Sequence[HistoryRecord] = ()) -> None:
        """Store a new run; raise ``RunExistsError`` if the id is taken."""
        ...

    async def save(
        self,
        run: StoredRun,
        expected_revision: int,
        *,
        history: Sequence[HistoryRecord] = (),
        idempotency: tuple[str, bytes] | None = None,
        checkpoint: int = 0,
    ) -> None:
        """Replace the run if its stored revision is ``expected_revision``, atomically.

        ``history`` is appended and ``idempotency`` (key, result) remembered in the same
        atomic step; ``checkpoint > 0`` also keeps ``run`` as a checkpoint (by revision),
        keeping that many of the newest. Raises ``RevisionConflictError`` (with
        ``expected``/``actual``) when the stored revision differs, ``RunNotFoundError`` when
        the run is not stored.
        """
        ...

    async def get(self, run_id: str) -> StoredRun:
        """The stored run; raise ``RunNotFoundError`` if there is none."""
        ...

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
        """Runs matching every filter given, oldest first, a page at a time.

        ``reason`` matches awaiting runs with a node waiting for that reason (``"wait"``,
        ``"timer"``, ``"pause"``); ``expired`` needs ``now``.
        """
        ...

    async def due(self, now: datetime, limit: int = 100) -> builtins.list[StoredRun]:
        """Awaiting runs whose ``due_at`` is at or before ``now``, in ``(priority, due_at)`` order.

        The lowest ``priority`` first, then the earliest ``due_at``, then ``run_id``.
        """
        ...

    async def stats(self, now: datetime) -> RunStats:
        """Counts by status, by flow, awaiting by reason, and expired at ``now``."""
        ...

    async def history(self, run_id: str) -> builtins.list[HistoryRecord]:
        """The run's audit trail, oldest first (empty for an unknown run)."""
        ...

    async def checkpoints(self, run_id: str) -> builtins.list[StoredRun]:
        """The run as kept by ``save(..., checkpoint=)``, oldest revision first."""
        ...

    async def remember(self, run_id: str, key: str, result: bytes) -> bool:
        """Record ``result`` under an idempotency key; False (keeping the first) if known."""
        ...

    async def recall(self, run_id: str, key: str) -> bytes | None:
        """The result remembered under the key, or None."""
        ...

    async def acquire_lease(self, name: str, owner: str, ttl: float, now: datetime) -> bool:
        """Take or renew the named lease until ``now + ttl``; False while another owner holds it."""
        ...

    async def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up if ``owner`` holds it."""
        ...

    async def delete_finished(self, before: datetime) -> int:
        """Delete finished runs last updated before ``before`` (and their records); return count."""
        ...

    async def delete(self, run_id: str, expected_revision: int) -> None:
        """Delete a run and its records if its stored revision is ``expected_revision``.

        Raises ``RevisionConflictError`` / ``RunNotFoundError`` like ``save``.
        """
        ...

    async def close(self) -> None:
        """Release connections. The store is unusable afterwards."""
        ...


# --- helpers shared by the implementations ---------------------------------------------------

RUN_ENCODER = msgspec.msgpack.Encoder()
RUN_DECODER = msgspec.msgpack.Decoder(StoredRun)
HISTORY_DECODER = msgspec.msgpack.Decoder(HistoryRecord)

# The SQL stores keep a run (and a history record) as a msgpack array of its fields in
# declaration order, without the field names a map repeats in every row; ``decode_run``
# reads both shapes (bodies written before were maps).
_RunRow = msgspec.defstruct(
    "_RunRow", [], bases=(StoredRun,), array_like=True, frozen=True, kw_only=True,
    module=__name__,
)
_HistoryRow = msgspec.defstruct(
    "_HistoryRow", [], bases=(HistoryRecord,), array_like=True, frozen=True, kw_only=True,
    module=__name__,
)
_ROW_DECODER = msgspec.msgpack.Decoder(_RunRow)
_HISTORY_ROW_DECODER = msgspec.msgpack.Decoder(_HistoryRow)
_ARRAY_HEADS = frozenset([*range(0x90, 0xA0), 0xDC, 0xDD])
_DECODE_ERRORS = (
    msgspec.DecodeError, msgspec.ValidationError, TypeError, ValueError, OverflowError
)


#: The leading ``StoredRun`` fields a SQL store keeps in columns, left out of its body.
ROW_COLUMNS = ("run_id", "flow_id", "status", "revision", "created_at", "updated_at")
_LEAN = b"\xc1"  # msgpack's never-used byte: a body without the ``ROW_COLUMNS`` fields
_SKIP = len(ROW_COLUMNS)
assert StoredRun.__struct_fields__[:_SKIP] == ROW_COLUMNS


def encode_run_row(run: StoredRun) -> bytes:
    """A run as a SQL store's body: the fields after ``ROW_COLUMNS`` as one msgpack array."""
    return _LEAN + RUN_ENCODER.encode(msgspec.structs.astuple(run)[_SKIP:])


_TIMESTAMP64 = struct.Struct(">BbQ").pack


def _timestamp(micros: int) -> bytes:
    """A msgpack timestamp (extension -1) of ``micros`` since the epoch."""
    seconds, us = divmod(micros, 1_000_000)
    if 0 <= seconds < 1 << 34:
        return _TIMESTAMP64(0xD7, -1, (us * 1000) << 34 | seconds)
    nanos = (us * 1000).to_bytes(4, "big")
    return b"\xc7\x0c\xff" + nanos + seconds.to_bytes(8, "big", signed=True)


# What ``decode_row`` decodes a lean body into: the fields after the four leading columns,
# the two timestamps spliced in front (msgspec reads timestamps faster than Python builds
# datetimes), then the run is built positionally (a keyword call of 30 fields costs ten times more).
_RowTail = msgspec.defstruct(
    "_RowTail",
    [
        (f.name, f.type) if f.required else (f.name, f.type, f.default)
        for f in msgspec.structs.fields(StoredRun)[4:]
    ],
    array_like=True, frozen=True, module=__name__,
)
_TAIL_DECODER = msgspec.msgpack.Decoder(_RowTail)
_ASTUPLE = msgspec.structs.astuple
_STATUSES = frozenset(["running", "awaiting", "completed", "failed", "cancelled"])


def decode_row(row: Sequence[Any]) -> StoredRun:
    """A run from a SQL row: run_id, flow_id, status, revision, created_at, updated_at, body.

    A body written whole (a map, before) is read alone. ``StoreCorruptionError`` naming the
    run if it does not decode.
    """
    run_id = str(row[0])
    body = row[6]
    if not isinstance(body, bytes | bytearray | memoryview):  # SQLite keeps any type
        why = f"the body is a {type(body).__name__}, not bytes"
        raise StoreCorruptionError(run_id, "run record", why)
    raw = bytes(body)
    if raw[:1] != _LEAN:
        return decode_run(raw, run_id)
    try:
        head = raw[1] if len(raw) > 1 else -1
        if 0x90 <= head <= 0x9F:
            count, tail = head & 0x0F, raw[2:]
        elif head == 0xDC:
            count, tail = int.from_bytes(raw[2:4], "big"), raw[4:]
        else:
            raise msgspec.DecodeError("a run body without its columns is not an array")
        status = row[2]
        if status not in _STATUSES or type(row[3]) is not int or type(row[1]) is not str:
            raise msgspec.ValidationError(
                f"bad columns: flow_id={row[1]!r}, status={status!r}, revision={row[3]!r}"
            )
        rest = _TAIL_DECODER.decode(b"".join((
            b"\xdc" + (count + 2).to_bytes(2, "big"),  # a 16-bit count: what msgspec wrote
            _timestamp(int(row[4])),
            _timestamp(int(row[5])),
            tail,
        )))
        return StoredRun(run_id, row[1], status, row[3], *_ASTUPLE(rest))
    except _DECODE_ERRORS as exc:
        raise StoreCorruptionError(run_id, "run record", str(exc)) from exc


def decode_rows(rows: Iterable[Sequence[Any]]) -> builtins.list[StoredRun]:
    """``decode_row`` each row, skipping (and logging) corrupted ones."""
    runs: builtins.list[StoredRun] = []
    for row in rows:
        try:
            runs.append(decode_row(row))
        except StoreCorruptionError:
            log.exception("flowcraft store: skipping run %s", row[0])
    return runs


def encode_history_row(record: HistoryRecord) -> bytes:
    """A history record as a msgpack array of its fields, trailing ``None`` left out."""
    values = msgspec.structs.astuple(record)
    end = len(values)
    while values[end - 1] is None:
        end -= 1
    return RUN_ENCODER.encode(values[:end])


def decode_run(raw: bytes, run_id: str) -> StoredRun:
    """A stored run's body, or ``StoreCorruptionError`` naming the run."""
    try:
        if raw and raw[0] in _ARRAY_HEADS:
            return StoredRun(*_ASTUPLE(_ROW_DECODER.decode(raw)))
        return RUN_DECODER.decode(raw)
    except _DECODE_ERRORS as exc:
        raise StoreCorruptionError(run_id, "run record", str(exc)) from exc


def decode_history(raw: bytes, run_id: str) -> HistoryRecord:
    """One history record, or ``StoreCorruptionError`` naming the run."""
    try:
        if raw and raw[0] in _ARRAY_HEADS:
            row = _HISTORY_ROW_DECODER.decode(raw)
            return msgspec.convert(row, HistoryRecord, from_attributes=True)
        return HISTORY_DECODER.decode(raw)
    except _DECODE_ERRORS as exc:
        raise StoreCorruptionError(run_id, "history record", str(exc)) from exc


#: A history row of a SQL store takes further records while its body is smaller than this.
HISTORY_CHUNK = 1024


def history_chunk(history: Sequence[HistoryRecord]) -> bytes:
    """Records as one SQL history row body: each framed by its length (a msgpack uint).

    A write appends its records to the run's last row while that row is under
    ``HISTORY_CHUNK`` bytes (one row per run for most runs, instead of one per record).
    """
    out = bytearray()
    for record in history:
        body = encode_history_row(record)
        out += RUN_ENCODER.encode(len(body))
        out += body
    return bytes(out)


def framed(raw: bytes) -> bool:
    """Whether a history row body holds length-framed records (else one bare record)."""
    return bool(raw) and (raw[0] < 0x80 or raw[0] in (0xCC, 0xCD, 0xCE))


def decode_history_chunk(raw: bytes, run_id: str) -> builtins.list[HistoryRecord]:
    """The records of one SQL history row body.

    A body written before rows held several records is one bare record (a msgpack map,
    never a uint): it reads back as that record.
    """
    if not raw or (raw[0] >= 0x80 and raw[0] not in (0xCC, 0xCD, 0xCE)):
        return [decode_history(raw, run_id)]
    records: builtins.list[HistoryRecord] = []
    view = memoryview(raw)
    at, end = 0, len(raw)
    while at < end:
        head = raw[at]
        if head < 0x80:
            size, at = head, at + 1
        else:
            width = {0xCC: 1, 0xCD: 2, 0xCE: 4}.get(head)
            if width is None or at + 1 + width > end:
                raise StoreCorruptionError(run_id, "history record", "bad length frame")
            size = int.from_bytes(view[at + 1 : at + 1 + width], "big")
            at += 1 + width
        if at + size > end:
            raise StoreCorruptionError(run_id, "history record", "truncated record")
        records.append(decode_history(bytes(view[at : at + size]), run_id))
        at += size
    return records


def decode_many(rows: Iterable[tuple[str, bytes]]) -> builtins.list[StoredRun]:
    """Decode ``(run_id, body)`` rows, skipping (and logging) corrupted ones."""
    runs: builtins.list[StoredRun] = []
    for run_id, raw in rows:
        try:
            runs.append(decode_run(raw, run_id))
        except StoreCorruptionError:
            log.exception("flowcraft store: skipping run %s", run_id)
    return runs


def checkpoints_of(rows: Iterable[Sequence[Any]]) -> builtins.list[StoredRun]:
    """Checkpoints from SQL rows (``decode_row``; stored ones and the run's own), oldest first."""
    by_revision: dict[int, Sequence[Any]] = {}
    for row in rows:
        if type(row[3]) is not int:  # SQLite keeps whatever a column was given
            raise StoreCorruptionError(str(row[0]), "checkpoint", f"revision {row[3]!r}")
        by_revision[row[3]] = row
    return [decode_row(by_revision[rev]) for rev in sorted(by_revision)]


# --- what a store can keep ----------------------------------------------------------------------

#: The integer fields of a ``StoredRun``: each kept as a signed 64-bit integer.
_INT_FIELDS = ("revision", "fault_count", "resume_count", "priority")
#: The text fields of a ``StoredRun`` and a ``HistoryRecord`` a caller's value reaches: one of
#: another type would be written where every read expects a string (a record none decodes).
_TEXT_FIELDS = ("run_id", "flow_id", "paused_by", "pause_reason", "pause_request_id", "claim_key")
_HISTORY_TEXT = ("event", "node_id", "by", "reason", "action", "request_id")


def _check_text(record: object, fields: tuple[str, ...], run_id: object) -> None:
    for name in fields:
        value = getattr(record, name)
        if value is not None and not isinstance(value, str):
            raise TypeError(
                f"run {run_id!r}: {name} must be a string or None, not {value!r}; nothing was "
                "stored"
            )
#: The most a count a store is handed asks for (a page's ``limit``, ``checkpoint`` to keep):
#: more than any page or run holds, so asking for more changes nothing.
COUNT_MAX = 2**31 - 1


def check_id(run_id: object, key: object = "") -> None:
    """``TypeError`` naming ``run_id`` (or ``key``) unless it is a string.

    What every read or write by id checks first, on every store, so a wrong type is the same
    error everywhere (not a driver's error on one store and ``RunNotFoundError`` on another).
    """
    if not isinstance(run_id, str):
        raise TypeError(f"run_id must be a string, not {run_id!r}; nothing changed")
    if not isinstance(key, str):
        raise TypeError(f"key must be a string, not {key!r}; nothing changed")


def check_int(field: str, value: int, run_id: str | None = None) -> None:
    """``OutOfRangeError`` unless ``value`` fits a signed 64-bit integer (``TypeError``: no int)."""
    if not isinstance(value, int):
        where = f"run {run_id!r}: " if run_id is not None else ""
        raise TypeError(f"{where}{field} must be an int, got {value!r}")
    if not PRIORITY_MIN <= value <= PRIORITY_MAX:
        raise OutOfRangeError(field, value, run_id=run_id)


def check_run(run: StoredRun, history: Sequence[HistoryRecord] = ()) -> None:
    """What every store's ``create``/``save`` checks first: ``run``'s integers fit 64 bits.

    So a value no store can keep is the same ``OutOfRangeError`` on every store, before any
    write, instead of a driver's ``OverflowError`` (or nothing, in memory).
    """
    lo, hi = PRIORITY_MIN, PRIORITY_MAX
    try:
        fits = (
            lo <= run.revision <= hi
            and lo <= run.priority <= hi
            and lo <= run.fault_count <= hi
            and lo <= run.resume_count <= hi
        )
    except TypeError:
        fits = False
    if not fits:
        for name in _INT_FIELDS:
            check_int(name, getattr(run, name), run.run_id)
    _check_text(run, _TEXT_FIELDS, run.run_id)
    for record in history:
        if record.revision is not None:
            check_int("revision of a history record", record.revision, run.run_id)
        _check_text(record, _HISTORY_TEXT, run.run_id)


def out_of_range(run: StoredRun, expected: int) -> Exception | None:
    """What ``save_many`` refuses one write with when ``check_run`` (or its revision) fails."""
    try:
        check_run(run)
        check_int("expected_revision", expected, run.run_id)
    except (OutOfRangeError, TypeError) as exc:
        return exc
    return None


def due_limit(limit: int) -> int:
    """Validate ``due``'s ``limit`` (at least 1); the limit to use (``COUNT_MAX`` at most)."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return min(limit, COUNT_MAX)


def lease_end(now: datetime, ttl: float) -> datetime:
    """``now + ttl`` seconds, or ``OutOfRangeError`` for a ttl no time can hold."""
    try:
        return now + timedelta(seconds=ttl)
    except (OverflowError, ValueError) as exc:  # past year 9999, inf, nan
        raise OutOfRangeError(
            "lease ttl", ttl, "it must be a finite number of seconds ending before year 10000",
            todo="Pass a shorter ttl.",
        ) from exc


def check_namespace(namespace: str) -> str:
    """Namespaces become table names and key prefixes: keep them to identifier characters."""
    if not _NAMESPACE.match(namespace):
        raise ValueError(
            f"invalid store namespace {namespace!r}: use letters, digits and underscores "
            "(at most 41 characters, not starting with a digit)"
        )
    return namespace


def to_micros(value: datetime) -> int:
    """A timezone-aware datetime as integer microseconds since the epoch (sortable)."""
    if value.tzinfo is None:
        raise ValueError(f"store times must be timezone-aware, got {value!r}")
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """The datetime ``to_micros`` made ``value`` from (UTC)."""
    return _EPOCH + timedelta(microseconds=value)


def opt_micros(value: datetime | None) -> int | None:
    """``to_micros`` for optional times."""
    return None if value is None else to_micros(value)


def encode_cursor(run: StoredRun) -> str:
    """An opaque cursor pointing after ``run`` in (created_at, run_id) order."""
    return cursor_at(to_micros(run.created_at), run.run_id)


def cursor_at(created_micros: int, run_id: str) -> str:
    """An opaque cursor pointing after the row ``(created_at, run_id)``."""
    raw = f"{created_micros}:{run_id}".encode()
    return base64.urlsafe_b64encode(raw).decode()


def page_of_rows(rows: Sequence[tuple[str, int, bytes]], limit: int) -> RunPage:
    """A page from up to ``limit + 1`` ``(run_id, created_micros, body)`` rows in order.

    Whether more follow, and where the next page starts, is decided on the rows, not on the
    runs decoded from them: a corrupted row is skipped (and logged) without ending the paging,
    so a page may hold fewer than ``limit`` runs while ``next_cursor`` still leads on.
    """
    page = rows[:limit]
    runs = decode_many((run_id, body) for run_id, _, body in page)
    more = len(rows) > limit
    last = page[-1] if page else None
    cursor = cursor_at(last[1], last[0]) if more and last is not None else None
    return RunPage(runs=tuple(runs), next_cursor=cursor)


def page_of_sql_rows(rows: Sequence[Sequence[Any]], limit: int) -> RunPage:
    """``page_of_rows`` for SQL rows (``decode_row``; ``created_at`` the fifth column)."""
    page = rows[:limit]
    runs = decode_rows(page)
    last = page[-1] if page and len(rows) > limit else None
    cursor = cursor_at(int(last[4]), str(last[0])) if last is not None else None
    return RunPage(runs=tuple(runs), next_cursor=cursor)


def page_of(runs: Sequence[StoredRun], limit: int) -> RunPage:
    """A page from up to ``limit + 1`` matching runs in order: the extra one means there is more."""
    page = tuple(runs[:limit])
    more = len(runs) > limit
    return RunPage(runs=page, next_cursor=encode_cursor(page[-1]) if more else None)


def decode_cursor(cursor: str | None) -> tuple[int, str] | None:
    """``(created_at_micros, run_id)`` from a cursor, or None."""
    if cursor is None:
        return None
    try:
        micros, _, run_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        created = int(micros)
        if not PRIORITY_MIN <= created <= PRIORITY_MAX:  # no time a store keeps
            raise ValueError(micros)
        return created, run_id
    except (ValueError, UnicodeDecodeError) as exc:
        msg = f"invalid list cursor {cursor!r}: pass a next_cursor that list() returned"
        raise ValueError(msg) from exc


def check_list_args(expired: bool | None, now: datetime | None, limit: int) -> int:
    """Validate ``list`` arguments shared by every store; the ``limit`` to use.

    A limit above ``COUNT_MAX`` (say ``sys.maxsize``, "all of them") reads as ``COUNT_MAX``.
    """
    if expired is not None and now is None:
        raise ValueError("list(expired=...) needs now=: expiry is relative to a time")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    return min(limit, COUNT_MAX)


def matches(
    run: StoredRun,
    status: str | None,
    flow_id: str | None,
    reason: str | None,
    expired: bool | None,
    now: datetime | None,
) -> bool:
    """Whether ``run`` passes ``list``'s filters (stores without query languages use this)."""
    if status is not None and run.status != status:
        return False
    if flow_id is not None and run.flow_id != flow_id:
        return False
    if reason is not None and (run.status != "awaiting" or reason not in run.reasons):
        return False
    if expired is not None:
        assert now is not None
        if run.expired(now) != expired:
            return False
    return True


def compute_stats(runs: Iterable[StoredRun], now: datetime) -> RunStats:
    """``RunStats`` over runs held in memory."""
    total, expired = 0, 0
    by_status: dict[str, int] = {}
    by_flow: dict[str, int] = {}
    by_reason: dict[str, int] = {}
    waiting: dict[str, int] = {}
    since: dict[str, datetime] = {}
    for run in runs:
        total += 1
        flow = run.flow_id
        by_status[run.status] = by_status.get(run.status, 0) + 1
        by_flow[flow] = by_flow.get(flow, 0) + 1
        if run.status == "awaiting":
            for reason in set(run.reasons):
                by_reason[reason] = by_reason.get(reason, 0) + 1
            waiting[flow] = waiting.get(flow, 0) + 1
            began = awaiting_since(run)
            if began is not None and (flow not in since or began < since[flow]):
                since[flow] = began
        expired += run.expired(now)
    return RunStats(
        total=total,
        by_status=by_status,
        by_flow=by_flow,
        awaiting_by_reason=by_reason,
        expired=expired,
        awaiting_by_flow=waiting,
        awaiting_since_by_flow=since,
    )


def awaiting_since(run: StoredRun) -> datetime | None:
    """What a store indexes as the run's ``awaiting_since`` (None unless it is awaiting).

    A run stored before the field existed counts from when it was paused (or last written).
    """
    if run.status != "awaiting":
        return None
    return run.awaiting_since or run.paused_at or run.updated_at


def reasons_text(run: StoredRun) -> str:
    """Awaiting reasons as ``",wait,timer,"`` so SQL can match one with LIKE."""
    return "," + ",".join(sorted(set(run.reasons))) + "," if run.status == "awaiting" else ""
