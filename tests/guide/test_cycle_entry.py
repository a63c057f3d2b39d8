"""A cycle nothing enters starts at its declared entry, else at its first-declared node (TS)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcraft import (
    Blueprint,
    FlowRuntime,
    NodeContext,
    NodeResult,
    UnknownNodeError,
    create_flow,
    lint_blueprint,
)
from flowcraft._flow.graph import cycle_entries, start_nodes
from flowcraft._flow.parts import EdgeDefinition, NodeDefinition


def attempt(node: NodeContext) -> NodeResult[int]:
    count = node.context.get("attempts", 0) + 1
    node.context.set("attempts", count)
    return NodeResult(output=count, action="retry" if count < 3 else "done")


def nothing(node: NodeContext) -> None:
    return None


def test_unentered_cycle_starts_at_first_declared_node() -> None:
    """``attempt <-> backoff`` with no entry node runs from ``attempt``, and lint says so."""
    flow = (
        create_flow("loop")
        .node("attempt", attempt)
        .node("backoff", nothing)
        .edge("attempt", "backoff", action="retry")
        .edge("backoff", "attempt")
    )
    bp = flow.to_blueprint()
    issues = [i for i in lint_blueprint(bp) if i.code == "FC008"]
    assert [i.node_id for i in issues] == ["attempt"]
    assert "'attempt'" in issues[0].message
    assert "set_cycle_entry_point" in issues[0].message


async def test_unentered_cycle_runs_to_its_exit() -> None:
    """The loop runs three attempts, then leaves along ``done``."""
    flow = (
        create_flow("loop")
        .node("attempt", attempt)
        .node("backoff", nothing)
        .node("finish", nothing)
        .edge("attempt", "backoff", action="retry")
        .edge("backoff", "attempt")
        .edge("attempt", "finish", action="done")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.context["attempts"] == 3
    assert "finish" in result.outputs


async def test_declared_entry_point_is_where_the_cycle_starts() -> None:
    """``set_cycle_entry_point`` picks the entry; it is in metadata and lint stays quiet."""
    seen: list[str] = []

    def mark(node: NodeContext) -> NodeResult[None]:
        seen.append(node.node_id)
        return NodeResult(output=None, action="stop" if len(seen) >= 2 else None)

    flow = (
        create_flow("loop")
        .node("a", mark)
        .node("b", mark)
        .edge("a", "b", action=None)
        .edge("b", "a", condition="result.action != 'stop'")
        .set_cycle_entry_point("b")
    )
    bp = flow.to_blueprint()
    assert bp.metadata == {"cycleEntryPoints": ["b"]}
    assert not [i for i in lint_blueprint(bp) if i.code == "FC008"]
    await flow.run(FlowRuntime())
    assert seen[:2] == ["b", "a"]


async def test_ts_blueprint_with_cycle_entry_points_loads_and_runs() -> None:
    """A TS-shaped JSON blueprint carrying ``metadata.cycleEntryPoints`` round-trips and runs."""
    data = {
        "id": "ts-loop",
        "nodes": [
            {"id": "backoff", "uses": "sleep", "params": {"duration": 5000}},
            {"id": "attempt", "uses": "fn_attempt"},
        ],
        "edges": [
            {"source": "attempt", "target": "backoff", "action": "retry"},
            {"source": "backoff", "target": "attempt"},
        ],
        "metadata": {"cycleEntryPoints": ["attempt"]},
    }
    bp = Blueprint.from_json(json.dumps(data))
    assert Blueprint.from_json(bp.to_json()) == bp
    result = await FlowRuntime(registry={"fn_attempt": attempt}).run(bp)
    assert result.status == "awaiting"
    assert [a.node_id for a in result.awaiting] == ["backoff"]


def test_unknown_cycle_entry_point_names_the_node() -> None:
    """An entry point naming no node is refused, naming it and where it came from."""
    flow = create_flow("x").node("a", nothing).set_cycle_entry_point("zz")
    with pytest.raises(UnknownNodeError, match=r"cycleEntryPoints names unknown node 'zz'"):
        flow.to_blueprint()


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    n = draw(st.integers(1, 7))
    ids = [f"n{i}" for i in range(n)]
    pairs = st.tuples(st.sampled_from(ids), st.sampled_from(ids))
    edges = draw(st.lists(pairs, max_size=12))
    declared = draw(st.lists(st.sampled_from(ids), max_size=3, unique=True))
    return ids, edges, declared


def _reach(ids: list[str], edges: list[tuple[str, str]]) -> dict[str, set[str]]:
    reach = {i: {t for s, t in edges if s == i} for i in ids}
    changed = True
    while changed:
        changed = False
        for i in ids:
            more = set().union(*(reach[j] for j in reach[i])) - reach[i]
            if more:
                reach[i] |= more
                changed = True
    return reach


@given(graphs())
def test_every_node_is_reachable_from_the_starts(
    graph: tuple[list[str], list[tuple[str, str]], list[str]],
) -> None:
    """Without fallbacks, every node is reachable from some start, and each unentered cycle has
    exactly one start: its first declared entry, else its first-declared node."""
    ids, pairs, declared = graph
    nodes = [NodeDefinition(id=i, uses="x") for i in ids]
    edges = [EdgeDefinition(source=s, target=t) for s, t in pairs]
    starts = start_nodes(nodes, edges, declared)
    reach = _reach(ids, pairs)
    covered = set(starts).union(*(reach[s] for s in starts))
    assert covered == set(ids)
    for entry, was_declared, members in cycle_entries(nodes, edges, declared):
        # a strongly connected part: every member reaches every other
        assert all(m in reach[o] for m in members for o in members)
        # nothing outside enters it
        assert not any(t in members and s not in members for s, t in pairs)
        inside = [s for s in starts if s in members]
        assert inside == [entry]
        wanted = next((d for d in declared if d in members), None)
        assert entry == (wanted if wanted is not None else members[0])
        assert was_declared == (wanted is not None)
