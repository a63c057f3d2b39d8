"""Durable runs: the ``RunStore`` protocol, its implementations, and ``FlowService``.

``SqliteStore()`` is the embedded default (a file in the working directory). ``RedisStore`` and
``PostgresStore`` need the ``redis`` / ``postgres`` extras, imported only when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

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
    from flowcraft import DurableScheduler, FlowService

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
    # The service stands on the stores, so the stores import nothing of it: these two public
    # names are resolved through the package's face when first asked for.
    if name in ("DurableScheduler", "FlowService"):
        return getattr(importlib.import_module("flowcraft"), name)
    raise AttributeError(f"module 'flowcraft.stores' has no attribute {name!r}")
