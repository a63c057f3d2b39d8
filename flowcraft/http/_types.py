"""The bodies of the HTTP API: msgspec types, validated on the way in, encoded on the way out.

``/openapi.json`` is generated from these same types, so the schema cannot drift from what
the routes accept and send.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from flowcraft.stores import RunStats
from flowcraft.views import Name, Reason, RunId

__all__ = [
    "ListQuery",
    "PausedQuery",
    "Replay",
    "CancelBody",
    "Health",
    "PauseBody",
    "PausedExecution",
    "PausedList",
    "Problem",
    "ReleaseBody",
    "ResumeBody",
    "StartBody",
    "RunStats",
]


class _Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A request body: unknown fields are refused (a typo never silently does nothing)."""


class StartBody(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /executions``: start a run of ``flow_id``."""

    flow_id: str
    state: dict[str, Any] | None = None
    run_id: RunId | None = None


class PauseBody(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /executions/{id}/pause``: hold an awaiting run (or pause a running one)."""

    reason: Reason | None = None
    request_id: Name | None = None


class ReleaseBody(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /executions/{id}/release``: end a hold."""

    reason: Reason | None = None


class CancelBody(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /executions/{id}/cancel``: cancel the run."""

    reason: Reason | None = None


class ResumeBody(_Body, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /executions/{id}/resume``: decide a wait.

    Either the seed's shape, ``{"resume_data": {...}}`` (the awaiting node's output), or the
    runtime's shape, ``{"output": ..., "action": ..., "node_id": ...}``; ``action`` and
    ``node_id`` go with either. ``node_id`` may be omitted when exactly one node awaits.
    """

    resume_data: dict[str, Any] | None = None
    output: Any = None
    action: str | None = None
    node_id: str | None = None


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    run_id: str | None = None
    node_id: str | None = None
    allowed_actions: list[str] | None = None
    decided_action: str | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    held_by: str | None = None
    held_at: datetime | None = None
    held_reason: str | None = None
    current_revision: int | None = None
    errors: list[str] | None = None


class PausedExecution(msgspec.Struct, frozen=True, kw_only=True):
    """A paused (awaiting) run, in the seed's shape."""

    id: str
    flow_id: str
    status: Literal["running", "awaiting", "completed", "failed", "cancelled"]
    paused_at: datetime | None
    paused_reason: str | None
    awaiting: list[str]
    resume_count: int
    last_resumed_at: datetime | None


class PausedList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /executions/paused``: ``{executions: [...], count}``."""

    executions: list[PausedExecution]
    count: int


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /health``: ``ok`` when the store answers."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None


_Limit = Annotated[int, msgspec.Meta(ge=1, le=500)]
_Status = Literal["running", "awaiting", "completed", "failed", "cancelled"]


class ListQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``GET /executions`` query parameters."""

    status: _Status | None = None
    flow: str | None = None
    reason: Literal["wait", "timer", "pause"] | None = None
    limit: _Limit = 50
    cursor: str | None = None


class PausedQuery(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``GET /executions/paused`` query parameters."""

    limit: _Limit = 50


class Replay(msgspec.Struct, frozen=True, kw_only=True):
    """The first response to an ``Idempotency-Key``, kept to replay it byte for byte."""

    fingerprint: str
    status: int
    body: bytes
    headers: list[tuple[str, str]] = []
