"""``lint_blueprint``: what a blueprint allows but almost certainly does not mean."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import msgspec

from flowcraft._errors import InvalidBlueprintError
from flowcraft._flow.blueprint import Blueprint
from flowcraft._flow.graph import back_edges, cycle_entries, declared_entries, start_nodes
from flowcraft._flow.parts import BUILTIN_USES, CALLABLE_PREFIX, EdgeDefinition

__all__ = ["LintIssue", "LintSeverity", "lint_blueprint"]

LintSeverity = Literal["error", "warning"]


# Built-ins that never choose an action: labelled edges out of them can never be taken.
_NO_ACTIONS = frozenset({"sleep", "batch-scatter", "batch-gather"})


_LOOP_ACTIONS = frozenset({"continue", "break"})


class LintIssue(msgspec.Struct, frozen=True, kw_only=True):
    """One problem ``lint_blueprint`` found.

    ``code`` is stable (``"FC001"``...) and ``rule`` is its readable name
    (``"unreachable-node"``); ``str(issue)`` reads ``"FC001 unreachable-node [x]: ..."``.
    """

    code: str
    rule: str
    node_id: str
    message: str
    severity: LintSeverity

    def __str__(self) -> str:
        return f"{self.code} {self.rule} [{self.node_id}]: {self.message}"


def lint_blueprint(
    blueprint: Blueprint, registry: Mapping[str, object] | None = None
) -> list[LintIssue]:
    """Find problems a valid blueprint can still have, without running it.

    Codes (stable; ``rule`` is the readable name):

    - ``FC001 unreachable-node``: no path from a start node (nor as a reachable node's fallback).
    - ``FC002 missing-implementation``: a ``uses``, schema, worker or ``@callable`` key is not in
      ``registry`` or is not callable (only checked when ``registry`` is given).
    - ``FC003 wait-without-default``: every outgoing edge of a wait is labelled, so a resume
      without one of those actions is refused.
    - ``FC004 join-never-fires``: an ``"all"`` join with a predecessor that can never run.
    - ``FC005 dead-action``: an action label on an edge whose source never chooses that action
      (sleeps and batch nodes choose none; loop controllers only ``continue`` and ``break``).
    - ``FC006 invalid-expression``: a condition, transform or loop condition that does not compile.
    - ``FC007 unrouted-timeout``: a wait with a timeout but no edge for its ``on_timeout``
      action and no unlabelled edge: when the timeout passes, that branch just ends.
    - ``FC008 implicit-cycle-entry``: a cycle nothing enters starts at its first-declared node
      because no ``cycleEntryPoints`` names one; the message names the node chosen. Declare it
      with ``Flow.set_cycle_entry_point(id)`` to make the choice explicit.

    Returns:
        The issues in a stable order: by code, then by node definition order.
    """
    issues: list[LintIssue] = []
    order = {node.id: i for i, node in enumerate(blueprint.nodes)}
    out_edges: dict[str, list[EdgeDefinition]] = {n.id: [] for n in blueprint.nodes}
    for edge in blueprint.edges:
        if edge.source in out_edges:
            out_edges[edge.source].append(edge)

    reached, fallback_only = _reachable(blueprint, out_edges)
    issues.extend(_unreachable(blueprint, reached, fallback_only))
    if registry is not None:
        issues.extend(_missing(blueprint, registry))
    issues.extend(_waits(blueprint, out_edges))
    issues.extend(_joins(blueprint, reached))
    issues.extend(_dead_actions(blueprint, out_edges))
    issues.extend(_expressions(blueprint))
    issues.extend(_cycle_entries(blueprint))
    issues.sort(key=lambda issue: (issue.code, order.get(issue.node_id, len(order))))
    return issues


def _issue(code: str, rule: str, node_id: str, message: str, severity: LintSeverity) -> LintIssue:
    return LintIssue(code=code, rule=rule, node_id=node_id, message=message, severity=severity)


def _reachable(
    blueprint: Blueprint, out_edges: Mapping[str, list[EdgeDefinition]]
) -> tuple[set[str], set[str]]:
    """Nodes that run along edges from a start, and nodes that only ever run as a fallback.

    A fallback stands in for the failed node and routing continues along the failed node's
    edges, so a fallback's own edges lead somewhere only if it is also reached normally.
    """
    nodes = blueprint.node_map
    reached: set[str] = set()
    stack = start_nodes(blueprint.nodes, blueprint.edges, declared_entries(blueprint.metadata))
    while stack:
        nid = stack.pop()
        if nid in reached:
            continue
        reached.add(nid)
        stack.extend(e.target for e in out_edges.get(nid, ()) if e.target not in reached)
    fallbacks = {nodes[n].settings.fallback for n in reached} - {None}
    fallback_only = {f for f in fallbacks if f is not None and f not in reached}
    return reached, fallback_only


def _unreachable(
    blueprint: Blueprint, reached: set[str], fallback_only: set[str]
) -> Iterable[LintIssue]:
    preds: dict[str, list[str]] = {}
    for edge in blueprint.edges:
        preds.setdefault(edge.target, []).append(edge.source)
    for node in blueprint.nodes:
        if node.id in reached or node.id in fallback_only:
            continue
        via = [p for p in preds.get(node.id, ()) if p in fallback_only]
        hint = (
            f" Its edges come from {', '.join(map(repr, via))}, which only runs as a fallback; "
            "a fallback's own edges are never taken (routing continues along the failed node's)."
            if via
            else " Connect it from a reachable node, or remove it."
        )
        yield _issue(
            "FC001",
            "unreachable-node",
            node.id,
            f"node {node.id!r} can never run: no path leads to it from a start node.{hint}",
            "warning",
        )


def _missing(blueprint: Blueprint, registry: Mapping[str, object]) -> Iterable[LintIssue]:
    def check(node_id: str, key: str, what: str) -> LintIssue | None:
        if key not in registry:
            problem = "is not in the registry"
        elif not callable(registry[key]):
            problem = f"is registered as a {type(registry[key]).__name__}, not a callable"
        else:
            return None
        return _issue(
            "FC002",
            "missing-implementation",
            node_id,
            f"{what} {key!r} of node {node_id!r} {problem}; register it under that key.",
            "error",
        )

    found: list[LintIssue | None] = []
    for node in blueprint.nodes:
        params = node.params or {}
        if node.uses not in BUILTIN_USES:
            found.append(check(node.id, node.uses, "implementation"))
        elif node.uses == "wait" and params.get("schema") is not None:
            found.append(check(node.id, str(params["schema"]), "schema"))
        elif node.uses == "batch-scatter" and isinstance(params.get("workerUsesKey"), str):
            found.append(check(node.id, params["workerUsesKey"], "batch worker"))
    for edge in blueprint.edges:
        for what, text in (("condition", edge.condition), ("transform", edge.transform)):
            if text is not None and text.startswith(CALLABLE_PREFIX):
                found.append(
                    check(
                        edge.source, text[len(CALLABLE_PREFIX) :], f"edge -> {edge.target!r} {what}"
                    )
                )
    return [issue for issue in found if issue is not None]


def _waits(
    blueprint: Blueprint, out_edges: Mapping[str, list[EdgeDefinition]]
) -> Iterable[LintIssue]:
    for node in blueprint.nodes:
        if node.uses != "wait":
            continue
        edges = out_edges[node.id]
        actions = sorted({e.action for e in edges if e.action is not None})
        has_default = any(e.action is None for e in edges)
        if edges and not has_default:
            yield _issue(
                "FC003",
                "wait-without-default",
                node.id,
                f"wait {node.id!r} only has labelled edges ({', '.join(map(repr, actions))}): "
                "a resume without one of these actions is refused. Add an unlabelled edge if "
                "a plain resume should continue.",
                "warning",
            )
        params = node.params or {}
        if params.get("timeout") is not None and edges and not has_default:
            on_timeout = str(params.get("onTimeout", "timeout"))
            if on_timeout not in actions:
                yield _issue(
                    "FC007",
                    "unrouted-timeout",
                    node.id,
                    f"wait {node.id!r} has a timeout but no edge for its timeout action "
                    f"{on_timeout!r}: when it expires, the branch ends there. Add an edge with "
                    f"action={on_timeout!r}.",
                    "warning",
                )


def _joins(blueprint: Blueprint, reached: set[str]) -> Iterable[LintIssue]:
    back = back_edges(blueprint.nodes, blueprint.edges, declared_entries(blueprint.metadata))
    forward_preds: dict[str, list[str]] = {}
    for index, edge in enumerate(blueprint.edges):
        if index not in back:
            preds = forward_preds.setdefault(edge.target, [])
            if edge.source not in preds:
                preds.append(edge.source)
    for node in blueprint.nodes:
        if node.settings.join_strategy != "all" or node.id not in reached:
            continue
        dead = [p for p in forward_preds.get(node.id, ()) if p not in reached]
        if dead:
            yield _issue(
                "FC004",
                "join-never-fires",
                node.id,
                f"join {node.id!r} waits for all of its predecessors, but "
                f"{', '.join(map(repr, dead))} can never run, so it never fires. Make the "
                "predecessor reachable, remove the edge, or use join='any'.",
                "error",
            )


def _dead_actions(
    blueprint: Blueprint, out_edges: Mapping[str, list[EdgeDefinition]]
) -> Iterable[LintIssue]:
    for node in blueprint.nodes:
        if node.uses in _NO_ACTIONS:
            allowed: frozenset[str] = frozenset()
        elif node.uses == "loop-controller":
            allowed = _LOOP_ACTIONS
        else:
            continue
        for edge in out_edges[node.id]:
            if edge.action is not None and edge.action not in allowed:
                yield _issue(
                    "FC005",
                    "dead-action",
                    node.id,
                    f"edge {node.id!r} -> {edge.target!r} needs action {edge.action!r}, which "
                    f"a {node.uses!r} node never chooses; the edge is never taken.",
                    "warning",
                )


def _expressions(blueprint: Blueprint) -> Iterable[LintIssue]:
    from flowcraft._flow.expr import compile_expression

    def check(node_id: str, text: object, where: str) -> LintIssue | None:
        if not isinstance(text, str) or text.startswith(CALLABLE_PREFIX):
            return None
        try:
            compile_expression(text, where=where)
        except InvalidBlueprintError as exc:
            return _issue("FC006", "invalid-expression", node_id, str(exc), "error")
        return None

    found: list[LintIssue | None] = []
    for node in blueprint.nodes:
        if node.uses == "loop-controller":
            condition = (node.params or {}).get("condition")
            found.append(check(node.id, condition, f"loop {node.id!r} condition"))
    for edge in blueprint.edges:
        where = f"edge {edge.source!r} -> {edge.target!r}"
        found.append(check(edge.source, edge.condition, f"{where} condition"))
        found.append(check(edge.source, edge.transform, f"{where} transform"))
    return [issue for issue in found if issue is not None]


def _cycle_entries(blueprint: Blueprint) -> Iterable[LintIssue]:
    declared = declared_entries(blueprint.metadata)
    for entry, was_declared, members in cycle_entries(blueprint.nodes, blueprint.edges, declared):
        if was_declared:
            continue
        part = ", ".join(map(repr, members))
        yield _issue(
            "FC008",
            "implicit-cycle-entry",
            entry,
            f"the cycle of {part} has no edge entering it, so a run starts it at its "
            f"first-declared node {entry!r}. Call .set_cycle_entry_point({entry!r}) (or set "
            "metadata.cycleEntryPoints) to make this explicit, or add an entry node.",
            "warning",
        )
