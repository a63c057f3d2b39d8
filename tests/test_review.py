"""Review tests: edge cases of routing, resume validation, composition and scheduling."""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest

from flowcraft import (
    AmbiguousResumeError,
    BaseNode,
    BlueprintMismatchError,
    FlowRuntime,
    NodeContext,
    NodeResult,
    RunControl,
    TimerNotDueError,
    create_flow,
)
from flowcraft.testing import FakeClock


def echo(n: NodeContext) -> Any:
    return n.input


# --- resume validation -------------------------------------------------------------------------


async def test_fire_on_a_wait_that_has_not_expired_raises_timer_not_due() -> None:
    """`runtime.fire` on a wait whose deadline has not come must refuse, not complete the wait."""
    clock = FakeClock()
    flow = (
        create_flow("f")
        .wait("w", timeout=60, on_timeout="timeout")
        .node("ok", lambda n: "ok")
        .node("late", lambda n: "late")
        .edge("w", "ok", action="ok")
        .edge("w", "late", action="timeout")
    )
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    bp = flow.to_blueprint()
    first = await rt.run(bp)
    clock.advance(10)
    with pytest.raises(TimerNotDueError):
        await rt.fire(bp, first.serialized_context, "w")


async def test_fire_on_a_wait_without_timeout_raises() -> None:
    """A wait with no deadline cannot be 'fired' (it has no timer)."""
    flow = create_flow("f").wait("w").node("ok", lambda n: "ok").edge("w", "ok", action="ok")
    rt = FlowRuntime(registry=flow.registry, clock=FakeClock())
    bp = flow.to_blueprint()
    first = await rt.run(bp)
    with pytest.raises(TimerNotDueError):
        await rt.fire(bp, first.serialized_context, "w")


async def test_resume_without_node_id_is_ambiguous_when_a_batch_has_two_paused_items() -> None:
    """Two paused batch items are two awaiting nodes: omitting node_id must be ambiguous."""

    def review(n: NodeContext) -> str:
        n.pause("check")

    flow = create_flow("f").batch("b", review, input_key="items")
    rt = FlowRuntime(registry=flow.registry)
    first = await flow.run(rt, {"items": ["a", "b"]})
    assert len(first.awaiting) == 2
    with pytest.raises(AmbiguousResumeError):
        await flow.resume(rt, first.serialized_context, {"output": "x"})
    with pytest.raises(AmbiguousResumeError):
        await flow.resume(rt, first.serialized_context)


def _two_wait_child() -> Any:
    return (
        create_flow("child")
        .node("a", lambda n: 1)
        .wait("w1")
        .wait("w2")
        .edge("a", "w1")
        .edge("a", "w2")
    )


async def test_resume_without_node_id_is_ambiguous_when_a_subflow_has_two_waits() -> None:
    """Two pending waits inside one subflow are two awaiting nodes: node_id is required."""
    child = _two_wait_child()
    parent = create_flow("parent").subflow("sub", "child")
    rt = FlowRuntime(blueprints={"child": child})
    first = await parent.run(rt)
    assert sorted(a.node_id for a in first.awaiting) == ["sub/w1", "sub/w2"]
    with pytest.raises(AmbiguousResumeError):
        await parent.resume(rt, first.serialized_context, {"output": 1})
    with pytest.raises(AmbiguousResumeError):
        await parent.resume(rt, first.serialized_context)


async def test_subflow_wait_resumed_after_child_blueprint_changed_raises_mismatch() -> None:
    """A child context written by another version of the child blueprint is refused."""
    v1 = create_flow("child").node("a", lambda n: 1).wait("w").edge("a", "w")
    v2 = (
        create_flow("child")
        .node("a", lambda n: 1)
        .wait("w")
        .node("new", lambda n: "new")
        .edge("a", "w")
        .edge("w", "new")
    )
    parent = create_flow("parent").subflow("sub", "child")
    first = await parent.run(FlowRuntime(blueprints={"child": v1}))
    assert first.status == "awaiting"
    rt2 = FlowRuntime(blueprints={"child": v2})
    with pytest.raises(BlueprintMismatchError):
        await parent.resume(rt2, first.serialized_context, {"output": 1}, "sub/w")


# --- composition -------------------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class ChildState(msgspec.Struct):
    color: Color = Color.RED


