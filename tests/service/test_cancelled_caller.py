"""A caller cancelled while its claimed segment runs (a timeout around ``resume``, a client
that went away) does not abandon the segment: it runs to its commit, once, and the run is
never left ``running`` for recovery to replay."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import anyio

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft.stores import FlowService, RunStore

RAN: Counter[str] = Counter()


async def pay(node: NodeContext) -> str:
    RAN[node.run_id] += 1
    await anyio.sleep(0.3)  # the caller's deadline passes meanwhile
    return "paid"


async def notify(node: NodeContext) -> str:
    RAN[f"{node.run_id}/notify"] += 1
    return "sent"


def flows() -> list[Any]:
    """``slow``: approve → pay (slow) → notify; ``slow-start``: pay (slow) → notify → approve."""
    return [
        create_flow("slow")
        .wait("approve")
        .node("pay", pay, name="pay")
        .node("notify", notify, name="notify")
        .edge("approve", "pay", action="approved")
        .edge("pay", "notify"),
        create_flow("slow-start")
        .node("pay", pay, name="pay")
        .node("notify", notify, name="notify")
        .wait("approve")
        .edge("pay", "notify")
        .edge("notify", "approve"),
    ]


async def test_a_cancelled_resume_lets_its_segment_finish_once(store: RunStore) -> None:
    service = FlowService(FlowRuntime(), store, flows=flows(), lease_ttl=0.5)
    run_id = f"c-resume-{uuid.uuid4().hex[:8]}"
    await service.start("slow", run_id=run_id)
    with anyio.move_on_after(0.05) as scope:
        await service.resume(run_id, {"action": "approved"}, idempotency_key="k")
    assert scope.cancel_called
    assert (await service.get(run_id)).status == "completed"
    await anyio.sleep(0.6)  # past the lease: nothing is left for recovery to replay
    assert await service.recover() == []
    assert (RAN[run_id], RAN[f"{run_id}/notify"]) == (1, 1)
    again = await service.resume(run_id, {"action": "approved"}, idempotency_key="k")
    assert again.status == "completed"
    assert RAN[run_id] == 1


async def test_a_cancelled_start_lets_its_segment_finish_once(store: RunStore) -> None:
    service = FlowService(FlowRuntime(), store, flows=flows(), lease_ttl=0.5)
    run_id = f"c-start-{uuid.uuid4().hex[:8]}"
    with anyio.move_on_after(0.05) as scope:
        await service.start("slow-start", run_id=run_id)
    assert scope.cancel_called
    stored = await service.get(run_id)
    assert (stored.status, stored.awaiting) == ("awaiting", ("approve",))
    await anyio.sleep(0.6)
    assert await service.recover() == []
    assert (RAN[run_id], RAN[f"{run_id}/notify"]) == (1, 1)
