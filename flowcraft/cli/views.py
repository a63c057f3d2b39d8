"""The HTTP API's types built from a service's public data: shared by the CLI and MCP.

``flowcraft --output json`` and the MCP tools answer with ``flowcraft.http.ExecutionView`` and
its kin, so a script or an agent decodes the same bodies whichever door it used. These helpers
build them; ``flowcraft.http`` imports only when a view is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

import flowcraft
from flowcraft import Blueprint, FlowService, RunResult
from flowcraft.stores import StoredRun

if TYPE_CHECKING:
    from flowcraft.http import AwaitingView, ExecutionView

__all__ = (
    "CleanupReport",
    "DeleteReport",
    "Unsupported",
    "actions_of",
    "awaiting_for",
    "awaiting_views",
    "execution_view",
    "flow_ids",
    "flow_of",
    "outcome_view",
    "schema_of",
)


class Unsupported(flowcraft.FlowcraftError):
    """This flowcraft version's ``FlowService`` lacks the operation a command needs."""

    def __init__(self, what: str, method: str) -> None:
        super().__init__(
            f"{what} is not supported by this flowcraft version "
            f"(FlowService.{method} is missing); upgrade flowcraft"
        )
        self.method = method



class CleanupReport(msgspec.Struct, frozen=True, kw_only=True):
    """``runs cleanup``: how many finished runs were deleted."""

    deleted: int
    finished_before: datetime


class DeleteReport(msgspec.Struct, frozen=True, kw_only=True):
    """``runs delete``: the run that was deleted."""

    id: str
    deleted: bool = True



# --- views: the HTTP API's types built from public data ----------------------------------------


def flow_of(service: FlowService, flow_id: str) -> tuple[Blueprint, Mapping[str, object]]:
    """The blueprint and registry ``service`` runs ``flow_id`` with (``UnknownFlowError``)."""
    return service.flow(flow_id)


def flow_ids(service: FlowService) -> list[str]:
    """The ids of the flows ``service`` knows, sorted."""
    return list(service.flow_ids)


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
    from flowcraft.http import AwaitingView

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


def outcome_view(service: FlowService, result: RunResult) -> ExecutionView:
    """A ``RunResult`` as the HTTP API's ``ExecutionView`` (what start/resume answer)."""
    from flowcraft.http import ExecutionView

    return ExecutionView(
        id=result.run_id,
        flow_id=result.blueprint_id,
        status=result.status,
        revision=result.revision,
        awaiting=awaiting_views(service, result),
        state=result.context,
        outputs=result.outputs,
        errors=[f"{e.node_id}: {e.type}: {e.message}" for e in result.errors],
    )


def execution_view(service: FlowService, stored: StoredRun) -> ExecutionView:
    """A stored run as ``GET /executions/{id}`` shows it: status, holds, what it awaits."""
    from flowcraft.http import ExecutionView

    base = None
    if stored.context:
        base = outcome_view(service, service.result_of(stored))
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
