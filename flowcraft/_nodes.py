"""Class-based nodes (``BaseNode``, as in Flowcraft TS) and the built-in loop controller."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from ._context import NodeContext
from ._types import EdgeContext, NodeResult

__all__ = ["NEVER_AWAITABLE", "BaseNode", "loop_controller", "maybe_await"]

#: Exact result types that cannot be awaitable: a sync node's result is checked against these
#: before the (slower) ``inspect.isawaitable``.
NEVER_AWAITABLE = frozenset({str, int, float, bool, bytes, dict, list, tuple, type(None)})


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (lets node methods be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


class BaseNode:
    """A node written as a class: ``prep`` once, ``exec`` (retried), then ``post``.

    The lifecycle follows Flowcraft TS: ``prep(node)`` prepares the input (default: the node's
    input); ``exec(prepared, node)`` does the work and is retried up to the node's
    ``max_retries`` with its delays; when every attempt failed, ``fallback(error, node)`` may
    return a result instead (default: re-raise); ``post(result, node)`` shapes the final output
    (return a value or a ``NodeResult``). If the node still fails, ``recover(error, node)`` runs
    for cleanup before the failure is recorded. Methods may be sync or async. A new instance is
    made for every execution, with the node's ``params`` and id.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, node_id: str = "") -> None:
        self.params: Mapping[str, Any] = params or {}
        self.node_id = node_id

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(node_id={self.node_id!r})"

    async def prep(self, node: NodeContext) -> Any:
        """Prepare what ``exec`` receives (runs once per execution)."""
        return node.input

    async def exec(self, prepared: Any, node: NodeContext) -> Any:
        """Do the work; retried on failure."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement exec()")

    async def post(self, result: Any, node: NodeContext) -> Any:
        """Turn ``exec``'s result into the node's output (or a ``NodeResult``)."""
        return result

    async def fallback(self, error: Exception, node: NodeContext) -> Any:
        """Called when every ``exec`` attempt failed; return a result or raise."""
        raise error

    async def recover(self, error: Exception, node: NodeContext) -> None:
        """Clean up after a failure that is about to be recorded."""


def loop_controller(
    condition: Callable[[EdgeContext], Any],
) -> Callable[[NodeContext], NodeResult[Any]]:
    """The built-in ``loop-controller``: ``continue`` while the condition holds, else ``break``."""

    def controller(node: NodeContext) -> NodeResult[Any]:
        state = node.context.to_dict()
        ec = EdgeContext(input=node.input, result=NodeResult(output=node.input), context=state)
        action = "continue" if condition(ec) else "break"
        return NodeResult(output=node.input, action=action)

    return controller
