"""RedisStore under a burst of concurrent calls: they wait for a connection, none fails."""

from __future__ import annotations

from pathlib import Path

import anyio

from flowcraft import FlowRuntime
from flowcraft.stores import FlowService
from tests.service._support import backend, flows


async def test_a_burst_past_the_clients_connection_cap_waits_instead_of_failing(
    tmp_path: Path,
) -> None:
    """150 decisions in flight at once in one process, more than redis-py's pool holds by
    default (100): every one is applied, none is a ``StoreError`` ("Too many connections")."""
    async with backend("redis", tmp_path) as (store, _):
        service = FlowService(FlowRuntime(), store, flows=flows())
        ids = [f"r{i}" for i in range(150)]
        for run_id in ids:
            await service.start("approval", run_id=run_id)
        statuses: list[str] = []

        async def decide(run_id: str) -> None:
            statuses.append((await service.resume(run_id, {"action": "approved"})).status)

        async with anyio.create_task_group() as tg:
            for run_id in ids:
                tg.start_soon(decide, run_id)
        assert statuses == ["completed"] * len(ids)
