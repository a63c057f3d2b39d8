"""The one random-flow generator: Hypothesis strategies for flows, and the flows they describe.

``flow_specs`` draws a ``Spec``: nodes (tasks, waits, sleeps) and forward edges (``i < j``), plus
whatever ``features`` ask for. ``build`` turns a spec into a real ``Flow``. What a spec should do
is computed by ``tests.reference.Reference`` (for the features it knows), or by running the same
spec with the fast paths off.

Features (all off unless named):

* ``joins``: tasks join ``all`` or ``any``.
* ``retries``: tasks fail some attempts and retry up to ``max_retries``.
* ``failures``: tasks sometimes fail every attempt (with ``retries``: whatever ``retries`` draws).
* ``fallbacks``: a task that fails for good may have its own fallback task ``f{i}``.
* ``fallback_to``: a task that fails for good may fall back to a later task of the flow.
* ``loops``: tasks loop on themselves a bounded number of times along a back edge.
* ``timeouts``: waits may have a timeout (and a ``"timeout"`` edge).
* ``gates``: tasks may be gated by ``pause_before``.
* ``pausers``: tasks may pause the ``RunControl`` in ``CONTROL``.
* ``pauses``: tasks may call ``n.pause()``.
* ``styles``: tasks are sync returning a ``NodeResult``, sync returning a plain value, or async.
* ``quiet``: most tasks leave the state alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from typing import Any

from hypothesis import strategies as st

from flowcraft import Flow, NodeContext, NodeResult, RunControl, create_flow

ACTIONS = ("a", "b")
PAUSED_BY = "model-control"
#: The ``RunControl`` of the call in progress, if it has one: a ``pauser`` task pauses it.
CONTROL: list[RunControl] = []
#: Every feature ``flow_specs`` knows.
FEATURES = frozenset(
    {"joins", "retries", "failures", "fallbacks", "fallback_to", "loops", "timeouts", "gates"}
    | {"pausers", "pauses", "styles", "quiet"}
)


@dataclass(frozen=True)
class NodeSpec:
    kind: str  # "task" | "wait" | "sleep"
    action: str | None = None  # a task's result action (only a "result" style task has one)
    join: str = "all"
    fails: int = 0  # attempts that raise before one succeeds
    retries: int = 1  # max_retries
    fallback: tuple[int, int] | None = None  # (fails, retries) of the fallback task
    duration: int = 0  # a sleep's seconds
    loop: int = 0  # a task that loops on itself this many times (a bounded cycle)
    timeout: int | None = None  # a wait's timeout in seconds (it then routes along "timeout")
    gate: bool = False  # a task with pause_before=True
    pauser: bool = False  # a task that calls RunControl.pause() when it succeeds
    style: str = "result"  # "result" (sync, NodeResult) | "plain" (sync, value) | "async"
    pauses: bool = False  # a task that calls n.pause() (the resume supplies its output)
    writes: bool = True  # a task that records its attempt in the state
    fallback_to: int | None = None  # a later node of the flow that stands in when this fails

    def __repr__(self) -> str:
        """Only what differs from the defaults, so failing examples stay short."""
        args = [repr(self.kind)]
        for f in fields(self)[1:]:
            if getattr(self, f.name) != f.default:
                args.append(f"{f.name}={getattr(self, f.name)!r}")
        return f"NodeSpec({', '.join(args)})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # how hypothesis prints examples
        p.text(repr(self))


@dataclass(frozen=True)
class Spec:
    nodes: tuple[NodeSpec, ...]
    edges: tuple[tuple[int, int, str | None], ...]  # forward only: i < j

    def out(self, i: int) -> list[tuple[int, int, str | None]]:
        return [e for e in self.edges if e[0] == i]

    def inc(self, i: int) -> list[tuple[int, int, str | None]]:
        return [e for e in self.edges if e[1] == i]

    def const(self, i: int) -> bool:
        """An ``any`` join's input is whichever branch came first: its output ignores it."""
        return self.nodes[i].join == "any" and len(self.inc(i)) > 1


def name(i: int) -> str:
    return f"n{i}"


