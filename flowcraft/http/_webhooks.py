"""Incoming webhooks (placeholder until the verifiers land)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from flowcraft.http._app import FlowApp

__all__ = ["webhook_routes"]


def webhook_routes(app: FlowApp, webhooks: Sequence[Any]) -> list[BaseRoute]:
    """The webhook routes."""
    return []
