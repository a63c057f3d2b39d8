"""Expense approval: a run pauses for a manager, and resumes from serialized bytes.

Two runs of the same flow: one expense is approved and paid, the other is rejected and the
employee is told why. Between "submit" and the manager's decision nothing is kept in memory:
the run lives in ``serialized_context`` (bytes you would store in a database row).

Run it: ``python examples/expense_approval.py``
"""

from __future__ import annotations

import anyio

from flowcraft import FlowRuntime, NodeContext, NodeResult, Resume, RunResult, create_flow


async def submit(node: NodeContext) -> str:
    request = node.context.get("request")
    node.context.set("submitted_by", request["user"])
    return f"{request['user']} asks for ${request['amount']}: {request['reason']}"


async def pay(node: NodeContext) -> NodeResult[str]:
    decision = node.input  # the wait node's output is the resume output
    request = node.context.get("request")
    node.context.set("paid", request["amount"])
    return NodeResult(output=f"paid ${request['amount']} (note: {decision['note']})")


async def notify_refusal(node: NodeContext) -> str:
    decision = node.input
    request = node.context.get("request")
    return f"told {request['user']}: refused, {decision['note']}"


flow = (
    create_flow("expense-approval")
    .node("submit", submit)
    .wait("manager-approval", description="A manager approves or rejects the expense")
    .node("pay", pay)
    .node("notify-refusal", notify_refusal)
    .edge("submit", "manager-approval")
    .edge("manager-approval", "pay", action="approved")
    .edge("manager-approval", "notify-refusal", action="rejected")
)


def show(label: str, result: RunResult) -> None:
    waiting = [f"{a.node_id} ({a.reason})" for a in result.awaiting]
    print(f"  {label}: status={result.status} revision={result.revision} awaiting={waiting}")


async def main() -> None:
    blueprint = flow.to_blueprint()
    runtime = FlowRuntime(registry=flow.registry)

    print("== run 1: Alice's conference trip ==")
    first = await runtime.run(
        blueprint, {"request": {"user": "Alice", "amount": 1500, "reason": "PyCon trip"}}
    )
    show("after run", first)
    print(f"  submit output: {first.outputs['submit']!r}")
    stored: bytes = first.serialized_context
    print(f"  serialized context: {len(stored)} bytes (store it anywhere: DB row, Redis, file)")
    assert first.status == "awaiting"
    assert [a.node_id for a in first.awaiting] == ["manager-approval"]
    assert first.awaiting[0].description == "A manager approves or rejects the expense"

    # ...hours later, from an approval UI: only the bytes are needed to continue.
    approved = await runtime.resume(
        blueprint,
        stored,
        Resume(output={"note": "have fun"}, action="approved", by="manager@acme"),
        "manager-approval",
    )
    show("after resume", approved)
    print(f"  pay output: {approved.outputs['pay']!r}")
    last = approved.history[-1]
    print(f"  history: {last.event} {last.node_id} by {last.by} action={last.action}")
    assert approved.status == "completed"
    assert approved.outputs["pay"] == "paid $1500 (note: have fun)"
    assert "notify-refusal" not in approved.outputs
    assert approved.context["paid"] == 1500
    assert (last.event, last.by, last.action) == ("resume", "manager@acme", "approved")

    print("== run 2: Bob's gold-plated keyboard ==")
    second = await runtime.run(
        blueprint, {"request": {"user": "Bob", "amount": 4000, "reason": "gold keyboard"}}
    )
    show("after run", second)
    assert second.status == "awaiting"
    # A plain dict works as resume data too; node_id may be omitted when one node awaits.
    rejected = await runtime.resume(
        blueprint,
        second.serialized_context,
        {"output": {"note": "over the $2000 limit"}, "action": "rejected"},
        by="manager@acme",
    )
    show("after resume", rejected)
    print(f"  notify-refusal output: {rejected.outputs['notify-refusal']!r}")
    assert rejected.status == "completed"
    assert rejected.outputs["notify-refusal"] == "told Bob: refused, over the $2000 limit"
    assert "pay" not in rejected.outputs
    assert "paid" not in rejected.context
    assert rejected.history[-1].by == "manager@acme"

    print("expense approval: OK (one approved, one rejected)")


if __name__ == "__main__":
    anyio.run(main)
