"""The flowcraft exception hierarchy.

::

    FlowcraftError
    ├── BlueprintError (ValueError)
    │   ├── DuplicateNodeError
    │   ├── UnknownNodeError
    │   ├── MissingImplementationError
    │   ├── InvalidDurationError
    │   ├── NoStartNodeError
    │   └── InvalidBlueprintError
    ├── ContextError
    │   ├── ContextDecodeError
    │   ├── ContextIntegrityError
    │   ├── BlueprintMismatchError
    │   ├── SerializationError
    │   └── ContextTooLargeError
    ├── ResumeError
    │   ├── NotAwaitingError
    │   ├── NodeNotAwaitingError (LookupError)
    │   │   └── AlreadyDecidedError (also a NotAwaitingError)
    │   ├── AmbiguousResumeError
    │   ├── UnknownActionError
    │   ├── ResumeDataError (ValueError)
    │   ├── TimerNotDueError
    │   ├── WaitExpiredError
    │   ├── PauseExpiredError   a decision after the run's pause deadline (max_pause, expires_in)
    │   ├── IdempotencyKeyReusedError (ValueError)
    │   └── ApprovalRefusedError   a vote a quorum wait may not count
    ├── InitialStateError (TypeError)   run() was given a state that is not a mapping
    ├── NodeExecutionError
    ├── RunLimitError
    ├── SubflowError       recorded on a subflow node whose child run failed
    ├── BatchItemError     recorded on a batch node when one of its items failed
    ├── UnknownFlowError (LookupError)
    ├── WebhookPayloadError (ValueError)   WebhookEvent.json() of a body that is not JSON
    └── StoreError
        ├── RunNotFoundError (LookupError)
        ├── RunExistsError
        ├── RevisionConflictError
        ├── RunHeldError
        ├── RunBusyError
        ├── RunActiveError      delete/rollback of a run a process is executing
        ├── CheckpointNotFoundError (LookupError)
        ├── StoreCorruptionError
        │   └── IntentCorruptionError   recovery cannot read what a running run was claimed for
        └── OutOfRangeError (ValueError)   a number no store can keep (beyond 64 bits)

    FlowcraftWarning (UserWarning)   something valid that is probably not what was meant

Every message says what happened, to which run/node, and what to do next. Data is kept on
attributes so callers can act on it without parsing messages.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime


def _names(ids: Iterable[str]) -> str:
    return ", ".join(map(repr, ids)) or "nothing"


class FlowcraftError(Exception):
    """Base class of every error flowcraft raises on purpose."""


class FlowcraftWarning(UserWarning):
    """Something valid that is probably a mistake (say, a duration that looks like milliseconds).

    Turn it into an error with ``warnings.simplefilter("error", flowcraft.FlowcraftWarning)``.
    """


# --- blueprints ------------------------------------------------------------------------------


class BlueprintError(FlowcraftError, ValueError):
    """The blueprint (or the builder producing it) is not valid."""


class DuplicateNodeError(BlueprintError):
    """Two nodes share an id."""

    def __init__(self, flow_id: str, node_id: str) -> None:
        super().__init__(
            f"flow {flow_id!r}: node id {node_id!r} is used twice. "
            "Node ids must be unique within a flow; rename one of them."
        )
        self.flow_id, self.node_id = flow_id, node_id


class UnknownNodeError(BlueprintError):
    """An edge, fallback or lookup names a node the blueprint does not have."""

    def __init__(self, flow_id: str, node_id: str, where: str, known: Iterable[str] = ()) -> None:
        known = tuple(known)
        hint = f" Known nodes: {_names(known)}." if known else ""
        super().__init__(
            f"flow {flow_id!r}: {where} names unknown node {node_id!r}.{hint} "
            "Add the node before referring to it, or fix the id."
        )
        self.flow_id, self.node_id, self.where = flow_id, node_id, where


class MissingImplementationError(BlueprintError):
    """A node's ``uses`` key has no implementation in the registry."""

    def __init__(self, flow_id: str, node_id: str, uses: str) -> None:
        super().__init__(
            f"flow {flow_id!r}: node {node_id!r} uses {uses!r}, which is not in the registry. "
            "Pass registry=flow.registry (or a mapping that has this key) to FlowRuntime or run()."
        )
        self.flow_id, self.node_id, self.uses = flow_id, node_id, uses


