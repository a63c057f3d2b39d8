"""A compiled, cached index of a blueprint: resolved implementations, routing tables, back-edges."""

from __future__ import annotations

import dis
import inspect
import struct
import types
import typing
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec

from flowcraft._envelope.records import WaitState
from flowcraft._errors import InvalidBlueprintError, MissingImplementationError
from flowcraft._flow.blueprint import Blueprint
from flowcraft._flow.cron import CronSchedule
from flowcraft._flow.durations import json_duration, sleep_seconds
from flowcraft._flow.graph import back_edges, declared_entries, start_nodes
from flowcraft._flow.parts import BUILTIN_USES, CALLABLE_PREFIX, EdgeDefinition, NodeDefinition
from flowcraft._node import BaseNode, NodeContext
from flowcraft._values import EdgeContext, NodeResult

__all__ = [
    "Plan",
    "PlanEdge",
    "PlanNode",
    "Quorum",
    "compile_plan",
    "describe_changes",
    "shape_of",
]

Registry = Mapping[str, object]


@dataclass(slots=True, eq=False)
class PlanEdge:
    """One edge, with its condition/transform resolved to callables."""

    index: int
    source: str
    target: str
    action: str | None
    condition: Callable[[EdgeContext], Any] | None
    transform: Callable[[EdgeContext], Any] | None
    back: bool = False
    definition: EdgeDefinition | None = None


@dataclass(slots=True, eq=False)
class PlanNode:
    """One node, ready to execute: everything the engine loop needs, computed once."""

    id: str
    kind: str  # "task" | "wait" | "sleep"
    definition: NodeDefinition
    call: Callable[..., Any] | None = None
    is_async: bool = False
    params: Mapping[str, Any] = field(default_factory=dict)
    max_retries: int = 1
    retry_delay: float = 0.0
    retry_backoff: float = 1.0
    timeout: float | None = None
    fallback: str | None = None
    join_any: bool = False
    pause_before: bool = False
    on_error: str | None = None  # the action an exhausted failure routes along
    out: list[PlanEdge] = field(default_factory=list)
    by_action: dict[str, list[PlanEdge]] = field(default_factory=dict)
    default: list[PlanEdge] = field(default_factory=list)
    fwd_in: list[PlanEdge] = field(default_factory=list)
    # wait / sleep
    wait_timeout: float | None = None
    on_timeout: str = "timeout"
    schema: Any = None
    description: str | None = None
    quorum: Quorum | None = None  # a wait with Approvals
    sleep: float | datetime | CronSchedule | None = None
    cls: type[BaseNode] | None = None  # a class node: prep / exec (retried) / post
    subflow: str | None = None  # the child blueprint id of a subflow node
    sub_inputs: dict[str, str] | None = None
    sub_outputs: dict[str, str] | None = None
    worker: PlanNode | None = None  # batch-scatter: the per-item worker
    chunk_size: int | None = None
    output_key: str | None = None  # batch-gather: the state key receiving the results
    # Fast-path flags, computed once in compile_plan:
    plain: bool = False  # task with no inputs/gate/retries/timeout: call it and route
    inline: bool = False  # cannot suspend (a built-in, an async def without awaits): no task
    direct: tuple[str, ...] | None = None  # every edge unlabelled, unconditioned, to 1-input nodes
    # Every edge unconditioned, untransformed, forward, to a 1-input node: by action (None for
    # the unlabelled edges), the targets that get the output and the edges that die.
    routes: dict[str | None, tuple[tuple[str, ...], list[PlanEdge]]] | None = None
    line: bool = False  # plain, and its output goes on to at most one node: see line.py
    # A wait without schema: the actions a resume may take that lead on in a straight line,
    # with where they lead and the nodes their dead exits skip (see _line.quick_resume).
    quick: dict[str | None, tuple[tuple[str, ...], list[str]]] | None = None
    builtin_pause: bool = False  # a wait or sleep taking its input as is: it pauses on arrival


@dataclass(slots=True, frozen=True)
class Quorum:
    """A wait's ``Approvals``, resolved: who may approve and how many approvals decide."""

    required: int
    approvers: frozenset[str] | None  # None: anyone (or ``check`` decides)
    check: Callable[[str, Mapping[str, Any]], Any] | None
    distinct: bool
    forbid_initiator: bool
    initiator_key: str
    approve: str


