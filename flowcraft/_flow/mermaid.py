"""Mermaid diagrams of blueprints, and of runs coloured by node state.

``to_mermaid`` never trusts a node id or an expression: every node gets a generated key
(``n0``, ``n1``, ...) and every label is quoted with Mermaid entity codes (``#quot;``, ``#35;``)
for anything that is not plainly safe, so ids full of quotes, brackets, pipes, HTML or
newlines cannot break the chart or inject markup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flowcraft._errors import FlowcraftError
from flowcraft._flow.graph import back_edges, declared_entries
from flowcraft._flow.parts import EdgeDefinition, NodeDefinition
from flowcraft._values import RunResult

__all__ = ["draw", "escape_label"]


_DIRECTIONS = frozenset({"TD", "TB", "BT", "LR", "RL"})
# Node shapes by ``uses``: (opening, closing) around the quoted label.
_SHAPES: dict[str, tuple[str, str]] = {
    "wait": ("{{", "}}"),
    "sleep": ("([", "])"),
    "subflow": ("[[", "]]"),
    "loop-controller": ("{", "}"),
    "batch-scatter": ("[/", "/]"),
    "batch-gather": ("[\\", "\\]"),
}
_TASK_SHAPE = ("[", "]")
_STATUS_STYLES = (
    ("completed", "fill:#d3f9d8,stroke:#2b8a3e,color:#1b4d26"),
    ("awaiting", "fill:#fff3bf,stroke:#e67700,color:#5c3c00,stroke-width:2px"),
    ("failed", "fill:#ffe3e3,stroke:#c92a2a,color:#5c0d0d,stroke-width:2px"),
    ("skipped", "fill:#f1f3f5,stroke:#868e96,color:#495057,stroke-dasharray:5 5"),
    ("notrun", "fill:#f8f9fa,stroke:#adb5bd,color:#868e96"),
)
# Characters kept as they are inside a quoted label; everything else becomes an entity.
_SAFE_ASCII = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:/=+*'!?@"
)
_NAMED = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "&": "#amp;"}


# --- Mermaid -----------------------------------------------------------------------------------


def escape_label(text: str) -> str:
    """Return ``text`` safe to put between double quotes in a Mermaid label.

    Letters, digits, spaces and harmless punctuation stay; line breaks and tabs become spaces;
    every other character becomes a Mermaid entity code (``#quot;``, ``#lt;``, ``#124;``...).
    """
    out: list[str] = []
    for ch in text:
        if ch in _SAFE_ASCII or (ord(ch) > 127 and ch.isalnum()):
            out.append(ch)
        elif ch in "\r\n\t":
            out.append(" ")
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        else:
            out.append(f"#{ord(ch)};")
    return "".join(out)


def draw(
    flow_id: str,
    nodes: Sequence[NodeDefinition],
    edges: Sequence[EdgeDefinition],
    result: RunResult | None,
    direction: str,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """The Mermaid chart of a blueprint's nodes and edges (``Blueprint.to_mermaid``)."""
    if direction not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {sorted(_DIRECTIONS)}, not {direction!r}")
    if result is not None and result.blueprint_id and result.blueprint_id != flow_id:
        raise ValueError(
            f"the result is of blueprint {result.blueprint_id!r}, not {flow_id!r}; "
            "draw it with the blueprint it ran."
        )
    keys = {node.id: f"n{i}" for i, node in enumerate(nodes)}
    lines = [f"flowchart {direction}"]
    for node in nodes:
        opening, closing = _SHAPES.get(node.uses, _TASK_SHAPE)
        lines.append(f'    {keys[node.id]}{opening}"{escape_label(node.id)}"{closing}')
    back = back_edges(nodes, edges, declared_entries(metadata))
    for index, edge in enumerate(edges):
        arrow = "-.->" if index in back else "-->"
        label = _edge_label(edge)
        middle = f'{arrow}|"{escape_label(label)}"|' if label else arrow
        lines.append(f"    {keys[edge.source]} {middle} {keys[edge.target]}")
    for node in nodes:
        fallback = node.settings.fallback
        if fallback is not None and fallback in keys:
            lines.append(f'    {keys[node.id]} -.->|"fallback"| {keys[fallback]}')
    if result is not None:
        lines.extend(_status_lines(nodes, result, keys))
    return "\n".join(lines) + "\n"


def _edge_label(edge: EdgeDefinition) -> str:
    parts = []
    if edge.action is not None:
        parts.append(edge.action)
    if edge.condition is not None:
        parts.append(f"if {edge.condition}")
    return " / ".join(parts)


def _status_lines(
    nodes: Sequence[NodeDefinition], result: RunResult, keys: Mapping[str, str]
) -> list[str]:
    status: dict[str, str] = {}

    def mark(node_id: str, name: str) -> None:
        # Nested ids ("parent/child-wait") colour their parent node.
        if node_id not in keys and "/" in node_id:
            node_id = node_id.split("/", 1)[0]
        if node_id in keys and node_id not in status:
            status[node_id] = name

    for error in result.errors:
        mark(error.node_id, "failed")
    for waiting in result.awaiting:
        mark(waiting.node_id, "awaiting")
    for node_id in result.outputs:
        mark(node_id, "completed")
    skipped = _decoded_skipped(result)
    if skipped is None:
        for node in nodes:
            mark(node.id, "notrun")
    else:
        for node_id in skipped:
            mark(node_id, "skipped")
    lines = [f"    classDef {name} {style}" for name, style in _STATUS_STYLES]
    for name, _ in _STATUS_STYLES:
        members = [keys[n.id] for n in nodes if status.get(n.id) == name]
        if members:
            lines.append(f"    class {','.join(members)} {name}")
    return lines


def _decoded_skipped(result: RunResult) -> list[str] | None:
    """The skipped node ids from the result's context, or None if it cannot be read unkeyed."""
    from flowcraft._envelope.codec import Codec

    try:
        return list(Codec().decode(result.serialized_context).skipped)
    except FlowcraftError:  # signed, or a custom serializer: skipped is unknown
        return None


# --- lint --------------------------------------------------------------------------------------