class InvalidDurationError(BlueprintError):
    """A sleep/timeout/retry duration cannot be understood."""

    def __init__(
        self, where: str, value: object, why: str = "", *, hint: str = "", what: str = "duration"
    ) -> None:
        reason = f" ({why})" if why else ""
        hint = hint or (
            "Use seconds (int/float), a timedelta, a string such as '500ms', '30s', '5m', "
            "'1h30m', '2d12h', or ISO-8601 like 'PT5M'."
        )
        super().__init__(f"{where}: invalid {what} {value!r}{reason}. {hint}")
        self.where, self.value = where, value


class NoStartNodeError(BlueprintError):
    """No node can start a run: each is entered by an edge or is only some node's fallback."""

    def __init__(self, flow_id: str) -> None:
        super().__init__(
            f"flow {flow_id!r} has no start node: every node is entered by an edge or is some "
            "node's fallback. Add an entry node without incoming edges, or name a fallback "
            "that no other node falls back to."
        )
        self.flow_id = flow_id


class InvalidBlueprintError(BlueprintError):
    """Any other structural problem in a blueprint."""


# --- contexts --------------------------------------------------------------------------------


class ContextError(FlowcraftError):
    """A serialized context cannot be used."""


class ContextDecodeError(ContextError):
    """The bytes are not a flowcraft context (corrupted, truncated, or from something else)."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"cannot decode the serialized context: {detail}. Pass the exact bytes a RunResult "
            "returned as serialized_context (a str is accepted for JSON contexts, "
            "serializer='json'; a msgpack context must be stored as bytes)."
        )
        self.detail = detail


class ContextIntegrityError(ContextError):
    """A context's signature is missing, unknown or does not match."""

    def __init__(self, detail: str) -> None:
        super().__init__(
            f"context integrity check failed: {detail}. The context was altered, was not signed, "
            "or "
            "was signed with a key this runtime does not know; load the stored original."
        )
        self.detail = detail


class BlueprintMismatchError(ContextError):
    """The context was made by a different blueprint (another id, or changed content)."""

    def __init__(
        self,
        run_id: str,
        expected: tuple[str, str],
        got: tuple[str, str],
        changes: str = "",
    ) -> None:
        what = f" Changes: {changes}." if changes else ""
        super().__init__(
            f"run {run_id!r} was started with blueprint {expected[0]!r} "
            f"(digest {expected[1][:12]}) "
            f"but is being resumed with blueprint {got[0]!r} (digest {got[1][:12]}).{what} "
            "Resume with the blueprint the run started with."
        )
        self.run_id, self.expected, self.got = run_id, expected, got


class SerializationError(ContextError, TypeError):
    """A value in the run cannot be serialized."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(
            f"cannot serialize {where}: {detail}. Keep state and outputs to values msgspec encodes "
            "(builtins, datetime, UUID, Decimal, enums, Structs, dataclasses)."
        )
        self.where, self.detail = where, detail


# --- resumes ---------------------------------------------------------------------------------


class ResumeError(FlowcraftError):
    """A resume request does not fit the run's state; nothing was changed."""


class NotAwaitingError(ResumeError):
    """The run is not awaiting anything (finished, failed or cancelled)."""

    def __init__(self, run_id: str, status: str, action: str | None = None) -> None:
        doing = action or "resume, fire, pause or cancel"
        if status == "running":
            hint = "It is running now: act on it once it awaits, or pause it through FlowService."
        else:
            hint = (
                f"A {status} run is finished: check its status before acting on it, or start a "
                "new run."
            )
        super().__init__(
            f"run {run_id!r} is {status}, not awaiting: there is nothing to {doing}. {hint}"
        )
        self.run_id, self.status, self.action = run_id, status, action