async def test_typed_state_of_a_subflow_child_survives_a_resume() -> None:
    """A child flow's declared state type is restored when a wait inside the subflow resumes."""
    seen: list[Any] = []

    def look(n: NodeContext) -> str:
        seen.append(n.context.get("color"))
        return "done"

    child = (
        create_flow("child", state=ChildState)
        .node("set", lambda n: n.context.set("color", Color.BLUE))
        .wait("w")
        .node("look", look)
        .edge("set", "w")
        .edge("w", "look")
    )
    parent = create_flow("parent").subflow("sub", "child")
    rt = FlowRuntime(blueprints={"child": child})
    first = await parent.run(rt)
    assert first.status == "awaiting"
    final = await parent.resume(rt, first.serialized_context, {"output": 1}, "sub/w")
    assert final.status == "completed"
    assert seen == [Color.BLUE]


class Doubler(BaseNode):
    async def exec(self, prepared: Any, node: NodeContext) -> Any:
        return prepared * 2


async def test_batch_worker_may_be_a_base_node_class() -> None:
    """A BaseNode subclass works as a batch worker: items go through prep/exec/post."""
    flow = create_flow("f").batch("b", Doubler, input_key="items", output_key="out")
    rt = FlowRuntime(registry=flow.registry)
    result = await flow.run(rt, {"items": [1, 2, 3]})
    assert result.status == "completed"
    assert result.context["out"] == [2, 4, 6]


async def test_fire_refuses_to_open_a_pause_before_gate() -> None:
    """`fire` is for due timers and expired waits; it must not approve a pause_before gate."""
    from flowcraft import ResumeError

    flow = create_flow("f").node("g", lambda n: "ran", pause_before=True)
    rt = FlowRuntime(registry=flow.registry, clock=FakeClock())
    bp = flow.to_blueprint()
    first = await rt.run(bp)
    assert first.status == "awaiting"
    with pytest.raises(ResumeError):
        await rt.fire(bp, first.serialized_context, "g")


# --- history -----------------------------------------------------------------------------------


async def test_batch_item_pause_is_recorded_in_history_under_its_path() -> None:
    """Resuming batch item 1 records a pause and a resume both named "b_scatter/1"."""

    def review(n: NodeContext) -> str:
        n.pause("check")

    flow = create_flow("f").batch("b", review, input_key="items")
    rt = FlowRuntime(registry=flow.registry)
    first = await flow.run(rt, {"items": ["a", "b"]})
    second = await flow.resume(rt, first, {"output": 1}, "b_scatter/1")
    done = [(h.event, h.node_id) for h in second.history if h.event in ("pause", "resume")]
    assert ("pause", "b_scatter/1") in done
    assert ("resume", "b_scatter/1") in done


async def test_subflow_wait_pause_is_kept_in_history_after_its_resume() -> None:
    """After resuming "sub/w" the history still shows that the run paused there."""
    child = create_flow("child").wait("w")
    parent = create_flow("parent").subflow("sub", "child")
    rt = FlowRuntime(blueprints={"child": child})
    first = await parent.run(rt)
    final = await parent.resume(rt, first, {"output": 1}, "sub/w")
    assert final.status == "completed"
    assert [h.event for h in final.history] == ["pause", "resume"]


# --- builder -----------------------------------------------------------------------------------


def test_two_edges_between_the_same_nodes_may_each_have_lambda_condition_and_transform() -> None:
    """Lambdas on parallel edges get distinct deterministic keys instead of a collision error."""
    flow = (
        create_flow("k")
        .node("a", lambda n: NodeResult(output=1, action="x"))
        .node("b", echo)
        .edge("a", "b", action="x", condition=lambda e: True, transform=lambda e: "x")
        .edge("a", "b", action="y", condition=lambda e: True, transform=lambda e: "y")
    )
    bp = flow.to_blueprint()
    assert len(bp.edges) == 2


# --- joins -------------------------------------------------------------------------------------


async def test_any_join_inside_a_loop_runs_at_the_first_arrival_of_every_iteration() -> None:
    """Each loop iteration's `any` join fires on that iteration's fastest branch."""
    firsts: list[Any] = []

    async def slow(n: NodeContext) -> str:
        for _ in range(20):
            await anyio.lowlevel.checkpoint()
        return "slow"

    def body(n: NodeContext) -> int:
        n.context.set("i", n.context.get("i", 0) + 1)
        return n.context.get("i")

    def first(n: NodeContext) -> Any:
        firsts.append(n.input)
        return n.input

    def check(n: NodeContext) -> NodeResult[Any]:
        return NodeResult(output=n.input, action="again" if n.context.get("i") < 3 else "done")

    flow = (
        create_flow("f")
        .node("start", lambda n: 0)
        .node("body", body)
        .node("fast", lambda n: "fast")
        .node("slow", slow)
        .node("first", first, join="any")
        .node("check", check)
        .node("end", lambda n: "end")
        .edge("start", "body")
        .edge("body", "fast")
        .edge("body", "slow")
        .edge("fast", "first")
        .edge("slow", "first")
        .edge("first", "check")
        .edge("check", "body", action="again")
        .edge("check", "end", action="done")
    )
    result = await flow.run(FlowRuntime(registry=flow.registry))
    assert result.status == "completed"
    assert result.outputs["end"] == "end"
    assert firsts == ["fast", "fast", "fast"]


