"""Public value types: what nodes return, what resumes send, what runs report."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Generic, Literal, TypeAlias, TypeVar

import msgspec

from flowcraft._envelope.records import FANOUT, HistoryEntry, NodeError, WaitState, signer_of
from flowcraft._errors import NodeExecutionError

__all__ = [
    "Approvals",
    "REASONS",
    "Awaiting",
    "EdgeContext",
    "NodeResult",
    "Resume",
    "ResumeData",
    "RunResult",
    "RunStatus",
    "Segment",
    "SegmentKind",
    "awaiting_of",
    "flat_waiting",
    "pause_entry",
    "public_awaiting",
]

T = TypeVar("T")
RunStatus = Literal["completed", "awaiting", "failed", "cancelled"]
#: What a segment is: a ``run``, a ``resume``, a ``fire`` (a timer or an expired wait) or a
#: ``cancel`` of an awaiting run.
SegmentKind = Literal["run", "resume", "fire", "cancel"]


class NodeResult(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """What a node may return to choose its action as well as its output.

    Returning a bare value is the same as ``NodeResult(output=value)``. As in Flowcraft TS, a
    ``dict`` whose keys are a non-empty subset of ``{"output", "action"}`` (and whose
    ``action``, if any, is a string or ``None``) is read as a ``NodeResult``: ``return
    {"output": "503", "action": "retry"}`` takes the ``retry`` edges. To return such a dict
    as a plain value, wrap it: ``NodeResult(output={"output": ...})``.
    """

    output: T | None = None
    action: str | None = None


_TS_KEYS = frozenset({"output", "action"})


def ts_result(value: dict[Any, Any]) -> NodeResult[Any] | None:
    """The ``NodeResult`` a TS-shaped dict (``{"output": ..., "action": ...}``) stands for."""
    if value and value.keys() <= _TS_KEYS:
        action = value.get("action")
        if action is None or type(action) is str:
            return NodeResult(output=value.get("output"), action=action)
    return None


class Resume(msgspec.Struct, frozen=True, kw_only=True):
    """A resume payload: the awaiting node's output and action, and who decided."""

    output: Any = None
    action: str | None = None
    by: str | None = None


#: What ``resume`` accepts as data: ``None``, ``{"output": ..., "action": ...}`` or ``Resume``.
ResumeData: TypeAlias = "Mapping[str, Any] | Resume | None"


