"""The in-process scheduler: wakes sleep nodes and expires waits of results a runtime returns."""

from __future__ import annotations

import heapq
import inspect
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import anyio
import msgspec

from flowcraft._engine.config import Config
from flowcraft._engine.load import load
from flowcraft._engine.plan import Plan
from flowcraft._engine.resume import resume
from flowcraft._engine.segment import observed
from flowcraft._envelope.records import Envelope
from flowcraft._errors import FlowcraftError, TimerNotDueError
from flowcraft._values import RunResult, flat_waiting

__all__ = ["PendingTimer", "Scheduler"]

log = logging.getLogger("flowcraft.scheduler")


class PendingTimer(msgspec.Struct, frozen=True, kw_only=True):
    """One registered deadline: a sleep's wake time or a wait's expiry."""

    run_id: str
    node_id: str
    due: datetime
    kind: Literal["timer", "expiry"]


@dataclass(slots=True)
class _Entry:
    plan: Plan
    result: RunResult
    timers: dict[str, PendingTimer]


class Scheduler:
    """Tracks the newest awaiting context of each run and fires its due deadlines once.

    Created by ``FlowRuntime.scheduler(...)``; not constructed directly.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        interval: float,
        on_result: Callable[[RunResult], Any] | None,
    ) -> None:
        self._cfg = config
        self._interval = interval
        self._on_result = on_result
        self._runs: dict[str, _Entry] = {}
        self.fired = 0
        self._sleep: tuple[anyio.CancelScope | None, datetime | None] = (None, None)
        self._heap: list[tuple[datetime, int, PendingTimer]] = []
        self._seq = itertools.count()

    def __repr__(self) -> str:
        return f"flowcraft.Scheduler(runs={len(self._runs)}, interval={self._interval})"

    def pending(self) -> list[PendingTimer]:
        """Every registered deadline, earliest first."""
        timers = [t for e in self._runs.values() for t in e.timers.values()]
        timers.sort(key=lambda t: (t.due, t.run_id, t.node_id))
        return timers

    def observe(self, plan: Plan, result: RunResult, env: Envelope) -> None:
        """Register ``result``'s deadlines, replacing anything from an older revision of the run."""
        current = self._runs.get(result.run_id)
        if current is not None and current.result.revision >= result.revision:
            return
        timers: dict[str, PendingTimer] = {}
        if result.status == "awaiting":
            for path, w in flat_waiting(env.waiting):
                kind: Literal["timer", "expiry"]
                if w.kind == "timer" and w.wake_at is not None:
                    due, kind = w.wake_at, "timer"
                elif w.kind == "wait" and w.expires_at is not None:
                    due, kind = w.expires_at, "expiry"
                else:
                    continue
                timer = PendingTimer(run_id=result.run_id, node_id=path, due=due, kind=kind)
                timers[path] = timer
                heapq.heappush(self._heap, (due, next(self._seq), timer))
        if not timers:
            self._runs.pop(result.run_id, None)
            return
        self._runs[result.run_id] = _Entry(plan, result, timers)
        # Wake the loop early when this deadline comes before the one it sleeps towards.
        scope, until = self._sleep
        if scope is not None and until is not None and self._heap[0][0] < until:
            scope.cancel()

    def _live(self, timer: PendingTimer) -> bool:
        entry = self._runs.get(timer.run_id)
        return entry is not None and entry.timers.get(timer.node_id) is timer

    async def tick(self) -> int:
        """Fire every deadline that is due now, earliest first; return how many fired."""
        now = self._cfg().clock.now()
        count = 0
        heap = self._heap
        while heap and heap[0][0] <= now:
            timer = heapq.heappop(heap)[2]
            if not self._live(timer):
                continue  # replaced by a newer revision of its run, or already fired
            entry = self._runs[timer.run_id]
            try:
                result = await self._fire(entry.plan, entry.result, timer.node_id)
            except TimerNotDueError:
                heapq.heappush(heap, (timer.due, next(self._seq), timer))
                break
            except FlowcraftError:
                log.exception("scheduler: dropping %s/%s", timer.run_id, timer.node_id)
                entry.timers.pop(timer.node_id, None)
                if not entry.timers:
                    self._runs.pop(timer.run_id, None)
                continue
            count += 1
            self.fired += 1
            if self._on_result is not None:
                res = self._on_result(result)
                if inspect.isawaitable(res):
                    await res
        return count

    def _fire(self, plan: Plan, newest: RunResult, node_id: str) -> Awaitable[RunResult]:
        cfg = self._cfg()
        env = load(cfg.codec, plan, newest, history_limit=cfg.history_limit)

        def fire(env: Envelope) -> Awaitable[tuple[RunResult, Envelope]]:
            return resume(cfg, plan, env, None, node_id, fired=True)

        if cfg.segment_hooks:  # a firing is a segment like runtime.fire's
            return observed(cfg, "fire", plan, env, fire, node_id=node_id)
        return _first(fire(env))

    def _next_due(self) -> datetime | None:
        heap = self._heap
        while heap and not self._live(heap[0][2]):
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def reconfigured(self) -> None:
        """The runtime's settings changed: stop sleeping on the old clock, re-read them."""
        scope = self._sleep[0]
        if scope is not None:
            scope.cancel()

    async def _loop(self) -> None:
        while True:
            clock = self._cfg().clock  # read afresh: the runtime's clock may have been replaced
            await self.tick()
            delay = self._interval
            due = self._next_due()
            if due is not None:
                delay = max(0.0, min(delay, (due - clock.now()).total_seconds()))
            with anyio.CancelScope() as scope:
                self._sleep = (scope, clock.now() + timedelta(seconds=delay))
                await clock.sleep(delay)
            self._sleep = (None, None)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the scheduler loop in the background while the block is open."""
        error: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._loop)
            try:
                yield
            except Exception as exc:
                error = exc  # re-raised below, unwrapped from the task group's ExceptionGroup
            finally:
                tg.cancel_scope.cancel()
        if error is not None:
            raise error


async def _first(call: Awaitable[tuple[RunResult, Envelope]]) -> RunResult:
    return (await call)[0]
