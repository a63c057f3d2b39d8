"""What ``flowcraft`` exits with: a code per error class (``EXIT_CODES``).

The codes follow the error tree and the HTTP API's statuses: what the caller sent and can fix
(an unknown action, data the wait refuses, a state that cannot be serialized, a reused
idempotency key) is 2, as the API's 422; 5 is kept for a *stored* context that fails its
integrity check or does not decode. ``flowcraft --help`` and the README print the table.
"""

from __future__ import annotations

import flowcraft
from flowcraft.cli.views import Unsupported

#: Exit codes, checked in order: the first class an error is an instance of decides.
OK, FAILED, USAGE, NOT_FOUND, CONFLICT, INTEGRITY, EXPIRED, HELD, UNSUPPORTED = range(9)
INTERRUPTED = 130
EXIT_CODES: tuple[tuple[str, int], ...] = (
    ("PauseExpiredError", EXPIRED),  # DESIGN §9, not in every version: looked up by name
    ("WaitExpiredError", EXPIRED),
    ("RunHeldError", HELD),
    ("RunNotFoundError", NOT_FOUND),
    ("CheckpointNotFoundError", NOT_FOUND),
    ("UnknownFlowError", NOT_FOUND),
    ("UnknownNodeError", NOT_FOUND),
    ("NotAwaitingError", CONFLICT),
    ("NodeNotAwaitingError", CONFLICT),
    ("RevisionConflictError", CONFLICT),
    ("RunBusyError", CONFLICT),
    ("RunActiveError", CONFLICT),
    ("RunExistsError", CONFLICT),
    ("TimerNotDueError", CONFLICT),
    # A ContextError, but of the data given, not of a stored context: the API's 422.
    ("SerializationError", USAGE),
    ("ContextTooLargeError", USAGE),
    ("ContextError", INTEGRITY),
    ("StoreCorruptionError", INTEGRITY),
    ("OutOfRangeError", USAGE),
    ("UnknownActionError", USAGE),
    ("ResumeDataError", USAGE),
    ("AmbiguousResumeError", USAGE),
    ("IdempotencyKeyReusedError", USAGE),
    ("ApprovalRefusedError", USAGE),
    ("ResumeError", USAGE),  # any other decision that does not fit the run (the API's 422)
    ("InitialStateError", USAGE),
    ("BlueprintError", USAGE),
)


class UsageProblem(flowcraft.FlowcraftError):
    """The command line or its data cannot be used (bad --app, bad JSON...)."""


def exit_code(exc: BaseException) -> int:
    """The exit code of an error (``EXIT_CODES``; 1 for any other)."""
    if isinstance(exc, Unsupported):
        return UNSUPPORTED
    if isinstance(exc, UsageProblem):
        return USAGE
    for name, code in EXIT_CODES:
        kind = getattr(flowcraft, name, None)
        if isinstance(kind, type) and isinstance(exc, kind):
            return code
    return FAILED
