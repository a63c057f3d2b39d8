"""Every example of the Flowcraft TS guide "Pausing and Resuming Workflows", ported as literally
as the Python API allows, runs. Differences from the TS text are marked ``# TS:``."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from flowcraft import (
    FlowRuntime,
    FlowService,
    NodeContext,
    NodeNotAwaitingError,
    ResumeError,
    RunResult,
    create_flow,
)
from flowcraft.stores import MemoryStore
from flowcraft.testing import FakeClock


def approval_flow() -> Any:
    async def submit(node: NodeContext) -> dict[str, str]:
        node.context.set("request", {"user": "Alice", "amount": 1500})
        return {"output": "Expense submitted"}

    async def process(node: NodeContext) -> dict[str, str]:
        approval = node.input  # TS: context.get('approval'); the resume output is the input
        if approval and approval.get("approved"):
            return {"output": "Expense approved and processed"}
        return {"output": "Expense rejected"}

    return (
        create_flow("expense-approval")
        .node("submit", submit)
        .wait("manager-approval")
        .node("process", process)
        .edge("submit", "manager-approval")
        .edge("manager-approval", "process")
    )


async def test_simple_approval_workflow() -> None:
    """Run pauses at the wait; resume with the decision completes it."""
    flow = approval_flow()
    runtime = FlowRuntime()
    blueprint = flow.to_blueprint()
    initial_result = await runtime.run(blueprint, {}, registry=flow.registry)
    assert initial_result.status == "awaiting"
    final_result = await runtime.resume(
        blueprint,
        initial_result.serialized_context,
        {"output": {"approved": True, "reviewer": "Bob"}, "action": "approved"},
        "manager-approval",
        registry=flow.registry,
    )
    assert final_result.status == "completed"
    assert final_result.outputs["process"] == "Expense approved and processed"
    assert final_result.outputs["submit"] == "Expense submitted"


def review_flow() -> Any:
    async def prepare(node: NodeContext) -> dict[str, str]:
        node.context.set("document", "contract.pdf")
        node.context.set("reviews", {})
        return {"output": "Document ready for review"}

    async def finalize(node: NodeContext) -> dict[str, str]:
        reviews = node.input  # TS: context.get('reviews'); a join's input is {pred: output}
        all_approved = reviews["technical-review"]["approved"] and reviews["legal-review"][
            "approved"
        ]
        return {"output": "Approved" if all_approved else "Rejected"}

    return (
        create_flow("parallel-review")
        .node("prepare", prepare)
        .wait("technical-review")
        .wait("legal-review")
        .node("finalize", finalize)
        .edge("prepare", "technical-review")
        .edge("prepare", "legal-review")
        .edge("technical-review", "finalize")
        .edge("legal-review", "finalize")
    )


async def test_multiple_concurrent_waits_resume_from_the_newest_context() -> None:
    """TS resumes both from result1's context; in Python the second resume uses the newest one."""
    flow = review_flow()
    runtime = FlowRuntime(registry=flow.registry)
    blueprint = flow.to_blueprint()
    result1 = await runtime.run(blueprint, {})
    result2 = await runtime.resume(
        blueprint,
        result1.serialized_context,
        {"output": {"approved": True, "comments": "Looks good"}},
        "technical-review",
    )
    assert result2.status == "awaiting"  # legal review still pending
    # TS: resumes result1.serializedContext again, which forks the run: use the newest context.
    result3 = await runtime.resume(
        blueprint,
        result2.serialized_context,
        {"output": {"approved": True, "comments": "Approved"}},
        "legal-review",
    )
    assert result3.status == "completed"
    assert result3.outputs["finalize"] == "Approved"


async def test_concurrent_waits_through_flow_service() -> None:
    """FlowService keeps the newest context: resume each wait by run id, in any order."""
    flow = review_flow()
    service = FlowService(FlowRuntime(), MemoryStore(), flows=[flow])
    run = await service.start("parallel-review", {})
    await service.resume(run.run_id, {"output": {"approved": True}}, "legal-review")
    done = await service.resume(run.run_id, {"output": {"approved": True}}, "technical-review")
    assert done.status == "completed"
    assert done.outputs["finalize"] == "Approved"


def notification_flow() -> Any:
    return (
        create_flow("delayed-notification")
        .node("schedule", lambda n: {"output": "Notification scheduled"})
        .sleep("delay", duration=3600)  # 1 hour  (TS: 3600000 ms; Python durations are seconds)
        .node("send", lambda n: {"output": "Notification sent"})
        .edge("schedule", "delay")
        .edge("delay", "send")
    )


async def test_basic_timer() -> None:
    """The run awaits the timer; firing it after an hour sends the notification."""
    flow = notification_flow()
    clock = FakeClock()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    result = await runtime.run(flow.to_blueprint(), {})
    assert result.status == "awaiting"
    assert result.awaiting[0].reason == "timer"
    clock.advance(3600)
    final = await runtime.fire(flow.to_blueprint(), result, "delay")
    assert final.outputs["send"] == "Notification sent"


async def test_automatic_resumption_with_the_scheduler() -> None:
    """TS: runtime.startScheduler()/stopScheduler(); Python: ``async with runtime.scheduler()``."""
    flow = notification_flow()
    clock = FakeClock()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with runtime.scheduler(interval=1.0, on_result=results.append):
        result = await runtime.run(flow.to_blueprint(), {})
        assert result.status == "awaiting"
        clock.advance(3600)
        await anyio.wait_all_tasks_blocked()
    assert results[-1].status == "completed"
    assert results[-1].outputs["send"] == "Notification sent"


