"""The serialized run: ``Envelope``, its waiting records and history entries, ``FORMAT``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

import msgspec

__all__ = [
    "FANOUT",
    "FORMAT",
    "SIGNED_MAGIC",
    "Envelope",
    "HistoryEntry",
    "NodeError",
    "TracedEnvelope",
    "Vote",
    "WaitKind",
    "WaitState",
    "signer_of",
]

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]

#: Envelope format written by this version. Older formats stay decodable (golden tests).
FORMAT = 1

#: A signed context: these 4 bytes, the key id's length (1 byte), the key id, a 32-byte HMAC,
#: then the encoded envelope (``Codec`` writes and verifies it).
SIGNED_MAGIC = b"FCS1"


def signer_of(data: bytes) -> str | None:
    """The key id a signed context's header names (``None``: unsigned). Nothing is verified."""
    if data[:4] != SIGNED_MAGIC or len(data) < 6:
        return None
    return data[5 : 5 + data[4]].decode(errors="replace")


#: The note of a batch record whose items run elsewhere (``RunControl.on_scatter``): it has no
#: ``sub`` records, every item is pending until ``FlowRuntime.gather``.
FANOUT = "flowcraft:fan-out"

WaitKind = Literal["wait", "timer", "gate", "node", "control", "subflow", "batch"]


class Vote(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """One approval counted toward a quorum wait (``Approvals``), kept until the quorum is met."""

    by: str
    at: AwareDatetime
    output: Any = None


class WaitState(msgspec.Struct, array_like=True, omit_defaults=True):
    """One awaiting node, with what is needed to continue it."""

    node_id: str
    kind: WaitKind
    since: AwareDatetime
    input: Any = None
    wake_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None
    note: str | None = None
    by: str | None = None
    sub: list[WaitState] = []  # a subflow's own waits (kind "subflow")
    votes: list[Vote] = []  # a quorum wait's approvals so far (appended: old contexts decode)


class Envelope(msgspec.Struct, array_like=True, omit_defaults=True):
    """Everything about a run. Fields are append-only: new ones get defaults."""

    format: Annotated[int, msgspec.Meta(ge=1)]
    run_id: str
    blueprint_id: str
    digest: str
    revision: Annotated[int, msgspec.Meta(ge=0)]
    status: Literal["running", "awaiting", "completed", "failed", "cancelled"]
    state: dict[str, Any]
    outputs: dict[str, Any]
    waiting: list[WaitState] = []
    history: list[HistoryEntry] = []
    joins: dict[str, dict[int, list[tuple[bool, Any]]]] = {}
    skipped: list[str] = []
    errors: list[NodeError] = []
    version: str | None = None
    shape: bytes = b""
    #: A plain envelope carries no trace headers (see ``TracedEnvelope``).
    trace: ClassVar[Mapping[str, str]] = MappingProxyType({})


class TracedEnvelope(Envelope, array_like=True, omit_defaults=True):
    """An envelope with trace propagation headers: one more field, at the end.

    ``trace`` holds what a segment hook (``Middleware.around_segment``) left for the next
    segment to link to (say a W3C ``traceparent``). A separate type because array-like
    structs write every field: a plain ``Envelope`` stays exactly as long as it was, and
    contexts with headers still decode as plain envelopes (the extra field ignored).
    """

    trace: dict[str, str] = {}  # type: ignore[misc]  # a field here, a ClassVar on Envelope


class NodeError(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A node failure recorded in a run (the run did not raise)."""

    node_id: str
    type: str
    message: str
    attempt: int
    timestamp: datetime
    #: The action the failure was routed along (``on_error``): a handled failure that did not
    #: fail the run. ``None``: the failure failed the run.
    routed: str | None = None


class HistoryEntry(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """One pause, resume, vote, fallback, routed failure or cancellation in a run's life."""

    event: Literal["pause", "resume", "fallback", "cancel", "timeout", "error", "vote"]
    node_id: str
    at: datetime
    reason: str | None = None
    by: str | None = None
    action: str | None = None