class NodeNotAwaitingError(ResumeError, LookupError):
    """The node named in a resume is not waiting."""

    def __init__(self, run_id: str, node_id: str, awaiting: tuple[str, ...]) -> None:
        super().__init__(
            f"run {run_id!r}: node {node_id!r} is not awaiting (awaiting: {_names(awaiting)}). "
            "Resume one of the awaiting nodes, or load the newest context for this run."
        )
        self.run_id, self.node_id, self.awaiting = run_id, node_id, awaiting


class AmbiguousResumeError(ResumeError):
    """No node id was given but several nodes await."""

    def __init__(self, run_id: str, awaiting: tuple[str, ...]) -> None:
        super().__init__(
            f"run {run_id!r}: several nodes await ({_names(awaiting)}); pass node_id to say "
            "which one this resume is for."
        )
        self.run_id, self.awaiting = run_id, awaiting


class UnknownActionError(ResumeError):
    """The resume's action matches no outgoing edge of the node."""

    def __init__(self, run_id: str, node_id: str, action: str | None, known: Iterable[str]) -> None:
        known = tuple(known)
        super().__init__(
            f"run {run_id!r}: node {node_id!r} has no edge for action {action!r} and no default "
            f"edge. Resume with one of: {_names(known)}."
        )
        self.run_id, self.node_id, self.action, self.known = run_id, node_id, action, known


class ResumeDataError(ResumeError, ValueError):
    """The resume payload has the wrong shape or fails the wait's schema."""

    def __init__(
        self, run_id: str, node_id: str | None, detail: str, hint: str | None = None
    ) -> None:
        where = f"node {node_id!r}" if node_id else "resume"
        if hint is None:
            hint = (
                "Send {'output': ..., 'action': ...} (either optional) matching the wait's "
                "schema."
            )
        super().__init__(f"run {run_id!r}: invalid resume data for {where}: {detail}. {hint}")
        self.run_id, self.node_id, self.detail = run_id, node_id, detail


class TimerNotDueError(ResumeError):
    """A sleep node was resumed before its wake time."""

    def __init__(
        self, run_id: str, node_id: str, wake_at: datetime | None, now: datetime
    ) -> None:
        if wake_at is None:
            message = (
                f"run {run_id!r}: node {node_id!r} has no timer or deadline to fire. "
                "Resume it with a decision instead."
            )
        else:
            message = (
                f"run {run_id!r}: timer {node_id!r} is not due until {wake_at.isoformat()} "
                f"(now {now.isoformat()}). Let the scheduler resume it, or resume at or after "
                "wake_at."
            )
        super().__init__(message)
        self.run_id, self.node_id, self.wake_at, self.now = run_id, node_id, wake_at, now


class WaitExpiredError(ResumeError):
    """A decision arrived for a wait whose timeout has passed."""

    def __init__(self, run_id: str, node_id: str, expired_at: datetime, on_timeout: str) -> None:
        super().__init__(
            f"run {run_id!r}: wait {node_id!r} expired at {expired_at.isoformat()}; late decisions "
            f"are refused. Only the timeout action {on_timeout!r} (what the scheduler sends) "
            "applies."
        )
        self.run_id, self.node_id, self.expired_at = run_id, node_id, expired_at
        self.on_timeout = on_timeout


# --- execution -------------------------------------------------------------------------------


class InitialStateError(FlowcraftError, TypeError):
    """``run`` was given an initial state that is neither a mapping nor the flow's state type."""

    def __init__(self, flow_id: str, value: object, state_type: type | None) -> None:
        got = type(value).__name__
        if state_type is None:
            hint = (
                "Pass a dict (or any mapping) of state keys, or declare the type with "
                f"create_flow({flow_id!r}, state=YourType) to pass instances of it."
            )
        else:
            hint = (
                f"Pass a {state_type.__name__} instance (the flow's declared state type) or a "
                "dict of its fields."
            )
        super().__init__(
            f"flow {flow_id!r}: the initial state is a {got}, not a mapping. {hint}"
        )
        self.flow_id, self.value, self.state_type = flow_id, value, state_type


