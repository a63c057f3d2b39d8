"""``on_error``: an exhausted failure routes along an edge instead of failing the run."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import pytest

from flowcraft import Blueprint, Flow, FlowRuntime, NodeContext, RunResult, create_flow
from flowcraft.testing import FakeClock, InMemoryEventLogger


def flaky(failures: int) -> Callable[[NodeContext], Awaitable[dict[str, str]]]:
    async def attempt(node: NodeContext) -> dict[str, str]:
        count = node.context.get("attempts", 0) + 1
        node.context.set("attempts", count)
        if count <= failures:
            raise ConnectionError("API temporarily unavailable")
        return {"output": "Success"}  # TS-shaped: read as NodeResult(output="Success")

    return attempt


def retry_flow(failures: int) -> Flow:
    # The guide's "Retry with Backoff", as literally as Python allows.
    return (
        create_flow("retry-with-backoff")
        .node("attempt", flaky(failures), on_error="retry")
        .sleep("backoff", duration=5)  # 5 second delay
        .edge("attempt", "backoff", action="retry")
        .edge("backoff", "attempt")
    )


async def test_retry_with_backoff_runs_as_in_the_guide() -> None:
    """Two failures route to a durable 5 s sleep each; the third attempt succeeds."""
    flow = retry_flow(2)
    clock = FakeClock()
    runtime = FlowRuntime(registry=flow.registry, clock=clock)
    bp: Blueprint = flow.to_blueprint()
    results: list[RunResult] = []
    async with runtime.scheduler(interval=1, on_result=results.append):
        first = await runtime.run(bp, {})
        assert first.status == "awaiting"
        assert [a.node_id for a in first.awaiting] == ["backoff"]
        assert first.outputs["attempt"]["type"] == "ConnectionError"
        for _ in range(2):
            clock.advance(5)
            await anyio.wait_all_tasks_blocked()
    final = results[-1]
    assert final.status == "completed"
    assert final.outputs["attempt"] == "Success"
    assert final.context["attempts"] == 3
    # Both handled failures stay on record, marked with the action they were routed along.
    assert [(e.node_id, e.type, e.routed) for e in final.errors] == [
        ("attempt", "ConnectionError", "retry"),
        ("attempt", "ConnectionError", "retry"),
    ]
    assert final.raise_for_status() is final
    errors = [h for h in final.history if h.event == "error"]
    assert [(h.node_id, h.action) for h in errors] == [("attempt", "retry")] * 2


async def test_routed_failure_is_in_events_and_output_is_the_error_record() -> None:
    """``node:error`` then ``node:finish`` with the action; the output names the error."""

    def boom(node: NodeContext) -> None:
        raise ValueError("bad input")

    flow = (
        create_flow("routed")
        .node("work", boom, on_error="failed", max_retries=2)
        .node("handle", lambda n: f"handled {n.input['type']}: {n.input['message']}")
        .edge("work", "handle", action="failed")
    )
    log = InMemoryEventLogger()
    result = await flow.run(FlowRuntime(event_bus=log))
    assert result.status == "completed"
    assert result.outputs["work"] == {
        "node_id": "work",
        "type": "ValueError",
        "message": "bad input",
        "attempt": 2,
    }
    assert result.outputs["handle"] == "handled ValueError: bad input"
    kinds = [(e.type, e.node_id) for e in log.events if e.node_id == "work"]
    assert ("node:error", "work") in kinds
    finish = [e for e in log.events if e.type == "node:finish" and e.node_id == "work"]
    assert finish[0].payload["action"] == "failed"


async def test_fallback_stands_in_before_on_error() -> None:
    """A fallback that succeeds wins; one that fails has its error routed."""

    def boom(node: NodeContext) -> None:
        raise ValueError("primary")

    def backup(node: NodeContext) -> str:
        return "backup"

    def backup_fails(node: NodeContext) -> None:
        raise KeyError("backup")

    ok = (
        create_flow("fb")
        .node("work", boom, fallback="fb", on_error="err")
        .node("fb", backup)
    )
    result = await ok.run(FlowRuntime())
    assert (result.status, result.outputs["work"], result.errors) == ("completed", "backup", ())
    bad = (
        create_flow("fb2")
        .node("work", boom, fallback="fb", on_error="err")
        .node("fb", backup_fails)
        .node("after", lambda n: n.input["type"])
        .edge("work", "after", action="err")
    )
    result = await bad.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["after"] == "KeyError"
    assert [(e.node_id, e.routed) for e in result.errors] == [("fb", "err")]


async def test_unrouted_failure_still_fails_the_run_first_in_raise_for_status() -> None:
    """A routed failure before a real one: status failed, raise_for_status names the real one."""
    from flowcraft import NodeExecutionError

    def boom(node: NodeContext) -> None:
        raise ValueError(node.node_id)

    flow = (
        create_flow("mixed")
        .node("a", boom, on_error="err")
        .node("b", boom)
        .edge("a", "b", action="err")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "failed"
    assert [(e.node_id, e.routed) for e in result.errors] == [("a", "err"), ("b", None)]
    with pytest.raises(NodeExecutionError, match="node 'b' failed"):
        result.raise_for_status()


def test_on_error_round_trips_as_camel_case_json() -> None:
    """The blueprint field is ``onError`` (TS style) and survives ``from_json``."""
    bp = retry_flow(1).to_blueprint()
    assert '"onError":"retry"' in bp.to_json()
    again = Blueprint.from_json(bp.to_json())
    assert again == bp
    assert again.nodes[0].settings.on_error == "retry"
