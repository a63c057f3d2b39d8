"""The views of a run every door shows, how they are built, and what a door accepts as an id.

The HTTP API answers with these msgspec types, the CLI prints them with ``-o json`` and the MCP
tools return them, so a script or an agent decodes the same bodies whichever door it used. The
builders read only public ``FlowService`` methods (``flow``, ``result_of``) and need nothing
but msgspec: the HTTP adapter re-exports the types, and the CLI uses them without importing
Starlette. The core never imports this module.

Run ids and idempotency keys coming through a door are bounded by one rule for every door
(``RunId``, ``run_id_problem``; ``IdempotencyKey``, ``idempotency_key_problem``): the HTTP API,
the CLI and the MCP tools refuse the same ids, each in its own way (a 404 or 422, exit 2, a
tool error), before anything reaches a store. So are the free texts a door records with a
run (``Reason``, ``Name``; ``reason_problem``, ``name_problem``): a ``reason`` of at most 1,000
characters, a ``by`` or ``request_id`` of at most 255 (what an ``Idempotency-Key``, also kept
as a request id, may be).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

import flowcraft
from flowcraft import Blueprint, FlowService, RunResult
from flowcraft.stores import HistoryRecord, StoredRun

__all__ = (
    "AwaitingView",
    "ExecutionList",
    "ExecutionSummary",
    "ExecutionView",
    "HistoryView",
    "IDEMPOTENCY_KEY_RULE",
    "IdempotencyKey",
    "NAME_MAX",
    "Name",
    "REASON_MAX",
    "RUN_ID_RULE",
    "Reason",
    "RunId",
    "actions_of",
    "awaiting_for",
    "awaiting_views",
    "execution_view",
    "flow_of",
    "idempotency_key_problem",
    "list_view",
    "name_problem",
    "outcome_view",
    "reason_problem",
    "run_id_problem",
    "schema_of",
    "summary_view",
)

# --- what a door accepts ----------------------------------------------------------------------

#: What a run id given to a door may be (the HTTP API, the CLI, the MCP tools).
RUN_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : ~ -"
#: What an idempotency key given to a door may be.
IDEMPOTENCY_KEY_RULE = "1 to 255 visible ASCII characters"
_RUN_ID = re.compile(r"[A-Za-z0-9._:~-]{1,128}")  # fullmatch: no "$" letting a "\n" through
_KEY = re.compile(r"[\x21-\x7e]{1,255}")

#: A run id as a msgspec type: validated on decode, and in the JSON Schema it generates.
RunId = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:~-]+$", description=RUN_ID_RULE
    ),
]
#: An idempotency key as a msgspec type.
IdempotencyKey = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$", description=IDEMPOTENCY_KEY_RULE
    ),
]


#: Most characters of a ``reason`` a door records (a pause, a cancel, a rollback).
REASON_MAX = 1000
#: Most characters of a ``by`` (who) or a ``request_id`` a door records.
NAME_MAX = 255
#: A reason as a msgspec type (a request body's, a tool's argument).
Reason = Annotated[
    str, msgspec.Meta(max_length=REASON_MAX, description=f"at most {REASON_MAX} characters")
]
#: A ``by`` or ``request_id`` as a msgspec type.
Name = Annotated[
    str, msgspec.Meta(max_length=NAME_MAX, description=f"at most {NAME_MAX} characters")
]


def _too_long(value: str, what: str, limit: int) -> str | None:
    if len(value) <= limit:
        return None
    return f"{what} is {len(value)} characters long: use at most {limit}"


def reason_problem(reason: str, what: str = "reason") -> str | None:
    """Why ``reason`` is too long to record (a sentence naming ``what``), or None."""
    return _too_long(reason, what, REASON_MAX)


def name_problem(name: str, what: str = "by") -> str | None:
    """Why a ``by`` or ``request_id`` is too long to record (naming ``what``), or None."""
    return _too_long(name, what, NAME_MAX)


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 40 else f"{value[:40]!r}... ({len(value)} characters)"


def run_id_problem(run_id: str, what: str = "run_id") -> str | None:
    """Why ``run_id`` cannot be a run id (a sentence naming ``what``), or None if it can."""
    if _RUN_ID.fullmatch(run_id):
        return None
    return f"{what} {_shown(run_id)} is not a run id: use {RUN_ID_RULE}"


def idempotency_key_problem(key: str, what: str = "idempotency_key") -> str | None:
    """Why ``key`` cannot be an idempotency key (a sentence naming ``what``), or None."""
    if _KEY.fullmatch(key):
        return None
    return f"{what} {_shown(key)} is not an idempotency key: use {IDEMPOTENCY_KEY_RULE}"


# --- the types ---------------------------------------------------------------------------------


class AwaitingView(msgspec.Struct, frozen=True, kw_only=True):
    """One node a run waits on, what it accepts, and since when.

    ``approved_by``: who approved a quorum wait so far (``Awaiting.approved_by``), in order.
    """

    node_id: str
    reason: Literal["wait", "timer", "pause"]
    since: datetime
    description: str | None = None
    requested_by: str | None = None
    wake_at: datetime | None = None
    expires_at: datetime | None = None
    actions: list[str] = []
    schema: dict[str, Any] | None = None
    approved_by: list[str] = []

class ExecutionView(msgspec.Struct, frozen=True, kw_only=True):
    """A run: status, revisions, what it awaits, its state and outputs.

    Two revisions, and only one of them is the ``ETag``:

    * ``stored_revision`` is the store's write counter (``StoredRun.revision``). It moves on
      every write of the run (decisions, timers, holds, releases, rollbacks, and while it runs)
      and never comes back to a value with other content. It is the ``ETag`` and what
      ``If-Match`` names: the decision is refused with 412 unless the run is still at it,
      checked atomically with the decision's claim. None when it is not known (the store
      already holds a newer state than this answer describes: reload the run).
    * ``revision`` is the revision of the run's state (``RunResult.revision``, the context's):
      it moves when nodes run or a decision is applied, not on a hold or a release.
    """

    id: str
    flow_id: str
    status: Literal["running", "awaiting", "completed", "failed", "cancelled"]
    revision: int
    stored_revision: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    held: bool = False
    paused_at: datetime | None = None
    paused_by: str | None = None
    paused_reason: str | None = None
    pause_deadline: datetime | None = None
    awaiting: list[AwaitingView] = []
    state: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    errors: list[str] = []

class ExecutionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """A run in a list."""

    id: str
    flow_id: str
    status: Literal["running", "awaiting", "completed", "failed", "cancelled"]
    created_at: datetime
    updated_at: datetime
    awaiting: list[str] = []
    held: bool = False

class ExecutionList(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /executions``: one page; pass ``next_cursor`` back as ``cursor``."""

    executions: list[ExecutionSummary]
    count: int
    next_cursor: str | None = None

