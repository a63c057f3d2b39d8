"""The fluent builder: ``create_flow(id).node(...).wait(...).edge(...)``."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Literal, Protocol, Self
from zoneinfo import ZoneInfo

import msgspec

from flowcraft._errors import (
    BlueprintError,
    FlowcraftWarning,
    InvalidBlueprintError,
    InvalidDurationError,
)
from flowcraft._flow.blueprint import Blueprint, validate
from flowcraft._flow.durations import MS_SUSPECT, format_duration, parse_duration
from flowcraft._flow.parts import CALLABLE_PREFIX, EdgeDefinition, NodeConfig, NodeDefinition
from flowcraft._values import Approvals, ResumeData, RunResult

__all__ = ["Flow", "Runner", "create_flow"]


class Runner(Protocol):
    """What ``Flow.run``/``Flow.resume`` need of a runtime (``FlowRuntime`` is one).

    The builder knows no runtime: it names the two calls it forwards to, nothing else.
    """

    async def run(
        self,
        blueprint: Blueprint,
        initial_state: Mapping[str, Any] | object = None,
        *,
        registry: Mapping[str, object] | None = None,
        run_id: str | None = None,
        control: Any = None,
    ) -> RunResult: ...

    async def resume(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | str | RunResult,
        data: ResumeData = None,
        node_id: str | None = None,
        *,
        registry: Mapping[str, object] | None = None,
        control: Any = None,
        by: str | None = None,
        migrate: Any = None,
        allow_blueprint_change: bool = False,
    ) -> RunResult: ...

_DEFAULTS = NodeConfig()

Duration = float | int | timedelta | str


def create_flow(
    flow_id: str,
    *,
    state: type | None = None,
    version: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Flow:
    """Start building a flow with this id.

    ``state`` declares the state's shape (a ``msgspec.Struct``, dataclass or ``TypedDict``): its
    annotated keys come back from a serialized context with their types (enums, datetimes,
    UUIDs, Decimals, Structs, ...) instead of as plain JSON values. ``version`` is recorded in
    every context and reported when a resume meets a changed blueprint.
    """
    return Flow(flow_id, state=state, version=version, metadata=metadata)


class Flow:
    """A chainable flow builder; every method returns the same builder.

    ``to_blueprint()`` validates and returns an immutable :class:`Blueprint`; ``registry`` maps the
    blueprint's ``uses`` keys to the Python callables given here.
    """

    def __init__(
        self,
        flow_id: str,
        *,
        state: type | None = None,
        version: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(flow_id, str) or not flow_id:
            raise InvalidBlueprintError(f"flow id must be a non-empty string, got {flow_id!r}")
        self.id = flow_id
        self._metadata = dict(metadata) if metadata else None
        self._nodes: list[NodeDefinition] = []
        self._edges: list[EdgeDefinition] = []
        self._registry: dict[str, object] = {}
        self._errors: list[BlueprintError] = []  # raised by to_blueprint(), first one wins
        self._warnings: dict[str, str] = {}  # where -> FlowcraftWarning text, at to_blueprint()
        self._registry_view = MappingProxyType(self._registry)
        self._blueprint: Blueprint | None = None  # cached until the builder changes
        self._loops: set[str] = set()
        self._batches: dict[str, tuple[str, str]] = {}
        if version is not None:
            self._metadata = {**(self._metadata or {}), "version": str(version)}
        if state is not None:
            key = self._register(state, None, "state", kind="state type")
            self._metadata = {**(self._metadata or {}), "stateType": key}

    def __repr__(self) -> str:
        return f"flowcraft.Flow({self.id!r}, nodes={len(self._nodes)}, edges={len(self._edges)})"

    # --- nodes -------------------------------------------------------------------------------

    def node(
        self,
        id: str,
        impl: Callable[..., Any] | type | str,
        *,
        params: Mapping[str, Any] | None = None,
        inputs: str | Mapping[str, str] | None = None,
        max_retries: int = 1,
        retry_delay: Duration = 0.0,
        retry_backoff: float = 1.0,
        timeout: Duration | None = None,
        fallback: str | None = None,
        join: Literal["all", "any"] = "all",
        pause_before: bool = False,
        on_error: str | None = None,
        name: str | None = None,
    ) -> Self:
        """Add a task node.

        Args:
            id: Unique node id.
            impl: An async or sync function taking a ``NodeContext``, a ``BaseNode`` subclass, or a
                string key into the runtime's registry.
            params: Static parameters (JSON values) the node reads as ``node.params``.
            inputs: Where the node's input comes from: a state key / node id, or a mapping of
                names to them. Default: the predecessor's output.
            max_retries: Total attempts (Flowcraft TS semantics), at least 1.
            retry_delay: Delay before the second attempt; multiplied by ``retry_backoff`` after.
            retry_backoff: Growth factor of the delay between attempts.
            timeout: Per-attempt time limit, enforced.
            fallback: Node to run with the same input when every attempt failed.
            join: ``"all"`` (wait for every incoming branch) or ``"any"`` (first arrival).
            pause_before: Make the node an approval gate: the run awaits before it executes.
            on_error: Route an exhausted failure instead of failing the run: when every attempt
                failed and no fallback stood in, the node finishes with this action and its
                output is the error record (``{"node_id", "type", "message", "attempt"}``).
                The failure stays in ``RunResult.errors`` with ``routed`` set to the action,
                and does not make the run ``failed``.
            name: Registry key for ``impl`` (default: ``module.qualname``).
        """
        uses = impl if isinstance(impl, str) else self._register(impl, name, id)
        if join not in ("all", "any"):
            self._errors.append(
                InvalidBlueprintError(f"flow {self.id!r}: node {id!r} join must be 'all' or 'any'")
            )
        settings: dict[str, Any] = {
            "max_retries": max_retries,
            "retry_delay": self._ms(retry_delay, f"node {id!r} retry_delay") or 0,
            "retry_backoff": retry_backoff,
            "timeout": self._ms(timeout, f"node {id!r} timeout"),
            "fallback": fallback,
            "join_strategy": join,
            "pause_before": pause_before,
            "on_error": on_error,
        }
        # Only non-default settings go into the blueprint, so its JSON stays minimal.
        config = NodeConfig(**{k: v for k, v in settings.items() if v != getattr(_DEFAULTS, k)})
        self._add(id, uses, params, inputs, config)
        return self

    def wait(
        self,
        id: str,
        *,
        timeout: Duration | None = None,
        on_timeout: str = "timeout",
        schema: object = None,
        description: str | None = None,
        approvals: Approvals | None = None,
    ) -> Self:
        """Add a node that pauses the run until ``resume`` supplies its output and action.

        ``schema`` is any type msgspec can decode into; resume output is validated against it.
        When ``timeout`` passes, the scheduler resumes the wait with action ``on_timeout``.
        With ``approvals`` the wait is a quorum: it completes once enough distinct approvers
        approved, and one rejection (any other action) decides at once (see ``Approvals``).
        """
        params: dict[str, Any] = {}
        if timeout is not None:
            params["timeout"] = self._ms(timeout, f"wait {id!r} timeout")
            params["onTimeout"] = on_timeout
        if description is not None:
            params["description"] = description
        if schema is not None:
            params["schema"] = self._register(schema, None, id, kind="schema")
        if approvals is not None:
            params["approvals"] = self._approvals(id, approvals)
        self._add(id, "wait", params or None, None, None)
        return self

    def sleep(
        self,
        id: str,
        *,
        duration: Duration | None = None,
        until: datetime | None = None,
        cron: str | None = None,
        tz: str | ZoneInfo | None = None,
    ) -> Self:
        """Add a durable timer: the run awaits for a duration, until a time, or a cron match.

        Give exactly one of ``duration``, ``until`` (an aware datetime) and ``cron``. ``cron`` is
        a standard five-field expression (``"0 2 * * *"``, ``"*/15 9-17 * * mon-fri"``,
        ``"@daily"``); ``tz`` is an IANA zone name or ``ZoneInfo`` (default ``"UTC"``). The wake
        time is the first matching minute strictly after the run reaches the sleep, DST-correct.
        An expression that can never match (``"0 0 30 2 *"``) is refused by ``to_blueprint()``.
        The node's output is its input (pass-through).
        """
        where = f"flow {self.id!r}: sleep {id!r}"
        params: dict[str, Any] = {}
        given = [v for v in (duration, until, cron) if v is not None]
        if len(given) != 1:
            why = "give exactly one of duration, until or cron"
            self._errors.append(InvalidDurationError(where, given, why))
        elif duration is not None:
            params["duration"] = self._ms(duration, f"sleep {id!r} duration")
        elif cron is not None:
            params["cron"] = cron
        elif isinstance(until, datetime) and until.tzinfo is not None:
            params["until"] = until.isoformat()
        else:
            self._errors.append(
                InvalidDurationError(where, until, "until must be a timezone-aware datetime")
            )
        if tz is not None:
            if cron is None:
                self._errors.append(InvalidDurationError(where, tz, "tz goes with cron only"))
            else:
                params["tz"] = tz.key if isinstance(tz, ZoneInfo) else tz
        self._add(id, "sleep", params, None, None)
        return self

    def edge(
        self,
        source: str,
        target: str,
        *,
        action: str | None = None,
        condition: Callable[[Any], bool] | str | None = None,
        transform: Callable[[Any], Any] | str | None = None,
    ) -> Self:
        """Add a directed edge, taken when the source's action equals ``action`` (if given).

        ``condition`` and ``transform`` are callables taking an ``EdgeContext`` (or expression
        strings, evaluated safely).
        """
        self._blueprint = None
        label = f"{source}->{target}"
        if action is not None:
            label = f"{label}[{action}]"
        cond = (
            condition
            if isinstance(condition, str | None)
            else self._fn_ref(condition, f"{label}:condition")
        )
        trans = (
            transform
            if isinstance(transform, str | None)
            else self._fn_ref(transform, f"{label}:transform")
        )
        self._edges.append(
            EdgeDefinition(
                source=source, target=target, action=action, condition=cond, transform=trans
            )
        )
        return self

    def loop(
        self,
        id: str,
        *,
        start: str,
        end: str,
        condition: Callable[[Any], Any] | str,
    ) -> Self:
        """Add a loop controller: after ``end``, go back to ``start`` while ``condition`` holds.

        The condition sees the state (``context.i`` or just ``i`` in an expression, or an
        ``EdgeContext`` for a callable). Edges you add from ``id`` are the loop's exits: they are
        taken once the condition is false (action ``break``).
        """
        self._blueprint = None
        cond = condition if isinstance(condition, str) else self._fn_ref(condition, id)
        self._add(id, "loop-controller", {"condition": cond}, None, NodeConfig(join_strategy="any"))
        self._loops.add(id)
        self._edges.append(EdgeDefinition(source=end, target=id))
        self._edges.append(EdgeDefinition(source=id, target=start, action="continue"))
        return self

    def batch(
        self,
        id: str,
        worker: Callable[..., Any] | str,
        *,
        input_key: str,
        output_key: str | None = None,
        chunk_size: int | None = None,
        max_retries: int = 1,
        retry_delay: Duration = 0.0,
        timeout: Duration | None = None,
    ) -> Self:
        """Scatter/gather: run ``worker`` on every item of the list in state ``input_key``.

        Items run concurrently (at most ``chunk_size`` at once); the results, in item order, are
        the batch's output and are stored under ``output_key``. Edges to and from ``id`` attach
        to the ``<id>_scatter`` and ``<id>_gather`` nodes, as in Flowcraft TS. A failing item
        fails the run naming its index; ``node.pause()`` in a worker pauses that item, which is
        resumed as ``"<id>_scatter/<index>"``.
        """
        scatter, gather = f"{id}_scatter", f"{id}_gather"
        key = worker if isinstance(worker, str) else self._register(worker, None, scatter)
        params: dict[str, Any] = {"workerUsesKey": key, "gatherNodeId": gather}
        if output_key is not None:
            params["outputKey"] = output_key
        if chunk_size is not None:
            params["chunkSize"] = chunk_size
        settings: dict[str, Any] = {
            "max_retries": max_retries,
            "retry_delay": self._ms(retry_delay, f"batch {id!r} retry_delay") or 0,
            "timeout": self._ms(timeout, f"batch {id!r} timeout"),
        }
        config = NodeConfig(**{k: v for k, v in settings.items() if v != getattr(_DEFAULTS, k)})
        self._add(scatter, "batch-scatter", params, input_key, config)
        gather_params = {
            "gatherNodeId": gather,
            **({"outputKey": output_key} if output_key else {}),
        }
        self._add(gather, "batch-gather", gather_params, None, None)
        self._edges.append(EdgeDefinition(source=scatter, target=gather))
        self._batches[id] = (scatter, gather)
        return self

    def subflow(
        self,
        id: str,
        blueprint_id: str,
        *,
        inputs: Mapping[str, str] | None = None,
        outputs: Mapping[str, str] | None = None,
    ) -> Self:
        """Add a node that runs another blueprint (from ``FlowRuntime(blueprints=...)``).

        ``inputs`` maps child state keys to parent state keys / node ids (default: the child
        state is ``{"input": <this node's input>}``); ``outputs`` maps parent state keys to child
        node ids / state keys. The node's output is the child's terminal output. A wait or sleep
        in the child surfaces in the parent's ``awaiting`` as ``"<id>/<child node>"``.
        """
        params: dict[str, Any] = {"blueprintId": blueprint_id}
        if inputs:
            params["inputs"] = dict(inputs)
        if outputs:
            params["outputs"] = dict(outputs)
        self._add(id, "subflow", params, None, None)
        return self

    def set_cycle_entry_point(self, id: str) -> Self:
        """Start a cycle that no edge enters at node ``id`` (Flowcraft TS ``setCycleEntryPoint``).

        A cycle nothing enters (``attempt -> backoff -> attempt``) starts at its first-declared
        node unless one of its nodes is named here; the name is stored in the blueprint's
        ``metadata.cycleEntryPoints``. Naming a node of a cycle that an edge does enter changes
        nothing: that cycle starts where its edge leads.
        """
        self._blueprint = None
        points = list((self._metadata or {}).get("cycleEntryPoints", ()))
        if id not in points:
            points.append(id)
        self._metadata = {**(self._metadata or {}), "cycleEntryPoints": points}
        return self

    # --- output ------------------------------------------------------------------------------

    def to_blueprint(self) -> Blueprint:
        """Validate the flow and return an immutable blueprint.

        Raises:
            BlueprintError: a subclass naming the node or edge at fault.
        """
        if self._errors:
            raise self._errors[0]
        if self._blueprint is not None:
            return self._blueprint
        edges = tuple(map(self._resolve_edge, self._edges))
        bp = Blueprint(
            id=self.id,
            nodes=tuple(self._nodes),
            edges=edges,
            metadata=copy.deepcopy(self._metadata),
        )
        validate(bp)
        for text in self._warnings.values():
            warnings.warn(text, FlowcraftWarning, stacklevel=2)
        self._blueprint = bp
        return bp

    @property
    def registry(self) -> Mapping[str, object]:
        """Read-only mapping from ``uses`` keys to the implementations given to this builder."""
        return self._registry_view

    async def run(
        self, runtime: Runner, state: Mapping[str, Any] | object = None, **kw: Any
    ) -> RunResult:
        """Run this flow on ``runtime`` (shorthand passing this flow's blueprint and registry)."""
        return await runtime.run(self.to_blueprint(), state, registry=self.registry, **kw)

    async def resume(
        self,
        runtime: Runner,
        ctx: bytes | str | RunResult,
        data: ResumeData = None,
        node_id: str | None = None,
        **kw: Any,
    ) -> RunResult:
        """Resume a run of this flow (shorthand passing this flow's blueprint and registry)."""
        return await runtime.resume(
            self.to_blueprint(), ctx, data, node_id, registry=self.registry, **kw
        )

    # --- internals ---------------------------------------------------------------------------

    def _approvals(self, id: str, approvals: Approvals) -> dict[str, Any]:
        """The blueprint form of a quorum (TS-style names; a callable approver is registered)."""
        if not isinstance(approvals, Approvals) or approvals.required < 1:
            self._errors.append(
                InvalidBlueprintError(
                    f"flow {self.id!r}: wait {id!r} approvals must be Approvals(required>=1, ...)"
                )
            )
            return {}
        out: dict[str, Any] = {"required": approvals.required}
        who = approvals.approvers
        if callable(who):
            out["approvers"] = self._register(who, None, id, kind="approvers")
        elif who is not None:
            out["approvers"] = [str(a) for a in who]
        if not approvals.distinct:
            out["distinct"] = False
        if approvals.forbid_initiator:
            out["forbidInitiator"] = True
            out["initiatorKey"] = approvals.initiator_key
        if approvals.approve != "approve":
            out["approve"] = approvals.approve
        return out

    def _add(
        self,
        id: str,
        uses: str,
        params: Mapping[str, Any] | None,
        inputs: str | Mapping[str, str] | None,
        config: NodeConfig | None,
    ) -> None:
        self._blueprint = None
        if not isinstance(id, str):
            self._errors.append(InvalidBlueprintError(f"node id must be a string, got {id!r}"))
        if config is not None and config == NodeConfig():
            config = None
        self._nodes.append(
            NodeDefinition(
                id=id,
                uses=uses,
                params=copy.deepcopy(dict(params)) if params else None,
                inputs=inputs if isinstance(inputs, str | None) else dict(inputs),
                config=config,
            )
        )

    def _resolve_edge(self, edge: EdgeDefinition) -> EdgeDefinition:
        """Point edges at a batch's scatter/gather nodes; plain loop-controller edges exit."""
        source, target, action = edge.source, edge.target, edge.action
        if source in self._batches:
            source = self._batches[source][1]
        if target in self._batches:
            target = self._batches[target][0]
        if source in self._loops and action is None:
            action = "break"
        if (source, target, action) == (edge.source, edge.target, edge.action):
            return edge
        return msgspec.structs.replace(edge, source=source, target=target, action=action)

    def _ms(self, value: Duration | None, where: str) -> float | None:
        if value is None:
            return None
        key = f"flow {self.id!r}: {where}"
        self._warnings.pop(key, None)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= MS_SUSPECT:
            # A TS habit: durations in milliseconds. Python's are seconds; say what this means.
            self._warnings[key] = (
                f"{key} is {value!r} seconds ({value / 86400:,.0f} days). Builder durations are "
                f"seconds; if you meant {value!r} milliseconds, pass {value / 1000:g} or "
                f"{format_duration(value / 1000)!r}."
            )
        try:
            ms = parse_duration(value, f"flow {self.id!r}: {where}") * 1000.0
        except InvalidDurationError as exc:
            self._errors.append(exc)
            return None
        return int(ms) if ms.is_integer() else ms

    def _register(self, obj: object, name: str | None, owner: str, kind: str = "node") -> str:
        if name is not None:
            key = name
        else:
            module = getattr(obj, "__module__", None) or type(obj).__module__
            qual = getattr(obj, "__qualname__", None)
            if not isinstance(qual, str):
                qual = type(obj).__qualname__
            key = f"{module}.{qual}"
            # Lambdas, closures and callable instances cannot be told apart by name: the owning
            # node/edge id makes their key unique and independent of definition order.
            if "<" in qual or getattr(obj, "__qualname__", None) is None:
                key = f"{key}@{owner}"
        existing = self._registry.get(key)
        if existing is not None and existing is not obj:
            if name is not None:
                self._errors.append(
                    InvalidBlueprintError(
                        f"flow {self.id!r}: registry name {name!r} ({kind} {owner!r}) already "
                        "names a different implementation; choose another name."
                    )
                )
                return key
            key = f"{key}@{owner}"
            if self._registry.get(key, obj) is not obj:
                self._errors.append(
                    InvalidBlueprintError(
                        f"flow {self.id!r}: two implementations share the key {key!r}; "
                        "pass name= to tell them apart."
                    )
                )
        self._registry[key] = obj
        return key

    def _fn_ref(self, fn: Callable[[Any], Any], owner: str) -> str:
        if not callable(fn):
            self._errors.append(
                InvalidBlueprintError(
                    f"flow {self.id!r}: edge {owner} condition/transform must be a callable "
                    f"or an expression string, got {fn!r}"
                )
            )
        return CALLABLE_PREFIX + self._register(fn, None, owner, kind="edge")
