"""Blueprints: the immutable, JSON-serializable description of a flow (Flowcraft TS field names)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import msgspec

from flowcraft._errors import (
    DuplicateNodeError,
    InvalidBlueprintError,
    InvalidDurationError,
    NoStartNodeError,
    UnknownNodeError,
)
from flowcraft._flow.durations import json_duration, sleep_seconds
from flowcraft._flow.graph import declared_entries, start_nodes
from flowcraft._flow.mermaid import draw
from flowcraft._flow.parts import CALLABLE_PREFIX, EdgeDefinition, NodeDefinition
from flowcraft._values import RunResult

__all__ = ["Blueprint", "to_mermaid", "validate"]


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

    def to_mermaid(self, result: RunResult | None = None, *, direction: str = "TD") -> str:
        """A Mermaid flowchart of this blueprint; with ``result``, nodes coloured by state."""
        return draw(self.id, self.nodes, self.edges, result, direction, self.metadata)

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
            sleep_seconds(node.params, f"flow {bp.id!r}: sleep {node.id!r}")
        elif node.uses == "wait":
            timeout = (node.params or {}).get("timeout")
            if timeout is not None:
                json_duration(timeout, f"flow {bp.id!r}: wait {node.id!r} timeout")
    declared = declared_entries(bp.metadata)
    for entry in declared:
        if entry not in ids:
            raise UnknownNodeError(bp.id, entry, "metadata.cycleEntryPoints", ids)
    _check_expressions(bp)
    if not bp.nodes:
        return
    if not start_nodes(bp.nodes, bp.edges, declared):
        raise NoStartNodeError(bp.id)


def _check_expressions(bp: Blueprint) -> None:
    """Compile every expression string now, so an unsafe one fails here, naming its edge."""
    texts: list[tuple[str, str]] = []
    for edge in bp.edges:
        where = f"flow {bp.id!r}: edge {edge.source!r} -> {edge.target!r}"
        for what, text in (("condition", edge.condition), ("transform", edge.transform)):
            if text is not None and not text.startswith(CALLABLE_PREFIX):
                texts.append((text, f"{where} {what}"))
    for node in bp.nodes:
        if node.uses == "loop-controller":
            text = (node.params or {}).get("condition")
            if isinstance(text, str) and not text.startswith(CALLABLE_PREFIX):
                texts.append((text, f"flow {bp.id!r}: loop {node.id!r} condition"))
    if not texts:
        return  # the parser is loaded on first use
    from flowcraft._flow.expr import compile_expression

    for text, where in texts:
        compile_expression(text, where=where)


# --- durations -------------------------------------------------------------------------------


def to_mermaid(
    blueprint: Blueprint, result: RunResult | None = None, *, direction: str = "TD"
) -> str:
    """Draw a blueprint as a Mermaid ``flowchart``, optionally coloured by a run's state.

    Tasks are rectangles, waits hexagons, sleeps stadiums, subflows subroutines, loop
    controllers rhombuses. Edges carry their action and condition; edges closing a cycle and
    fallback links are dotted. Ids and expressions are escaped, so any text is safe.

    Args:
        blueprint: The flow to draw.
        result: A ``RunResult`` of this blueprint. Nodes are then classed ``completed``,
            ``awaiting``, ``failed`` or ``skipped`` (when the context can be decoded without
            keys; otherwise nodes that did not run are classed ``notrun``).
        direction: ``"TD"`` (top-down, the default), ``"TB"``, ``"BT"``, ``"LR"`` or ``"RL"``.

    Raises:
        ValueError: ``direction`` is not one of the above, or ``result`` is of another blueprint.
    """
    return draw(
        blueprint.id, blueprint.nodes, blueprint.edges, result, direction, blueprint.metadata
    )
