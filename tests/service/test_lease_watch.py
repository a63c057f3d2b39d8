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


_SWALLOWER = r"""
import asyncio, sys, anyio
from flowcraft import FlowRuntime, create_flow
from flowcraft.stores import FlowService, SqliteStore

class Swallowing(SqliteStore):
    # A store whose reads swallow a cancellation (as a driver can under load): the watcher
    # cancelled in the middle of one goes on as if nothing happened.
    async def recall(self, run_id, key):
        try:
            await asyncio.sleep(0.3)  # a slow server: the segment ends during a read
        except asyncio.CancelledError:
            return None
        return await super().recall(run_id, key)

async def work(node):
    await anyio.sleep(0.5)
    return "done"

async def main():
    flow = create_flow("slow").node("work", work).wait("review").edge("work", "review")
    store = Swallowing(sys.argv[1])
    service = FlowService(FlowRuntime(), store, flows=[flow], lease_ttl=1, poll_interval=0.02)
    result = await service.start("slow", run_id="r")
    print(result.status, (await service.get("r")).status, flush=True)
    await store.close()

anyio.run(main)
"""


def test_a_watcher_that_swallows_its_cancellation_still_stops_and_the_segment_commits(
    tmp_path: Path,
) -> None:
    """The segment ends while its watcher is inside a store read that swallows the
    cancellation: the watcher is told to stop anyway, the segment commits (the run is
    awaiting, not left ``running`` under a lease renewed for ever), the process exits.
    A real process, so that a hang is a timeout here, not a hung test run."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", _SWALLOWER, str(tmp_path / "s.db")],
        capture_output=True, text=True, timeout=30, cwd=root, env={"PYTHONPATH": str(root)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["awaiting", "awaiting"]
