"""Durable runs: the ``RunStore`` protocol, its implementations, and ``FlowService``.

``SqliteStore()`` is the embedded default (a file in the working directory). ``RedisStore`` and
``PostgresStore`` need the ``redis`` / ``postgres`` extras, imported only when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._base import HistoryRecord, RunExistsError, RunPage, RunStats, RunStore, StoredRun
from ._memory import MemoryStore
from ._postgres import PostgresStore
from ._redis import RedisStore
from ._scheduler import DurableScheduler
from ._sqlite import SqliteStore

if TYPE_CHECKING:
    from flowcraft._service import FlowService

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
        from flowcraft._service import FlowService

        return FlowService
    raise AttributeError(f"module 'flowcraft.stores' has no attribute {name!r}")
