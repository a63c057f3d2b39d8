"""Hypothesis strategies: random acyclic flows with waits, actions and joins."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from flowcraft import Flow, NodeContext, NodeResult, create_flow

ACTIONS = ("a", "b")


@dataclass
class FlowSpec:
    """A generated DAG: node kinds, task actions, edges (i < j), and per-wait decisions."""

    kinds: list[str]  # "task" | "wait"
    actions: list[str | None]
    edges: list[tuple[int, int, str | None]]
    decisions: dict[int, tuple[str, str | None]] = field(default_factory=dict)

    def name(self, i: int) -> str:
        return f"n{i}"

    def out(self, i: int) -> list[tuple[int, int, str | None]]:
        return [e for e in self.edges if e[0] == i]

    def inc(self, i: int) -> list[tuple[int, int, str | None]]:
        return [e for e in self.edges if e[1] == i]


def task_output(node_id: str, value: Any) -> str:
    return f"{node_id}({json.dumps(value, sort_keys=True)})"


def build(spec: FlowSpec, calls: dict[str, int]) -> Flow:
    """The flowcraft flow for a spec; task calls are counted in ``calls``."""

    def task(n: NodeContext) -> NodeResult[str]:
        calls[n.node_id] = calls.get(n.node_id, 0) + 1
        n.context.set(n.node_id, True)
        return NodeResult(output=task_output(n.node_id, n.input), action=n.params.get("action"))

    flow = create_flow("random")
    for i, kind in enumerate(spec.kinds):
        if kind == "wait":
            flow.wait(spec.name(i))
        else:
            flow.node(spec.name(i), task, params={"action": spec.actions[i]}, name="task")
    for src, dst, action in spec.edges:
        flow.edge(spec.name(src), spec.name(dst), action=action)
    return flow


def reference(spec: FlowSpec) -> tuple[dict[str, Any], set[str]]:
    """Obviously-correct semantics for acyclic specs: topological order, dead-path elimination."""
    outputs: dict[str, Any] = {}
    edge_state: dict[tuple[int, int], tuple[bool, Any]] = {}
    waits_reached: set[str] = set()
    for i, kind in enumerate(spec.kinds):
        nid = spec.name(i)
        inc = spec.inc(i)
        if inc:
            arrived = {
                spec.name(s): edge_state[(s, d)][1] for s, d, _ in inc if edge_state[(s, d)][0]
            }
            if not arrived:
                for s, d, _ in spec.out(i):
                    edge_state[(s, d)] = (False, None)
                continue
            value: Any = next(iter(arrived.values())) if len(inc) == 1 else arrived
        else:
            value = None
        if kind == "wait":
            waits_reached.add(nid)
            output, action = spec.decisions[i]
        else:
            output, action = task_output(nid, value), spec.actions[i]
        outputs[nid] = output
        out = spec.out(i)
        taken = [e for e in out if action is not None and e[2] == action]
        if not taken:
            taken = [e for e in out if e[2] is None]
        for e in out:
            edge_state[(e[0], e[1])] = (e in taken, output if e in taken else None)
    return outputs, waits_reached


@st.composite
def flow_specs(draw: st.DrawFn, max_nodes: int = 8) -> FlowSpec:
    n = draw(st.integers(min_value=2, max_value=max_nodes))
    kinds = [draw(st.sampled_from(["task", "task", "wait"])) for _ in range(n)]
    actions = [draw(st.sampled_from([None, *ACTIONS])) for _ in range(n)]
    edges: list[tuple[int, int, str | None]] = []
    for j in range(1, n):
        for i in range(j):
            if draw(st.integers(0, 2)) == 0:
                edges.append((i, j, draw(st.sampled_from([None, *ACTIONS]))))
    spec = FlowSpec(kinds, actions, edges)
    for i, kind in enumerate(kinds):
        if kind != "wait":
            continue
        labels = sorted({a for _, _, a in spec.out(i) if a is not None})
        has_default = any(a is None for _, _, a in spec.out(i)) or not labels
        options: list[str | None] = [*labels, *([None] if has_default else [])]
        spec.decisions[i] = (f"decided-{i}", draw(st.sampled_from(options)))
    return spec