def fb_name(i: int) -> str:
    return f"f{i}"


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def task_output(node_id: str, value: Any, const: bool) -> str:
    return node_id if const else f"{node_id}<{canon(value)}>"


@st.composite
def node_specs(
    draw: st.DrawFn, kinds: tuple[str, ...], features: frozenset[str] = frozenset()
) -> NodeSpec:
    kind = draw(st.sampled_from(kinds))
    if kind == "wait":
        timeouts = [None, 30, 90] if "timeouts" in features else [None]
        return NodeSpec("wait", timeout=draw(st.sampled_from(timeouts)))
    if kind == "sleep":
        return NodeSpec("sleep", duration=draw(st.sampled_from([1, 30, 120])))
    on = features.__contains__
    loop = draw(st.sampled_from([0, 0, 0, 1, 2])) if on("loops") else 0
    retries = draw(st.integers(1, 3)) if on("retries") else 1
    fails = 0
    if not loop and on("retries"):
        fails = draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    elif not loop and on("failures"):
        fails = draw(st.sampled_from([0, 0, 0, 0, 0, 1]))
    fallback = None
    if on("fallbacks") and fails >= retries and draw(st.booleans()):
        fallback = (draw(st.integers(0, 1)), draw(st.integers(1, 2)))
    style = draw(st.sampled_from(["result", "plain", "async"])) if on("styles") else "result"
    return NodeSpec(
        "task",
        action=draw(st.sampled_from([None, *ACTIONS])) if style == "result" else None,
        join=draw(st.sampled_from(["all", "any"])) if on("joins") else "all",
        fails=fails,
        retries=retries,
        fallback=fallback,
        loop=loop,
        gate=draw(st.sampled_from([False, False, True])) if on("gates") else False,
        pauser=draw(st.booleans()) if on("pausers") else False,
        style=style,
        pauses=draw(st.sampled_from([False] * 5 + [True])) if on("pauses") else False,
        writes=draw(st.sampled_from([False] * 5 + [True])) if on("quiet") else True,
    )


@st.composite
def flow_specs(
    draw: st.DrawFn,
    *,
    min_nodes: int = 2,
    max_nodes: int = 6,
    kinds: tuple[str, ...] = ("task", "task", "task", "wait", "wait", "sleep"),
    labels: tuple[str | None, ...] = (None, None, *ACTIONS),
    edge_odds: int = 2,
    line: bool = False,
    features: frozenset[str] = frozenset(),
) -> Spec:
    """A random flow.

    Edges join each pair ``i < j`` with odds ``1/edge_odds``, labelled from ``labels``; with
    ``line``, the flow is mostly a straight line (an edge to the next node, sometimes a skip
    ahead: a fan-out and a join).
    """
    assert features <= FEATURES, features - FEATURES
    n = draw(st.integers(min_nodes, max_nodes))
    nodes = [draw(node_specs(kinds, features)) for _ in range(n)]
    edge_labels: dict[tuple[int, int], str | None] = {}
    if line:
        for i in range(n - 1):
            if draw(st.integers(0, 5)):  # usually a line to the next node
                edge_labels[(i, i + 1)] = draw(st.sampled_from([None, None, None, *ACTIONS]))
            if draw(st.integers(0, 2)) == 0 and i + 2 < n:  # sometimes a skip ahead
                edge_labels[(i, draw(st.integers(i + 2, n - 1)))] = draw(
                    st.sampled_from([None, "a"])
                )
    else:
        edge_labels = {
            (i, j): draw(st.sampled_from(labels))
            for j in range(1, n)
            for i in range(j)
            if draw(st.integers(0, edge_odds - 1)) == 0
        }
    for i, node in enumerate(nodes):  # most waits with a timeout get a "timeout" edge
        if node.timeout and i < n - 1 and draw(st.sampled_from([True, True, True, False])):
            edge_labels[(i, draw(st.integers(i + 1, n - 1)))] = "timeout"
    edges = tuple((i, j, label) for (i, j), label in sorted(edge_labels.items()))
    # A self edge is an incoming edge: a looping node must also be reachable from a start node.
    targets = {j for _, j, _ in edges}
    for i, node in enumerate(nodes):
        if node.loop and i not in targets:
            nodes[i] = replace(node, loop=0)
        if "fallback_to" in features and node.fails >= node.retries and not node.fallback:
            later = [j for j in range(i + 1, n) if nodes[j].kind == "task" and not nodes[j].gate]
            if later and draw(st.integers(0, 3)) == 0:
                nodes[i] = replace(nodes[i], fallback_to=draw(st.sampled_from(later)))
    return Spec(tuple(nodes), edges)