@dataclass(slots=True, eq=False)
class Plan:
    """The compiled blueprint the runtime executes."""

    blueprint: Blueprint
    nodes: dict[str, PlanNode]
    starts: list[str]
    digest: str
    start_items: tuple[tuple[str, None, bool], ...] = ()
    short_digest: str = ""  # what contexts store: 64 bits tell blueprints apart
    registry: Mapping[str, object] = field(default_factory=dict)
    terminals: tuple[str, ...] = ()
    state_hints: dict[str, Any] | None = None  # typed state: key -> type
    state_type: type | None = None  # the declared state type (metadata.stateType)
    shape: bytes = b""  # per node: 2-byte hash of its id, 2-byte hash of its definition
    version: str | None = None


def _quick_routes(
    nodes: dict[str, PlanNode], node: PlanNode
) -> dict[str | None, tuple[tuple[str, ...], list[str]]]:
    """For a wait: each action resume validation accepts whose route is a straight line.

    The value is (the one target or none, the sorted ids of the nodes the other exits kill).
    An action is left out when its dead exits reach a node with several inputs: a join keeps
    tokens, which is the engine's business.
    """
    assert node.routes is not None
    allowed = [*node.by_action, *([None] if node.default or not node.by_action else [])]
    quick: dict[str | None, tuple[tuple[str, ...], list[str]]] = {}
    for action in allowed:
        targets, dead = node.routes[action]
        if len(targets) > 1:
            continue
        skipped: set[str] = set()
        stack = list(dead)
        while stack:
            target = nodes[stack.pop().target]
            if len(target.fwd_in) != 1:
                break
            skipped.add(target.id)
            stack.extend(e for e in target.out if not e.back)
        else:
            quick[action] = (targets, sorted(skipped))
    return quick


def never_suspends(fn: object) -> bool:
    """True for an ``async def`` function whose body has no ``await``, ``async for/with``.

    Such a coroutine runs to its end at the first ``send``, like a sync function, so the engine
    can run it without a task: it never yields to the event loop, so no other code runs while
    it does (the engine still gives it its own copy of the context variables, as a task would).
    Decided from the bytecode: every suspension point of a coroutine frame is a
    ``YIELD_VALUE`` in its own code object.
    """
    if isinstance(fn, types.MethodType):
        fn = fn.__func__
    if not isinstance(fn, types.FunctionType):
        return False
    code = fn.__code__
    if not code.co_flags & inspect.CO_COROUTINE or _YIELD_VALUE is None:
        return False
    return all(ins.opcode != _YIELD_VALUE for ins in dis.get_instructions(code))


_YIELD_VALUE = dis.opmap.get("YIELD_VALUE")  # absent in some future CPython: then never inline


def _is_async(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    )


def _gather(output_key: str | None) -> Callable[[NodeContext], Any]:
    """The built-in ``batch-gather``: pass the results on and store them under ``outputKey``."""

    def gather(node: NodeContext) -> Any:
        if output_key is not None:
            node.context.set(output_key, node.input)
        return node.input

    return gather


def _str_map(value: object, flow_id: str, node_id: str, what: str) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return dict(value)
    raise InvalidBlueprintError(
        f"flow {flow_id!r}: subflow {node_id!r} {what} must map names to names, got {value!r}"
    )


def compile_plan(
    bp: Blueprint, registry: Registry, blueprints: Mapping[str, object] | None = None
) -> Plan:
    """Resolve every node and edge of ``bp`` against ``registry``; raise for what is missing."""
    from flowcraft._flow.expr import compile_expression  # the parser is loaded on first use

    nodes = {d.id: _compile_node(bp, d, registry, blueprints, compile_expression) for d in bp.nodes}
    for index, e in enumerate(bp.edges):
        where = f"flow {bp.id!r}: edge {e.source!r} -> {e.target!r}"
        edge = PlanEdge(
            index=index,
            source=e.source,
            target=e.target,
            action=e.action,
            condition=_edge_fn(bp, e.condition, registry, f"{where} condition", compile_expression),
            transform=_edge_fn(bp, e.transform, registry, f"{where} transform", compile_expression),
            definition=e,
        )
        src = nodes[e.source]
        src.out.append(edge)
        if e.action is None:
            src.default.append(edge)
        else:
            src.by_action.setdefault(e.action, []).append(edge)

    declared = declared_entries(bp.metadata)
    starts = start_nodes(bp.nodes, bp.edges, declared)
    back = back_edges(bp.nodes, bp.edges, declared)
    for node in nodes.values():
        for edge in node.out:
            edge.back = edge.index in back
    for node in nodes.values():
        for edge in node.out:
            if not edge.back:
                nodes[edge.target].fwd_in.append(edge)
    _plan_shortcuts(nodes)
    meta = bp.metadata or {}
    return Plan(
        blueprint=bp,
        nodes=nodes,
        starts=starts,
        digest=bp.digest,
        start_items=tuple((s, None, False) for s in starts),
        short_digest=bp.digest[:16],
        registry=registry,
        terminals=tuple(n.id for n in nodes.values() if not n.out),
        state_hints=_state_hints(bp, registry),
        state_type=_state_type(bp, registry),
        shape=shape_of(bp),
        version=str(meta["version"]) if meta.get("version") is not None else None,
    )