class NodeExecutionError(FlowcraftError):
    """A node failed after all its attempts; raised by ``RunResult.raise_for_status()``."""

    def __init__(self, run_id: str, node_id: str, message: str, attempt: int) -> None:
        super().__init__(
            f"run {run_id!r}: node {node_id!r} failed after {attempt} attempt(s): {message}"
        )
        self.run_id, self.node_id, self.attempt = run_id, node_id, attempt


class RunLimitError(FlowcraftError):
    """A run executed more node steps than ``max_steps`` allows (a runaway cycle)."""

    def __init__(self, run_id: str, max_steps: int) -> None:
        super().__init__(
            f"run {run_id!r} exceeded max_steps={max_steps}; a cycle probably never exits. "
            "Fix the loop's exit condition, or raise FlowRuntime(max_steps=...)."
        )
        self.run_id, self.max_steps = run_id, max_steps


# --- stores ----------------------------------------------------------------------------------


class StoreError(FlowcraftError):
    """A run store refused or failed an operation."""


class RunNotFoundError(StoreError, LookupError):
    """No run with this id is stored."""

    def __init__(self, run_id: str, store: object = None) -> None:
        where = "" if store is None else f" {_store_name(store)}"
        super().__init__(
            f"run {run_id!r} is not in the store{where}. Check the run id, and that this is the "
            "store the run was started in (same database, key prefix or table); or start the run."
        )
        self.run_id, self.store = run_id, store


def _store_name(store: object) -> str:
    """How a message names a store: its repr when it has its own, else its class name."""
    text = store if isinstance(store, str) else repr(store)
    if text.startswith("<") and not isinstance(store, str):
        text = type(store).__name__
    return text


class RevisionConflictError(StoreError):
    """Another writer stored a newer revision of the run first."""

    def __init__(self, run_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"run {run_id!r}: expected stored revision {expected}, found {actual}. Another resume "
            "won the race; load the run again and decide whether this change still applies."
        )
        self.run_id, self.expected, self.actual = run_id, expected, actual


# --- durable runs (FlowService and the stores) -----------------------------------------------


def _when(at: datetime | None) -> str:
    return at.isoformat() if at is not None else "an unknown time"


class AlreadyDecidedError(NodeNotAwaitingError, NotAwaitingError):
    """A decision arrived for a wait another decision already completed; nothing changed."""

    def __init__(
        self,
        run_id: str,
        node_id: str,
        action: str | None,
        by: str | None,
        at: datetime | None,
        status: str = "awaiting",
    ) -> None:
        ResumeError.__init__(
            self,
            f"run {run_id!r}: wait {node_id!r} was already decided with action {action!r} by "
            f"{by or 'an unnamed caller'} at {_when(at)}; this decision was not applied. Load "
            "the run to see the outcome, or resume with the same idempotency_key to get it.",
        )
        self.run_id, self.node_id, self.action, self.by, self.at = run_id, node_id, action, by, at
        self.status = status
        self.awaiting: tuple[str, ...] = ()


class IdempotencyKeyReusedError(ResumeError, ValueError):
    """An idempotency key came back with a different decision than the one it first carried."""

    def __init__(self, run_id: str, key: str) -> None:
        super().__init__(
            f"run {run_id!r}: idempotency key {key!r} was first used for a different decision "
            "(other action, output or node); this decision was not applied. Send a retry with "
            "exactly the same data, or use a new key for a new decision."
        )
        self.run_id, self.key = run_id, key


class RunHeldError(StoreError):
    """A decision or timer arrived for a run that is held (``FlowService.pause``)."""

    def __init__(
        self, run_id: str, by: str | None, at: datetime | None, reason: str | None
    ) -> None:
        super().__init__(
            f"run {run_id!r} is held by {by or 'an unnamed caller'} since {_when(at)} "
            f"(reason: {reason or 'none given'}); nothing was applied. Call "
            "FlowService.release(run_id) first, then send the decision again."
        )
        self.run_id, self.by, self.at, self.reason = run_id, by, at, reason