# --- concurrency -------------------------------------------------------------------------------


async def test_sync_callables_returning_awaitables_still_run_concurrently() -> None:
    """A sync wrapper returning a coroutine (a decorated async node) is awaited in parallel."""
    started = 0
    seen: list[int] = []

    async def branch(n: NodeContext) -> str:
        nonlocal started
        started += 1
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        seen.append(started)
        return n.node_id

    def wrapped(n: NodeContext) -> Any:  # what a plain (non-async) decorator produces
        return branch(n)

    flow = (
        create_flow("f")
        .node("s", lambda n: 0)
        .node("a", wrapped)
        .node("b", wrapped)
        .node("j", echo)
        .edge("s", "a")
        .edge("s", "b")
        .edge("a", "j")
        .edge("b", "j")
    )
    result = await flow.run(FlowRuntime(registry=flow.registry))
    assert result.outputs["j"] == {"a": "a", "b": "b"}
    assert seen == [2, 2]


async def test_checkpoint_taken_mid_fan_out_resumes_into_the_same_join() -> None:
    """A snapshot taken while one branch is in flight re-runs only that branch and joins once."""
    snapshots: list[bytes] = []
    gate = anyio.Event()
    calls: list[str] = []

    async def keep(data: bytes) -> None:
        snapshots.append(data)

    async def fast(n: NodeContext) -> str:
        calls.append("fast")
        return "f"

    async def slow(n: NodeContext) -> str:
        calls.append("slow")
        if len(calls) <= 3:
            await gate.wait()
        return "s"

    def join(n: NodeContext) -> Any:
        gate.set()
        return n.input

    def fast_done(n: NodeContext) -> str:
        gate.set()
        return n.input

    flow = (
        create_flow("f")
        .node("start", lambda n: 0)
        .node("fast", fast)
        .node("slow", slow)
        .node("after_fast", fast_done)
        .node("j", join)
        .edge("start", "fast")
        .edge("start", "slow")
        .edge("fast", "after_fast")
        .edge("after_fast", "j")
        .edge("slow", "j")
    )
    rt = FlowRuntime(registry=flow.registry)
    result = await flow.run(rt, control=RunControl(on_checkpoint=keep))
    assert result.outputs["j"] == {"after_fast": "f", "slow": "s"}
    bp = flow.to_blueprint()
    views = [rt.inspect(bp, s, registry=flow.registry) for s in snapshots]
    mid = [v for v in views if "after_fast" in v.outputs and "slow" not in v.outputs]
    assert [a.node_id for a in mid[-1].awaiting] == ["slow"]
    again = await flow.resume(rt, mid[-1])
    assert again.status == "completed"
    assert again.outputs["j"] == {"after_fast": "f", "slow": "s"}


# --- scheduler ---------------------------------------------------------------------------------


async def test_scheduler_expires_a_wait_inside_a_subflow_along_on_timeout() -> None:
    """A child wait's deadline registers under "sub/w" and fires the child's on_timeout edge."""
    clock = FakeClock()
    child = (
        create_flow("child")
        .wait("w", timeout=timedelta(minutes=5), on_timeout="late")
        .node("ok", lambda n: "ok")
        .node("late", lambda n: "late")
        .edge("w", "ok", action="ok")
        .edge("w", "late", action="late")
    )
    parent = create_flow("parent").subflow("sub", "child").node("z", echo).edge("sub", "z")
    rt = FlowRuntime(blueprints={"child": child}, clock=clock, registry=parent.registry)
    results: list[Any] = []
    async with rt.scheduler(interval=10, on_result=results.append) as scheduler:
        first = await rt.run(parent.to_blueprint())
        assert [(t.node_id, t.kind) for t in scheduler.pending()] == [("sub/w", "expiry")]
        clock.advance(299)
        await anyio.wait_all_tasks_blocked()
        assert results == []
        clock.advance(1)
        await anyio.wait_all_tasks_blocked()
        assert scheduler.pending() == []
    assert first.status == "awaiting"
    assert [r.status for r in results] == ["completed"]
    assert results[0].outputs["z"] == "late"