def decisions(spec: Spec) -> st.SearchStrategy[dict[int, tuple[Any, str | None]]]:
    """A decision ``(output, action)`` for every wait of ``spec``, each one it accepts."""
    choices: dict[int, st.SearchStrategy[tuple[Any, str | None]]] = {}
    for i, node in enumerate(spec.nodes):
        if node.kind != "wait":
            continue
        labels = sorted({a for _, _, a in spec.out(i) if a is not None})
        has_default = any(a is None for _, _, a in spec.out(i)) or not labels
        options: list[str | None] = [*labels, *([None] if has_default else [])]
        choices[i] = st.tuples(st.just(f"decided-{i}"), st.sampled_from(options))
    return st.fixed_dictionaries(choices)


def _run(n: NodeContext, calls: dict[str, int] | None) -> NodeResult[str] | str:
    """A task: count the call, record the attempt, fail, pause, loop, or give its output."""
    if calls is not None:
        calls[n.node_id] = calls.get(n.node_id, 0) + 1
    if n.params.get("writes", True):
        n.context.set(n.node_id, n.attempt)
    if n.attempt <= n.params["fails"]:
        raise RuntimeError(f"{n.node_id} fails attempt {n.attempt}")
    if n.params.get("pauser") and CONTROL:
        CONTROL[0].pause("model pause", by=PAUSED_BY)
    if n.params.get("pauses"):
        n.pause(f"{n.node_id} wants a look")
    output = task_output(n.node_id, n.input, n.params["const"])
    if n.params.get("loop"):
        rounds = n.context.get(f"{n.node_id}#loop", 0) + 1
        n.context.set(f"{n.node_id}#loop", rounds)
        if rounds <= n.params["loop"]:
            return NodeResult(output=output, action="again")  # along the self edge
    if n.params.get("style", "result") == "result":
        return NodeResult(output=output, action=n.params["action"])
    return output


def build(spec: Spec, calls: dict[str, int] | None = None) -> Flow:
    """The flowcraft flow for ``spec``; with ``calls``, every task call is counted in it."""

    def task(n: NodeContext) -> NodeResult[str] | str:
        return _run(n, calls)

    async def async_task(n: NodeContext) -> NodeResult[str] | str:
        return _run(n, calls)  # never awaits: a node that can run inline

    flow = create_flow("model")
    for i, node in enumerate(spec.nodes):
        if node.kind == "wait":
            flow.wait(name(i), timeout=node.timeout, on_timeout="timeout")
        elif node.kind == "sleep":
            flow.sleep(name(i), duration=node.duration)
        else:
            params = {
                "action": node.action,
                "fails": node.fails,
                "const": spec.const(i),
                "loop": node.loop,
                "pauser": node.pauser,
                "pauses": node.pauses,
                "writes": node.writes,
                "style": node.style,
            }
            fallback = fb_name(i) if node.fallback else None
            if node.fallback_to is not None:
                fallback = name(node.fallback_to)
            flow.node(
                name(i),
                async_task if node.style == "async" else task,
                params=params,
                max_retries=node.retries,
                join=node.join,  # type: ignore[arg-type]
                fallback=fallback,
                pause_before=node.gate,
                name="spec.async_task" if node.style == "async" else "spec.task",
            )
            if node.fallback:
                fb_fails, fb_retries = node.fallback
                fb_params = {"action": None, "fails": fb_fails, "const": spec.const(i)}
                flow.node(
                    fb_name(i), task, params=fb_params, max_retries=fb_retries, name="spec.task"
                )
    for src, dst, action in spec.edges:
        flow.edge(name(src), name(dst), action=action)
    for i, node in enumerate(spec.nodes):
        if node.loop:
            flow.edge(name(i), name(i), action="again")  # closes a cycle: a back edge
    return flow
