"""Where durable runs are kept: the ``RunStore`` protocol and its implementations.

``SqliteStore()`` is the embedded default (a file in the working directory). ``RedisStore`` and
``PostgresStore`` need the ``redis`` / ``postgres`` extras, imported only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    # FlowService and DurableScheduler live in the service layer, above the stores. They are
    # offered here too, where they used to be, without this package importing that layer (type
    # checkers see them as Any here; `from flowcraft import FlowService` is the typed home).
    if name in ("DurableScheduler", "FlowService"):
        return getattr(importlib.import_module("flowcraft"), name)
    raise AttributeError(f"module 'flowcraft.stores' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