class Awaiting(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One node the run is waiting on (``approved_by``: the approvals a quorum wait has so far)."""

    node_id: str
    reason: Literal["wait", "timer", "pause"]
    since: datetime
    wake_at: datetime | None = None
    expires_at: datetime | None = None
    description: str | None = None
    requested_by: str | None = None
    approved_by: tuple[str, ...] = ()


class Approvals(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A quorum for a wait: ``.wait(id, approvals=Approvals(required=2, ...))``.

    The wait stays awaiting until ``required`` approvals (resumes with action ``approve``, each
    naming its approver with ``by=``) have arrived; any other action a wait's edges accept (a
    rejection) decides at once and routes along that action. Every vote is in the history; the
    wait's output is the list of approvals ``[{"by", "at", "output"}, ...]``.

    Args:
        required: How many approvals complete the wait.
        approvers: Who may decide (ids compared with ``by``); ``None``: anyone. A callable
            ``(approver, state) -> bool`` decides per vote (it is registered like a node).
        distinct: Each approver counts once (a second approval by the same person is refused).
        forbid_initiator: The run's initiator may not approve its own request; the initiator is
            ``state[initiator_key]`` (a run without it cannot be approved: the check fails
            closed).
        initiator_key: The state key naming the initiator.
        approve: The action that counts toward the quorum.
    """

    required: int = 1
    approvers: tuple[str, ...] | Any = None
    distinct: bool = True
    forbid_initiator: bool = False
    initiator_key: str = "initiator"
    approve: str = "approve"


@dataclass(frozen=True, slots=True)
class EdgeContext:
    """What an edge condition or transform sees."""

    input: Any
    """The source node's output."""
    result: NodeResult[Any]
    """The source node's result (output and action)."""
    context: Mapping[str, Any]
    """A read-only view of the run's state."""


class RunResult(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """The outcome of one ``run`` or ``resume`` call: a snapshot plus the bytes to resume from.

    Immutable. ``awaiting`` and ``history`` are built on first access (most callers only store
    ``serialized_context``).
    """

    status: RunStatus
    run_id: str
    revision: int
    context: dict[str, Any]
    outputs: dict[str, Any]
    serialized_context: bytes
    errors: tuple[NodeError, ...] = ()
    blueprint_id: str = ""
    trace: Mapping[str, str] = {}
    """Trace propagation headers this context carries (see ``Segment.carry``); read-only."""
    _waiting: list[Any] = []  # the envelope's waiting records (WaitState)
    _past: list[HistoryEntry] = []  # history without the pauses still open
    _causes: Mapping[str, BaseException] = {}  # in-process only: the original exceptions

    @cached_property
    def awaiting(self) -> tuple[Awaiting, ...]:
        """The nodes the run waits on (empty unless ``status == "awaiting"``)."""
        return awaiting_of(self._waiting) if self._waiting else ()

    @cached_property
    def history(self) -> tuple[HistoryEntry, ...]:
        """Every pause, resume, fallback and cancellation so far, oldest first.

        A batch whose items run on other workers (``RunControl.on_scatter``) is no pause.
        """
        waits = self._waiting
        if any(w.note == FANOUT for w in waits):
            waits = [w for w in waits if w.note != FANOUT]
        return (*self._past, *map(pause_entry, waits))

    @cached_property
    def signed_by(self) -> str | None:
        """The id of the key that signed ``serialized_context`` (``None``: it is unsigned).

        Read from the context's signature header. A runtime with ``signing_keys`` signs every
        context it returns and verifies every one it reads (``peek``, ``inspect``, ``resume``),
        so on a result it returned this is the key the signature held under.
        """
        return signer_of(self.serialized_context)

    def __repr__(self) -> str:
        waiting = [a.node_id for a in self.awaiting]
        return (
            f"flowcraft.RunResult(status={self.status!r}, run_id={self.run_id!r}, "
            f"revision={self.revision}, awaiting={waiting!r}, errors={len(self.errors)})"
        )

    def raise_for_status(self) -> RunResult:
        """Raise ``NodeExecutionError`` (original exception as ``__cause__``) if the run failed."""
        failures = [e for e in self.errors if e.routed is None]
        if self.status == "failed" and failures:
            err = failures[0]
            raise NodeExecutionError(
                self.run_id, err.node_id, f"{err.type}: {err.message}", err.attempt
            ) from self._causes.get(err.node_id)
        return self


class Segment(msgspec.Struct, frozen=True, kw_only=True):
    """One ``run``/``resume``/``fire``/``cancel`` call, as ``Middleware.around_segment`` sees it.

    A segment is the work between two stored contexts of a run. Everything here is known
    before the segment executes; its outcome is the ``RunResult`` that ``call_next`` returns
    (or the error it raises: a refused resume raises before anything changes).

    ``trace`` is what the context the segment starts from carries (``RunResult.trace`` of the
    previous segment; empty for a new run). ``carry`` is what the context this segment writes
    will carry: it starts as a copy of ``trace``; a hook replaces its items *before* calling
    ``call_next`` (the innermost hook's call hands it to the engine). Contexts are signed with
    it when signing is on. A context whose ``carry`` stays empty takes no byte more.
    """

    kind: SegmentKind
    flow_id: str
    run_id: str
    revision: int
    """The revision of the context the segment starts from (0 for a new run)."""
    started_at: datetime
    """The runtime's clock when the segment started."""
    node_id: str | None = None
    """The node a resume or fire names (``None``: the run's only wait, or every paused one)."""
    action: str | None = None
    """The action the resume data asks for."""
    by: str | None = None
    """Who decided (``by=`` or ``Resume.by``)."""
    awaiting: tuple[Awaiting, ...] = ()
    """What the run awaited when the segment started."""
    trace: Mapping[str, str] = {}
    carry: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"flowcraft.Segment(kind={self.kind!r}, flow_id={self.flow_id!r}, "
            f"run_id={self.run_id!r}, revision={self.revision})"
        )


REASONS: dict[str, Any] = {
    "wait": "wait",
    "timer": "timer",
    "gate": "pause",
    "node": "pause",
    "control": "pause",
    "subflow": "wait",
    "batch": "pause",
}


def flat_waiting(waiting: list[WaitState], prefix: str = "") -> list[tuple[str, WaitState]]:
    """Every awaiting record with its path id; a subflow's waits read ``"node/child"``."""
    flat: list[tuple[str, WaitState]] = []
    for w in waiting:
        if w.kind in ("subflow", "batch") and w.sub:
            flat.extend(flat_waiting(w.sub, f"{prefix}{w.node_id}/"))
        else:
            flat.append((prefix + w.node_id, w))
    return flat


def awaiting_of(waiting: list[WaitState]) -> tuple[Awaiting, ...]:
    """The public awaiting records of a run, subflow waits included under their path ids."""
    if not any(w.sub for w in waiting):
        return tuple(map(public_awaiting, waiting))
    return tuple(public_awaiting(w, path) for path, w in flat_waiting(waiting))


def pause_entry(w: WaitState) -> HistoryEntry:
    """The history entry of a pause (kept in the waiting record until the node is resumed)."""
    return HistoryEntry("pause", w.node_id, w.since, w.note or REASONS[w.kind], w.by)


def public_awaiting(w: WaitState, path: str | None = None) -> Awaiting:
    """The public view of one waiting record."""
    return Awaiting(
        node_id=path or w.node_id,
        reason=REASONS[w.kind],
        since=w.since,
        wake_at=w.wake_at,
        expires_at=w.expires_at,
        description=w.note,
        requested_by=w.by,
        approved_by=tuple(v.by for v in w.votes) if w.votes else (),
    )
