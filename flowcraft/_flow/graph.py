"""Graph facts of a blueprint, one definition for everyone: start nodes, cycle entries, back edges.

Validation, ``compile_plan``, ``lint_blueprint`` and the Mermaid chart all ask these questions;
they all get their answers here, so a chart's dotted edges are the edges the engine treats as
closing a cycle, and lint names the cycle entry the engine starts at.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flowcraft._flow.parts import EdgeDefinition, NodeDefinition

__all__ = ["CycleEntry", "back_edges", "cycle_entries", "declared_entries", "start_nodes"]

#: A cycle nothing enters: (the node a run starts it at, whether metadata declared it,
#: the ids of the strongly connected part in definition order).
CycleEntry = tuple[str, bool, tuple[str, ...]]


def declared_entries(metadata: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The ``metadata.cycleEntryPoints`` of a blueprint (Flowcraft TS name), as node ids."""
    points = (metadata or {}).get("cycleEntryPoints")
    if isinstance(points, str):
        return (points,)
    if isinstance(points, list | tuple):
        return tuple(p for p in points if isinstance(p, str))
    return ()


def start_nodes(
    nodes: Sequence[NodeDefinition],
    edges: Sequence[EdgeDefinition],
    declared: Sequence[str] = (),
) -> list[str]:
    """Nodes a run starts at, in definition order.

    A node without incoming edges that is not some node's fallback; and for every cycle that no
    edge enters from outside (the guide's ``attempt <-> backoff`` retry loop), its entry: the
    node ``declared`` names (``metadata.cycleEntryPoints``), else its first-declared node.
    """
    targets = {e.target for e in edges}
    fallbacks = {n.settings.fallback for n in nodes if n.settings.fallback}
    starts = {n.id for n in nodes if n.id not in targets and n.id not in fallbacks}
    if len(starts) < len(nodes):
        starts.update(entry for entry, _, _ in cycle_entries(nodes, edges, declared))
    # dict.fromkeys: an unvalidated blueprint may repeat an id; it still starts once.
    return list(dict.fromkeys(n.id for n in nodes if n.id in starts))


def cycle_entries(
    nodes: Sequence[NodeDefinition],
    edges: Sequence[EdgeDefinition],
    declared: Sequence[str] = (),
) -> list[CycleEntry]:
    """Every strongly connected part with a cycle that no edge enters from outside, and its entry.

    Parts come in the definition order of their first node. The entry is the first id of
    ``declared`` inside the part, else the part's first-declared node that is not a fallback.
    """
    order = {n.id: i for i, n in enumerate(nodes)}
    fallbacks = {n.settings.fallback for n in nodes if n.settings.fallback}
    out: dict[str, list[str]] = {n.id: [] for n in nodes}
    for e in edges:
        if e.source in out and e.target in out:
            out[e.source].append(e.target)
    component = _components(nodes, out)
    entered: set[int] = set()
    cyclic: set[int] = set()
    for source, targets in out.items():
        for target in targets:
            if component[source] != component[target]:
                entered.add(component[target])
            else:
                cyclic.add(component[target])  # an edge inside a part: a cycle (or a self-loop)
    members: dict[int, list[str]] = {}
    for node in nodes:
        members.setdefault(component[node.id], []).append(node.id)
    found: list[CycleEntry] = []
    for comp, ids in sorted(members.items(), key=lambda item: order[item[1][0]]):
        if comp in entered or comp not in cyclic:
            continue
        chosen = next((d for d in declared if d in ids), None)
        if chosen is not None:
            found.append((chosen, True, tuple(ids)))
            continue
        first = next((i for i in ids if i not in fallbacks), None)
        if first is not None:
            found.append((first, False, tuple(ids)))
    return found


def _components(nodes: Sequence[NodeDefinition], out: Mapping[str, list[str]]) -> dict[str, int]:
    """Strongly connected components (Tarjan, iterative): node id -> component number."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    component: dict[str, int] = {}
    counter = 0
    number = 0
    for root in (n.id for n in nodes):
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            nid, i = work[-1]
            succ = out[nid]
            if i < len(succ):
                work[-1] = (nid, i + 1)
                target = succ[i]
                if target not in index:
                    index[target] = low[target] = counter
                    counter += 1
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, 0))
                elif target in on_stack:
                    low[nid] = min(low[nid], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[nid])
            if low[nid] == index[nid]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = number
                    if member == nid:
                        break
                number += 1
    return component


def back_edges(
    nodes: Sequence[NodeDefinition],
    edges: Sequence[EdgeDefinition],
    declared: Sequence[str] = (),
) -> set[int]:
    """Indexes of the edges that close a cycle.

    A depth-first walk from the start nodes (cycle entries included), then from every node not
    yet seen, each in definition order, following edges in definition order: an edge to a node
    still on the walk's stack closes a cycle. Such edges do not count toward joins.
    """
    out: dict[str, list[tuple[int, str]]] = {n.id: [] for n in nodes}
    for index, edge in enumerate(edges):
        if edge.source in out and edge.target in out:
            out[edge.source].append((index, edge.target))
    back: set[int] = set()
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in [*start_nodes(nodes, edges, declared), *out]:
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
