"""A process that dies: ``python -m tests.service._crasher KIND WHERE node|write``.

``node``: the run's first node prints ``started`` and hangs until the test SIGKILLs us.
``write``: the first node returns; the process kills itself while the commit is in flight.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from typing import Any

import anyio

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft.stores import FlowService
from tests.service._support import effect, open_store


async def work(node: NodeContext) -> str:
    effect("work", node.run_id)
    if os.environ.get("FLOWCRAFT_TEST_CRASH") == "node":
        print("started", flush=True)
        await anyio.sleep_forever()
    return f"worked on {node.context.get('n')}"


async def then(node: NodeContext) -> str:
    effect("then", node.run_id)
    return "then"


def crashy() -> Any:
    return (
        create_flow("crashy")
        .node("work", work, name="work")
        .node("then", then, name="then")
        .edge("work", "then")
    )


class DyingStore:
    """Delegates to a real store; SIGKILLs the process while a final write is in flight."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def save(self, run: Any, expected_revision: int, **kw: Any) -> None:
        if run.status == "running":
            return await self._inner.save(run, expected_revision, **kw)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: self._inner.save(run, expected_revision, **kw))
            await anyio.sleep(random.uniform(0, 0.004))
            print("dying", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    kind, where, mode = sys.argv[1:4]
    store: Any = open_store(kind, where)
    if mode == "write":
        store = DyingStore(store)
    service = FlowService(FlowRuntime(), store, flows=[crashy()], lease_ttl=5)
    await service.start("crashy", {"n": 1}, run_id="crash-1")


if __name__ == "__main__":
    anyio.run(main)
