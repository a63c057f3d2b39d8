"""The frozen parts of a blueprint: NodeDefinition, NodeConfig, EdgeDefinition."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

__all__ = [
    "BUILTIN_USES",
    "CALLABLE_PREFIX",
    "EdgeDefinition",
    "JoinStrategy",
    "NodeConfig",
    "NodeDefinition",
    "iter_known_actions",
]



JoinStrategy = Literal["all", "any"]


#: ``uses`` keys the runtime implements itself (Flowcraft TS names).
BUILTIN_USES = frozenset(
    {"wait", "sleep", "subflow", "batch-scatter", "batch-gather", "loop-controller"}
)


#: Edge conditions/transforms starting with this are registry keys of Python callables.
CALLABLE_PREFIX = "@"


class NodeConfig(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, rename="camel"):
    """Execution settings of one node. Durations are in milliseconds, as in Flowcraft TS JSON."""

    max_retries: int = 1
    retry_delay: float = 0
    retry_backoff: float = 1.0
    timeout: float | None = None
    fallback: str | None = None
    join_strategy: JoinStrategy = "all"
    pause_before: bool = False
    #: When every attempt failed and no fallback stood in: finish with this action (the output
    #: is the error record) instead of failing the run. JSON ``onError``.
    on_error: str | None = None


_DEFAULT_CONFIG = NodeConfig()


class NodeDefinition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One node: its id, what implements it (``uses``), and its settings."""

    id: str
    uses: str
    params: dict[str, Any] | None = None
    inputs: str | dict[str, str] | None = None
    config: NodeConfig | None = None

    @property
    def settings(self) -> NodeConfig:
        """The node's config, or the defaults when it has none."""
        return self.config if self.config is not None else _DEFAULT_CONFIG


class EdgeDefinition(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A directed edge, optionally labelled with an action, a condition and a transform."""

    source: str
    target: str
    action: str | None = None
    condition: str | None = None
    transform: str | None = None


def iter_known_actions(edges: Iterable[EdgeDefinition]) -> tuple[str, ...]:
    """The distinct action labels of some edges, in order."""
    return tuple(dict.fromkeys(e.action for e in edges if e.action is not None))
