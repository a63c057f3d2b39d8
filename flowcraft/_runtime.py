"""``FlowRuntime``: the stateless facade over the engine.

It compiles and caches plans, decodes and checks contexts, hands the engine one ``Config`` and
returns what the engine hands back. Everything about a run lives in its context.
"""

from __future__ import annotations

import dataclasses
import os
from collections import ChainMap
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from flowcraft._clock import Clock, SystemClock
from flowcraft._control import RunControl
from flowcraft._engine.config import Config
from flowcraft._engine.execution import begin, cancel, execute
from flowcraft._engine.fanout import abandon, failed, fanned, gather, run_items
from flowcraft._engine.line import run_line
from flowcraft._engine.load import ContextView, bytes_of, load, new_envelope
from flowcraft._engine.plan import Plan, compile_plan
from flowcraft._engine.resume import quick_resume, resume
from flowcraft._engine.segment import observed
from flowcraft._envelope.codec import Codec, Serializer
from flowcraft._envelope.records import Envelope
from flowcraft._errors import InvalidBlueprintError, NotAwaitingError
from flowcraft._events import EventBus, Middleware
from flowcraft._flow.blueprint import Blueprint
from flowcraft._flow.builder import Flow
from flowcraft._scheduler import Scheduler
from flowcraft._values import ResumeData, RunResult

__all__ = ["FlowRuntime"]

_PLAN_CACHE_SIZE = 256
_NO_PLAN = Plan(blueprint=Blueprint(id="-"), nodes={}, starts=[], digest="")


def _setting(name: str, doc: str, normal: Callable[[Any], Any] = lambda v: v) -> Any:
    """A runtime setting that lives in its ``Config``.

    Setting it builds a new ``Config`` (values normalized as the constructor does them): calls
    that start afterwards see the new settings everywhere; a call in flight keeps the ``Config``
    it started with, whole. Open schedulers wake up to re-read it.
    """

    def get(self: FlowRuntime) -> Any:
        return getattr(self._config, name)

    def set(self: FlowRuntime, value: Any) -> None:
        self._config = dataclasses.replace(self._config, **{name: normal(value)})
        for sched in self.schedulers:
            sched.reconfigured()

    return property(get, set, doc=doc)


def _snapshot(env: Envelope, data: bytes) -> RunResult:
    """A decoded context as a ``RunResult`` (``data``: the bytes it was decoded from)."""
    return RunResult(
        status=env.status,  # type: ignore[arg-type]  # a stored context is never running
        run_id=env.run_id,
        revision=env.revision,
        context=env.state,
        outputs=env.outputs,
        serialized_context=data,
        errors=tuple(env.errors),
        blueprint_id=env.blueprint_id,
        trace=env.trace,
        _waiting=env.waiting,
        _past=env.history,
    )


def _clock(value: Clock | None) -> Clock:
    return value if value is not None else SystemClock()


def _concurrency(value: int | None) -> int | None:
    return value if value and value > 0 else None