def _compile_node(
    bp: Blueprint,
    d: NodeDefinition,
    registry: Registry,
    blueprints: Mapping[str, object] | None,
    compile_expression: Callable[..., Callable[[Mapping[str, Any]], Any]],
) -> PlanNode:
    """One node of the plan: its settings, and what it runs (by ``uses``)."""
    cfg = d.settings
    node = PlanNode(
        id=d.id,
        kind="task",
        definition=d,
        params=d.params or {},
        max_retries=cfg.max_retries,
        retry_delay=cfg.retry_delay / 1000.0,
        retry_backoff=cfg.retry_backoff,
        timeout=None if cfg.timeout is None else cfg.timeout / 1000.0,
        fallback=cfg.fallback,
        join_any=cfg.join_strategy == "any",
        pause_before=cfg.pause_before,
        on_error=cfg.on_error,
    )
    if d.uses == "wait":
        _compile_wait(bp, d, node, registry)
    elif d.uses == "sleep":
        node.kind = "sleep"
        node.sleep = sleep_seconds(d.params, f"flow {bp.id!r}: sleep {d.id!r}")
    elif d.uses in ("subflow", "SubflowNode"):
        _compile_subflow(bp, d, node, blueprints)
    elif d.uses == "batch-scatter":
        _compile_batch(bp, d, node, registry)
    elif d.uses == "batch-gather":
        key = (d.params or {}).get("outputKey")
        node.output_key = key if isinstance(key, str) else None
        node.call = _gather(node.output_key)
    elif d.uses == "loop-controller":
        source = (d.params or {}).get("condition")
        if not isinstance(source, str):
            raise InvalidBlueprintError(
                f"flow {bp.id!r}: loop controller {d.id!r} needs a 'condition' expression "
                "string (or a registered callable reference) in its params."
            )
        where = f"flow {bp.id!r}: loop {d.id!r} condition"
        cond = _edge_fn(bp, source, registry, where, compile_expression)
        assert cond is not None
        node.call = loop_controller(cond)
    elif d.uses in BUILTIN_USES:
        raise InvalidBlueprintError(
            f"flow {bp.id!r}: node {d.id!r} uses the built-in {d.uses!r}, which this version "
            "of flowcraft does not run yet. Replace it with a task node."
        )
    else:
        impl = _lookup(bp, d, d.uses, registry)
        if not callable(impl):
            raise InvalidBlueprintError(
                f"flow {bp.id!r}: node {d.id!r}: registry entry {d.uses!r} is not callable "
                f"({type(impl).__name__}); register a function taking a NodeContext."
            )
        if isinstance(impl, type) and issubclass(impl, BaseNode):
            node.cls = impl
        node.call = impl
        node.is_async = _is_async(impl)
    return node


def _compile_wait(bp: Blueprint, d: NodeDefinition, node: PlanNode, registry: Registry) -> None:
    """A wait node: its deadline, timeout action, description, schema and quorum."""
    node.kind = "wait"
    params = d.params or {}
    if params.get("timeout") is not None:
        node.wait_timeout = json_duration(params["timeout"], f"wait {d.id!r} timeout")
    node.on_timeout = str(params.get("onTimeout", "timeout"))
    node.description = params.get("description")
    if params.get("schema") is not None:
        node.schema = _lookup(bp, d, str(params["schema"]), registry)
    if params.get("approvals") is not None:
        node.quorum = _quorum(bp, d, params["approvals"], registry)


def _compile_subflow(
    bp: Blueprint, d: NodeDefinition, node: PlanNode, blueprints: Mapping[str, object] | None
) -> None:
    """A subflow node: which child blueprint it runs, and how state goes in and out."""
    params = d.params or {}
    child = params.get("blueprintId")
    if not isinstance(child, str) or (blueprints is not None and child not in blueprints):
        known = ", ".join(map(repr, blueprints or ())) or "none"
        raise InvalidBlueprintError(
            f"flow {bp.id!r}: subflow {d.id!r} needs blueprint {child!r}, which the "
            f"runtime does not have (known: {known}). Pass FlowRuntime(blueprints=...)."
        )
    node.kind = "subflow"
    node.subflow = child
    node.sub_inputs = _str_map(params.get("inputs"), bp.id, d.id, "inputs")
    node.sub_outputs = _str_map(params.get("outputs"), bp.id, d.id, "outputs")


