"""Test helpers: a controllable clock, an event recorder, traced runs."""

from __future__ import annotations

import copy
import heapq
import itertools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel

from flowcraft._events import FlowEvent
from flowcraft._flow.blueprint import Blueprint
from flowcraft._runtime import FlowRuntime
from flowcraft._values import RunResult

__all__ = ("FakeClock", "InMemoryEventLogger", "Stepper", "create_stepper", "run_with_trace")


class _Sleeper:
    __slots__ = ("deadline", "done", "event")

    def __init__(self, deadline: datetime) -> None:
        self.deadline = deadline
        self.event = anyio.Event()
        self.done = False


class _Timer(_Sleeper):
    """A ``call_later`` entry: its callback runs when the clock reaches the deadline."""

    __slots__ = ("callback",)

    def __init__(self, deadline: datetime, callback: Callable[[], object]) -> None:
        super().__init__(deadline)
        self.callback = callback

    def cancel(self) -> None:
        """Do not call the callback (if it has not run yet)."""
        self.done = True


class FakeClock:
    """A clock that only moves when told to: ``advance(seconds)`` wakes every due sleeper.

    With ``autojump=True`` time also moves by itself, like trio's ``MockClock``: whenever every
    task is blocked, the clock jumps to the earliest pending deadline. Code that waits (retry
    delays, timeouts, sleeps) then runs at once with exact virtual time, and a timeout only
    fires if the work it guards is really still blocked.
    """

    def __init__(self, start: datetime | None = None, *, autojump: bool = False) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        self.autojump = autojump
        self._sleepers: list[tuple[datetime, int, _Sleeper]] = []
        self._seq = itertools.count()
        self._driving = False

    def __repr__(self) -> str:
        return f"flowcraft.testing.FakeClock({self._now.isoformat()})"

    def now(self) -> datetime:
        """The fake current time."""
        return self._now

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock has been advanced ``seconds`` past now."""
        if seconds <= 0:
            await anyio.lowlevel.checkpoint()
            return
        me = _Sleeper(self._now + timedelta(seconds=seconds))
        heapq.heappush(self._sleepers, (me.deadline, next(self._seq), me))
        try:
            while True:
                if self.autojump and not self._driving:
                    await self._drive(me)
                else:
                    await me.event.wait()
                if self._now >= me.deadline:
                    return
                me.event = anyio.Event()  # woken to take over driving, not because it is due
        finally:
            me.done = True  # dropped lazily from the heap

    async def _drive(self, me: _Sleeper) -> None:
        """While ``me`` is not due: when all else is blocked, jump to the earliest deadline."""
        self._driving = True
        try:
            while self._now < me.deadline:
                await anyio.wait_all_tasks_blocked()
                if self._now >= me.deadline:
                    break
                self._drop_done()
                self._now = max(self._now, self._sleepers[0][0])
                self._wake()
        finally:
            self._driving = False
            # Hand the wheel to the earliest sleeper still waiting, if any.
            self._drop_done()
            for _, _, sleeper in sorted(self._sleepers):
                if sleeper is not me and not sleeper.done and not isinstance(sleeper, _Timer):
                    sleeper.event.set()
                    break

    def call_later(self, seconds: float, callback: Callable[[], object]) -> _Timer:
        """Call ``callback()`` once the clock has been advanced ``seconds`` past now.

        Returns a handle whose ``cancel()`` drops the call. The callback runs synchronously
        inside ``advance`` (or an autojump), before the sleepers due at the same time wake;
        it must not block. The durable service uses it to start a segment's lease watcher only
        when a segment outlives one watch step (without ``autojump``).
        """
        me = _Timer(self._now + timedelta(seconds=seconds), callback)
        heapq.heappush(self._sleepers, (me.deadline, next(self._seq), me))
        return me

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward and wake the sleepers now due."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("FakeClock cannot go backwards")
        self._now += delta
        self._wake()

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            due = heapq.heappop(self._sleepers)[2]
            if isinstance(due, _Timer):
                if not due.done:
                    due.done = True
                    due.callback()
            else:
                due.event.set()

    def _drop_done(self) -> None:
        while self._sleepers and self._sleepers[0][2].done:
            heapq.heappop(self._sleepers)


class InMemoryEventLogger:
    """An event bus that keeps every event, for assertions."""

    def __init__(self) -> None:
        self.events: list[FlowEvent] = []

    def __repr__(self) -> str:
        return f"flowcraft.testing.InMemoryEventLogger(events={len(self.events)})"

    def emit(self, event: FlowEvent) -> None:
        """Record the event."""
        self.events.append(event)

    def types(self) -> list[str]:
        """Event types in order."""
        return [e.type for e in self.events]

    def of(self, type: str) -> list[FlowEvent]:
        """The events of one type."""
        return [e for e in self.events if e.type == type]

    def clear(self) -> None:
        """Forget every event."""
        self.events.clear()

    def format(self) -> str:
        """A readable trace, one event per line."""
        return "\n".join(f"{e.type:<16} {e.node_id or '':<20} {e.payload!r}" for e in self.events)


class _Tee:
    def __init__(self, *buses: Any) -> None:
        self.buses = [b for b in buses if b is not None]

    async def emit(self, event: FlowEvent) -> None:
        for bus in self.buses:
            res = bus.emit(event)
            if res is not None:
                await res


async def run_with_trace(
    runtime: FlowRuntime,
    blueprint: Blueprint,
    initial_state: Mapping[str, Any] | None = None,
    **kw: Any,
) -> RunResult:
    """Run like ``runtime.run`` and print the event trace when the run does not complete."""
    logger = InMemoryEventLogger()
    traced = copy.copy(runtime)
    traced.event_bus = _Tee(runtime.event_bus, logger)
    result = await traced.run(blueprint, initial_state, **kw)
    if result.status not in ("completed", "awaiting"):
        print(f"--- flowcraft trace of run {result.run_id} ({result.status}) ---")  # noqa: T201
        print(logger.format())  # noqa: T201
    return result


class Stepper:
    """Runs a flow one wave of ready nodes at a time, keeping every step to go back to.

    Made by ``create_stepper``. ``await next()`` runs the nodes that are ready now (the first
    call starts the run) and returns the ``RunResult``; nodes they make ready wait for the next
    call. When the run awaits a real wait or sleep, ``next(data, node_id)`` resumes it.
    ``prev()`` drops the last step, so the next ``next()`` replays it from the context before.
    """

    def __init__(
        self,
        runtime: FlowRuntime,
        blueprint: Blueprint,
        initial_state: Mapping[str, Any] | None,
        registry: Mapping[str, object] | None,
    ) -> None:
        self.runtime = runtime
        self.blueprint = blueprint
        self.initial_state = dict(initial_state or {})
        self.registry = registry
        self.steps: list[RunResult] = []

    def __repr__(self) -> str:
        return f"flowcraft.testing.Stepper(steps={len(self.steps)}, done={self.done})"

    @property
    def current(self) -> RunResult | None:
        """The newest step's result."""
        return self.steps[-1] if self.steps else None

    @property
    def done(self) -> bool:
        """True once the run completed, failed or was cancelled."""
        last = self.current
        return last is not None and last.status != "awaiting"

    async def next(self, data: Any = None, node_id: str | None = None) -> RunResult:
        """Run one wave of ready nodes (or resume a real wait with ``data``)."""
        from flowcraft._control import RunControl

        control = RunControl()
        control.stepping = True
        last = self.current
        if last is None:
            result = await self.runtime.run(
                self.blueprint, self.initial_state, registry=self.registry, control=control
            )
        elif self.done:
            raise RuntimeError("the run is finished; there is no next step")
        else:
            result = await self.runtime.resume(
                self.blueprint, last, data, node_id, registry=self.registry, control=control
            )
        self.steps.append(result)
        return result

    def prev(self) -> RunResult | None:
        """Go back one step; return the result now current (``None`` before the first)."""
        if self.steps:
            self.steps.pop()
        return self.current


def create_stepper(
    runtime: FlowRuntime,
    blueprint: Blueprint,
    initial_state: Mapping[str, Any] | None = None,
    *,
    registry: Mapping[str, object] | None = None,
) -> Stepper:
    """A ``Stepper`` for ``blueprint`` on ``runtime`` (as Flowcraft TS ``createStepper``)."""
    return Stepper(runtime, blueprint, initial_state, registry)
