from __future__ import annotations

import enum
from typing import Any, ClassVar

import msgspec
import pytest

from flowcraft import (
    AmbiguousResumeError,
    BaseNode,
    BlueprintMismatchError,
    FlowRuntime,
    NodeContext,
    NodeResult,
    create_flow,
)
from flowcraft.testing import FakeClock


def echo(n: NodeContext) -> Any:
    return n.input


class Recorder(BaseNode):
    calls: ClassVar[list[str]] = []

    async def prep(self, node: NodeContext) -> Any:
        self.calls.append("prep")
        return {"item": node.input, "factor": self.params.get("factor", 1)}

    async def exec(self, prepared: Any, node: NodeContext) -> Any:
        self.calls.append(f"exec{node.attempt}")
        if node.attempt < 2:
            raise RuntimeError("transient")
        return prepared["item"] * prepared["factor"]

    def post(self, result: Any, node: NodeContext) -> Any:  # sync is fine too
        self.calls.append("post")
        return NodeResult(output=result, action="big" if result > 10 else "small")


async def test_class_node_runs_prep_once_retries_exec_then_post() -> None:
    """prep runs once, exec is retried, post shapes output and action (TS lifecycle)."""
    Recorder.calls = []
    flow = (
        create_flow("f")
        .node("src", lambda n: 6)
        .node("calc", Recorder, params={"factor": 3}, max_retries=2)
        .node("big", echo)
        .node("small", echo)
        .edge("src", "calc")
        .edge("calc", "big", action="big")
        .edge("calc", "small", action="small")
    )
    result = await flow.run(FlowRuntime())
    assert Recorder.calls == ["prep", "exec1", "exec2", "post"]
    assert result.outputs["calc"] == 18
    assert result.outputs["big"] == 18
    assert "small" not in result.outputs


class WithFallback(BaseNode):
    events: ClassVar[list[str]] = []

    async def exec(self, prepared: Any, node: NodeContext) -> Any:
        raise ValueError("always")

    async def fallback(self, error: Exception, node: NodeContext) -> Any:
        self.events.append(f"fallback:{error}")
        return "degraded"


class Broken(BaseNode):
    events: ClassVar[list[str]] = []

    async def exec(self, prepared: Any, node: NodeContext) -> Any:
        raise ValueError("broken")

    async def recover(self, error: Exception, node: NodeContext) -> None:
        self.events.append(f"recover:{error}")


async def test_class_fallback_method_turns_failure_into_a_result() -> None:
    """fallback() after the last attempt supplies the output."""
    WithFallback.events = []
    clock = FakeClock(autojump=True)
    flow = create_flow("f").node("a", WithFallback, max_retries=3, retry_delay=1)
    result = await flow.run(FlowRuntime(clock=clock))
    assert result.status == "completed"
    assert result.outputs["a"] == "degraded"
    assert WithFallback.events == ["fallback:always"]


async def test_class_recover_runs_before_the_failure_is_recorded() -> None:
    """recover() cleans up, then the run fails with the original error."""
    Broken.events = []
    result = await create_flow("f").node("a", Broken).run(FlowRuntime())
    assert result.status == "failed"
    assert result.errors[0].type == "ValueError"
    assert Broken.events == ["recover:broken"]


async def test_class_node_without_exec_fails_clearly() -> None:
    """A BaseNode subclass that forgot exec() fails with NotImplementedError, not silently."""

    class Empty(BaseNode):
        pass

    result = await create_flow("f").node("a", Empty).run(FlowRuntime())
    assert result.errors[0].type == "NotImplementedError"
    assert "must implement exec" in result.errors[0].message


def bump(n: NodeContext) -> int:
    i = int(n.context.get("i", 0)) + 1
    n.context.set("i", i)
    return i


async def test_loop_repeats_body_until_condition_false_then_breaks() -> None:
    """.loop() re-runs start..end while the condition holds, then takes its exit edges."""
    runs: list[int] = []

    def body(n: NodeContext) -> int:
        runs.append(bump(n))
        return runs[-1]

    flow = (
        create_flow("f")
        .node("init", lambda n: n.context.set("i", 0))
        .node("body", body)
        .node("check", echo)
        .loop("again", start="body", end="check", condition="i < 3")
        .node("after", echo)
        .edge("init", "body")
        .edge("body", "check")
        .edge("again", "after")
    )
    bp = flow.to_blueprint()
    assert {(e.source, e.target, e.action) for e in bp.edges} >= {
        ("check", "again", None),
        ("again", "body", "continue"),
        ("again", "after", "break"),
    }
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert runs == [1, 2, 3]
    assert result.outputs["after"] == 3


