"""Approval pages (placeholder until the pages land)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from flowcraft.http._app import FlowApp

__all__ = ["page_routes"]


def page_routes(app: FlowApp) -> list[BaseRoute]:
    """The approval page routes."""
    return []
