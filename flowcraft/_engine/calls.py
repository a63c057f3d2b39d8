"""Calling nodes, for ``Execution``: attempts and retries, timeouts, middleware, failures.

``Calls`` is a mixin that ``Execution`` (``_engine``) inherits: it runs a task node's attempts
(class nodes' ``prep``/``exec``/``post``/``fallback``/``recover`` included) through the runtime's
middleware and timeout, and records what fails, trying the node's fallback first. Outcomes are
tuples tagged ``_OK``, ``_PAUSED`` or ``_FAILED``, shared with the engine loop.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from flowcraft._engine.plan import PlanNode
from flowcraft._envelope.records import HistoryEntry, NodeError
from flowcraft._node import BaseNode, Context, NodeContext, PauseRequested
from flowcraft._values import NodeResult

if TYPE_CHECKING:
    from datetime import datetime

    from flowcraft._envelope.records import Envelope, WaitKind
    from flowcraft._events import EventBus, FlowEvent
    from flowcraft._runtime import FlowRuntime

__all__ = ["Calls"]

#: Exact result types that cannot be awaitable: a sync node's result is checked against these
#: before the (slower) ``inspect.isawaitable``.
NEVER_AWAITABLE = frozenset({str, int, float, bool, bytes, dict, list, tuple, type(None)})


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (lets node methods be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


_OK, _PAUSED, _FAILED = 0, 1, 2


class Calls:
    """Mixin of ``Execution``: call nodes, retry them, record their failures."""

    # Set by Execution (instance attributes or class defaults there).
    rt: FlowRuntime
    nodes: dict[str, PlanNode]
    env: Envelope
    state: dict[str, Any]
    outputs: dict[str, Any]
    history: list[HistoryEntry]
    deps: Mapping[str, Any]
    run_id: str
    shared_ctx: Context
    bus: EventBus | None
    pending_events: list[FlowEvent]
    failed: bool
    causes: dict[str, BaseException]

    if TYPE_CHECKING:  # defined in Execution and Routing

        def event(self, type: str, node_id: str | None, payload: dict[str, Any]) -> None: ...
        def _context_change(self, node_id: str, op: str, key: str, value: Any) -> None: ...
        async def flush(self) -> None: ...
        def complete(self, node: PlanNode, output: Any, action: str | None) -> None: ...
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
        ) -> None: ...

    async def _attempts(self, node: PlanNode, value: Any) -> tuple[Any, ...]:
        rt = self.rt
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
                    result = await self._invoke(node, nctx, call, node.timeout)
                elif node.timeout is None:
                    result = await self._invoke(node, nctx)
                else:
                    result = await self._invoke_with_timeout(node, nctx, node.timeout)
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
                        await rt.clock.sleep(delay)
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

    async def _invoke(
        self,
        node: PlanNode,
        nctx: NodeContext,
        call: Callable[[NodeContext], Any] | None = None,
        limit: float | None = None,
    ) -> Any:
        if limit is not None:
            return await self._invoke_with_timeout(node, nctx, limit, call)
        fn = call if call is not None else node.call
        assert fn is not None
        befores, afters, arounds = self.rt.hooks
        if not (befores or afters or arounds):
            result = fn(nctx)
            if node.is_async or (
                type(result) not in NEVER_AWAITABLE and inspect.isawaitable(result)
            ):
                result = await result
            return result

        async def innermost() -> Any:
            result = fn(nctx)
            if inspect.isawaitable(result):
                result = await result
            return result

        chain: Callable[[], Awaitable[Any]] = innermost
        for around in reversed(arounds):
            chain = partial(around, nctx, chain)
        for before in befores:
            await before(nctx)
        try:
            result = await chain()
        except Exception as exc:
            for after in reversed(afters):
                await after(nctx, None, exc)
            raise
        for after in reversed(afters):
            await after(nctx, result, None)
        return result

    async def _invoke_with_timeout(
        self,
        node: PlanNode,
        nctx: NodeContext,
        seconds: float,
        call: Callable[[NodeContext], Any] | None = None,
    ) -> Any:
        message = f"node {node.id!r} timed out after {seconds:g}s (attempt {nctx.attempt})"
        if self.rt.system_clock:
            try:
                with anyio.fail_after(seconds):
                    return await self._invoke(node, nctx, call)
            except TimeoutError:
                raise TimeoutError(message) from None
        # Any other clock (e.g. FakeClock): race the node against clock.sleep.
        outcome: list[Any] = []
        timed_out = False
        async with anyio.create_task_group() as tg:

            async def watchdog() -> None:
                nonlocal timed_out
                await self.rt.clock.sleep(seconds)
                timed_out = True
                tg.cancel_scope.cancel()

            tg.start_soon(watchdog)
            try:
                outcome.append((True, await self._invoke(node, nctx, call)))
            except (Exception, PauseRequested) as exc:
                outcome.append((False, exc))
            tg.cancel_scope.cancel()
        if timed_out and not outcome:
            raise TimeoutError(message)
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    async def _failed(self, node: PlanNode, value: Any, exc: Exception, attempt: int) -> None:
        fb = self.nodes.get(node.fallback) if node.fallback else None
        if fb is None or fb.kind != "task":
            self._record_error(node.id, exc, attempt)
            return
        self.event("node:fallback", node.id, {"fallback": fb.id})
        now = self.rt.clock.now()
        self.history.append(HistoryEntry("fallback", node.id, now, f"{type(exc).__name__}: {exc}"))
        outcome = await self._attempts(fb, value)
        if outcome[0] == _OK:
            self.outputs[fb.id] = outcome[1]
            self.complete(node, outcome[1], outcome[2])
        elif outcome[0] == _PAUSED:
            self._await(node.id, "node", value, note=outcome[1])
        else:
            self._cause(node.id, exc)
            self._record_error(fb.id, outcome[1], outcome[2])

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
                timestamp=self.rt.clock.now(),
            )
        )