async def test_loop_with_a_multi_node_body_respects_inner_actions() -> None:
    """Inner edges and actions of a loop body are honoured on every iteration."""
    seen: list[str] = []

    def route(n: NodeContext) -> NodeResult[int]:
        i = bump(n)
        return NodeResult(output=i, action="odd" if i % 2 else "even")

    def mark(tag: str) -> Any:
        def inner(n: NodeContext) -> Any:
            seen.append(f"{tag}{n.input}")
            return n.input

        return inner

    flow = (
        create_flow("f")
        .node("start", lambda n: None)
        .node("route", route)
        .node("odd", mark("odd"))
        .node("even", mark("even"))
        .node("end", echo, join="any")
        .loop("loop", start="route", end="end", condition=lambda ec: ec.context["i"] < 4)
        .edge("start", "route")
        .edge("route", "odd", action="odd")
        .edge("route", "even", action="even")
        .edge("odd", "end")
        .edge("even", "end")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert seen == ["odd1", "even2", "odd3", "even4"]


async def test_wait_inside_a_loop_pauses_every_iteration() -> None:
    """A wait in a loop body pauses on each pass; each resume continues into the next pass."""
    flow = (
        create_flow("f")
        .node("start", lambda n: None)
        .node("work", bump)
        .wait("approve")
        .loop("loop", start="work", end="approve", condition="i < 3")
        .node("done", echo)
        .edge("start", "work")
        .edge("work", "approve")
        .edge("loop", "done")
    )
    rt = FlowRuntime()
    result = await flow.run(rt)
    passes = 0
    while result.status == "awaiting":
        passes += 1
        assert result.context["i"] == passes
        result = await flow.resume(rt, result.serialized_context, {"output": f"ok{passes}"})
    assert passes == 3
    assert result.outputs["done"] == "ok3"


async def test_unsafe_loop_condition_is_refused() -> None:
    """A loop condition that is not a safe expression fails at compile time."""
    from flowcraft import InvalidBlueprintError

    flow = create_flow("f").node("a", echo)
    flow.loop("l", start="a", end="a", condition="__import__('os')")
    flow.node("s", echo).edge("s", "a")
    with pytest.raises(InvalidBlueprintError):
        await flow.run(FlowRuntime())


def child_flow() -> Any:
    return (
        create_flow("child")
        .node("prepare", lambda n: f"prepared {n.context.get('input')}")
        .wait("review")
        .node("finish", lambda n: f"{n.input} finished")
        .edge("prepare", "review")
        .edge("review", "finish", action="ok")
    )


async def test_subflow_runs_child_and_surfaces_its_wait_under_a_path() -> None:
    """A wait inside a subflow shows as "parent-node/child-wait"; resuming it finishes both."""
    child = child_flow()
    parent = (
        create_flow("parent")
        .node("start", lambda n: "order-7")
        .subflow("check", "child", outputs={"checked": "finish"})
        .node("after", lambda n: f"after: {n.input}")
        .edge("start", "check")
        .edge("check", "after")
    )
    rt = FlowRuntime(blueprints={"child": child})
    first = await parent.run(rt)
    assert first.status == "awaiting"
    assert [a.node_id for a in first.awaiting] == ["check/review"]
    final = await parent.resume(
        rt, first.serialized_context, {"output": "looks good", "action": "ok"}, "check/review"
    )
    assert final.status == "completed"
    assert final.outputs["check"] == "looks good finished"
    assert final.outputs["after"] == "after: looks good finished"
    assert final.context["checked"] == "looks good finished"
    assert any(h.node_id == "check/review" and h.event == "resume" for h in final.history)


async def test_subflow_resume_errors_leave_parent_unchanged() -> None:
    """A refused resume of a child wait raises and the parent context still resumes."""
    from flowcraft import NodeNotAwaitingError, UnknownActionError

    rt = FlowRuntime(blueprints={"child": child_flow()})
    parent = (
        create_flow("parent").node("s", lambda n: 1).subflow("check", "child").edge("s", "check")
    )
    first = await parent.run(rt)
    with pytest.raises(UnknownActionError, match="review"):
        await parent.resume(rt, first.serialized_context, {"action": "nope"}, "check/review")
    with pytest.raises(NodeNotAwaitingError, match="check/review"):
        await parent.resume(rt, first.serialized_context, {"action": "ok"}, "check/ghost")
    done = await parent.resume(rt, first.serialized_context, {"output": "x", "action": "ok"})
    assert done.status == "completed"


async def test_subflow_failure_fails_the_parent_with_the_child_error() -> None:
    """A failing child node fails the parent, naming the child node and keeping the type."""

    def boom(n: NodeContext) -> None:
        raise KeyError("lost")

    child = create_flow("child").node("bad", boom)
    parent = create_flow("parent").subflow("sub", "child")
    result = await parent.run(FlowRuntime(blueprints={"child": child}))
    assert result.status == "failed"
    assert result.errors[0].node_id == "sub"
    assert result.errors[0].type == "KeyError"
    assert "at node 'bad'" in result.errors[0].message


async def test_sleep_inside_a_subflow_is_fired_by_the_scheduler() -> None:
    """A child's timer registers with the parent's run and fires through the path id."""
    import anyio

    clock = FakeClock()
    child = create_flow("child").node("a", lambda n: 5).sleep("nap", duration=60).edge("a", "nap")
    parent = create_flow("parent").subflow("sub", "child").node("z", echo).edge("sub", "z")
    rt = FlowRuntime(blueprints={"child": child}, clock=clock, registry=parent.registry)
    results: list[Any] = []
    async with rt.scheduler(interval=10, on_result=results.append) as scheduler:
        first = await rt.run(parent.to_blueprint())
        assert [t.node_id for t in scheduler.pending()] == ["sub/nap"]
        assert first.awaiting[0].reason == "timer"
        clock.advance(60)
        await anyio.wait_all_tasks_blocked()
    assert [r.status for r in results] == ["completed"]
    assert results[0].outputs["z"] == 5


async def test_subflow_with_unknown_blueprint_is_refused_before_running() -> None:
    """A subflow naming a blueprint the runtime lacks fails with a clear message."""
    from flowcraft import InvalidBlueprintError

    parent = create_flow("parent").subflow("sub", "nowhere")
    with pytest.raises(InvalidBlueprintError, match="needs blueprint 'nowhere'"):
        await parent.run(FlowRuntime())


async def test_batch_runs_items_concurrently_and_keeps_item_order() -> None:
    """Workers run over every item (bounded by chunk_size); results come back in order."""
    import anyio

    running = 0
    peak = 0

    async def double(n: NodeContext) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(5 - n.input):  # later items finish first, no real time passes
            await anyio.lowlevel.checkpoint()
        running -= 1
        return int(n.input) * 2

    flow = (
        create_flow("f")
        .node("load", lambda n: n.context.set("numbers", [1, 2, 3, 4]))
        .batch("double", double, input_key="numbers", output_key="doubled", chunk_size=2)
        .node("sum", lambda n: sum(n.input))
        .edge("load", "double")
        .edge("double", "sum")
    )
    bp = flow.to_blueprint()
    assert [n.uses for n in bp.nodes[1:3]] == ["batch-scatter", "batch-gather"]
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.context["doubled"] == [2, 4, 6, 8]
    assert result.outputs["sum"] == 20
    assert peak == 2


async def test_failing_batch_item_fails_the_run_naming_the_index() -> None:
    """One failing item fails the run with its index in the error (the gather never hangs)."""

    def check(n: NodeContext) -> int:
        if n.input == 3:
            raise ValueError("three is bad")
        return int(n.input)

    flow = (
        create_flow("f")
        .batch("b", check, input_key="items", max_retries=2)
        .node("after", echo)
        .edge("b", "after")
    )
    result = await flow.run(FlowRuntime(), {"items": [1, 2, 3]})
    assert result.status == "failed"
    assert result.errors[0].node_id == "b_scatter"
    assert result.errors[0].type == "ValueError"
    assert "item 2 failed" in result.errors[0].message
    assert result.errors[0].attempt == 2


async def test_paused_batch_items_resume_one_by_one() -> None:
    """node.pause() in a worker pauses that item; resuming every paused item completes the batch."""

    def review(n: NodeContext) -> str:
        if n.input.startswith("?"):
            n.pause(f"check {n.input}")
        return n.input.upper()

    flow = (
        create_flow("f")
        .batch("b", review, input_key="items", output_key="out")
        .node("after", echo)
        .edge("b", "after")
    )
    rt = FlowRuntime()
    first = await flow.run(rt, {"items": ["a", "?b", "c", "?d"]})
    assert first.status == "awaiting"
    assert [a.node_id for a in first.awaiting] == ["b_scatter/1", "b_scatter/3"]
    assert first.awaiting[0].description == "check ?b"
    second = await flow.resume(rt, first.serialized_context, {"output": "B!"}, "b_scatter/1")
    assert [a.node_id for a in second.awaiting] == ["b_scatter/3"]
    final = await flow.resume(rt, second.serialized_context, {"output": "D!"})
    assert final.status == "completed"
    assert final.outputs["after"] == ["A", "B!", "C", "D!"]
    assert final.context["out"] == ["A", "B!", "C", "D!"]


async def test_batch_input_must_be_a_list() -> None:
    """A batch whose input key holds no list fails clearly."""
    flow = create_flow("f").batch("b", echo, input_key="items")
    result = await flow.run(FlowRuntime(), {"items": {"not": "a list"}})
    assert result.status == "failed"
    assert "needs a list" in result.errors[0].message


async def test_forged_batch_record_is_a_context_error() -> None:
    """A batch waiting record with an item id that is no index is refused on load."""
    import msgspec

    from flowcraft import ContextDecodeError
    from flowcraft._envelope.records import Envelope

    def review(n: NodeContext) -> str:
        n.pause("check")

    flow = create_flow("f").batch("b", review, input_key="items")
    rt = FlowRuntime()
    first = await flow.run(rt, {"items": ["a"]})
    env = msgspec.msgpack.decode(first.serialized_context, type=Envelope)
    env.waiting[0].sub[0].node_id = "x"
    forged = msgspec.msgpack.encode(env)
    with pytest.raises(ContextDecodeError, match="malformed"):
        await flow.resume(rt, forged, {"output": 1}, "b_scatter/x")


def _two_paused_batch_items() -> tuple[Any, FlowRuntime, dict[str, Any]]:
    def review(n: NodeContext) -> str:
        n.pause("check")

    flow = create_flow("f").batch("b", review, input_key="items")
    return flow, FlowRuntime(registry=flow.registry), {"items": ["a", "b"]}


def _subflow_with_two_waits() -> tuple[Any, FlowRuntime, dict[str, Any]]:
    child = (
        create_flow("child")
        .node("a", lambda n: 1)
        .wait("w1")
        .wait("w2")
        .edge("a", "w1")
        .edge("a", "w2")
    )
    parent = create_flow("parent").subflow("sub", "child")
    return parent, FlowRuntime(blueprints={"child": child}), {}


@pytest.mark.parametrize(
    ("make", "awaiting"),
    [
        (_two_paused_batch_items, ["b_scatter/0", "b_scatter/1"]),
        (_subflow_with_two_waits, ["sub/w1", "sub/w2"]),
    ],
    ids=["batch-items", "subflow-waits"],
)
async def test_resume_without_node_id_is_ambiguous_when_two_nodes_await(
    make: Any, awaiting: list[str]
) -> None:
    """Two paused batch items, or two waits in one subflow, need a node_id to resume either."""
    flow, rt, state = make()
    first = await flow.run(rt, state)
    assert sorted(a.node_id for a in first.awaiting) == awaiting
    with pytest.raises(AmbiguousResumeError):
        await flow.resume(rt, first.serialized_context, {"output": 1})
    with pytest.raises(AmbiguousResumeError):
        await flow.resume(rt, first.serialized_context)


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


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
async def test_a_subflow_wait_resumes_with_either_serializer(serializer: str) -> None:
    """JSON has no bytes: the child's context, kept in the parent's as base64, still resumes."""
    child = create_flow("child").node("c1", lambda n: 1).wait("approve").edge("c1", "approve")
    parent = (
        create_flow("parent")
        .subflow("s", "child")
        .node("after", lambda n: n.input)
        .edge("s", "after")
    )
    rt = FlowRuntime(registry=parent.registry, blueprints={"child": child}, serializer=serializer)
    first = await parent.run(rt)
    assert [a.node_id for a in first.awaiting] == ["s/approve"]
    done = await parent.resume(rt, first.serialized_context, {"output": "ok"}, "s/approve")
    assert done.status == "completed"
    assert done.outputs["after"] == "ok"