class PauseExpiredError(ResumeError):
    """A decision arrived for a run awaiting past its pause deadline; nothing was applied."""

    def __init__(self, run_id: str, deadline: datetime | None, on_expiry: str) -> None:
        super().__init__(
            f"run {run_id!r}: its pause expired at {_when(deadline)} (max_pause or "
            f"pause(expires_in=)); this decision was not applied. The scheduler "
            f"{'cancels' if on_expiry == 'cancel' else 'keeps'} expired runs; start a new run, "
            "or fork this one from a checkpoint."
        )
        self.run_id, self.deadline, self.on_expiry = run_id, deadline, on_expiry


class RunActiveError(StoreError):
    """An operation needing a still run (delete, rollback) found it running in a process."""

    def __init__(self, run_id: str, owner: str | None, operation: str) -> None:
        super().__init__(
            f"run {run_id!r} is running in {owner or 'another process'}; {operation} was refused "
            "and nothing changed. Wait for the segment to end (or cancel the run) and retry"
            + (", or pass force=True." if operation == "delete" else ".")
        )
        self.run_id, self.owner, self.operation = run_id, owner, operation


class CheckpointNotFoundError(StoreError, LookupError):
    """``rollback``/``fork`` named a revision the run's checkpoint history does not keep."""

    def __init__(self, run_id: str, revision: int, kept: tuple[int, ...]) -> None:
        shown = ", ".join(map(str, kept[-10:])) or "none"
        super().__init__(
            f"run {run_id!r} keeps no checkpoint at revision {revision} (newest kept: {shown}); "
            "nothing changed. Pick one from FlowService.checkpoints(run_id)."
        )
        self.run_id, self.revision, self.kept = run_id, revision, kept


class RunBusyError(StoreError):
    """A run stayed claimed by another segment longer than the caller would wait."""

    def __init__(self, run_id: str, owner: str | None, waited: float) -> None:
        super().__init__(
            f"run {run_id!r} is still being executed by {owner or 'another process'} after "
            f"waiting {waited:g}s; nothing was applied. Retry later (same idempotency_key)."
        )
        self.run_id, self.owner, self.waited = run_id, owner, waited


class StoreCorruptionError(StoreError):
    """A stored record cannot be decoded; the run it belongs to is named."""

    def __init__(self, run_id: str, what: str, detail: str) -> None:
        super().__init__(
            f"run {run_id!r}: the stored {what} cannot be decoded ({detail}). Restore the "
            "record from a backup or delete the run; other runs are not affected."
        )
        self.run_id, self.what, self.detail = run_id, what, detail


class IntentCorruptionError(StoreCorruptionError):
    """Recovery cannot read the intent a running run was claimed for: nothing of it ran.

    The stored intent (what the run's last claim was about to execute: a start, a decision,
    a timer, ...) does not decode, or does not fit the run (a start of a run that has a
    context, a decision for a run that has none). Recovery tries again with back-off
    (``FlowService(fault_attempts=)``); ``attempt`` of ``attempts`` says which try this was,
    and ``failed`` whether the run is now stored failed (its unread intent kept in
    ``StoredRun.intent``, every try in its history).
    """

    def __init__(
        self, run_id: str, detail: str, *, attempt: int = 1, attempts: int = 1, failed: bool = False
    ) -> None:
        head = (
            f"run {run_id!r}: the stored intent of run {run_id!r} could not be read "
            f"({detail}); recovery cannot replay what it was claimed for, so nothing of it "
            f"was executed (attempt {attempt} of {attempts}). "
        )
        if failed:
            todo = (
                "The run is stored failed as its claim found it; the unread intent is kept in "
                "StoredRun.intent and every attempt in its history. Read them to see what the "
                "run was asked to do, then apply that to a fork of it (FlowService.fork from a "
                "checkpoint) or start it again; other runs are not affected."
            )
        else:
            todo = (
                "Recovery tries again after a back-off (FlowService.health() lists it, kind "
                "'intent'): run a flowcraft release that reads it, or restore the record from "
                "a backup, before the last attempt stores the run failed."
            )
        StoreError.__init__(self, head + todo)
        self.run_id, self.what, self.detail = run_id, "intent", detail
        self.attempt, self.attempts, self.failed = attempt, attempts, failed


