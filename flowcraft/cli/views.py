"""What the CLI and MCP share: their own reports, and the run views of ``flowcraft.views``.

``flowcraft --output json`` and the MCP tools answer with ``flowcraft.views.ExecutionView``
(``flowcraft.http.ExecutionView``) and its kin, so a script or an agent decodes the same bodies
whichever door it used. The builders live in ``flowcraft.views`` (needing only msgspec, so
neither door imports Starlette for them) and are re-exported here.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

import flowcraft
from flowcraft import FlowService
from flowcraft.views import (
    actions_of,
    awaiting_for,
    awaiting_views,
    execution_view,
    flow_of,
    outcome_view,
    schema_of,
)

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


def flow_ids(service: FlowService) -> list[str]:
    """The ids of the flows ``service`` knows, sorted."""
    return list(service.flow_ids)
