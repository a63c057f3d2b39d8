"""The engine loop: execute ready nodes, route along edges, eliminate dead paths, pause.

``Execution`` drives the loop, runs built-ins, batches and subflows, pauses, emits events and seals
the envelope; calling task nodes lives in ``_calls`` and routing in ``_routing``, two mixins it
inherits.
"""

from __future__ import annotations

import contextvars
import copy
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from flowcraft._engine.calls import _FAILED, _OK, _PAUSED, NEVER_AWAITABLE, Calls
from flowcraft._engine.control import RunControl
from flowcraft._engine.plan import Plan, PlanNode, pause_record
from flowcraft._engine.routing import Routing
from flowcraft._engine.tasks import TaskSet
from flowcraft._envelope.records import Envelope, HistoryEntry, WaitKind, WaitState
from flowcraft._errors import BatchItemError, RunLimitError, SubflowError
from flowcraft._events import EventBus, FlowEvent
from flowcraft._node import Context, NodeContext, PauseRequested
from flowcraft._values import REASONS, NodeResult, RunResult, pause_entry

if TYPE_CHECKING:
    from flowcraft._runtime import FlowRuntime

__all__ = ["Execution"]


class Execution(Routing, Calls):
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
        rt: FlowRuntime,
        plan: Plan,
        env: Envelope,
        control: RunControl | None,
        waiting: dict[str, WaitState] | None = None,
    ) -> None:
        self.rt = rt
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
        if rt.concurrency == 1:
            self.serial = True
        if rt.event_bus is not None:
            self.bus = rt.event_bus
            self.pending_events = []
            self.plain = False
        elif rt.has_hooks or not rt._lines:
            self.plain = False
        self.deps = rt.dependencies
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
            # Nodes that cannot suspend (built-ins, async functions without awaits) need no
            # task. The leading ones run now, in ready order, each in its own copy of the
            # context variables as a task would; from the first other node on, all are spawned.
            if self.plain:
                while len(ready) > 1 and nodes[ready[0][0]].inline and not self.halted:
                    await self._inline(ready.popleft())
                if len(ready) < 2 or self.halted:
                    continue
            if self.limiter is None and self.rt.concurrency is not None:
                self.limiter = anyio.CapacityLimiter(self.rt.concurrency)
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
        now = self.rt.clock.now()
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
        await self.checkpoint(self.rt.codec.encode(snapshot))

    async def _step(self, node_id: str, value: Any, gate_open: bool) -> None:
        node = self.nodes[node_id]
        self.steps += 1
        if self.steps > self.rt.max_steps:
            err = RunLimitError(self.env.run_id, self.rt.max_steps)
            self._record_error(node_id, err, 0)
            return
        if node.plain and self.plain:
            # Hot path: no events, middleware, retries, timeout or input mapping to honour.
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
                self._await(node_id, "node", value, note=pause.reason)
                return
            except Exception as exc:
                await self._failed(node, value, exc, 1)
                return
            action = None
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
            self._await(node.id, "gate", value, note="pause_before")
        else:
            outcome = await self._attempts(node, value)
            if outcome[0] == _OK:
                self.complete(node, outcome[1], outcome[2])
            elif outcome[0] == _PAUSED:
                self._await(node.id, "node", value, note=outcome[1])
            else:
                await self._failed(node, value, outcome[1], outcome[2])
        if self.pending_events:
            await self.flush()

    async def _subflow(self, node: PlanNode, value: Any) -> None:
        """Run the child blueprint in-process; its waits surface as this node's waits."""
        assert node.subflow is not None
        child = self.rt.child_plan(node.subflow, self.plan)
        if node.sub_inputs is None:
            state: dict[str, Any] = {"input": value}
        else:
            state = {name: self._lookup(key) for name, key in node.sub_inputs.items()}
        result, env = await self.rt.start(child, state, f"{self.run_id}/{node.id}", nested=True)
        self.subflow_done(node, value, child, result, env)

    async def _scatter(self, node: PlanNode, items: Any) -> None:
        """Run the batch worker over every item (bounded by chunk size), results in item order."""
        template = node.worker
        assert template is not None
        if not isinstance(items, list | tuple):
            err = TypeError(
                f"batch {node.id!r} needs a list as input, got {type(items).__name__}; "
                "point input_key at a state key holding a list"
            )
            self._record_error(node.id, err, 0)
            return
        outcomes: dict[int, tuple[Any, ...]] = {}
        limiter = anyio.CapacityLimiter(node.chunk_size or max(1, len(items)))

        async def one(index: int, item: Any) -> None:
            async with limiter:
                worker = copy.copy(template)
                worker.id = f"{node.id}/{index}"
                outcomes[index] = await self._attempts(worker, item)

        if template.is_async and len(items) > 1:
            tasks = TaskSet.create()
            for index, item in enumerate(items):
                tasks.spawn(one, index, item)
            await tasks.wait()
        else:
            for index, item in enumerate(items):
                await one(index, item)
        self.batch_done(node, list(items), [None] * len(items), outcomes, [])

    def batch_done(
        self,
        node: PlanNode,
        items: list[Any],
        results: list[Any],
        outcomes: dict[int, tuple[Any, ...]],
        paused: list[WaitState],
    ) -> None:
        """Fold item outcomes into the batch: fail on the first failed item, await paused ones."""
        now = self.rt.clock.now()
        for index in sorted(outcomes):
            outcome = outcomes[index]
            if outcome[0] == _FAILED:
                exc = outcome[1]
                failure = BatchItemError(f"batch {node.id!r} item {index} failed: {exc!r}")
                failure.__cause__ = exc
                self._record_error(node.id, failure, outcome[2])
                errors = self.env.errors
                errors[-1] = msgspec.structs.replace(errors[-1], type=type(exc).__name__)
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
            now = self.rt.clock.now()
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
        wait = self.waiting[node.id] = pause_record(node, value, self.rt.now())
        if self.bus is not None:
            self.event("workflow:pause", node.id, {"reason": REASONS[wait.kind]})

    def _await(
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
        now = now or self.rt.clock.now()
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
            self.history.append(HistoryEntry("cancel", "", self.rt.clock.now(), reason, by))
        elif self.failed:
            env.status = "failed"
        else:
            control = self.control
            if self.ready and control is not None and control.pause_requested is not None:
                reason, by = control.pause_requested
                now = self.rt.clock.now()
                while self.ready:
                    node_id, value, _ = self.ready.popleft()
                    self._await(node_id, "control", value, note=reason, by=by, now=now)
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