class HistoryView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /executions/{id}/history``: the run's audit trail, oldest first."""

    id: str
    history: list[HistoryRecord]


# --- building them -----------------------------------------------------------------------------


def flow_of(service: FlowService, flow_id: str) -> tuple[Blueprint, Mapping[str, object]]:
    """The blueprint and registry ``service`` runs ``flow_id`` with (``UnknownFlowError``)."""
    return service.flow(flow_id)


def actions_of(blueprint: Blueprint, node_id: str) -> list[str]:
    """The labelled actions of a node's outgoing edges, in declaration order."""
    seen: list[str] = []
    for edge in blueprint.edges:
        if edge.source == node_id and edge.action is not None and edge.action not in seen:
            seen.append(edge.action)
    return seen


def schema_of(
    blueprint: Blueprint, registry: Mapping[str, object], node_id: str
) -> dict[str, Any] | None:
    """The JSON Schema of a wait's ``schema=`` type, if it declares one."""
    node = next((n for n in blueprint.nodes if n.id == node_id), None)
    key = node.params.get("schema") if node is not None and node.params else None
    kind = registry.get(key) if isinstance(key, str) else None
    if kind is None:
        return None
    try:
        schema: dict[str, Any] = msgspec.json.schema(kind)
    except (TypeError, ValueError):
        return None
    return schema


def awaiting_for(
    result: RunResult, blueprint: Blueprint | None, registry: Mapping[str, object]
) -> list[AwaitingView]:
    """A result's awaiting nodes, with actions and schema read from ``blueprint``."""
    return [
        AwaitingView(
            node_id=a.node_id,
            reason=a.reason,
            since=a.since,
            description=a.description,
            requested_by=a.requested_by,
            wake_at=a.wake_at,
            expires_at=a.expires_at,
            actions=actions_of(blueprint, a.node_id) if blueprint is not None else [],
            schema=schema_of(blueprint, registry, a.node_id) if blueprint is not None else None,
            approved_by=list(a.approved_by),
        )
        for a in result.awaiting
    ]


def awaiting_views(service: FlowService, result: RunResult) -> list[AwaitingView]:
    """The run's awaiting nodes with their allowed actions and schema."""
    if not result.awaiting:
        return []
    try:
        bp, reg = flow_of(service, result.blueprint_id)
    except flowcraft.UnknownFlowError:
        return awaiting_for(result, None, {})
    return awaiting_for(result, bp, reg)


def outcome_view(
    service: FlowService, result: RunResult, stored_revision: int | None = None
) -> ExecutionView:
    """What a start/resume/release answers: the ``RunResult`` (and the stored revision)."""
    return ExecutionView(
        id=result.run_id,
        flow_id=result.blueprint_id,
        status=result.status,
        revision=result.revision,
        stored_revision=stored_revision,
        awaiting=awaiting_views(service, result),
        state=result.context,
        outputs=result.outputs,
        errors=[f"{e.node_id}: {e.type}: {e.message}" for e in result.errors],
    )


def summary_view(stored: StoredRun) -> ExecutionSummary:
    """A stored run as a list shows it (``GET /executions``, ``runs list``, ``workflow_list``)."""
    return ExecutionSummary(
        id=stored.run_id,
        flow_id=stored.flow_id,
        status=stored.status,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
        awaiting=list(stored.awaiting),
        held=stored.held,
    )


def list_view(runs: Iterable[StoredRun], next_cursor: str | None) -> ExecutionList:
    """A page of stored runs as an ``ExecutionList`` (``next_cursor``: the page's, or None)."""
    items = [summary_view(r) for r in runs]
    return ExecutionList(executions=items, count=len(items), next_cursor=next_cursor)


def execution_view(service: FlowService, stored: StoredRun) -> ExecutionView:
    """A stored run as ``GET /executions/{id}`` shows it: status, holds, what it awaits."""
    base = outcome_view(service, service.result_of(stored)) if stored.context else None
    return ExecutionView(
        id=stored.run_id,
        flow_id=stored.flow_id,
        status=stored.status,
        revision=base.revision if base is not None else 0,
        stored_revision=stored.revision,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
        held=stored.held,
        paused_at=stored.paused_at,
        paused_by=stored.paused_by,
        paused_reason=stored.pause_reason,
        pause_deadline=stored.pause_deadline,
        awaiting=base.awaiting if base is not None else [],
        state=base.state if base is not None else None,
        outputs=base.outputs if base is not None else None,
        errors=base.errors if base is not None else [],
    )
