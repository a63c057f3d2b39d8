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