def _compile_batch(bp: Blueprint, d: NodeDefinition, node: PlanNode, registry: Registry) -> None:
    """A batch node: its worker runs once per item, with the node's retries and timeout each."""
    params = d.params or {}
    key = params.get("workerUsesKey")
    if not isinstance(key, str):
        raise InvalidBlueprintError(
            f"flow {bp.id!r}: batch {d.id!r} needs params.workerUsesKey naming its worker"
        )
    worker = _lookup(bp, d, key, registry)
    if not callable(worker):
        raise InvalidBlueprintError(
            f"flow {bp.id!r}: batch {d.id!r} worker {key!r} is not callable"
        )
    node.kind = "scatter"
    node.chunk_size = params.get("chunkSize") or None
    node.worker = PlanNode(
        id=f"{d.id}/worker",
        kind="task",
        definition=d,
        call=worker,
        cls=worker if isinstance(worker, type) and issubclass(worker, BaseNode) else None,
        is_async=_is_async(worker),
        params=params,
        max_retries=node.max_retries,
        retry_delay=node.retry_delay,
        retry_backoff=node.retry_backoff,
        timeout=node.timeout,
    )
    node.max_retries, node.timeout = 1, None  # retries and timeouts apply per item


def _plan_shortcuts(nodes: dict[str, PlanNode]) -> None:
    """Mark what the shortcuts may take: the hot path, inline nodes, precomputed routes, the line.

    Each flag only lets a shortcut skip work its general twin would find to be empty (no
    middleware-free retries, no conditions to evaluate, no joins to buffer); the suite runs with
    and without them (``Config.fast``).
    """
    for node in nodes.values():
        d = node.definition
        node.plain = (
            node.kind == "task"
            and node.cls is None
            and d.inputs is None
            and not node.pause_before
            and node.max_retries == 1
            and node.timeout is None
        )
        # Nodes sure never to suspend run without a task: built-ins, and plain nodes whose
        # function is an ``async def`` without awaits (a sync function may return a coroutine).
        # (A fallback may suspend, so a node with one is not inline.)
        node.inline = node.kind in ("wait", "sleep") or (
            node.plain and node.fallback is None and never_suspends(node.call)
        )
        node.builtin_pause = node.kind in ("wait", "sleep") and d.inputs is None
        if all(
            e.condition is None
            and e.transform is None
            and not e.back
            and len(nodes[e.target].fwd_in) == 1
            for e in node.out
        ):
            node.routes = {
                action: (tuple(e.target for e in taken), [e for e in node.out if e not in taken])
                for action, taken in [(None, node.default), *node.by_action.items()]
            }
            if node.kind == "wait" and node.schema is None and node.quorum is None:
                node.quick = _quick_routes(nodes, node)
            if not node.by_action:
                node.direct = tuple(e.target for e in node.out)
                # A plain node leading to at most one node: the straight line runs it (line.py).
                node.line = node.plain and len(node.direct) <= 1


def _quorum(bp: Blueprint, d: NodeDefinition, spec: object, registry: Registry) -> Quorum:
    """Resolve a wait's ``approvals`` params (refusing a malformed one with its flow and node)."""
    where = f"flow {bp.id!r}: wait {d.id!r} approvals"
    if not isinstance(spec, Mapping):
        raise InvalidBlueprintError(f"{where} must be an object, got {type(spec).__name__}")
    required = spec.get("required", 1)
    if not isinstance(required, int) or isinstance(required, bool) or required < 1:
        raise InvalidBlueprintError(f"{where}: required must be an integer >= 1, got {required!r}")
    who = spec.get("approvers")
    approvers: frozenset[str] | None = None
    check: Callable[[str, Mapping[str, Any]], Any] | None = None
    if isinstance(who, str):
        found = _lookup(bp, d, who, registry)
        if not callable(found):
            raise InvalidBlueprintError(f"{where}: approvers {who!r} is not callable")
        check = found
    elif isinstance(who, list) and all(isinstance(a, str) for a in who):
        approvers = frozenset(who)
    elif who is not None:
        raise InvalidBlueprintError(f"{where}: approvers must be a list of ids or a callable")
    return Quorum(
        required=required,
        approvers=approvers,
        check=check,
        distinct=spec.get("distinct", True) is not False,
        forbid_initiator=spec.get("forbidInitiator", False) is True,
        initiator_key=str(spec.get("initiatorKey", "initiator")),
        approve=str(spec.get("approve", "approve")),
    )


