"""Events (Flowcraft TS names), the event bus protocol, and node middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import msgspec

from flowcraft._node import NodeContext

__all__ = ["EVENT_NAMES", "EventBus", "FlowEvent", "Middleware"]

EVENT_NAMES = (
    "workflow:start",
    "workflow:resume",
    "workflow:pause",
    "workflow:finish",
    "workflow:expire",
    "node:start",
    "node:finish",
    "node:retry",
    "node:error",
    "node:fallback",
    "node:skipped",
    "edge:evaluate",
    "context:change",
)


class FlowEvent(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One thing that happened in a run. ``payload`` holds the event-specific fields."""

    type: str
    run_id: str
    blueprint_id: str
    node_id: str | None = None
    payload: dict[str, Any] = {}


@runtime_checkable
class EventBus(Protocol):
    """Receives events. ``emit`` may be sync or async (an awaitable result is awaited)."""

    def emit(self, event: FlowEvent) -> Awaitable[None] | None:
        """Handle one event."""
        ...


class Middleware:
    """Hooks around every node attempt. Override what you need; the defaults do nothing.

    ``around_node`` receives ``call_next``; return its result, or a value to short-circuit.
    Several middlewares nest in order: the first is outermost.
    """

    async def before_node(self, node: NodeContext) -> None:
        """Called before the node runs."""

    async def after_node(self, node: NodeContext, result: Any, error: BaseException | None) -> None:
        """Called after the node ran, also when it failed (``error`` set)."""

    async def around_node(self, node: NodeContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Wrap the node's execution."""
        return await call_next()
