"""Calling one node function: through the middleware, under a timeout, sync or async.

``Execution`` decides when a node runs, retries it and records the outcome; this module is the
call itself. ``invoke`` is the general twin of the engine's plain-node hot path and of the
straight line, which call ``node.call`` directly when no middleware, timeout or event needs it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from flowcraft._engine.config import Config
from flowcraft._engine.plan import PlanNode
from flowcraft._node import NodeContext, PauseRequested
from flowcraft._values import NodeResult

if TYPE_CHECKING:

    pass

__all__ = ["NEVER_AWAITABLE", "RESULT_TYPES", "invoke", "invoke_with_timeout", "maybe_await"]

#: Exact result types that cannot be awaitable: a sync node's result is checked against these
#: before the (slower) ``inspect.isawaitable``.
NEVER_AWAITABLE = frozenset({str, int, float, bool, bytes, dict, list, tuple, type(None)})

#: Result types a node call is looked at twice for: a ``NodeResult``, or a dict that may be a
#: TS-shaped one (``{"output": ..., "action": ...}``). One set lookup keeps the common case quick.
RESULT_TYPES = frozenset({dict, NodeResult})


async def maybe_await(value: Any) -> Any:
    """Await ``value`` if it is awaitable (lets node methods be sync or async)."""
    if inspect.isawaitable(value):
        return await value
    return value


async def invoke(
    cfg: Config,
    node: PlanNode,
    nctx: NodeContext,
    call: Callable[[NodeContext], Any] | None = None,
    limit: float | None = None,
) -> Any:
    if limit is not None:
        return await invoke_with_timeout(cfg, node, nctx, limit, call)
    fn = call if call is not None else node.call
    assert fn is not None
    befores, afters, arounds = cfg.hooks
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

def in_thread(fn: Callable[[NodeContext], Any]) -> Callable[[NodeContext], Awaitable[Any]]:
    """``fn`` (sync) called in a worker thread, so a timeout can stop waiting for it.

    The trade-off: a thread cannot be killed. When the timeout passes, the node fails with
    ``TimeoutError`` and the engine moves on at once; the thread runs to its end in the
    background and its late result is discarded (its ``context.set`` calls still land, so a
    node with a timeout should write state only when it is done).
    """

    async def threaded(nctx: NodeContext) -> Any:
        result = await anyio.to_thread.run_sync(fn, nctx, abandon_on_cancel=True)
        if inspect.isawaitable(result):  # a sync function returning a coroutine
            result = await result
        return result

    return threaded


async def invoke_with_timeout(
    cfg: Config,
    node: PlanNode,
    nctx: NodeContext,
    seconds: float,
    call: Callable[[NodeContext], Any] | None = None,
) -> Any:
    """Call the node under a time limit; a sync function runs in a worker thread (``in_thread``).

    Inline, a blocking sync function would hold the event loop: the limit could not fire, and
    every concurrent branch would wait with it.
    """
    message = f"node {node.id!r} timed out after {seconds:g}s (attempt {nctx.attempt})"
    if call is None and node.cls is None and not node.is_async:
        fn = node.call
        assert fn is not None
        call = in_thread(fn)
    if cfg.system_clock:
        try:
            with anyio.fail_after(seconds):
                return await invoke(cfg, node, nctx, call)
        except TimeoutError:
            raise TimeoutError(message) from None
    # Any other clock (e.g. FakeClock): race the node against clock.sleep.
    outcome: list[Any] = []
    timed_out = False
    async with anyio.create_task_group() as tg:

        async def watchdog() -> None:
            nonlocal timed_out
            await cfg.clock.sleep(seconds)
            timed_out = True
            tg.cancel_scope.cancel()

        tg.start_soon(watchdog)
        try:
            outcome.append((True, await invoke(cfg, node, nctx, call)))
        except (Exception, PauseRequested) as exc:
            outcome.append((False, exc))
        tg.cancel_scope.cancel()
    if timed_out and not outcome:
        raise TimeoutError(message)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value

