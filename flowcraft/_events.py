"""Events (Flowcraft TS names), the event bus protocol, and node middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import msgspec

from flowcraft._node import NodeContext
from flowcraft._values import RunResult, Segment

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
    """Hooks around every segment and every node attempt. Override what you need.

    ``around_segment`` wraps one ``run``/``resume``/``fire``/``cancel`` call (the in-process
    scheduler's firings included); ``before_node``/``after_node``/``around_node`` wrap each
    attempt of a node (retries are separate attempts). ``around_*`` receive ``call_next``:
    return its result, or a value to short-circuit a node. Several middlewares nest in order:
    the first is outermost.

    Only the hooks a subclass overrides are called. Node hooks run every node on the general
    engine (the shortcuts skip per-node work); a middleware overriding only
    ``around_segment`` keeps the shortcuts, and none of it costs anything when unused.
    """

    async def around_segment(
        self, segment: Segment, call_next: Callable[[], Awaitable[RunResult]]
    ) -> RunResult:
        """Wrap one segment: return ``await call_next()`` (call it once).

        Runs in the caller's task, so context variables set here (a current span) are seen by
        every node of the segment. ``call_next`` raises what the call raises (a refused
        resume); node failures are in the result, not raised. Write ``segment.carry`` before
        calling ``call_next`` to have the returned context carry headers for the next segment.
        """
        return await call_next()

    async def before_node(self, node: NodeContext) -> None:
        """Called before the node runs."""

    async def after_node(self, node: NodeContext, result: Any, error: BaseException | None) -> None:
        """Called after the node ran, also when it failed (``error`` set)."""

    async def around_node(self, node: NodeContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Wrap the node's execution."""
        return await call_next()
