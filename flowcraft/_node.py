"""What a node function receives: ``NodeContext`` and the run's state ``Context``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import msgspec

__all__ = ["Context", "NodeContext", "PauseRequested"]


class PauseRequested(BaseException):
    """Raised by ``NodeContext.pause``; a BaseException so ``except Exception`` cannot eat it."""

    def __init__(self, reason: str | None) -> None:
        super().__init__(reason)
        self.reason = reason


class Context(msgspec.Struct, eq=False):
    """The run's user state: a small synchronous key/value API over a dict.

    Values must be serializable with msgspec when the run pauses or ends.
    """

    # A Struct for its C-level __init__: one is made per node call.
    _data: dict[str, Any]
    _on_change: Callable[[str, str, Any], None] | None = None

    def __repr__(self) -> str:
        return f"flowcraft.Context({self._data!r})"

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default``."""
        return self._data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set ``key`` to ``value``."""
        self._data[key] = value
        if self._on_change is not None:
            self._on_change("set", key, value)

    def has(self, key: str) -> bool:
        """Whether ``key`` is set."""
        return key in self._data

    def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        if self._data.pop(key, _MISSING) is not _MISSING and self._on_change is not None:
            self._on_change("delete", key, None)

    def to_dict(self) -> dict[str, Any]:
        """Return a shallow copy of the state."""
        return dict(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)


_MISSING = object()


class NodeContext(msgspec.Struct, eq=False):
    """Everything a node function sees for one attempt."""

    # A Struct for its C-level __init__: one is made per node call.
    context: Context
    input: Any
    params: Mapping[str, Any]
    deps: Mapping[str, Any]
    node_id: str
    run_id: str
    attempt: int

    def __repr__(self) -> str:
        return f"flowcraft.NodeContext(node_id={self.node_id!r}, attempt={self.attempt})"

    def pause(self, reason: str | None = None) -> NoReturn:
        """Pause the run at this node; the resume's output becomes this node's output.

        The function is not run again on resume.
        """
        raise PauseRequested(reason)


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
