"""``FlowRuntime``: stateless run/resume over compiled plans."""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from flowcraft._clock import Clock, SystemClock
from flowcraft._engine.control import RunControl
from flowcraft._engine.execution import Execution
from flowcraft._engine.line import line_targets, quick_resume, resume_line, run_line
from flowcraft._engine.load import ContextView, adopt, check_envelope, parse_data, type_state
from flowcraft._engine.plan import Plan, compile_plan, describe_changes
from flowcraft._engine.resume import admit, resume_batch, resume_child
from flowcraft._envelope.codec import Codec, Serializer
from flowcraft._envelope.records import FORMAT, Envelope, HistoryEntry, WaitState
from flowcraft._errors import (
    AmbiguousResumeError,
    BlueprintMismatchError,
    InvalidBlueprintError,
    NodeNotAwaitingError,
    NotAwaitingError,
)
from flowcraft._events import EventBus, Middleware
from flowcraft._flow.blueprint import Blueprint
from flowcraft._values import ResumeData, RunResult, flat_waiting, pause_entry

if TYPE_CHECKING:
    from flowcraft._flow.builder import Flow
    from flowcraft._scheduler import Scheduler

__all__ = ["FlowRuntime"]

_PLAN_CACHE_SIZE = 256
_NO_PLAN = Plan(blueprint=Blueprint(id="-"), nodes={}, starts=[], digest="")