async def test_retry_with_backoff() -> None:
    """``attempt`` raises; ``on_error="retry"`` routes to a durable 5 s backoff (TS: the node's
    error takes the retry edge implicitly; Python asks for ``on_error``)."""
    failures = iter([True, True, False])  # TS: Math.random() < 0.7

    async def attempt(node: NodeContext) -> dict[str, str]:
        attempt_count = node.context.get("attempts") or 0
        node.context.set("attempts", attempt_count + 1)
        if next(failures):
            raise RuntimeError("API temporarily unavailable")
        return {"output": "Success"}

    flow = (
        create_flow("retry-with-backoff")
        .node("attempt", attempt, on_error="retry")
        .sleep("backoff", duration=5)  # 5 second delay (TS: 5000 ms)
        .edge("attempt", "backoff", action="retry")
        .edge("backoff", "attempt")
    )
    clock = FakeClock()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    results: list[RunResult] = []
    async with runtime.scheduler(interval=1.0, on_result=results.append):
        await runtime.run(flow.to_blueprint(), {})
        for _ in range(2):
            clock.advance(5)
            await anyio.wait_all_tasks_blocked()
    assert results[-1].status == "completed"
    assert results[-1].outputs["attempt"] == "Success"
    assert results[-1].context["attempts"] == 3


@pytest.mark.parametrize("choice", ["a", "b", "c"])
async def test_conditional_branching_with_actions(choice: str) -> None:
    """Resume without a node id (one wait): the action picks the path."""
    flow = (
        create_flow("conditional-workflow")
        .node("start", lambda n: {"output": "Ready for decision"})
        .wait("decision-point")
        .node("path-a", lambda n: {"output": "Executed path A"})
        .node("path-b", lambda n: {"output": "Executed path B"})
        .node("path-c", lambda n: {"output": "Executed path C"})
        .edge("start", "decision-point")
        .edge("decision-point", "path-a", action="choose-a")
        .edge("decision-point", "path-b", action="choose-b")
        .edge("decision-point", "path-c", action="choose-c")
    )
    runtime = FlowRuntime(registry=flow.registry)
    blueprint = flow.to_blueprint()
    serialized_context = (await runtime.run(blueprint, {})).serialized_context
    final = await runtime.resume(
        blueprint,
        serialized_context,
        {"output": {"reason": "User preference"}, "action": f"choose-{choice}"},
    )
    assert final.outputs[f"path-{choice}"] == f"Executed path {choice.upper()}"
    assert [k for k in final.outputs if k.startswith("path-")] == [f"path-{choice}"]


async def test_combining_sleep_and_wait() -> None:
    """``pending`` starts a 24 h escalation timer, which escalates the ticket."""
    flow = (
        create_flow("escalation-workflow")
        .node("submit", lambda n: {"output": "Ticket submitted"})
        .wait("initial-response")
        .sleep("escalation-timer", duration="24h")  # TS: 86400000 ms
        .node("escalate", lambda n: {"output": "Ticket escalated to manager"})
        .edge("submit", "initial-response")
        .edge("initial-response", "escalation-timer", action="pending")
        .edge("escalation-timer", "escalate")
    )
    clock = FakeClock()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    blueprint = flow.to_blueprint()
    first = await runtime.run(blueprint, {})
    second = await runtime.resume(blueprint, first, {"action": "pending"}, "initial-response")
    assert second.awaiting[0].node_id == "escalation-timer"
    clock.advance(86400)
    final = await runtime.fire(blueprint, second, "escalation-timer")
    assert final.outputs["escalate"] == "Ticket escalated to manager"


async def test_state_persistence() -> None:
    """Store the context (here a dict standing in for a database), resume from it later."""
    database: dict[str, bytes] = {}

    async def save_to_database(ctx: bytes) -> None:
        database["ctx"] = ctx

    async def load_from_database() -> bytes:
        return database["ctx"]

    flow = approval_flow()
    blueprint = flow.to_blueprint()
    result = await FlowRuntime(registry=flow.registry).run(blueprint, {"tenant": "acme"})
    if result.status == "awaiting":
        await save_to_database(result.serialized_context)
    # Later, maybe in another process, with a new runtime:
    stored_context = await load_from_database()
    resume_data = {"output": {"approved": True}}
    final_result = await FlowRuntime(registry=flow.registry).resume(
        blueprint, stored_context, resume_data
    )
    assert final_result.status == "completed"
    assert final_result.context["tenant"] == "acme"


async def test_error_handling() -> None:
    """Resume mistakes raise a ResumeError (nothing changes); node failures are in errors."""
    flow = approval_flow()
    runtime = FlowRuntime(registry=flow.registry)
    blueprint = flow.to_blueprint()
    serialized_context = (await runtime.run(blueprint, {})).serialized_context
    resume_data = {"output": {"approved": True}}
    caught: list[ResumeError] = []
    try:
        result = await runtime.resume(blueprint, serialized_context, resume_data, "submit")
        if result.errors:
            pytest.fail(f"Resume failed: {result.errors}")
    except ResumeError as error:  # TS: catch (error)
        caught.append(error)
    assert isinstance(caught[0], NodeNotAwaitingError)
    assert "'manager-approval'" in str(caught[0])
    result = await runtime.resume(blueprint, serialized_context, resume_data)
    assert result.errors == ()
