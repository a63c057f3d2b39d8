"""The engine loop: execute ready nodes, route along edges, eliminate dead paths, pause.

``Execution`` is one call's mutable state over a decoded envelope. Its sections, in order:
driving (the loop, tasks, inline nodes, checkpoints), built-ins, batches and subflows, pausing,
events, sealing, calling nodes (attempts, retries, fallbacks, failures), routing (edges, joins,
dead paths). ``execute`` drives one to its result. The glossary is in ``_engine/__init__.py``.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from functools import partial
from types import MappingProxyType
from typing import Any

import anyio
import msgspec

from flowcraft._control import RunControl
from flowcraft._engine.calls import (
    NEVER_AWAITABLE,
    RESULT_TYPES,
    invoke,
    invoke_with_timeout,
    maybe_await,
)
from flowcraft._engine.config import Config
from flowcraft._engine.load import new_envelope
from flowcraft._engine.plan import Plan, PlanEdge, PlanNode, pause_record
from flowcraft._engine.tasks import TaskSet
from flowcraft._envelope.records import (
    FANOUT,
    Envelope,
    HistoryEntry,
    NodeError,
    WaitKind,
    WaitState,
)
from flowcraft._errors import BatchItemError, RunLimitError, SubflowError
from flowcraft._events import EventBus, FlowEvent
from flowcraft._node import BaseNode, Context, NodeContext, PauseRequested
from flowcraft._values import REASONS, EdgeContext, NodeResult, RunResult, pause_entry, ts_result

__all__ = ["Execution", "begin", "cancel", "execute", "finish"]

_OK, _PAUSED, _FAILED = 0, 1, 2  # how one node's attempts ended (tuples tagged with these)
_ANY_RAN = -1  # join-buffer marker: an "any" join already ran in this activation


class Execution:
    """One run or resume call: mutable state over a decoded envelope, driven to quiescence."""

    # Per-call defaults live on the class: a run/resume only pays for what it changes.
    failed = False
    cancelled = False
    cancel_note: tuple[str | None, str | None] = (None, None)
    steps = 0
    tasks: TaskSet | None = None
    spawning = False
    limiter: anyio.CapacityLimiter | None = None  # created at the first fan-out
    control: RunControl | None = None
    checkpoint: Callable[[bytes], Awaitable[None]] | None = None  # control.on_checkpoint
    inflight: dict[int, tuple[str, Any, bool]]  # only with a checkpoint hook
    serial = False  # concurrency=1: one node at a time
    bus: EventBus | None = None
    plain = True  # no event bus and no middleware
    skipped: set[str] = frozenset()  # type: ignore[assignment]  # a set once a node is skipped
    causes: dict[str, BaseException] = {}  # noqa: RUF012 - replaced by a dict on first write
    pending_events: list[FlowEvent] = []  # noqa: RUF012 - replaced on first event (bus only)

    def __init__(
        self,
        cfg: Config,
        plan: Plan,
        env: Envelope,
        control: RunControl | None,
        waiting: dict[str, WaitState] | None = None,
    ) -> None:
        self.cfg = cfg
        self.plan = plan
        self.nodes = plan.nodes
        self.env = env
        self.state = state = env.state
        self.outputs = env.outputs
        self.waiting: dict[str, WaitState] = (
            waiting if waiting is not None else {w.node_id: w for w in env.waiting}
        )
        self.history = env.history
        if env.skipped:
            self.skipped = set(env.skipped)
        if control is not None:
            self.control = control
            self.checkpoint = control.on_checkpoint
            if self.checkpoint is not None:
                self.inflight = {}
        self.ready: deque[tuple[str, Any, bool]] = deque()
        if cfg.concurrency == 1:
            self.serial = True
        if cfg.event_bus is not None:
            self.bus = cfg.event_bus
            self.pending_events = []
            self.plain = False
        elif cfg.has_hooks or not cfg.fast:  # the hot path and inline nodes are shortcuts
            self.plain = False
        self.deps = cfg.dependencies
        self.run_id = env.run_id
        self.shared_ctx = Context(state)

    # --- driving -----------------------------------------------------------------------------

    def drive(self) -> Awaitable[None]:
        """Run ready nodes until nothing is runnable."""
        if self.control is None and self.bus is None:
            return self._loop()  # the common case, one coroutine less
        return self._drive()

    async def _drive(self) -> None:
        if self.control is None:
            await self._loop()
        else:
            with anyio.CancelScope() as scope:
                self.control._scopes.append(scope)
                try:
                    if self.control.cancelled:
                        scope.cancel()
                    await self._loop()
                finally:
                    self.control._scopes.remove(scope)
            if scope.cancel_called:
                self.cancelled = True
        if self.pending_events:
            await self.flush()

    @property
    def halted(self) -> bool:
        c = self.control
        return self.failed or (c is not None and (c.pause_requested is not None or c.cancelled))

    async def _wave(self) -> None:
        """Stepping: run exactly the nodes ready now; whatever they make ready stays paused."""
        assert self.control is not None
        wave = list(self.ready)
        self.ready.clear()
        self.control.pause_requested = ("step", None)
        if len(wave) == 1:
            await self._step(*wave[0])
            return
        tasks = TaskSet.create()
        for item in wave:
            tasks.spawn(self._step, *item)
        await tasks.wait()

    async def _loop(self) -> None:
        if self.control is not None and self.control.stepping:
            await self._wave()
            return
        ready = self.ready
        nodes = self.nodes
        if self.control is None and self.checkpoint is None and not self.serial:
            # The common case, kept tight: one ready node runs inline, no task, no checks.
            while len(ready) == 1 and not self.failed:
                await self._step(*ready.popleft())
        while ready and not self.halted:
            if len(ready) == 1 or self.serial:
                if self.checkpoint is None:
                    await self._step(*ready.popleft())
                else:
                    await self._checked_step(ready.popleft())
                continue
            # Nodes that cannot suspend (built-ins, async functions without awaits) need no task
            # (a shortcut; twin: _spawn). The leading ones run now, in ready order, each in its
            # own copy of the context variables as a task would; from the first other node on,
            # all are spawned.
            if self.plain:
                while len(ready) > 1 and nodes[ready[0][0]].inline and not self.halted:
                    await self._inline(ready.popleft())
                if len(ready) < 2 or self.halted:
                    continue
            if self.limiter is None and self.cfg.concurrency is not None:
                self.limiter = anyio.CapacityLimiter(self.cfg.concurrency)
            self.tasks = TaskSet.create()
            try:
                self._spawn()
                await self.tasks.wait()
            finally:
                self.tasks = None

    def _spawn(self) -> None:
        tasks = self.tasks
        assert tasks is not None
        if self.spawning:
            return  # an eager task finished inside spawn(): the loop below picks up its followers
        self.spawning = True
        try:
            while self.ready and not self.halted:
                item = self.ready.popleft()
                if self.checkpoint is not None:
                    # In flight from now on: a snapshot taken before its task starts has it.
                    self.inflight[id(item)] = item
                tasks.spawn(self._task, item)
        finally:
            self.spawning = False

    async def _inline(self, item: tuple[str, Any, bool]) -> None:
        """Run a node that cannot suspend to its end, in a copy of the context variables."""
        if self.checkpoint is not None:
            self.inflight[id(item)] = item
        step = self._step(*item)
        try:
            contextvars.copy_context().run(step.send, None)
        except StopIteration:
            pass
        else:  # pragma: no cover - compile_plan marks `inline` only nodes that cannot suspend
            step.close()
            raise RuntimeError(f"node {item[0]!r} suspended, but was planned not to")
        finally:
            if self.checkpoint is not None:
                del self.inflight[id(item)]
        if self.checkpoint is not None:
            await self._checkpoint()

    async def _task(self, item: tuple[str, Any, bool]) -> None:
        if self.halted:  # the run failed or was paused before this task got to start
            if self.checkpoint is not None:
                del self.inflight[id(item)]
            self.ready.append(item)
            return
        if self.limiter is None and self.checkpoint is None:
            await self._step(*item)
        elif self.limiter is None:
            await self._checked_step(item)
        else:
            async with self.limiter:
                if self.halted:
                    if self.checkpoint is not None:
                        del self.inflight[id(item)]
                    self.ready.append(item)
                    return
                await self._checked_step(item)
        tasks = self.tasks
        # The last task running leaves a single follower (say, a join) to the loop to run inline.
        if tasks is not None and (len(self.ready) > 1 or tasks.running != 1):
            self._spawn()

    async def _checked_step(self, item: tuple[str, Any, bool]) -> None:
        if self.checkpoint is None:
            await self._step(*item)
            return
        key = id(item)
        self.inflight[key] = item
        try:
            await self._step(*item)
        finally:
            del self.inflight[key]
        await self._checkpoint()

    async def _checkpoint(self) -> None:
        """Hand the control's ``on_checkpoint`` a resumable snapshot of this moment."""
        assert self.checkpoint is not None
        now = self.cfg.clock.now()
        frontier = [
            WaitState(node_id, "control", now, value, note="checkpoint")
            for node_id, value, _ in (*self.ready, *self.inflight.values())
        ]
        snapshot = msgspec.structs.replace(
            self.env,
            # Nothing left to run and nothing waiting: the snapshot is the finished run.
            status="failed"
            if self.failed
            else "awaiting"
            if frontier or self.waiting
            else "completed",
            waiting=[*self.waiting.values(), *frontier],
            skipped=sorted(self.skipped),
            history=list(self.history),
            revision=self.env.revision + 1,
        )
        await self.checkpoint(self.cfg.codec.encode(snapshot))

    async def _step(self, node_id: str, value: Any, gate_open: bool) -> None:
        node = self.nodes[node_id]
        self.steps += 1
        if self.steps > self.cfg.max_steps:
            err = RunLimitError(self.env.run_id, self.cfg.max_steps)
            self._record_error(node_id, err, 0)
            return
        if node.plain and self.plain:
            # Hot path (a shortcut; twin: _attempts below): no events, middleware, retries,
            # timeout or input mapping to honour.
            fn = node.call
            assert fn is not None
            nctx = NodeContext(
                self.shared_ctx, value, node.params, self.deps, node_id, self.run_id, 1
            )
            try:
                result = fn(nctx)
                if node.is_async or (
                    type(result) not in NEVER_AWAITABLE and inspect.isawaitable(result)
                ):
                    result = await result
            except PauseRequested as pause:
                self.suspend(node_id, "node", value, note=pause.reason)
                return
            except Exception as exc:
                await self.fail(node, value, exc, 1)
                return
            action = None
            if type(result) in RESULT_TYPES:  # a NodeResult, or a dict that may stand for one
                if type(result) is dict:
                    result = ts_result(result) or result
                if type(result) is NodeResult:
                    action = result.action
                    result = result.output
            direct = node.direct
            if direct is not None:
                self.outputs[node_id] = result
                if self.skipped:
                    self.skipped.discard(node_id)
                for target in direct:
                    self.ready.append((target, result, False))
            else:
                self.complete(node, result, action)
            return
        if node.definition.inputs is not None:
            value = self._resolve_inputs(node.definition.inputs)
        if node.kind == "subflow":
            await self._subflow(node, value)
        elif node.kind == "scatter":
            await self._scatter(node, value)
        elif node.kind != "task":
            self._await_builtin(node, value)
        elif node.pause_before and not gate_open:
            self.suspend(node.id, "gate", value, note="pause_before")
        else:
            outcome = await self._attempts(node, value)
            if outcome[0] == _OK:
                self.complete(node, outcome[1], outcome[2])
            elif outcome[0] == _PAUSED:
                self.suspend(node.id, "node", value, note=outcome[1])
            else:
                await self.fail(node, value, outcome[1], outcome[2])
        if self.pending_events:
            await self.flush()

    async def _subflow(self, node: PlanNode, value: Any) -> None:
        """Run the child blueprint in-process; its waits surface as this node's waits."""
        assert node.subflow is not None
        child = self.cfg.child_plan(node.subflow, self.plan)
        if node.sub_inputs is None:
            state: dict[str, Any] = {"input": value}
        else:
            state = {name: self._lookup(key) for name, key in node.sub_inputs.items()}
        # The general twin of ``start``: a child run starts on the engine, never the line.
        env = new_envelope(child, state, f"{self.run_id}/{node.id}")
        result, env = await execute(begin(self.cfg, child, env, None), nested=True)
        self.subflow_done(node, value, child, result, env)

    async def _scatter(self, node: PlanNode, items: Any) -> None:
        """Run the batch worker over every item (bounded by chunk size), results in item order.

        With a ``RunControl.on_scatter`` hook that takes the batch, its items run elsewhere
        instead: the batch waits (note ``FANOUT``) until ``fanout.gather`` hands it their outcomes.
        """
        if not isinstance(items, list | tuple):
            err = TypeError(
                f"batch {node.id!r} needs a list as input, got {type(items).__name__}; "
                "point input_key at a state key holding a list"
            )
            self._record_error(node.id, err, 0)
            return
        hook = self.control.on_scatter if self.control is not None else None
        if hook is not None and items and hook(node.id, len(items)):
            now = self.cfg.clock.now()
            results: list[Any] = [None] * len(items)
            pending = {"items": list(items), "results": results}
            self.waiting[node.id] = WaitState(node.id, "batch", now, pending, note=FANOUT)
            return
        outcomes = await self.run_items(node, items, range(len(items)))
        self.batch_done(node, list(items), [None] * len(items), outcomes, [])

    async def run_items(
        self, node: PlanNode, items: list[Any] | tuple[Any, ...], indices: Sequence[int]
    ) -> dict[int, tuple[Any, ...]]:
        """Call the batch worker on ``items[i]`` for each index (async workers concurrently)."""
        template = node.worker
        assert template is not None
        outcomes: dict[int, tuple[Any, ...]] = {}
        limiter = anyio.CapacityLimiter(node.chunk_size or max(1, len(indices)))

        async def one(index: int) -> None:
            async with limiter:
                worker = copy.copy(template)
                worker.id = f"{node.id}/{index}"
                outcomes[index] = await self._attempts(worker, items[index])

        if template.is_async and len(indices) > 1:
            tasks = TaskSet.create()
            for index in indices:
                tasks.spawn(one, index)
            await tasks.wait()
        else:
            for index in indices:
                await one(index)
        return outcomes

    def batch_done(
        self,
        node: PlanNode,
        items: list[Any],
        results: list[Any],
        outcomes: dict[int, tuple[Any, ...]],
        paused: list[WaitState],
    ) -> None:
        """Fold item outcomes into the batch: fail on the first failed item, await paused ones."""
        now = self.cfg.clock.now()
        for index in sorted(outcomes):
            outcome = outcomes[index]
            if outcome[0] == _FAILED:
                exc = outcome[1]
                failure = BatchItemError(f"batch {node.id!r} item {index} failed: {exc!r}")
                failure.__cause__ = exc
                self._record_error(node.id, failure, outcome[2])
                errors = self.env.errors
                # An item that failed on another worker arrives as a stand-in naming its type.
                kind = getattr(exc, "type_name", None) or type(exc).__name__
                errors[-1] = msgspec.structs.replace(errors[-1], type=kind)
                return
            if outcome[0] == _PAUSED:
                paused.append(WaitState(str(index), "node", now, items[index], note=outcome[1]))
            else:
                results[index] = outcome[1]
        if paused:
            self.waiting[node.id] = WaitState(
                node.id,
                "batch",
                now,
                {"items": items, "results": results},
                note=f"batch {node.id}",
                sub=sorted(paused, key=lambda w: int(w.node_id)),
            )
            return
        self.complete(node, results, None)

    def subflow_done(
        self, node: PlanNode, value: Any, child: Plan, result: RunResult, env: Envelope
    ) -> None:
        """Apply a child run's outcome to its subflow node."""
        if result.status == "awaiting":
            now = self.cfg.clock.now()
            self.waiting[node.id] = WaitState(
                node.id,
                "subflow",
                now,
                {"input": value, "context": result.serialized_context},
                note=f"subflow {node.subflow}",
                sub=list(env.waiting),
            )
            return
        if result.status != "completed":
            err = result.errors[0] if result.errors else None
            where = f" at node {err.node_id!r}" if err else ""
            detail = f"{err.type}: {err.message}" if err else result.status
            exc = SubflowError(f"subflow {node.subflow!r} {result.status}{where}: {detail}")
            cause = result._causes.get(err.node_id) if err else None
            exc.__cause__ = cause
            self._record_error(node.id, exc, 1)
            if err is not None:
                # Keep the child's own error type visible in the record.
                self.env.errors[-1] = msgspec.structs.replace(self.env.errors[-1], type=err.type)
            return
        outputs = result.outputs
        if node.sub_outputs:
            for parent_key, child_key in node.sub_outputs.items():
                found = outputs.get(child_key, result.context.get(child_key))
                self.state[parent_key] = found
        done = [t for t in child.terminals if t in outputs]
        output = outputs[done[0]] if len(done) == 1 else {t: outputs[t] for t in done}
        self.complete(node, output, None)

    def _await_builtin(self, node: PlanNode, value: Any) -> None:
        wait = self.waiting[node.id] = pause_record(node, value, self.cfg.now())
        if self.bus is not None:
            self.event("workflow:pause", node.id, {"reason": REASONS[wait.kind]})

    def suspend(
        self,
        node_id: str,
        kind: WaitKind,
        value: Any,
        *,
        note: str | None = None,
        by: str | None = None,
        wake_at: datetime | None = None,
        expires_at: datetime | None = None,
        now: datetime | None = None,
    ) -> None:
        now = now or self.cfg.clock.now()
        self.waiting[node_id] = WaitState(node_id, kind, now, value, wake_at, expires_at, note, by)
        if self.bus is not None:
            self.event("workflow:pause", node_id, {"reason": REASONS[kind]})

    # --- events ------------------------------------------------------------------------------

    def event(self, type: str, node_id: str | None, payload: dict[str, Any]) -> None:
        """Queue an event (nothing happens when nobody listens)."""
        if self.bus is not None:
            self.pending_events.append(
                FlowEvent(
                    type=type,
                    run_id=self.env.run_id,
                    blueprint_id=self.plan.blueprint.id,
                    node_id=node_id,
                    payload=payload,
                )
            )

    def _context_change(self, node_id: str, op: str, key: str, value: Any) -> None:
        self.event("context:change", node_id, {"op": op, "key": key, "value": value})

    async def flush(self) -> None:
        """Deliver queued events in order."""
        bus = self.bus
        events, self.pending_events = self.pending_events, []
        if bus is None:
            return
        for ev in events:
            res = bus.emit(ev)
            if res is not None and inspect.isawaitable(res):
                await res

    # --- finishing ---------------------------------------------------------------------------

    def seal(self) -> Envelope:
        """Write the execution's state back into its envelope, with the final status."""
        env = self.env
        if self.cancelled:
            env.status = "cancelled"
            reason, by = self.cancel_note
            self.history.append(HistoryEntry("cancel", "", self.cfg.clock.now(), reason, by))
        elif self.failed:
            env.status = "failed"
        else:
            control = self.control
            if self.ready and control is not None and control.pause_requested is not None:
                reason, by = control.pause_requested
                now = self.cfg.clock.now()
                while self.ready:
                    node_id, value, _ = self.ready.popleft()
                    self.suspend(node_id, "control", value, note=reason, by=by, now=now)
            env.status = "awaiting" if self.waiting else "completed"
        if env.status in ("cancelled", "failed") and self.waiting:
            # Nothing can resume a finished run: its open pauses become plain history.
            self.history.extend(pause_entry(w) for w in self.waiting.values())
            self.waiting.clear()
        env.waiting = list(self.waiting.values())
        env.skipped = sorted(self.skipped) if self.skipped else []
        env.revision += 1
        if self.bus is not None:
            self.event("workflow:finish", None, {"status": env.status, "errors": len(env.errors)})
        return env

    # --- calling nodes -----------------------------------------------------------------------

    async def _attempts(self, node: PlanNode, value: Any) -> tuple[Any, ...]:
        cfg = self.cfg
        ctx = self.shared_ctx
        last: Exception | None = None
        instance: BaseNode | None = None
        prepared: Any = None
        if node.cls is not None:
            # Class node: one instance and one prep() per execution; exec() is what is retried.
            nctx = self._node_context(node, value, 1)
            try:
                instance = node.cls(node.params, node.id)
                prepared = await maybe_await(instance.prep(nctx))
            except PauseRequested as pause:
                return _PAUSED, pause.reason
            except Exception as exc:
                return await self._class_failed(node, instance, nctx, exc, 1)
        for attempt in range(1, node.max_retries + 1):
            if self.bus is not None:
                ctx = Context(self.state, partial(self._context_change, node.id))
                self.event("node:start", node.id, {"input": value, "attempt": attempt})
            nctx = NodeContext(ctx, value, node.params, self.deps, node.id, self.run_id, attempt)
            try:
                if instance is not None:
                    call = partial(instance.exec, prepared)
                    result = await invoke(self.cfg, node, nctx, call, node.timeout)
                elif node.timeout is None:
                    result = await invoke(self.cfg, node, nctx)
                else:
                    result = await invoke_with_timeout(self.cfg, node, nctx, node.timeout)
            except PauseRequested as pause:
                return _PAUSED, pause.reason
            except Exception as exc:
                last = exc
                if attempt < node.max_retries:
                    self.event("node:retry", node.id, {"attempt": attempt, "error": repr(exc)})
                    if self.pending_events:
                        await self.flush()
                    delay = node.retry_delay * node.retry_backoff ** (attempt - 1)
                    if delay > 0:
                        await cfg.clock.sleep(delay)
                    continue
                if instance is not None:
                    return await self._class_failed(node, instance, nctx, exc, attempt)
                self.event("node:error", node.id, {"error": repr(exc), "attempt": attempt})
                return _FAILED, exc, attempt
            if instance is not None:
                try:
                    result = await maybe_await(instance.post(result, nctx))
                except PauseRequested as pause:
                    return _PAUSED, pause.reason
                except Exception as exc:
                    return await self._class_failed(node, instance, nctx, exc, attempt, post=True)
            if type(result) is dict:
                result = ts_result(result) or result
            if type(result) is NodeResult:
                return _OK, result.output, result.action
            return _OK, result, None
        raise AssertionError(f"unreachable: {last!r}")  # pragma: no cover

    def _node_context(self, node: PlanNode, value: Any, attempt: int) -> NodeContext:
        ctx = self.shared_ctx
        if self.bus is not None:
            ctx = Context(self.state, partial(self._context_change, node.id))
        return NodeContext(ctx, value, node.params, self.deps, node.id, self.run_id, attempt)

    async def _class_failed(
        self,
        node: PlanNode,
        instance: BaseNode | None,
        nctx: NodeContext,
        exc: Exception,
        attempt: int,
        *,
        post: bool = False,
    ) -> tuple[Any, ...]:
        """Every exec attempt failed (or prep/post raised): fallback(), post(), else recover()."""
        error = exc
        if instance is not None and not post:
            try:
                result = await maybe_await(instance.fallback(exc, nctx))
                result = await maybe_await(instance.post(result, nctx))
            except PauseRequested as pause:
                return _PAUSED, pause.reason
            except Exception as again:
                error = again
            else:
                if type(result) is dict:
                    result = ts_result(result) or result
                if type(result) is NodeResult:
                    return _OK, result.output, result.action
                return _OK, result, None
        if instance is not None:
            try:
                await maybe_await(instance.recover(error, nctx))
            except Exception as cleanup:  # a failing cleanup must not hide the real error
                error.__context__ = cleanup
        self.event("node:error", node.id, {"error": repr(error), "attempt": attempt})
        return _FAILED, error, attempt

    async def fail(self, node: PlanNode, value: Any, exc: Exception, attempt: int) -> None:
        """Every attempt failed: the fallback stands in, else ``on_error`` routes, else fail."""
        fb = self.nodes.get(node.fallback) if node.fallback else None
        if fb is None or fb.kind != "task":
            if node.on_error is not None:
                self._route_error(node, exc, attempt)
                return
            self._record_error(node.id, exc, attempt)
            return
        self.event("node:fallback", node.id, {"fallback": fb.id})
        now = self.cfg.clock.now()
        self.history.append(HistoryEntry("fallback", node.id, now, f"{type(exc).__name__}: {exc}"))
        outcome = await self._attempts(fb, value)
        if outcome[0] == _OK:
            self.outputs[fb.id] = outcome[1]
            self.complete(node, outcome[1], outcome[2])
        elif outcome[0] == _PAUSED:
            self.suspend(node.id, "node", value, note=outcome[1])
        elif node.on_error is not None:  # the fallback failed too: route its error
            self._cause(node.id, exc)
            self._route_error(node, outcome[1], outcome[2], fb.id)
        else:
            self._cause(node.id, exc)
            self._record_error(fb.id, outcome[1], outcome[2])

    def _route_error(
        self, node: PlanNode, exc: Exception, attempt: int, failed_id: str | None = None
    ) -> None:
        """A routed failure (``on_error``): record it as handled, finish with its action.

        The record goes to ``errors`` (with ``routed`` set), history and the event stream, but
        the run does not fail; the node's output is the error record, as a plain dict.
        """
        action = node.on_error
        assert action is not None
        now = self.cfg.clock.now()
        record = NodeError(
            node_id=failed_id or node.id,
            type=type(exc).__name__,
            message=str(exc),
            attempt=attempt,
            timestamp=now,
            routed=action,
        )
        self.env.errors.append(record)
        self._cause(record.node_id, exc)
        self.history.append(
            HistoryEntry("error", node.id, now, f"{record.type}: {record.message}", None, action)
        )
        output = {
            "node_id": record.node_id,
            "type": record.type,
            "message": record.message,
            "attempt": attempt,
        }
        self.complete(node, output, action)

    def _cause(self, node_id: str, exc: BaseException) -> None:
        if "causes" not in self.__dict__:
            self.causes = {}
        self.causes.setdefault(node_id, exc)

    def _record_error(self, node_id: str, exc: BaseException, attempt: int) -> None:
        self.failed = True
        self._cause(node_id, exc)
        self.env.errors.append(
            NodeError(
                node_id=node_id,
                type=type(exc).__name__,
                message=str(exc),
                attempt=attempt,
                timestamp=self.cfg.clock.now(),
            )
        )

    # --- routing ---------------------------------------------------------------------------------

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


