"""The lease watcher on the real clock: a segment longer than a watch step keeps its lease and
hears requests from other processes; a short one never needed it.

On asyncio with the system clock the watcher is spawned only once a segment has run for one
step; these tests hold a node for many steps and check what the watcher owes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime, create_flow
from flowcraft.stores import FlowService, SqliteStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def slow_flow(calls: list[str], hold: float) -> Any:
    async def work(node: Any) -> str:
        calls.append("work")
        await anyio.sleep(hold)
        return "done"

    return create_flow("slow").node("work", work).wait("review").edge("work", "review")


async def test_a_long_segment_keeps_its_lease_against_recovery(tmp_path: Path) -> None:
    """A node held for ~7 lease lifetimes: the watcher renews, another service's recovery
    passes never take the run over, and the node runs once."""
    calls: list[str] = []
    db = tmp_path / "w.db"
    opts: dict[str, Any] = {"lease_ttl": 0.15, "poll_interval": 0.03}
    service = FlowService(FlowRuntime(), SqliteStore(db), flows=[slow_flow(calls, 1.0)], **opts)
    other = FlowService(FlowRuntime(), SqliteStore(db), flows=[slow_flow(calls, 1.0)], **opts)
    taken: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def start() -> None:
            result = await service.start("slow", run_id="r")
            assert result.status == "awaiting"

        tg.start_soon(start)
        for _ in range(40):
            await anyio.sleep(0.02)
            taken.extend(await other.recover())
    assert taken == []
    assert calls == ["work"]
    stored = await service.get("r")
    assert stored.status == "awaiting"
    assert stored.revision > 2  # renewals moved the revision while the node ran
    await service.store.close()
    await other.store.close()


async def test_a_pause_from_another_service_reaches_a_long_segment(tmp_path: Path) -> None:
    """``pause`` of a running run from another service is heard by the watcher."""
    calls: list[str] = []
    db = tmp_path / "p.db"
    opts: dict[str, Any] = {"lease_ttl": 5, "poll_interval": 0.03}

    async def step(node: Any) -> str:
        calls.append(node.node_id)
        await anyio.sleep(0.2)
        return "ok"

    flow = create_flow("chain").node("a", step).node("b", step).node("c", step)
    flow = flow.edge("a", "b").edge("b", "c")
    service = FlowService(FlowRuntime(), SqliteStore(db), flows=[flow], **opts)
    other = FlowService(FlowRuntime(), SqliteStore(db), flows=[flow], **opts)
    results: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def start() -> None:
            results.append(await service.start("chain", run_id="r"))

        tg.start_soon(start)
        await anyio.sleep(0.1)
        await other.pause("r", reason="maintenance", by="ops")
    (result,) = results
    assert result.status == "awaiting"
    assert calls == ["a"] or calls == ["a", "b"]  # stopped before the chain ran out
    stored = await other.get("r")
    assert (stored.status, stored.paused_by) == ("awaiting", "ops")
    await service.store.close()
    await other.store.close()