def _state_type(bp: Blueprint, registry: Registry) -> type | None:
    key = (bp.metadata or {}).get("stateType")
    found = registry.get(key) if isinstance(key, str) else None
    return found if isinstance(found, type) else None


def _state_hints(bp: Blueprint, registry: Registry) -> dict[str, Any] | None:
    """The type hints of the flow's declared state type (``metadata.stateType``), if any."""
    meta = bp.metadata or {}
    if not isinstance(meta.get("stateType"), str):
        return None
    state_type = registry.get(meta["stateType"])
    if not isinstance(state_type, type):
        raise MissingImplementationError(bp.id, "(state type)", meta["stateType"])
    return typing.get_type_hints(state_type, include_extras=True)


_node_json = msgspec.json.Encoder(order="sorted")


def shape_of(bp: Blueprint) -> bytes:
    """A compact fingerprint of every node (with its outgoing edges), to name what changed."""
    out: dict[str, list[EdgeDefinition]] = {}
    for e in bp.edges:
        out.setdefault(e.source, []).append(e)
    parts = []
    for n in bp.nodes:
        definition = _node_json.encode((n, out.get(n.id, [])))
        parts.append(
            struct.pack(">HH", zlib.crc32(n.id.encode()) & 0xFFFF, zlib.crc32(definition) & 0xFFFF)
        )
    return b"".join(parts)


def describe_changes(old: bytes, bp: Blueprint) -> str:
    """Which nodes were added, changed or removed since the blueprint that wrote ``old``."""
    if not old or len(old) % 4:
        return ""
    before = dict(struct.iter_unpack(">HH", old))
    now = dict(struct.iter_unpack(">HH", shape_of(bp)))
    ids = {zlib.crc32(n.id.encode()) & 0xFFFF: n.id for n in bp.nodes}
    added = [ids[h] for h in now if h not in before]
    changed = [ids[h] for h in now if h in before and before[h] != now[h]]
    removed = sum(1 for h in before if h not in now)
    parts = []
    if added:
        parts.append("added " + ", ".join(map(repr, added)))
    if changed:
        parts.append("changed " + ", ".join(map(repr, changed)))
    if removed:
        parts.append(f"{removed} node(s) removed")
    return "; ".join(parts) or "edges or settings changed"


def _lookup(bp: Blueprint, d: NodeDefinition, key: str, registry: Registry) -> object:
    try:
        return registry[key]
    except KeyError:
        raise MissingImplementationError(bp.id, d.id, key) from None


def _edge_fn(
    bp: Blueprint,
    source: str | None,
    registry: Registry,
    where: str,
    compile_expression: Callable[..., Callable[[Mapping[str, Any]], Any]],
) -> Callable[[EdgeContext], Any] | None:
    if source is None:
        return None
    if source.startswith(CALLABLE_PREFIX):
        key = source[len(CALLABLE_PREFIX) :]
        fn = registry.get(key)
        if not callable(fn):
            raise MissingImplementationError(bp.id, where, key)
        return fn
    expr = compile_expression(source, where=where)

    def evaluate(ec: EdgeContext) -> Any:
        return expr({"context": ec.context, "input": ec.input, "result": ec.result})

    return evaluate


def loop_controller(
    condition: Callable[[EdgeContext], Any],
) -> Callable[[NodeContext], NodeResult[Any]]:
    """The built-in ``loop-controller``: ``continue`` while the condition holds, else ``break``."""

    def controller(node: NodeContext) -> NodeResult[Any]:
        state = node.context.to_dict()
        ec = EdgeContext(input=node.input, result=NodeResult(output=node.input), context=state)
        action = "continue" if condition(ec) else "break"
        return NodeResult(output=node.input, action=action)

    return controller


def pause_record(node: PlanNode, value: Any, now: datetime) -> WaitState:
    """The waiting record of a wait or sleep node reached with ``value`` at ``now``."""
    if node.kind == "wait":
        timeout = node.wait_timeout
        expires = None if timeout is None else now + timedelta(seconds=timeout)
        # No input: a resume gives a wait its output, and the input is already in the
        # predecessor's output (kept once, not twice).
        return WaitState(node.id, "wait", now, None, None, expires, node.description)
    wake = node.sleep
    if isinstance(wake, CronSchedule):
        wake_at = wake.next_after(now)  # the next matching minute strictly after now
    elif isinstance(wake, datetime):
        wake_at = wake
    else:
        wake_at = now + timedelta(seconds=wake or 0.0)
    return WaitState(node.id, "timer", now, value, wake_at)
