"""Escalation: a manager has 24 hours to decide; after that the request goes to a director.

``.wait("manager", timeout=timedelta(hours=24), on_timeout="escalate")`` gives the wait an
``expires_at``. The scheduler registers that deadline and, when it passes, resumes the wait with
action "escalate" (output ``None``), which routes to the "director" wait. A ``FakeClock`` makes
the 24 hours pass instantly. A manager who answers after the deadline gets ``WaitExpiredError``.

Run it: ``python examples/escalation.py``
"""

from __future__ import annotations

from datetime import timedelta

import anyio

from flowcraft import (
    FlowRuntime,
    NodeContext,
    NodeNotAwaitingError,
    Resume,
    RunResult,
    WaitExpiredError,
    create_flow,
)
from flowcraft.testing import FakeClock


async def request(node: NodeContext) -> dict[str, object]:
    return {"what": "new laptop", "amount": 2400}


async def order(node: NodeContext) -> str:
    return f"ordered (approved by {node.context.get('approver', 'unknown')})"


async def refuse(node: NodeContext) -> str:
    return "refused"


async def record_approver(node: NodeContext) -> dict[str, str]:
    node.context.set("approver", node.input["approver"])
    return node.input


flow = (
    create_flow("escalation")
    .node("request", request)
    .wait(
        "manager",
        timeout=timedelta(hours=24),
        on_timeout="escalate",
        description="Manager approval (24 h)",
    )
    .wait("director", description="Director approval after escalation")
    # Either decision-maker can approve: "any" runs on the first arrival and gets that output.
    .node("record", record_approver, join="any")
    .node("order", order)
    .node("refuse", refuse, join="any")
    .edge("request", "manager")
    .edge("manager", "record", action="approved")
    .edge("manager", "refuse", action="rejected")
    .edge("manager", "director", action="escalate")
    .edge("director", "record", action="approved")
    .edge("director", "refuse", action="rejected")
    .edge("record", "order")
)


def show(label: str, result: RunResult) -> None:
    waiting = [a.node_id for a in result.awaiting]
    print(f"  {label}: status={result.status} revision={result.revision} awaiting={waiting}")


async def main() -> None:
    clock = FakeClock()
    blueprint = flow.to_blueprint()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    from_scheduler: list[RunResult] = []

    async with runtime.scheduler(interval=60, on_result=from_scheduler.append) as scheduler:
        first = await runtime.run(blueprint, run_id="laptop-42")
        show("after run", first)
        manager = first.awaiting[0]
        print(f"  manager wait expires_at={manager.expires_at:%Y-%m-%d %H:%M}")
        print(f"  scheduler.pending(): {[(t.node_id, t.kind) for t in scheduler.pending()]}")
        assert first.status == "awaiting"
        assert manager.node_id == "manager"
        assert manager.expires_at == clock.now() + timedelta(hours=24)
        assert [(t.node_id, t.kind) for t in scheduler.pending()] == [("manager", "expiry")]

        clock.advance(timedelta(hours=23))
        await anyio.wait_all_tasks_blocked()
        print(f"  +23h ({clock.now():%m-%d %H:%M}): still waiting for the manager")
        assert from_scheduler == []

        clock.advance(timedelta(hours=1))
        await anyio.wait_all_tasks_blocked()
        assert len(from_scheduler) == 1
        escalated = from_scheduler[0]
        show(f"+24h ({clock.now():%m-%d %H:%M}) scheduler fired", escalated)
        (timeout,) = [h for h in escalated.history if h.event == "timeout"]
        print(f"  history: {timeout.event} {timeout.node_id} action={timeout.action}")
        assert escalated.status == "awaiting"
        assert [a.node_id for a in escalated.awaiting] == ["director"]
        assert escalated.outputs["manager"] is None
        assert (timeout.node_id, timeout.action) == ("manager", "escalate")
        assert scheduler.pending() == []  # the director wait has no deadline

    # The manager's approval page still holds the revision-1 context: too late.
    late: WaitExpiredError | None = None
    try:
        await runtime.resume(
            blueprint,
            first.serialized_context,
            Resume(output={"approver": "mia"}, action="approved", by="mia@acme"),
            "manager",
        )
    except WaitExpiredError as exc:
        late = exc
    assert late is not None, "expected WaitExpiredError"
    print(f"  late manager decision: {type(late).__name__}: {late}")
    assert (late.node_id, late.on_timeout) == ("manager", "escalate")
    # From the newest context the manager is not awaited at all any more.
    try:
        await runtime.resume(
            blueprint, escalated.serialized_context, {"action": "approved"}, "manager"
        )
    except NodeNotAwaitingError as exc:
        print(f"  manager on the newest context: {type(exc).__name__}")
    else:
        raise AssertionError("expected NodeNotAwaitingError")

    final = await runtime.resume(
        blueprint,
        escalated.serialized_context,
        Resume(output={"approver": "dana"}, action="approved", by="director@acme"),
        "director",
    )
    show("director approved", final)
    print(f"  order output: {final.outputs['order']!r}")
    assert final.status == "completed"
    assert final.outputs["order"] == "ordered (approved by dana)"
    assert "refuse" not in final.outputs
    assert final.history[-1].by == "director@acme"
    print("escalation: OK (escalated after 24h, director approved)")


if __name__ == "__main__":
    anyio.run(main)
