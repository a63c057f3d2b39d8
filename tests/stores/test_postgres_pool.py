"""PostgresStore pools connections: concurrent calls run side by side, at most pool_size."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime
from flowcraft.stores import FlowService, PostgresStore
from tests.service._support import POSTGRES_DSN, drop, flows, unavailable


async def _store(pool_size: int) -> PostgresStore:
    store = PostgresStore(POSTGRES_DSN, namespace=f"t{uuid.uuid4().hex[:12]}", pool_size=pool_size)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        await store.close()
        unavailable("postgres store", exc)
    return store


async def test_concurrent_calls_use_several_connections_up_to_pool_size() -> None:
    """Eight calls in flight at once are served by more than one and at most 3 backends."""
    store = await _store(3)
    pids: set[int] = set()

    async def one() -> None:
        async def op(conn: Any) -> None:
            cur = await conn.execute("SELECT pg_backend_pid(), pg_sleep(0.02)")
            pids.add((await cur.fetchone())[0])

        await store._run(op)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        assert 2 <= len(pids) <= 3
        assert len(store._free) <= 3
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_concurrent_decisions_on_a_pool_each_apply_once(tmp_path: Path) -> None:
    """16 runs started and resumed concurrently over a pool all complete, one commit each."""
    store = await _store(4)
    service = FlowService(FlowRuntime(), store, flows=flows())

    async def pair(i: int) -> None:
        await service.start("approval", run_id=f"r{i}")
        await service.resume(f"r{i}", {"action": "approved"}, idempotency_key="k")
        await service.resume(f"r{i}", {"action": "approved"}, idempotency_key="k")

    try:
        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(pair, i)
        for i in range(16):
            stored = await service.get(f"r{i}")
            assert (stored.status, stored.resume_count) == ("completed", 1)
    finally:
        await store.close()
        await drop("postgres", store.namespace)


def test_a_pool_size_below_one_is_refused() -> None:
    """pool_size=0 raises ValueError naming the value."""
    with pytest.raises(ValueError, match="pool_size must be at least 1, got 0"):
        PostgresStore(POSTGRES_DSN, pool_size=0)