class OutOfRangeError(StoreError, ValueError):
    """A number given to a store (or ``FlowService``) is beyond what every store keeps.

    Stores keep priorities, revisions and counts as signed 64-bit integers (PostgreSQL
    ``BIGINT``, SQLite ``INTEGER``, msgpack) and times as microseconds before year 10000.
    Raised before anything is written; ``field``, ``value`` and ``allowed`` say what and why.
    """

    def __init__(
        self,
        field: str,
        value: object,
        allowed: str = "",
        *,
        run_id: str | None = None,
        todo: str = "",
    ) -> None:
        allowed = allowed or (
            f"it must fit a signed 64-bit integer ({-(2**63)} to {2**63 - 1}, what the stores "
            "keep)"
        )
        where = f"run {run_id!r}: " if run_id is not None else ""
        super().__init__(
            f"{where}{field} {value!r} is out of range: {allowed}; nothing was stored. "
            + (todo or f"Pass a {field} within that range.")
        )
        self.field, self.value, self.allowed, self.run_id = field, value, allowed, run_id


class ContextTooLargeError(ContextError):
    """A segment produced a context above ``max_context_bytes``; nothing was stored."""

    def __init__(self, run_id: str, size: int, limit: int) -> None:
        super().__init__(
            f"run {run_id!r}: the new context is {size} bytes, above max_context_bytes={limit}; "
            "it was not stored and the run is as it was before this call. Keep large values "
            "outside the context (store a reference), or raise "
            "FlowRuntime(max_context_bytes=...)."
        )
        self.run_id, self.size, self.limit = run_id, size, limit


class UnknownFlowError(FlowcraftError, LookupError):
    """The service was asked to start a flow it was not given."""

    def __init__(self, flow_id: str, known: Iterable[str]) -> None:
        super().__init__(
            f"flow {flow_id!r} is not registered with this FlowService (known: "
            f"{_names(known) if known else 'none'}). Pass it in FlowService(..., flows=[...])."
        )
        self.flow_id = flow_id


class SubflowError(FlowcraftError):
    """A subflow's child run failed or was cancelled (recorded on the subflow node)."""


class BatchItemError(FlowcraftError):
    """One item of a batch failed (recorded on the batch node, naming the item index)."""


class WebhookPayloadError(FlowcraftError, ValueError):
    """A webhook delivery's body is not what its route reads (``WebhookEvent.json()``).

    Raised inside the route, before anything changed; the HTTP app answers it with 422
    (``webhook-payload``), so the provider sees the delivery refused, not a server fault.
    """

    def __init__(self, provider: str, delivery_id: str, detail: str) -> None:
        super().__init__(
            f"webhook delivery {_clip(delivery_id)!r} from {provider}: the body {detail}; "
            "nothing was resumed. Check what the provider sends to this endpoint (its content "
            "type and format), or read event.body yourself."
        )
        self.provider, self.delivery_id, self.detail = provider, delivery_id, detail


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit] + "\u2026"


class RunExistsError(StoreError):
    """``create`` was given a run id the store already holds."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"run {run_id!r} is already in the store. Pick another run id, or load the "
            "stored run with get() instead of creating it again."
        )
        self.run_id = run_id


class ApprovalRefusedError(ResumeError):
    """A vote for a quorum wait (``Approvals``) that may not be counted; nothing changed."""

    def __init__(self, run_id: str, node_id: str, by: str | None, why: str, todo: str) -> None:
        who = repr(by) if by is not None else "an unnamed caller"
        super().__init__(
            f"run {run_id!r}: wait {node_id!r} refuses the vote of {who}: {why}. {todo}"
        )
        self.run_id, self.node_id, self.by, self.why = run_id, node_id, by, why
