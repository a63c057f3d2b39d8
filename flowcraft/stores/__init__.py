"""Durable runs: the ``RunStore`` protocol, its implementations, and ``FlowService``.

``SqliteStore()`` is the embedded default (a file in the working directory). ``RedisStore`` and
``PostgresStore`` need the ``redis`` / ``postgres`` extras, imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowcraft._service.scheduler import DurableScheduler
from flowcraft.stores._base import (
    HistoryRecord,
    RunExistsError,
    RunPage,
    RunStats,
    RunStore,
    StoredRun,
)
from flowcraft.stores._memory import MemoryStore
from flowcraft.stores._postgres import PostgresStore
from flowcraft.stores._redis import RedisStore
from flowcraft.stores._sqlite import SqliteStore

if TYPE_CHECKING:
    from flowcraft._service.service import FlowService

__all__ = (
    "DurableScheduler",
    "FlowService",
    "HistoryRecord",
    "MemoryStore",
    "PostgresStore",
    "RedisStore",
    "RunExistsError",
    "RunPage",
    "RunStats",
    "RunStore",
    "SqliteStore",
    "StoredRun",
)


def __getattr__(name: str) -> object:
    # FlowService imports this package; resolving it lazily avoids an import cycle.
    if name == "FlowService":
        from flowcraft._service.service import FlowService

        return FlowService
    raise AttributeError(f"module 'flowcraft.stores' has no attribute {name!r}")
