"""Errors as RFC 9457 ``application/problem+json``: one ``type`` per error class.

``problem_of`` maps the service's error tree to a status and a problem document, keeping the
data the errors carry (the winning decision of a 409, the allowed actions of a 422, who holds
a 423) as extension members, so a client acts on fields instead of parsing messages.
"""

from __future__ import annotations

import msgspec

import flowcraft
from flowcraft.http._types import Problem
from flowcraft.stores import RunExistsError

__all__ = ["PROBLEM_TYPES", "HTTPProblem", "problem_of", "type_uri"]

_PREFIX = "urn:flowcraft:problem:"

#: Every problem ``type`` the API answers with, and its status.
PROBLEM_TYPES: dict[str, int] = {
    "unauthorized": 401,
    "forbidden": 403,
    "run-not-found": 404,
    "unknown-flow": 422,
    "not-found": 404,
    "method-not-allowed": 405,
    "already-decided": 409,
    "not-awaiting": 409,
    "run-exists": 409,
    "revision-conflict": 409,
    "run-busy": 409,
    "timer-not-due": 409,
    "idempotency-key-reused": 422,
    "precondition-failed": 412,
    "wait-expired": 410,
    "body-too-large": 413,
    "unsupported-media-type": 415,
    "invalid-body": 422,
    "unknown-action": 422,
    "node-not-awaiting": 422,
    "ambiguous-resume": 422,
    "resume-data": 422,
    "invalid-context": 422,
    "serialization": 422,
    "run-held": 423,
    "precondition-required": 428,
    "invalid-signature": 401,
    "webhook-payload": 422,
    "checkpoint-not-found": 404,
    "run-active": 409,
    "approval-refused": 422,
    "store-unavailable": 503,
    "internal": 500,
}

_TITLES: dict[str, str] = {
    "unauthorized": "Credentials are missing or wrong",
    "forbidden": "The credentials lack the permission this route needs",
    "run-not-found": "No such run",
    "unknown-flow": "No such flow",
    "not-found": "No such route",
    "method-not-allowed": "Method not allowed on this route",
    "already-decided": "The wait was already decided",
    "not-awaiting": "The run is not awaiting",
    "run-exists": "A run with this id exists",
    "revision-conflict": "The run changed meanwhile",
    "run-busy": "The run is busy in another segment",
    "timer-not-due": "The timer is not due yet",
    "idempotency-key-reused": "The Idempotency-Key was used for a different request",
    "precondition-failed": "If-Match does not match the run's revision",
    "wait-expired": "The wait expired",
    "body-too-large": "The request body is too large",
    "unsupported-media-type": "Send application/json",
    "invalid-body": "The request body or parameters are invalid",
    "unknown-action": "The action is not one the wait accepts",
    "node-not-awaiting": "The node is not awaiting",
    "ambiguous-resume": "Several nodes await: name one",
    "resume-data": "The resume data does not fit the wait",
    "invalid-context": "The stored context cannot be resumed",
    "serialization": "The data cannot be stored",
    "run-held": "The run is held",
    "precondition-required": "Send If-Match",
    "invalid-signature": "The webhook signature does not verify",
    "webhook-payload": "The webhook body is not what its route reads",
    "checkpoint-not-found": "The run keeps no checkpoint at this revision",
    "run-active": "The run is executing in a process",
    "approval-refused": "The vote may not be counted",
    "store-unavailable": "The store is unavailable",
    "internal": "Internal error",
}


def type_uri(name: str) -> str:
    """The problem ``type`` URI of a problem name (``urn:flowcraft:problem:<name>``)."""
    return _PREFIX + name


class HTTPProblem(Exception):
    """Raised inside a route to answer with a problem document."""

    def __init__(self, name: str, detail: str | None = None, **extra: object) -> None:
        super().__init__(detail or name)
        self.name, self.detail, self.extra = name, detail, extra

    @property
    def status(self) -> int:
        """The HTTP status of this problem (``PROBLEM_TYPES``)."""
        return PROBLEM_TYPES[self.name]

    @property
    def title(self) -> str:
        """The problem's title: what went wrong, in a few words."""
        return _TITLES[self.name]

    def problem(self, instance: str | None = None) -> Problem:
        """The problem document."""
        fields = {k: v for k, v in self.extra.items() if v is not None}
        base = Problem(
            type=type_uri(self.name),
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
        )
        return msgspec.structs.replace(base, **fields)


def problem_of(exc: Exception) -> HTTPProblem | None:
    """The problem an error of the service answers with, or None (a bug: a 500)."""
    msg = str(exc)
    run_id = getattr(exc, "run_id", None)
    if isinstance(exc, HTTPProblem):
        return exc
    if isinstance(exc, flowcraft.AlreadyDecidedError):
        return HTTPProblem(
            "already-decided",
            msg,
            run_id=run_id,
            node_id=exc.node_id,
            decided_action=exc.action,
            decided_by=exc.by,
            decided_at=exc.at,
        )
    if isinstance(exc, flowcraft.UnknownActionError):
        return HTTPProblem(
            "unknown-action",
            msg,
            run_id=run_id,
            node_id=exc.node_id,
            allowed_actions=sorted(exc.known),
        )
    if isinstance(exc, flowcraft.RunHeldError):
        return HTTPProblem(
            "run-held", msg, run_id=run_id, held_by=exc.by, held_at=exc.at, held_reason=exc.reason
        )
    if isinstance(exc, flowcraft.WaitExpiredError) or type(exc).__name__ == "PauseExpiredError":
        node = getattr(exc, "node_id", None)
        return HTTPProblem("wait-expired", msg, run_id=run_id, node_id=node)
    if isinstance(exc, flowcraft.NodeNotAwaitingError):
        return HTTPProblem("node-not-awaiting", msg, run_id=run_id, node_id=exc.node_id)
    simple: list[tuple[type[Exception], str]] = [
        (flowcraft.RunNotFoundError, "run-not-found"),
        (flowcraft.UnknownFlowError, "unknown-flow"),
        (RunExistsError, "run-exists"),
        (flowcraft.RevisionConflictError, "revision-conflict"),
        (flowcraft.RunBusyError, "run-busy"),
        (flowcraft.NotAwaitingError, "not-awaiting"),
        (flowcraft.AmbiguousResumeError, "ambiguous-resume"),
        (flowcraft.ResumeDataError, "resume-data"),
        (flowcraft.TimerNotDueError, "timer-not-due"),
        (flowcraft.SerializationError, "serialization"),
        (flowcraft.ContextTooLargeError, "serialization"),
        (flowcraft.ContextError, "invalid-context"),
        (flowcraft.StoreCorruptionError, "invalid-context"),
        (flowcraft.OutOfRangeError, "invalid-body"),  # the caller's number, not an outage
        (flowcraft.CheckpointNotFoundError, "checkpoint-not-found"),
        (flowcraft.RunActiveError, "run-active"),
        (flowcraft.IdempotencyKeyReusedError, "idempotency-key-reused"),
        (flowcraft.ApprovalRefusedError, "approval-refused"),
        (flowcraft.WebhookPayloadError, "webhook-payload"),
        (flowcraft.ResumeError, "resume-data"),
        (flowcraft.StoreError, "store-unavailable"),
    ]
    for cls, name in simple:
        if isinstance(exc, cls):
            return HTTPProblem(name, msg, run_id=run_id)
    return None