class FlowRuntime:
    """Runs and resumes blueprints. Holds configuration only: a run lives in its context.

    Two processes holding the same blueprint and registry resume each other's contexts.

    Args:
        registry: Implementations by ``uses`` key (usually ``flow.registry``).
        blueprints: Blueprints by id, for subflows and for the scheduler.
        dependencies: Objects handed to every node as ``node.deps``.
        serializer: ``"msgpack"`` (default), ``"json"``, or a ``Serializer``.
        signing_keys: ``{key_id: secret}``; contexts are HMAC-signed and verified.
        signing_key_id: Which key signs new contexts (default: the last one given).
        clock: The time source for timers, retry delays and timeouts.
        event_bus: Receives ``FlowEvent``s; nothing is built when it is ``None``.
        middleware: Hooks around each node attempt, outermost first.
        max_steps: Node executions allowed per run/resume call before the run fails.
        concurrency: Upper bound on nodes running at once (``None``: unbounded).
        max_context_bytes: Contexts larger than this are refused before decoding.
    """

    def __init__(
        self,
        *,
        registry: Mapping[str, object] | None = None,
        blueprints: Mapping[str, Blueprint | Flow] | None = None,
        dependencies: Mapping[str, Any] | None = None,
        serializer: str | Serializer | None = None,
        signing_keys: Mapping[str, bytes | str] | None = None,
        signing_key_id: str | None = None,
        clock: Clock | None = None,
        event_bus: EventBus | None = None,
        middleware: Sequence[Middleware | object] = (),
        max_steps: int = 10_000,
        concurrency: int | None = None,
        max_context_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.registry: Mapping[str, object] = registry if registry is not None else {}
        self.blueprints: dict[str, Blueprint] = {}
        self._child_registries: dict[str, Mapping[str, object]] = {}
        for key, value in (blueprints or {}).items():
            if isinstance(value, Blueprint):
                self.blueprints[key] = value
            else:  # a Flow builder: its blueprint and its registry
                self.blueprints[key] = value.to_blueprint()
                self._child_registries[key] = value.registry
        self.dependencies: Mapping[str, Any] = dict(dependencies or {})
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.event_bus = event_bus
        self.middleware = tuple(middleware)
        self.hooks: tuple[list[Any], list[Any], list[Any]] = (
            [m.before_node for m in self.middleware if hasattr(m, "before_node")],
            [m.after_node for m in self.middleware if hasattr(m, "after_node")],
            [m.around_node for m in self.middleware if hasattr(m, "around_node")],
        )
        self.has_hooks = any(self.hooks)
        self.system_clock = type(self.clock) is SystemClock
        # The clock read on the hot path (a C call for the system clock).
        self.now: Callable[[], datetime] = (
            partial(datetime.now, UTC) if self.system_clock else self.clock.now
        )
        self.max_steps = max_steps
        self.concurrency = concurrency if concurrency and concurrency > 0 else None
        self.codec = Codec(serializer, signing_keys, signing_key_id, max_context_bytes)
        self._plans: dict[tuple[int, int, int], tuple[object, object, Plan]] = {}
        self._last: tuple[object, object, object, Plan] = (None, None, None, _NO_PLAN)
        self.schedulers: list[Scheduler] = []
        # Every shortcut at once (the straight line, quick resume, inline nodes, the plain-node
        # hot path); FLOWCRAFT_FAST_PATHS=0 runs everything through the general engine.
        self._lines = os.environ.get("FLOWCRAFT_FAST_PATHS", "1") != "0"

    def __repr__(self) -> str:
        return f"flowcraft.FlowRuntime(registry={len(self.registry)} keys, clock={self.clock!r})"

    # --- public API --------------------------------------------------------------------------

    async def run(
        self,
        blueprint: Blueprint,
        initial_state: Mapping[str, Any] | None = None,
        *,
        registry: Mapping[str, object] | None = None,
        run_id: str | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Start a run and execute it until it completes, fails, is cancelled, or awaits.

        Node failures are recorded in the result, never raised; caller mistakes raise
        ``FlowcraftError`` subclasses.
        """
        plan = self.plan(blueprint, registry)
        return (await self._launch(plan, initial_state, run_id, control, False))[0]

    async def start(
        self,
        plan: Plan,
        initial_state: Mapping[str, Any] | None,
        run_id: str | None,
        *,
        control: RunControl | None = None,
        nested: bool = False,
    ) -> tuple[RunResult, Envelope]:
        """Start a run of a compiled plan (``run`` without the lookups); also the envelope."""
        return await self._launch(plan, initial_state, run_id, control, nested)

    def _launch(
        self,
        plan: Plan,
        initial_state: Mapping[str, Any] | None,
        run_id: str | None,
        control: RunControl | None,
        nested: bool,
    ) -> Awaitable[tuple[RunResult, Envelope]]:
        env = Envelope(
            FORMAT,
            run_id or _new_run_id(),
            plan.blueprint.id,
            plan.short_digest,
            0,
            "running",
            dict(initial_state) if initial_state else {},
            {},
            version=plan.version,
            shape=plan.shape,
        )
        if plan.state_hints and env.state:
            type_state(plan, env, initial=True)
        if control is None and len(plan.starts) == 1 and self._unobserved():
            return run_line(self, plan, env, plan.starts[0], None, nested)
        ex = Execution(self, plan, env, control)
        if self.event_bus is not None:
            ex.event("workflow:start", None, {})
        ex.ready.extend(plan.start_items)
        return self._execute(ex, nested)

    def _unobserved(self) -> bool:
        """Nobody watches single nodes (no event bus, no middleware): the straight line may run."""
        return self.event_bus is None and not self.has_hooks and self._lines

    def child_plan(self, blueprint_id: str, parent: Plan) -> Plan:
        """The plan of a subflow's child blueprint, resolved with the parent's registry."""
        bp = self.blueprints.get(blueprint_id)
        if bp is None:
            raise InvalidBlueprintError(
                f"subflow blueprint {blueprint_id!r} is not known to this runtime; "
                "pass FlowRuntime(blueprints={...})."
            )
        own = self._child_registries.get(blueprint_id)
        registry = parent.registry if own is None else ChainMap(dict(own), dict(parent.registry))
        key = (id(bp), id(parent.registry), -1)
        hit = self._plans.get(key)
        if hit is not None:
            return hit[2]
        plan = compile_plan(bp, registry, self.blueprints)
        self._plans[key] = (bp, parent.registry, plan)
        return plan

    def inspect(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | RunResult,
        *,
        registry: Mapping[str, object] | None = None,
    ) -> RunResult:
        """Decode a stored context into a ``RunResult`` without running anything."""
        plan = self.plan(blueprint, registry)
        env = self.load(plan, serialized_context)
        data = _bytes_of(serialized_context)
        return self._result(env, data, {})

    async def fire(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | RunResult,
        node_id: str,
        *,
        registry: Mapping[str, object] | None = None,
        control: RunControl | None = None,
        by: str | None = None,
    ) -> RunResult:
        """Fire a due timer, or time out an expired wait along its ``on_timeout`` action.

        This is what a scheduler does; ``TimerNotDueError`` if the deadline has not come.
        """
        plan = self.plan(blueprint, registry)
        env = self.load(plan, serialized_context)
        return await self._resume(plan, env, None, node_id, control=control, by=by, fired=True)

    async def cancel(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | RunResult,
        *,
        reason: str | None = None,
        by: str | None = None,
        registry: Mapping[str, object] | None = None,
    ) -> RunResult:
        """Cancel an awaiting run: it ends ``cancelled`` with everything done so far kept."""
        plan = self.plan(blueprint, registry)
        env = self.load(plan, serialized_context)
        if env.status != "awaiting":
            raise NotAwaitingError(env.run_id, env.status)
        ex = Execution(self, plan, env, None)
        ex.cancelled = True
        ex.cancel_note = (reason, by)
        return (await self._execute(ex))[0]

    async def resume(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | RunResult,
        data: ResumeData = None,
        node_id: str | None = None,
        *,
        registry: Mapping[str, object] | None = None,
        control: RunControl | None = None,
        by: str | None = None,
        migrate: Callable[[ContextView], Any] | None = None,
        allow_blueprint_change: bool = False,
    ) -> RunResult:
        """Continue an awaiting run: complete ``node_id`` with ``data`` and run until quiescent.

        ``data`` is ``{"output": ..., "action": ...}`` (either key optional) or ``Resume``.
        ``node_id`` may be omitted when exactly one node awaits. Every check happens before
        anything changes; a refused resume leaves the context usable as it was.

        A context written by another version of the blueprint raises
        ``BlueprintMismatchError`` naming what changed, unless ``allow_blueprint_change=True``
        (the awaiting nodes must still exist) or ``migrate`` is given: it receives a
        ``ContextView`` of the old context and may edit its state, outputs and awaiting ids.

        Raises:
            ResumeError: a subclass saying what does not fit (unknown node, wrong action, ...).
            ContextError: the context is corrupt, tampered with, or from another blueprint.
        """
        plan = self.plan(blueprint, registry)
        env = self.load(
            plan, serialized_context, migrate=migrate, allow_change=allow_blueprint_change
        )
        if control is None and self._unobserved():
            quick = quick_resume(self, plan, env, data, node_id, by)
            if quick is not None:
                return (await quick)[0]
        return (await self._resume_env(plan, env, data, node_id, control=control, by=by))[0]

    def plan(self, blueprint: Blueprint, registry: Mapping[str, object] | None = None) -> Plan:
        """The compiled plan of ``blueprint`` (cached per blueprint and registry)."""
        last = self._last
        if last[0] is blueprint and last[1] is registry and last[2] is self.registry:
            return last[3]  # the same flow again: the common case, without hashing
        key = (id(blueprint), id(registry), id(self.registry))
        hit = self._plans.get(key)
        if hit is not None:
            self._last = (blueprint, registry, self.registry, hit[2])
            return hit[2]
        reg: Mapping[str, object] = self.registry
        if registry is not None:
            reg = ChainMap(dict(registry), dict(self.registry)) if self.registry else registry
        plan = compile_plan(blueprint, reg, self.blueprints)
        # Holding the blueprint and registry keeps their ids from being reused while cached.
        self._plans[key] = (blueprint, registry, plan)
        self._last = (blueprint, registry, self.registry, plan)
        if len(self._plans) > _PLAN_CACHE_SIZE:
            del self._plans[next(iter(self._plans))]
        return plan

    def load(
        self,
        plan: Plan,
        serialized_context: bytes | RunResult,
        *,
        migrate: Callable[[ContextView], Any] | None = None,
        allow_change: bool = False,
    ) -> Envelope:
        """Decode and check a context against the plan's blueprint."""
        env = self.codec.decode(
            serialized_context
            if type(serialized_context) is bytes
            else _bytes_of(serialized_context)
        )
        bp = plan.blueprint
        if env.blueprint_id != bp.id or env.digest != plan.short_digest:
            changes = describe_changes(env.shape, bp) if env.blueprint_id == bp.id else ""
            if env.blueprint_id != bp.id or not (allow_change or migrate is not None):
                raise BlueprintMismatchError(
                    env.run_id, (env.blueprint_id, env.digest), (bp.id, plan.digest), changes
                )
            adopt(plan, env, migrate)
        else:
            check_envelope(plan, env)
        if plan.state_hints and env.state:
            type_state(plan, env)
        return env

    @asynccontextmanager
    async def scheduler(
        self,
        interval: float | timedelta = 1.0,
        on_result: Callable[[RunResult], Any] | None = None,
    ) -> AsyncIterator[Scheduler]:
        """Wake sleeps and expire waits of every result this runtime returns while open.

        ``on_result`` receives each ``RunResult`` the scheduler produces (sync or async).
        """
        from flowcraft._scheduler import Scheduler

        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        sched = Scheduler(self, seconds, on_result)
        async with sched.running():
            self.schedulers.append(sched)
            try:
                yield sched
            finally:
                self.schedulers.remove(sched)

    # --- internals ---------------------------------------------------------------------------

    async def _resume(
        self,
        plan: Plan,
        env: Envelope,
        data: ResumeData,
        node_id: str | None,
        *,
        control: RunControl | None = None,
        by: str | None = None,
        fired: bool = False,
    ) -> RunResult:
        """Validate a resume against ``env`` (changing nothing), then apply it and run on."""
        result, _ = await self._resume_env(
            plan, env, data, node_id, control=control, by=by, fired=fired
        )
        return result

    def _resume_env(
        self,
        plan: Plan,
        env: Envelope,
        data: ResumeData,
        node_id: str | None,
        *,
        control: RunControl | None = None,
        by: str | None = None,
        fired: bool = False,
        nested: bool = False,
    ) -> Awaitable[tuple[RunResult, Envelope]]:
        """Check a resume (raising before anything changes); the awaitable that applies it."""
        run_id = env.run_id
        waits = env.waiting
        if env.status != "awaiting" or not waits:
            raise NotAwaitingError(run_id, env.status)
        output, action, who, has_output = parse_data(data, run_id, node_id)
        who = by if by is not None else who
        first = waits[0]
        waiting: dict[str, WaitState] | None = None
        if (
            len(waits) == 1
            and (node_id is None or node_id == first.node_id)
            and first.kind not in ("subflow", "batch")
        ):
            targets = waits  # the common case: the one pause of the run, named or not
        else:
            waiting = {w.node_id: w for w in waits}
            for w in waits:
                if w.sub:  # batch/subflow records hold waits of their own, listed by path
                    paths = [path for path, _ in flat_waiting(waits)]
                    break
            else:
                paths = list(waiting)
            if node_id is None and len(paths) == 1:
                node_id = paths[0] if "/" in paths[0] else None
            if node_id is not None and node_id not in waiting and "/" in node_id:
                head, rest = node_id.split("/", 1)
                parent = waiting.get(head)
                if parent is not None and parent.kind == "batch":
                    return resume_batch(
                        self,
                        plan,
                        env,
                        parent,
                        rest,
                        output,
                        action,
                        has_output,
                        control=control,
                        by=who,
                        nested=nested,
                    )
                if parent is not None and parent.kind == "subflow":
                    return resume_child(
                        self,
                        plan,
                        env,
                        parent,
                        rest,
                        data,
                        action,
                        control=control,
                        by=who,
                        fired=fired,
                        nested=nested,
                    )
            if node_id is None:
                controls = [w for w in waits if w.kind == "control"] if data is None else []
                if len(paths) == 1 and first.kind not in ("subflow", "batch"):
                    targets = list(waiting.values())
                elif controls:
                    targets = controls  # continue a paused run: every control-paused node at once
                else:
                    raise AmbiguousResumeError(run_id, tuple(paths))
            else:
                target = waiting.get(node_id)
                if target is None or target.kind in ("subflow", "batch"):
                    raise NodeNotAwaitingError(run_id, node_id, tuple(paths))
                targets = [target]
        now = self.now()
        for w in targets:
            output, action = admit(plan, w, output, action, has_output, now, fired, run_id)
        if (
            targets is waits
            and first.kind in ("wait", "timer")
            and control is None
            and not env.joins
            and not env.skipped
            and self._unobserved()
        ):
            if first.kind == "timer":
                output = first.input  # a sleep hands its input on
            line = line_targets(plan.nodes[first.node_id], action)
            if line is not None:  # the common case: the run goes on in a straight line
                event: Any = "timeout" if fired and first.kind == "wait" else "resume"
                return resume_line(self, plan, env, line, output, action, who, now, event, nested)

        # Everything checked: from here on the resume is applied.
        ex = Execution(self, plan, env, control, waiting)
        if self.event_bus is not None:
            ex.event("workflow:resume", None, {"node_ids": [w.node_id for w in targets]})
        for w in targets:
            del ex.waiting[w.node_id]
            event = "timeout" if fired and w.kind == "wait" else "resume"
            ex.history.append(pause_entry(w))
            ex.history.append(HistoryEntry(event, w.node_id, now, None, who, action))
            if w.kind in ("wait", "node"):
                ex.complete(plan.nodes[w.node_id], output, action)
            elif w.kind == "timer":
                ex.complete(plan.nodes[w.node_id], w.input, None)
            else:  # a gate opens; a node paused by RunControl meets its gate again, if it has one
                ex.ready.append((w.node_id, w.input, w.kind == "gate"))
        return self._execute(ex, nested)

    async def _execute(self, ex: Execution, nested: bool = False) -> tuple[RunResult, Envelope]:
        """Drive ``ex`` until nothing is runnable; seal, encode and report it."""
        await ex.drive()
        env = ex.seal()
        if ex.pending_events:
            await ex.flush()
        return self._report(ex.plan, env, ex.causes, nested)

    def _report(
        self, plan: Plan, env: Envelope, causes: Mapping[str, BaseException], nested: bool
    ) -> tuple[RunResult, Envelope]:
        """Encode a finished call's envelope into its result; show it to the schedulers."""
        result = self._result(env, self.codec.encode(env), causes)
        if not nested:  # a subflow's timers belong to its parent run
            for sched in self.schedulers:
                sched.observe(plan, result, env)
        return result, env

    def _result(self, env: Envelope, data: bytes, causes: Mapping[str, BaseException]) -> RunResult:
        return RunResult(
            status=env.status,  # type: ignore[arg-type]  # "running" never reaches a result
            run_id=env.run_id,
            revision=env.revision,
            context=env.state,
            outputs=env.outputs,
            serialized_context=data,
            errors=tuple(env.errors) if env.errors else (),
            blueprint_id=env.blueprint_id,
            _waiting=env.waiting,
            _past=env.history,
            _causes=causes,
        )


def _bytes_of(context: bytes | RunResult) -> bytes:
    """The context bytes, given the bytes or the ``RunResult`` that carries them."""
    return context.serialized_context if isinstance(context, RunResult) else context


_ID_BYTES = 12
_ID_POOL = 256
_ids: list[bytes] = []


def _new_run_id() -> str:
    """96 random bits as hex: unique across processes without coordination.

    ``os.urandom`` is read for 256 ids at a time (one system call instead of 256); a forked
    child drops the parent's pool so the two never hand out the same ids.
    """
    if not _ids:
        pool = os.urandom(_ID_BYTES * _ID_POOL)
        _ids.extend(pool[i : i + _ID_BYTES] for i in range(0, len(pool), _ID_BYTES))
    return _ids.pop().hex()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_ids.clear)