# --- one call, start to finish --------------------------------------------------------------------


def begin(cfg: Config, plan: Plan, env: Envelope, control: RunControl | None) -> Execution:
    """A new run's execution, its start nodes ready."""
    ex = Execution(cfg, plan, env, control)
    if cfg.event_bus is not None:
        ex.event("workflow:start", None, {})
    ex.ready.extend(plan.start_items)
    return ex


def cancel(
    cfg: Config, plan: Plan, env: Envelope, reason: str | None, by: str | None
) -> Awaitable[tuple[RunResult, Envelope]]:
    """End an awaiting run as ``cancelled``, keeping everything done so far."""
    ex = Execution(cfg, plan, env, None)
    ex.cancelled = True
    ex.cancel_note = (reason, by)
    return execute(ex)


async def execute(ex: Execution, nested: bool = False) -> tuple[RunResult, Envelope]:
    """Drive ``ex`` until nothing is runnable; seal, encode and report it."""
    await ex.drive()
    env = ex.seal()
    if ex.pending_events:
        await ex.flush()
    return finish(ex.cfg, ex.plan, env, ex.causes, nested)


def finish(
    cfg: Config, plan: Plan, env: Envelope, causes: Mapping[str, BaseException], nested: bool
) -> tuple[RunResult, Envelope]:
    """Encode a finished call's envelope into its result; show it to the observers."""
    result = RunResult(
        status=env.status,  # type: ignore[arg-type]  # "running" never reaches a result
        run_id=env.run_id,
        revision=env.revision,
        context=env.state,
        outputs=env.outputs,
        serialized_context=cfg.codec.encode(env),
        errors=tuple(env.errors) if env.errors else (),
        blueprint_id=env.blueprint_id,
        trace=env.trace,
        _waiting=env.waiting,
        _past=env.history,
        _causes=causes,
    )
    if not nested:  # a subflow's timers belong to its parent run
        for observe in cfg.observers:
            observe(plan, result, env)
    return result, env
