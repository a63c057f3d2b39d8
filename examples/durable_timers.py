"""Durable timers: a sleep that survives a restart of the process.

A first process starts a run that sleeps for one second, and exits at once (as if it were
redeployed). The timer lives in the embedded SQLite store, indexed by its wake time. A second
process opens the same store with a durable scheduler, finds the due timer and finishes the run.

Run it: ``python examples/durable_timers.py``
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import anyio

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft.stores import FlowService, SqliteStore


async def remind(node: NodeContext) -> str:
    return f"reminder scheduled for {node.context.get('user')}"


async def send(node: NodeContext) -> str:
    return f"reminded {node.context.get('user')} (process {os.getpid()})"


flow = (
    create_flow("reminder")
    .node("remind", remind)
    .sleep("wait-a-bit", duration="1s")
    .node("send", send)
    .edge("remind", "wait-a-bit")
    .edge("wait-a-bit", "send")
)


async def first_process() -> None:
    service = FlowService(FlowRuntime(), SqliteStore(), flows=[flow])
    result = await service.start("reminder", {"user": "Alice"}, run_id="reminder-1")
    stored = await service.get("reminder-1")
    print(f"[process {os.getpid()}] started: {result.status}, timer due at {stored.due_at:%X}")
    await service.store.close()


async def second_process() -> None:
    service = FlowService(FlowRuntime(), SqliteStore(), flows=[flow])
    stored = await service.get("reminder-1")
    print(f"[process {os.getpid()}] after the restart the run is {stored.status}")
    done = anyio.Event()

    def on_result(result: object) -> None:
        done.set()

    async with service.scheduler(interval=0.2, on_result=on_result):
        with anyio.fail_after(10):
            await done.wait()
    result = await service.result("reminder-1")
    print(f"[process {os.getpid()}] {result.status}: {result.outputs['send']}")
    fired = [h for h in await service.history("reminder-1") if h.node_id == "wait-a-bit"]
    for entry in fired:
        print(f"  history: {entry.event} {entry.node_id} by {entry.by or 'the flow'}")
    assert result.status == "completed"
    assert [h.event for h in fired] == ["pause", "resume"]
    await service.store.close()
    print("durable timers: OK")


if __name__ == "__main__":
    if sys.argv[1:] == ["first"]:
        anyio.run(first_process)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            # The first process exits right after starting the run: nothing is in memory.
            script = os.path.abspath(__file__)
            subprocess.run([sys.executable, script, "first"], cwd=workdir, check=True)
            os.chdir(workdir)
            anyio.run(second_process)
