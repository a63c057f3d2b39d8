"""A process that dies mid-decision: ``python -m tests.service._resume_crasher KIND WHERE MODE``.

The run ``gate-1`` awaits ``approve``; this process resumes it (idempotency key ``k``), with
its claim written lazily (``durable=False``), and dies: ``claimed`` right after the claim
landed (no node ran), ``node`` inside ``pay`` (after printing ``started``, SIGKILLed by the
test), ``write`` while the commit is in flight.
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
from tests.service._support import effect, open_store, submit


async def pay(node: NodeContext) -> str:
    effect("pay", node.run_id)
    if os.environ.get("FLOWCRAFT_TEST_CRASH") == "node":
        print("started", flush=True)
        await anyio.sleep_forever()
    return "paid"


async def notify(node: NodeContext) -> str:
    effect("notify", node.run_id)
    return "notified"


def gate() -> Any:
    return (
        create_flow("gate")
        .node("submit", submit, name="submit")
        .wait("approve")
        .node("pay", pay, name="pay")
        .node("notify", notify, name="notify")
        .edge("submit", "approve")
        .edge("approve", "pay", action="approved")
        .edge("pay", "notify")
    )


class DyingStore:
    """Delegates to a real store; SIGKILLs the process after the claim or during the commit."""

    def __init__(self, inner: Any, mode: str) -> None:
        self._inner = inner
        self._mode = mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def save(self, run: Any, expected_revision: int, **kw: Any) -> None:
        if run.status == "running":
            await self._inner.save(run, expected_revision, **kw)
            if self._mode == "claimed":
                print("dying", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return
        if self._mode != "write":
            return await self._inner.save(run, expected_revision, **kw)
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: self._inner.save(run, expected_revision, **kw))
            await anyio.sleep(random.uniform(0, 0.004))
            print("dying", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)


async def main() -> None:
    kind, where, mode = sys.argv[1:4]
    inner: Any = open_store(kind, where)
    store = DyingStore(inner, mode)
    service = FlowService(FlowRuntime(), store, flows=[gate()], lease_ttl=5)
    # The wrapper hides ``durable=`` from the service's signature check: claims made lazily
    # as with the bare store.
    service.host.lazy_claims = "durable" in inner.save.__code__.co_varnames
    await service.resume("gate-1", {"action": "approved"}, idempotency_key="k")


if __name__ == "__main__":
    anyio.run(main)
