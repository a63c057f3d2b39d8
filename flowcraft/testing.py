"""Test helpers: a controllable clock, an event recorder, traced runs."""

from __future__ import annotations

import copy
import heapq
import itertools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel

from ._blueprint import Blueprint
from ._events import FlowEvent
from ._runtime import FlowRuntime
from ._types import RunResult

__all__ = ("FakeClock", "InMemoryEventLogger", "run_with_trace")


class FakeClock:
    """A clock that only moves when told to: ``advance(seconds)`` wakes every due sleeper.

    With ``autojump=True`` every ``sleep`` advances the clock by its duration at once, so code
    that waits (retry delays, timeouts) runs instantly with exact virtual time.
    """

    def __init__(self, start: datetime | None = None, *, autojump: bool = False) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self._now.tzinfo is None:
            raise ValueError("FakeClock start must be timezone-aware")
        self.autojump = autojump
        self._sleepers: list[tuple[datetime, int, anyio.Event]] = []
        self._seq = itertools.count()

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
        if self.autojump:
            self._now += timedelta(seconds=seconds)
            self._wake()
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(
            self._sleepers, (self._now + timedelta(seconds=seconds), next(self._seq), event)
        )
        await event.wait()

    def advance(self, seconds: float | timedelta) -> None:
        """Move time forward and wake the sleepers now due."""
        delta = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        if delta < timedelta(0):
            raise ValueError("FakeClock cannot go backwards")
        self._now += delta
        self._wake()

    def _wake(self) -> None:
        while self._sleepers and self._sleepers[0][0] <= self._now:
            heapq.heappop(self._sleepers)[2].set()


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
