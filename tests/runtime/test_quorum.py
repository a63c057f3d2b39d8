"""Quorum waits (``Approvals``): enough distinct approvers complete it; one rejection decides."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import anyio
import pytest

from flowcraft import (
    ApprovalRefusedError,
    Approvals,
    Blueprint,
    FlowRuntime,
    FlowService,
    NodeContext,
    RunResult,
    create_flow,
)
from flowcraft.stores import MemoryStore
from flowcraft.testing import FakeClock

PAID: list[str] = []


def pay(n: NodeContext) -> str:
    PAID.append(n.run_id)
    return "paid"


def expense(approvals: Approvals, timeout: float | None = None) -> Any:
    return (
        create_flow("expense")
        .node("submit", lambda n: {"amount": 900})
        .wait("approve", approvals=approvals, timeout=timeout, on_timeout="expired")
        .node("pay", pay)
        .node("refuse", lambda n: "refused")
        .node("lapse", lambda n: "lapsed")
        .edge("submit", "approve")
        .edge("approve", "pay", action="approve")
        .edge("approve", "refuse", action="reject")
        .edge("approve", "lapse", action="expired")
    )


@pytest.fixture(autouse=True)
def _clear() -> None:
    PAID.clear()


async def test_two_distinct_approvals_complete_the_wait_and_pay_runs_once() -> None:
    flow = expense(Approvals(required=2))
    rt = FlowRuntime(registry=flow.registry)
    first = await flow.run(rt)
    one = await flow.resume(rt, first, {"action": "approve", "output": "ok"}, "approve", by="ann")
    assert one.status == "awaiting"
    assert one.awaiting[0].approved_by == ("ann",)
    assert [(h.event, h.by) for h in one.history if h.event == "vote"] == [("vote", "ann")]
    assert PAID == []
    two = await flow.resume(rt, one, {"action": "approve", "output": "fine"}, "approve", by="bob")
    assert two.status == "completed"
    assert [two.run_id] == PAID
    votes = two.outputs["approve"]
    assert [(v["by"], v["output"]) for v in votes] == [("ann", "ok"), ("bob", "fine")]
    assert [h.by for h in two.history if h.event == "resume"] == ["bob"]


async def test_the_same_approver_twice_is_refused_and_changes_nothing() -> None:
    flow = expense(Approvals(required=2))
    rt = FlowRuntime(registry=flow.registry)
    one = await flow.resume(rt, await flow.run(rt), {"action": "approve"}, "approve", by="ann")
    with pytest.raises(ApprovalRefusedError, match=r"'ann'.*already approved.*Another approver"):
        await flow.resume(rt, one, {"action": "approve"}, "approve", by="ann")
    again = await flow.resume(rt, one, {"action": "approve"}, "approve", by="bob")
    assert again.status == "completed"


async def test_one_rejection_decides_at_once_even_after_approvals() -> None:
    flow = expense(Approvals(required=3))
    rt = FlowRuntime(registry=flow.registry)
    one = await flow.resume(rt, await flow.run(rt), {"action": "approve"}, "approve", by="ann")
    no = await flow.resume(rt, one, {"action": "reject", "output": "too much"}, "approve", by="bob")
    assert no.status == "completed"
    assert no.outputs["refuse"] == "refused"
    assert "pay" not in no.outputs
    assert PAID == []


@pytest.mark.parametrize(
    ("approvals", "state", "by", "why"),
    [
        (Approvals(approvers=("ann", "bob")), {}, "eve", r"not one of its approvers \('ann'"),
        (Approvals(forbid_initiator=True), {"initiator": "ann"}, "ann", "may not approve"),
        (Approvals(forbid_initiator=True), {}, "ann", "names no initiator"),
        (Approvals(), {}, None, "counts approvers"),
    ],
)
async def test_votes_that_may_not_count_are_refused_with_the_reason(
    approvals: Approvals, state: dict[str, Any], by: str | None, why: str
) -> None:
    flow = expense(approvals)
    rt = FlowRuntime(registry=flow.registry)
    first = await flow.run(rt, state)
    with pytest.raises(ApprovalRefusedError, match=why):
        await flow.resume(rt, first, {"action": "approve"}, "approve", by=by)
    assert (await flow.resume(rt, first, {"action": "reject"}, "approve", by="bob")).status == (
        "completed"
    )  # the refused vote left the context usable


async def test_a_vote_without_an_action_is_refused_even_with_a_default_edge() -> None:
    flow = (
        create_flow("q")
        .wait("approve", approvals=Approvals(required=2))
        .node("pay", pay)
        .node("other", lambda n: "other")
        .edge("approve", "pay", action="approve")
        .edge("approve", "other")
    )
    rt = FlowRuntime(registry=flow.registry)
    with pytest.raises(ApprovalRefusedError, match="needs an action"):
        await flow.resume(rt, await flow.run(rt), {"output": 1}, "approve", by="ann")


async def test_a_callable_decides_who_may_approve() -> None:
    def managers(approver: str, state: Mapping[str, Any]) -> bool:
        return approver in state["managers"]

    flow = expense(Approvals(required=1, approvers=managers))
    rt = FlowRuntime(registry=flow.registry)
    first = await flow.run(rt, {"managers": ["meg"]})
    with pytest.raises(ApprovalRefusedError, match="approvers check refused"):
        await flow.resume(rt, first, {"action": "approve"}, "approve", by="ann")
    done = await flow.resume(rt, first, {"action": "approve"}, "approve", by="meg")
    assert done.outputs["pay"] == "paid"


async def test_a_quorum_survives_json_and_serialized_contexts() -> None:
    flow = expense(Approvals(required=2, approvers=("ann", "bob")))
    bp = Blueprint.from_json(flow.to_blueprint().to_json())
    rt = FlowRuntime(registry=flow.registry, serializer="json")
    first = await rt.run(bp)
    one = await rt.resume(bp, first.serialized_context, {"action": "approve"}, "approve", by="ann")
    assert rt.inspect(bp, one.serialized_context).awaiting[0].approved_by == ("ann",)
    two = await rt.resume(bp, one.serialized_context, {"action": "approve"}, "approve", by="bob")
    assert two.outputs["pay"] == "paid"


async def test_the_deadline_decides_a_quorum_that_was_not_reached() -> None:
    clock = FakeClock()
    flow = expense(Approvals(required=2), timeout=60)
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    one = await flow.resume(rt, await flow.run(rt), {"action": "approve"}, "approve", by="ann")
    clock.advance(timedelta(seconds=61))
    lapsed = await rt.fire(flow.to_blueprint(), one, "approve", registry=flow.registry)
    assert lapsed.outputs["lapse"] == "lapsed"
    assert PAID == []


async def test_concurrent_votes_through_the_service_are_each_counted_and_pay_runs_once() -> None:
    flow = expense(Approvals(required=2))
    service = FlowService(FlowRuntime(), MemoryStore(), flows=[flow])
    await service.start("expense", run_id="e1")
    outcomes: dict[str, Any] = {}

    async def vote(who: str) -> None:
        try:
            outcomes[who] = await service.resume("e1", {"action": "approve"}, "approve", by=who)
        except Exception as exc:  # the vote after the quorum finds the wait decided
            outcomes[who] = exc

    async with anyio.create_task_group() as tg:
        for who in ("ann", "bob", "cat"):
            tg.start_soon(vote, who)
    results = [o for o in outcomes.values() if isinstance(o, RunResult)]
    assert sorted(r.status for r in results) == ["awaiting", "completed"]
    assert len([o for o in outcomes.values() if not isinstance(o, RunResult)]) == 1
    assert PAID == ["e1"]
    history = await service.history("e1")
    assert len([h for h in history if h.event == "vote"]) == 1