def _dependencies(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return dict(value or {})


def _middleware(value: Sequence[object] | None) -> tuple[object, ...]:
    return tuple(value or ())


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
        history_limit: History entries a context carries over from earlier calls (``None``:
            all). Each call adds its own on top, so a run looping through a wait a thousand
            times keeps a bounded context; ``FlowService`` keeps the full history in its store.
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
        history_limit: int | None = 32,
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
        self._plans: dict[tuple[int, int, int], tuple[object, object, Plan]] = {}
        self._last: tuple[object, object, object, Plan] = (None, None, None, _NO_PLAN)
        self.schedulers: list[Scheduler] = []
        self._config = Config(
            clock=_clock(clock),
            codec=Codec(serializer, signing_keys, signing_key_id, max_context_bytes),
            dependencies=_dependencies(dependencies),
            event_bus=event_bus,
            middleware=_middleware(middleware),
            max_steps=max_steps,
            concurrency=_concurrency(concurrency),
            # FLOWCRAFT_FAST_PATHS=0 runs everything on the general engine (see Config.fast).
            fast=os.environ.get("FLOWCRAFT_FAST_PATHS", "1") != "0",
            history_limit=history_limit,
            child_plan=self.child_plan,
        )

    clock: Clock = _setting("clock", "Time for timers, retry delays and timeouts.", _clock)
    event_bus: EventBus | None = _setting("event_bus", "Receives ``FlowEvent``s, or ``None``.")
    middleware: Sequence[object] = _setting("middleware", "Hooks around nodes.", _middleware)
    dependencies: Mapping[str, Any] = _setting("dependencies", "``node.deps``.", _dependencies)
    max_steps: int = _setting("max_steps", "Node executions allowed per run/resume call.")
    concurrency: int | None = _setting("concurrency", "Nodes running at once.", _concurrency)
    history_limit: int | None = _setting("history_limit", "History kept from earlier calls.")
    codec: Codec = _setting("codec", "The context codec (serializer, signing keys, size limit).")

    @property
    def max_context_bytes(self) -> int:
        """The largest context, in bytes, this runtime encodes or decodes (read-only)."""
        return self._config.codec.max_bytes

    def __copy__(self) -> FlowRuntime:
        # A copy shares the plan cache and the open schedulers (its results feed them, as the
        # original's do); its settings are its own from here on.
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        clone._config = dataclasses.replace(self._config, child_plan=clone.child_plan)
        return clone

    def _current_config(self) -> Config:
        return self._config

    def __repr__(self) -> str:
        return f"flowcraft.FlowRuntime(registry={len(self.registry)} keys, clock={self.clock!r})"

    # --- public API --------------------------------------------------------------------------

    async def run(
        self,
        blueprint: Blueprint,
        initial_state: Mapping[str, Any] | object = None,
        *,
        registry: Mapping[str, object] | None = None,
        run_id: str | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Start a run and execute it until it completes, fails, is cancelled, or awaits.

        ``initial_state`` is a mapping, or an instance of the flow's declared state type
        (``create_flow(id, state=Expense)`` then ``run(bp, Expense(...))``); anything else
        raises ``InitialStateError``. Node failures are recorded in the result, never raised;
        caller mistakes raise ``FlowcraftError`` subclasses.
        """
        plan = self.plan(blueprint, registry)
        cfg = self._config
        env = new_envelope(plan, initial_state, run_id)
        if cfg.segment_hooks:
            launch = partial(self._launch, cfg, plan, control=control)  # gets the envelope
            return await observed(cfg, "run", plan, env, launch)
        return (await self._launch(cfg, plan, env, control))[0]

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
        serialized_context: bytes | str | RunResult,
        *,
        registry: Mapping[str, object] | None = None,
    ) -> RunResult:
        """Decode a stored context into a ``RunResult`` without running anything.

        The context is checked against ``blueprint`` (its id and digest, as ``resume`` does:
        ``BlueprintMismatchError`` otherwise) and its state typed as the flow declares. To
        read a context without its blueprint, use ``peek``.
        """
        plan = self.plan(blueprint, registry)
        return _snapshot(self.load(plan, serialized_context), bytes_of(serialized_context))

    def peek(self, serialized_context: bytes | str | RunResult) -> RunResult:
        """Verify and decode a context without its blueprint: what the run says about itself.

        Reads any context this runtime's codec reads: msgpack or JSON, as ``bytes`` or (JSON)
        ``str``, or the ``RunResult`` carrying it. With ``signing_keys`` the signature is
        verified first, exactly as ``resume`` does; ``RunResult.signed_by`` names the key.

        Nothing is validated against a flow: not the blueprint id or digest, not the node ids,
        not the state type (``context`` and ``outputs`` hold the decoded builtins: dicts,
        lists, strings, datetimes...). Nothing runs and no history is trimmed. Use
        ``inspect(blueprint, ...)`` to check a context against its flow, ``resume`` to go on.

        Raises:
            ContextIntegrityError: signing keys are set and the context is unsigned, signed
                with a key not among them, or altered; or it is signed and no keys are set.
            ContextDecodeError: the bytes are not a context (truncated, over
                ``max_context_bytes``, or of a newer envelope format).
        """
        data = bytes_of(serialized_context)
        return _snapshot(self._config.codec.decode(data), data)

    async def fire(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | str | RunResult,
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
        cfg = self._config
        env = load(cfg.codec, plan, serialized_context, history_limit=cfg.history_limit)
        # ``partial``, not a closure, for the hooks: a closure would make every local a cell,
        # built on every call, hooks or not.
        if cfg.segment_hooks:
            applied = partial(
                resume, cfg, plan, data=None, node_id=node_id, control=control, by=by, fired=True
            )
            return await observed(cfg, "fire", plan, env, applied, node_id=node_id, by=by)
        return (await resume(cfg, plan, env, None, node_id, control=control, by=by, fired=True))[0]

    async def cancel(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | str | RunResult,
        *,
        reason: str | None = None,
        by: str | None = None,
        registry: Mapping[str, object] | None = None,
    ) -> RunResult:
        """Cancel an awaiting run: it ends ``cancelled`` with everything done so far kept."""
        plan = self.plan(blueprint, registry)
        cfg = self._config
        env = load(cfg.codec, plan, serialized_context, history_limit=cfg.history_limit)
        if env.status != "awaiting":
            raise NotAwaitingError(env.run_id, env.status)
        if cfg.segment_hooks:  # ``partial``: a closure would make every local a cell (see fire)
            applied = partial(cancel, cfg, plan, reason=reason, by=by)
            return await observed(cfg, "cancel", plan, env, applied, by=by)
        return (await cancel(cfg, plan, env, reason, by))[0]

    async def resume(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | str | RunResult,
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
        ``serialized_context`` may be the bytes, the ``RunResult``, or a JSON context as ``str``.

        Always resume from the **newest** context of a run. With several waits pending,
        resuming an older context again (once per wait, from the same first result) forks the
        run: the second resume cannot see the first, so a join after both never runs. This
        runtime is stateless and cannot detect it; to resume concurrent waits in any order,
        keep runs in a ``FlowService`` (``service.resume(run_id, data, node_id)``), which
        resumes from the stored newest context and refuses stale revisions.

        A context written by another version of the blueprint raises
        ``BlueprintMismatchError`` naming what changed, unless ``allow_blueprint_change=True``
        (the awaiting nodes must still exist) or ``migrate`` is given: it receives a
        ``ContextView`` of the old context and may edit its state, outputs and awaiting ids.

        Raises:
            ResumeError: a subclass saying what does not fit (unknown node, wrong action, ...).
            ContextError: the context is corrupt, tampered with, or from another blueprint.
        """
        plan = self.plan(blueprint, registry)
        cfg = self._config
        env = load(
            cfg.codec, plan, serialized_context, migrate, allow_blueprint_change, cfg.history_limit
        )
        if cfg.segment_hooks:  # ``partial``: a closure would make every local a cell (see fire)
            applied = partial(
                self._resume, cfg, plan, data=data, node_id=node_id, control=control, by=by
            )
            return await observed(
                cfg, "resume", plan, env, applied, node_id=node_id, data=data, by=by
            )
        if control is None and cfg.line:  # as in _resume, one call less on the common path
            quick = quick_resume(cfg, plan, env, data, node_id, by)  # shortcut of the below
            if quick is not None:
                return (await quick)[0]
        return (await resume(cfg, plan, env, data, node_id, control=control, by=by))[0]

    async def run_items(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | str | RunResult,
        node_id: str,
        indices: Sequence[int],
        *,
        registry: Mapping[str, object] | None = None,
    ) -> list[bytes]:
        """Run items of a batch left to the caller (``RunControl.on_scatter``); their outcomes.

        Each item runs as the in-process batch runs it (the batch's retries and timeout, its
        worker's ``node.pause()``); the context is not changed. The outcomes (opaque bytes, one
        per index, in order) go to ``gather``, from any process holding the same flow.
        """
        plan = self.plan(blueprint, registry)
        cfg = self._config
        env = load(cfg.codec, plan, serialized_context, history_limit=cfg.history_limit)
        return await run_items(cfg, plan, env, node_id, list(indices))

    def fail_items(
        self, indices: Sequence[int], error: BaseException, *, attempts: int = 1
    ) -> list[bytes]:
        """Outcomes for items of a spread batch that could not run at all (``run_items`` raised).

        One per index, in order, for ``gather``: each item fails as if it had raised ``error``
        on its last attempt (``attempts``), so the batch fails naming the first of them, as in
        one process when an item raises.
        """
        outcome = failed(error, attempts)
        return [outcome for _ in indices]

    def fail_batches(
        self,
        serialized_context: bytes | str | RunResult,
        error: BaseException,
        *,
        attempts: int = 1,
    ) -> RunResult:
        """End a run whose spread batches cannot be gathered anywhere: ``failed`` with ``error``.

        What a service does once ``gather`` was refused (it raised before changing anything:
        the flow changed under the run, ...) on its last attempt (``attempts``). Needs no
        blueprint, since the flow may be what changed: the context is read as ``peek`` reads
        it (signature verified), each batch left to the caller records ``error``
        (``"batch 'b' could not be gathered: ..."``), the run's other waits end, nothing runs.

        Raises:
            NotAwaitingError: the context is not awaiting (finished already).
        """
        cfg = self._config
        env = cfg.codec.decode(bytes_of(serialized_context))
        env = abandon(env, error, attempts, cfg.clock.now())
        return _snapshot(env, cfg.codec.encode(env))

    async def gather(
        self,
        blueprint: Blueprint,
        serialized_context: bytes | str | RunResult,
        outcomes: Mapping[str, Mapping[int, bytes]],
        *,
        registry: Mapping[str, object] | None = None,
        control: RunControl | None = None,
    ) -> RunResult:
        """Complete every batch left to the caller with its items' outcomes, and run on.

        ``outcomes`` maps a batch node id to ``{item index: outcome}`` from ``run_items``; an
        item without one is run here. The batch then ends as in one process: its results in
        item order, a failed item failing it, a paused item awaiting as ``"<batch>/<index>"``.
        """
        plan = self.plan(blueprint, registry)
        cfg = self._config
        env = load(cfg.codec, plan, serialized_context, history_limit=cfg.history_limit)
        if cfg.segment_hooks:  # ``partial``: a closure would make every local a cell (see fire)
            applied = partial(gather, cfg, plan, outcomes=outcomes, control=control)
            names = list(fanned(env))
            node = names[0] if len(names) == 1 else None
            return await observed(cfg, "resume", plan, env, applied, node_id=node)
        return (await gather(cfg, plan, env, outcomes, control))[0]

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
        serialized_context: bytes | str | RunResult,
        *,
        migrate: Callable[[ContextView], Any] | None = None,
        allow_change: bool = False,
    ) -> Envelope:
        """Decode and check a context against the plan's blueprint."""
        return load(self._config.codec, plan, serialized_context, migrate, allow_change)

    @asynccontextmanager
    async def scheduler(
        self,
        interval: float | timedelta = 1.0,
        on_result: Callable[[RunResult], Any] | None = None,
    ) -> AsyncIterator[Scheduler]:
        """Wake sleeps and expire waits of every result this runtime returns while open.

        ``on_result`` receives each ``RunResult`` the scheduler produces (sync or async).
        ``interval`` must be more than 0 (``ValueError``: 0 would tick without a pause).
        """
        seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
            raise ValueError(f"interval must be a number of seconds, more than 0, not {interval!r}")
        sched = Scheduler(self._current_config, seconds, on_result)
        async with sched.running():
            self.schedulers.append(sched)
            self._config.observers.append(sched.observe)
            try:
                yield sched
            finally:
                self._config.observers.remove(sched.observe)
                self.schedulers.remove(sched)

    # --- internals ---------------------------------------------------------------------------

    def _launch(
        self, cfg: Config, plan: Plan, env: Envelope, control: RunControl | None
    ) -> Awaitable[tuple[RunResult, Envelope]]:
        if control is None and len(plan.starts) == 1 and cfg.line:
            return run_line(cfg, plan, env, plan.starts[0], None, False)  # shortcut of the below
        return execute(begin(cfg, plan, env, control))

    def _resume(
        self,
        cfg: Config,
        plan: Plan,
        env: Envelope,
        data: ResumeData,
        node_id: str | None,
        control: RunControl | None,
        by: str | None,
    ) -> Awaitable[tuple[RunResult, Envelope]]:
        if control is None and cfg.line:
            quick = quick_resume(cfg, plan, env, data, node_id, by)  # shortcut of the below
            if quick is not None:
                return quick
        return resume(cfg, plan, env, data, node_id, control=control, by=by)
