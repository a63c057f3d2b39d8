"""Clocks: all waiting in flowcraft goes through one injected ``Clock``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    """Tells the time and sleeps. ``flowcraft.testing.FakeClock`` implements it for tests."""

    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)`` and ``anyio.sleep``."""

    def __repr__(self) -> str:
        return "flowcraft.SystemClock()"

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the event loop."""
        await anyio.sleep(seconds)
