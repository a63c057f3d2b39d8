"""Routing, for ``Execution``: record a node's output and hand it on along the edges.

``Routing`` is a mixin that ``Execution`` (``_engine``) inherits: it evaluates edge conditions and
transforms, delivers tokens to their targets (buffering them at joins, one activation per token of
every incoming edge), propagates dead paths so that nodes nothing can reach any more are skipped,
and resolves a node's ``inputs`` mapping from outputs and state.
"""

from __future__ import annotations

from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from flowcraft._engine.plan import PlanEdge, PlanNode
from flowcraft._values import EdgeContext, NodeResult

if TYPE_CHECKING:
    from flowcraft._envelope.records import Envelope
    from flowcraft._events import EventBus

__all__ = ["Routing"]

_ANY_RAN = -1  # join-buffer marker: an "any" join already ran in this activation


class Routing:
    """Mixin of ``Execution``: route outputs along edges, skip dead paths."""

    # Set by Execution (instance attributes or class defaults there).
    nodes: dict[str, PlanNode]
    env: Envelope
    state: dict[str, Any]
    outputs: dict[str, Any]
    ready: deque[tuple[str, Any, bool]]
    skipped: set[str]
    bus: EventBus | None

    if TYPE_CHECKING:  # defined in Execution and Calls

        def event(self, type: str, node_id: str | None, payload: dict[str, Any]) -> None: ...
        def _record_error(self, node_id: str, exc: BaseException, attempt: int) -> None: ...

    def complete(self, node: PlanNode, output: Any, action: str | None) -> None:
        """Record a node's output and route along its edges."""
        self.outputs[node.id] = output
        if node.id in self.skipped:
            self.skipped.discard(node.id)
        if self.bus is not None:
            self.event("node:finish", node.id, {"output": output, "action": action})
        if not node.out:
            return
        routes = node.routes
        if routes is not None:  # nothing to evaluate: hand the output on, kill what is not taken
            route = routes.get(action) if action is not None else None
            targets, dead = route if route is not None else routes[None]
            for target in targets:
                self.ready.append((target, output, False))
            if dead:
                self._kill(dead)
            return
        try:
            self._route(node, output, action)
        except Exception as exc:  # a user condition/transform raised: the source node fails
            self._record_error(node.id, exc, 0)

    def _route(self, node: PlanNode, output: Any, action: str | None) -> None:
        ec: EdgeContext | None = None
        taken: list[PlanEdge] = []
        if action is not None:
            for edge in node.by_action.get(action, ()):
                if edge.condition is None:
                    taken.append(edge)
                    continue
                ec = ec or self._edge_context(output, action)
                if self._check(edge, ec):
                    taken.append(edge)
        if not taken:
            for edge in node.default:
                if edge.condition is None:
                    taken.append(edge)
                    continue
                ec = ec or self._edge_context(output, action)
                if self._check(edge, ec):
                    taken.append(edge)
        # A taken back edge means the loop goes on: the node's other exits are undecided, not dead.
        looping = False
        values: list[Any] = []
        for edge in taken:
            looping = looping or edge.back
            value = output
            if edge.transform is not None:
                ec = ec or self._edge_context(output, action)
                value = edge.transform(ec)
            values.append(value)
        for edge, value in zip(taken, values, strict=True):
            self._arrive(edge, True, value)
        if len(taken) < len(node.out) and not looping:
            chosen = set(taken)
            dead = [e for e in node.out if not e.back and e not in chosen]
            if dead:
                self._kill(dead)

    def _edge_context(self, output: Any, action: str | None) -> EdgeContext:
        return EdgeContext(
            input=output,
            result=NodeResult(output=output, action=action),
            context=MappingProxyType(self.state),
        )

    def _check(self, edge: PlanEdge, ec: EdgeContext) -> bool:
        assert edge.condition is not None
        ok = bool(edge.condition(ec))
        if self.bus is not None:
            self.event("edge:evaluate", edge.source, {"target": edge.target, "result": ok})
        return ok

    def _arrive(self, edge: PlanEdge, fired: bool, value: Any) -> bool:
        """Deliver a token along ``edge``; return True if the target was skipped."""
        target = self.nodes[edge.target]
        if edge.back:
            if fired:
                self.ready.append((target.id, value, False))
            return False
        if len(target.fwd_in) == 1:
            if fired:
                self.ready.append((target.id, value, False))
                return False
            return True
        buf = self.env.joins.get(target.id)
        if buf is None:
            buf = self.env.joins[target.id] = {}
        queue = buf.get(edge.index)
        if queue is None:
            queue = buf[edge.index] = [(fired, value)]
        else:
            queue.append((fired, value))
        if target.join_any:
            # Tokens queue per edge; the k-th token of every edge makes activation k. An "any"
            # join runs at the first fired token of each activation, once.
            ran = buf.get(_ANY_RAN)
            if ran is None:
                ran = buf[_ANY_RAN] = []
            activation = len(queue) - 1
            while len(ran) <= activation:
                ran.append((False, None))
            if fired and not ran[activation][0]:
                ran[activation] = (True, None)
                self.ready.append((target.id, value, False))
        if len(buf) - (_ANY_RAN in buf) < len(target.fwd_in):
            return False
        # Every incoming edge has delivered: consume one token per edge (one activation).
        arrived: dict[str, Any] = {}
        for e in target.fwd_in:
            tokens = buf[e.index]
            f, v = tokens.pop(0)
            if not tokens:
                del buf[e.index]
            if f:
                arrived[e.source] = v
        any_ran = False
        if target.join_any:
            ran = buf[_ANY_RAN]
            any_ran = ran.pop(0)[0]
            if not ran:
                del buf[_ANY_RAN]
        if not buf:
            del self.env.joins[target.id]
        if target.join_any:
            return not any_ran
        if arrived:
            self.ready.append((target.id, arrived, False))
            return False
        return True

    def _kill(self, edges: list[PlanEdge]) -> None:
        """Propagate dead paths: skip nodes none of whose incoming edges can fire any more."""
        stack = list(edges)
        while stack:
            edge = stack.pop()
            if self._arrive(edge, False, None):
                target = self.nodes[edge.target]
                if not self.skipped:
                    self.skipped = set()
                self.skipped.add(target.id)
                if self.bus is not None:
                    self.event("node:skipped", target.id, {"edge": [edge.source, edge.target]})
                stack.extend(e for e in target.out if not e.back)

    def _resolve_inputs(self, inputs: str | dict[str, str]) -> Any:
        if isinstance(inputs, str):
            return self._lookup(inputs)
        return {name: self._lookup(key) for name, key in inputs.items()}

    def _lookup(self, key: str) -> Any:
        if key in self.outputs:
            return self.outputs[key]
        if key.startswith("_outputs."):
            return self.outputs.get(key[9:])
        return self.state.get(key)
