"""Approval service: durable runs kept by FlowService in the embedded SQLite store.

Start expense runs, list the ones awaiting a manager, resume one by its run id from a "webhook"
that is delivered twice (applied once, thanks to the idempotency key), and read the audit trail.
The store is ``SqliteStore()``, the embedded default: a ``flowcraft.db`` file in the working
directory (here a temporary directory, so the example leaves nothing behind).

Run it: ``python examples/approval_service.py``
"""

from __future__ import annotations

import os
import tempfile

import anyio

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft.stores import FlowService, SqliteStore

PAYMENTS: list[str] = []


async def submit(node: NodeContext) -> str:
    request = node.context.get("request")
    return f"{request['user']} asks for ${request['amount']}"


async def pay(node: NodeContext) -> str:
    request = node.context.get("request")
    PAYMENTS.append(request["user"])  # a side effect we must not repeat
    return f"paid ${request['amount']} to {request['user']}"


async def refuse(node: NodeContext) -> str:
    return f"refused: {node.input['note']}"


flow = (
    create_flow("expense-approval")
    .node("submit", submit)
    .wait("manager-approval", description="A manager approves or rejects the expense")
    .node("pay", pay)
    .node("refuse", refuse)
    .edge("submit", "manager-approval")
    .edge("manager-approval", "pay", action="approved")
    .edge("manager-approval", "refuse", action="rejected")
)


async def webhook(service: FlowService, run_id: str, delivery_id: str, body: dict[str, str]) -> str:
    """What an HTTP handler would do: resume by run id, keyed by the delivery id."""
    result = await service.resume(
        run_id,
        {"output": body, "action": body["decision"]},
        by=body["manager"],
        idempotency_key=delivery_id,
    )
    return f"{result.status} (revision {result.revision})"


async def main() -> None:
    service = FlowService(FlowRuntime(), SqliteStore(), flows=[flow])
    alice = await service.start("expense-approval", {"request": {"user": "Alice", "amount": 1500}})
    bob = await service.start("expense-approval", {"request": {"user": "Bob", "amount": 90}})

    page = await service.list(status="awaiting", flow_id="expense-approval")
    print("awaiting a manager:")
    for run in page.runs:
        print(f"  {run.run_id[:8]}  waiting on {list(run.awaiting)}  ({run.pause_reason})")

    body = {"decision": "approved", "manager": "carol", "note": "ok"}
    print("webhook delivery #1:", await webhook(service, alice.run_id, "delivery-1", body))
    print("webhook delivery #1 again:", await webhook(service, alice.run_id, "delivery-1", body))
    refusal = {"decision": "rejected", "manager": "carol", "note": "no receipt"}
    print("webhook for Bob:", await webhook(service, bob.run_id, "delivery-2", refusal))

    final = await service.result(alice.run_id)
    print("Alice:", final.outputs["pay"])
    print("Bob:", (await service.result(bob.run_id)).outputs["refuse"])
    print("audit trail of Alice's run:")
    for entry in await service.history(alice.run_id):
        who = f" by {entry.by}" if entry.by else ""
        node = f" {entry.node_id}" if entry.node_id else ""
        print(f"  {entry.at:%H:%M:%S} {entry.event}{node}{who}")
    stats = await service.stats()
    print("stats:", stats.by_status)

    assert PAYMENTS == ["Alice"], PAYMENTS  # the duplicate delivery paid nothing
    assert stats.by_status == {"completed": 2}
    await service.store.close()
    print("approval service: OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as workdir:
        os.chdir(workdir)  # SqliteStore() writes ./flowcraft.db
        anyio.run(main)
