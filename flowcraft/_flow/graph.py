"""Graph facts of a blueprint, one definition for everyone: start nodes and back edges.

Validation, ``compile_plan``, ``lint_blueprint`` and the Mermaid chart all ask these questions;
they all get their answers here, so a chart's dotted edges are the edges the engine treats as
closing a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

from flowcraft._flow.parts import EdgeDefinition, NodeDefinition

__all__ = ["back_edges", "start_nodes"]


def start_nodes(nodes: Sequence[NodeDefinition], edges: Sequence[EdgeDefinition]) -> list[str]:
    """Nodes a run starts at: no incoming edge, and not named as some node's fallback."""
    targets = {e.target for e in edges}
    fallbacks = {n.settings.fallback for n in nodes if n.settings.fallback}
    return [n.id for n in nodes if n.id not in targets and n.id not in fallbacks]


def back_edges(nodes: Sequence[NodeDefinition], edges: Sequence[EdgeDefinition]) -> set[int]:
    """Indexes of the edges that close a cycle.

    A depth-first walk from the start nodes, then from every node not yet seen, each in
    definition order, following edges in definition order: an edge to a node still on the walk's
    stack closes a cycle. Such edges do not count toward joins.
    """
    out: dict[str, list[tuple[int, str]]] = {n.id: [] for n in nodes}
    for index, edge in enumerate(edges):
        if edge.source in out and edge.target in out:
            out[edge.source].append((index, edge.target))
    back: set[int] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in [*start_nodes(nodes, edges), *out]:
        if root in state:
            continue
        state[root] = 1
        stack: list[tuple[str, int]] = [(root, 0)]
        while stack:
            nid, i = stack[-1]
            if i == len(out[nid]):
                state[nid] = 2
                stack.pop()
                continue
            stack[-1] = (nid, i + 1)
            index, target = out[nid][i]
            seen = state.get(target)
            if seen == 1:
                back.add(index)
            elif seen is None:
                state[target] = 1
                stack.append((target, 0))
    return back
