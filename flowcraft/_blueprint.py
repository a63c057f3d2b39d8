"""Blueprints: the immutable, JSON-serializable description of a flow (Flowcraft TS field names)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal

import msgspec

from ._errors import (
    DuplicateNodeError,
    InvalidBlueprintError,
    InvalidDurationError,
    NoStartNodeError,
    UnknownNodeError,
)

__all__ = [
    "BUILTIN_USES",
    "CALLABLE_PREFIX",
    "Blueprint",
    "EdgeDefinition",
    "NodeConfig",
    "NodeDefinition",
    "parse_duration",
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


class Blueprint(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, dict=True):
    """An immutable, JSON-serializable flow definition.

    Build one with ``create_flow(...).to_blueprint()`` or load one with ``Blueprint.from_json``
    (including JSON written by Flowcraft TS). ``digest`` is a stable content hash: the same flow
    gives the same digest in any process.
    """

    id: str
    nodes: tuple[NodeDefinition, ...] = ()
    edges: tuple[EdgeDefinition, ...] = ()
    metadata: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return (
            f"flowcraft.Blueprint(id={self.id!r}, nodes={len(self.nodes)}, edges={len(self.edges)})"
        )

    @cached_property
    def digest(self) -> str:
        """SHA-256 hex digest of the canonical JSON form."""
        return hashlib.sha256(_canonical.encode(self)).hexdigest()

    @cached_property
    def node_map(self) -> Mapping[str, NodeDefinition]:
        """Nodes by id."""
        return {n.id: n for n in self.nodes}

    def to_json(self) -> str:
        """Return the blueprint as JSON text (Flowcraft TS field names)."""
        return _encoder.encode(self).decode()

    def to_mermaid(self, result: Any = None, *, direction: str = "TD") -> str:
        """A Mermaid flowchart of this blueprint; with ``result``, nodes coloured by state."""
        from ._diagram import to_mermaid

        return to_mermaid(self, result, direction=direction)

    def to_dict(self) -> dict[str, Any]:
        """Return the blueprint as plain builtins (the parsed form of ``to_json``)."""
        result: dict[str, Any] = msgspec.to_builtins(self)
        return result

    @classmethod
    def from_json(cls, data: str | bytes | Mapping[str, Any]) -> Blueprint:
        """Load and validate a blueprint from JSON text/bytes or an already-parsed mapping.

        Raises:
            BlueprintError: the JSON is not a valid blueprint; the message names the problem.
        """
        try:
            if isinstance(data, str | bytes):
                bp = _decoder.decode(data)
            else:
                bp = msgspec.convert(data, Blueprint)
        except msgspec.DecodeError as exc:  # ValidationError is a DecodeError subclass
            raise InvalidBlueprintError(f"not a valid blueprint: {exc}") from exc
        validate(bp)
        return bp


_encoder = msgspec.json.Encoder()
_canonical = msgspec.json.Encoder(order="sorted")
_decoder = msgspec.json.Decoder(Blueprint)


def validate(bp: Blueprint) -> None:
    """Check a blueprint's structure; raise a specific ``BlueprintError`` for the first problem."""
    ids: set[str] = set()
    for node in bp.nodes:
        if node.id in ids:
            raise DuplicateNodeError(bp.id, node.id)
        ids.add(node.id)
    for edge in bp.edges:
        for end in (edge.source, edge.target):
            if end not in ids:
                raise UnknownNodeError(bp.id, end, f"edge {edge.source!r} -> {edge.target!r}", ids)
    fallbacks: set[str] = set()
    for node in bp.nodes:
        cfg = node.settings
        if cfg.fallback is not None:
            if cfg.fallback not in ids:
                raise UnknownNodeError(bp.id, cfg.fallback, f"fallback of node {node.id!r}", ids)
            if cfg.fallback == node.id:
                raise InvalidBlueprintError(
                    f"flow {bp.id!r}: node {node.id!r} names itself as its fallback; "
                    "name a different node."
                )
            fallbacks.add(cfg.fallback)
        if cfg.max_retries < 1:
            raise InvalidBlueprintError(
                f"flow {bp.id!r}: node {node.id!r} has max_retries={cfg.max_retries}; it counts "
                "total attempts and must be at least 1."
            )
        for name, value in (("retry_delay", cfg.retry_delay), ("timeout", cfg.timeout)):
            if value is not None and value < 0:
                raise InvalidDurationError(f"flow {bp.id!r}: node {node.id!r} {name}", value)
        if node.uses == "sleep":
            sleep_seconds(node, bp.id)
        elif node.uses == "wait":
            timeout = (node.params or {}).get("timeout")
            if timeout is not None:
                json_duration(timeout, f"flow {bp.id!r}: wait {node.id!r} timeout")
    if not bp.nodes:
        return
    targets = {e.target for e in bp.edges}
    if not any(n.id not in targets and n.id not in fallbacks for n in bp.nodes):
        raise NoStartNodeError(bp.id)


# --- durations -------------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIMPLE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_ISO = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: object, where: str) -> float:
    """Seconds from a builder duration: seconds, timedelta, ``"5m"``-style or ISO-8601 string."""
    if isinstance(value, bool):
        raise InvalidDurationError(where, value, "a bool is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        seconds = _parse_duration_text(value, where)
    else:
        raise InvalidDurationError(where, value, f"unsupported type {type(value).__name__}")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise InvalidDurationError(where, value, "must be a finite, non-negative number")
    return seconds


def _parse_duration_text(text: str, where: str) -> float:
    match = _SIMPLE.match(text)
    if match:
        return float(match.group(1)) * _UNITS[match.group(2)]
    iso = _ISO.match(text.strip().upper())
    if iso and text.strip().upper() not in ("P", "PT") and any(iso.groupdict().values()):
        parts = {k: float(v) if v else 0.0 for k, v in iso.groupdict().items()}
        return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    raise InvalidDurationError(where, text)


def json_duration(value: object, where: str) -> float:
    """Seconds from a blueprint-JSON duration: a number is milliseconds (TS), a string as above."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_duration(value / 1000.0, where)
    return parse_duration(value, where)


def sleep_seconds(node: NodeDefinition, flow_id: str) -> float | datetime:
    """A sleep node's duration in seconds, or its absolute wake time; validates the params."""
    params = node.params or {}
    where = f"flow {flow_id!r}: sleep {node.id!r}"
    duration, until = params.get("duration"), params.get("until")
    if (duration is None) == (until is None):
        raise InvalidDurationError(where, params, "give exactly one of duration or until")
    if duration is not None:
        return json_duration(duration, where)
    if isinstance(until, str):
        try:
            until = datetime.fromisoformat(until)
        except ValueError as exc:
            raise InvalidDurationError(where, until, "until is not an ISO-8601 datetime") from exc
    if not isinstance(until, datetime) or until.tzinfo is None:
        raise InvalidDurationError(where, until, "until must be a timezone-aware datetime")
    return until


def iter_known_actions(edges: Iterable[EdgeDefinition]) -> tuple[str, ...]:
    """The distinct action labels of some edges, in order."""
    return tuple(dict.fromkeys(e.action for e in edges if e.action is not None))
