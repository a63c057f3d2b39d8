"""Flowcraft TS test suites ported to Python: hitl, sleep, runtime (unit, integration), traverser.

Each test names its TS origin in the docstring. Where Python differs from TS by design
(DESIGN.md), the test asserts the Python behaviour and says so. Tests marked "TS bug fixed"
assert the corrected behaviour listed in DESIGN.md §4 and §7.

Not ported (issue 7): hitl "should handle nested subflow with wait node"; runtime (unit) "should
create execution context for subflow"; traverser "should handle dynamic nodes from batch-scatter"
and "should throw FlowcraftError when loop has no continue edge"; runtime (integration) "should
break out of a loop when the condition is met".

Not applicable: the TS `strict` run option (Python has none: a cycle without an entry node is
entered at its first-declared node, as TS does when not strict), GraphTraverser internals
(ported as run-level behaviour), and the `describe.skip` race-condition block (two of its
cases are ported anyway).
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import anyio
import pytest

from flowcraft import (
    Blueprint,
    FlowRuntime,
    Middleware,
    NodeContext,
    NodeNotAwaitingError,
    NodeResult,
    NotAwaitingError,
    RunControl,
    RunLimitError,
    RunResult,
    SerializationError,
    TimerNotDueError,
    UnknownActionError,
    create_flow,
    lint_blueprint,
)
from flowcraft.testing import FakeClock, InMemoryEventLogger, run_with_trace

# --- helpers ---------------------------------------------------------------------------------


def awaiting_ids(result: RunResult) -> list[str]:
    return [a.node_id for a in result.awaiting]


def const(value: Any):
    async def fn(node: NodeContext) -> Any:
        return value

    return fn


def suffix(text: str):
    async def fn(node: NodeContext) -> Any:
        return f"{node.input}{text}"

    return fn


async def passthrough(node: NodeContext) -> Any:
    return node.input


def act(action: str, output: Any = None):
    async def fn(node: NodeContext) -> NodeResult[Any]:
        return NodeResult(output=output, action=action)

    return fn


async def end_with(node: NodeContext) -> str:
    return f"end-with-{node.input}"


class Counter:
    """Counts calls and records inputs of a node implementation."""

    def __init__(self, result: Any = None) -> None:
        self.calls = 0
        self.inputs: list[Any] = []
        self.result = result

    async def __call__(self, node: NodeContext) -> Any:
        self.calls += 1
        self.inputs.append(node.input)
        return self.result


class Concurrency:
    """Measures how many node bodies are in flight at once (anyio checkpoints, no real time)."""

    def __init__(self) -> None:
        self.now = 0
        self.max = 0

    async def __call__(self, node: NodeContext) -> str:
        self.now += 1
        self.max = max(self.max, self.now)
        for _ in range(5):
            await anyio.sleep(0)
        self.now -= 1
        return node.node_id


# =============================================================================================
# hitl.test.ts — "Human-in-the-Loop (HITL)"
# =============================================================================================


async def start_value(node: NodeContext) -> dict[str, Any]:
    return {"value": node.input}


def approval_flow():
    return (
        create_flow("hitl-basic")
        .node("start", start_value, inputs="input")
        .wait("wait-for-approval")
        .edge("start", "wait-for-approval")
    )


async def test_run_pauses_at_wait_node() -> None:
    """hitl: a run reaching a wait node is awaiting it, with the initial state kept."""
    flow = approval_flow()
    runtime = FlowRuntime(registry=flow.registry)
    result = await run_with_trace(runtime, flow.to_blueprint(), {"input": 42})
    assert result.status == "awaiting"
    assert result.context["input"] == 42
    assert awaiting_ids(result) == ["wait-for-approval"]


async def test_serialized_context_persists_awaiting_state_and_outputs() -> None:
    """hitl: the serialized bytes alone carry the awaiting node and earlier outputs to another
    runtime.
    """
    flow = approval_flow()
    first = await flow.run(FlowRuntime(serializer="json"), {"input": 42})
    assert first.outputs["start"] == {"value": 42}
    other = FlowRuntime()  # a different runtime (another process) reads the same bytes
    with pytest.raises(NodeNotAwaitingError):
        await flow.resume(other, first.serialized_context, {"output": 1}, "start")
    final = await flow.resume(
        other, first.serialized_context, {"output": "ok"}, "wait-for-approval"
    )
    assert final.status == "completed"
    assert final.outputs["start"] == {"value": 42}
    assert final.outputs["wait-for-approval"] == "ok"


async def test_sequential_wait_nodes_resume_one_after_another() -> None:
    """hitl: start -> wait1 -> wait2 -> end awaits each wait in turn, then completes."""

    async def end(node: NodeContext) -> dict[str, Any]:
        return {"final": node.input["value"] + 10}

    flow = (
        create_flow("hitl-sequential")
        .node("start", start_value, inputs="input")
        .wait("wait1")
        .wait("wait2")
        .node("end", end, inputs="_outputs.start")
        .edge("start", "wait1")
        .edge("wait1", "wait2")
        .edge("wait2", "end")
    )
    runtime = FlowRuntime()
    r1 = await flow.run(runtime, {"input": 42})
    assert r1.status == "awaiting"
    assert awaiting_ids(r1) == ["wait1"]
    r2 = await flow.resume(runtime, r1.serialized_context, {"output": {"value": 42}}, "wait1")
    assert r2.status == "awaiting"
    assert awaiting_ids(r2) == ["wait2"]
    r3 = await flow.resume(runtime, r2.serialized_context, {"output": {"value": 42}}, "wait2")
    assert r3.status == "completed"
    assert r3.outputs["end"]["final"] == 52


def branch(n: int):
    async def fn(node: NodeContext) -> str:
        return f"Branch {n}: {node.input['value']}"

    return fn


async def gather(node: NodeContext) -> dict[str, str]:
    return {"combined": f"Results: {node.input['result1']}, {node.input['result2']}"}


async def test_concurrent_wait_nodes_each_resume_then_gather() -> None:
    """hitl: two pending waits are resumed one by one; the gather runs after both."""
    flow = (
        create_flow("hitl-concurrent")
        .node("start", const("go"))
        .wait("wait1")
        .wait("wait2")
        .node("process1", branch(1))
        .node("process2", branch(2))
        .node(
            "gather",
            gather,
            inputs={"result1": "_outputs.process1", "result2": "_outputs.process2"},
        )
        .edge("start", "wait1")
        .edge("start", "wait2")
        .edge("wait1", "process1")
        .edge("wait2", "process2")
        .edge("process1", "gather")
        .edge("process2", "gather")
    )
    runtime = FlowRuntime()
    r1 = await flow.run(runtime)
    assert r1.status == "awaiting"
    assert awaiting_ids(r1) == ["wait1", "wait2"]
    r2 = await flow.resume(runtime, r1.serialized_context, {"output": {"value": 42}}, "wait1")
    assert r2.status == "awaiting"
    assert awaiting_ids(r2) == ["wait2"]
    assert "gather" not in r2.outputs
    r3 = await flow.resume(runtime, r2.serialized_context, {"output": {"value": 42}}, "wait2")
    assert r3.status == "completed"
    assert r3.outputs["gather"]["combined"] == "Results: Branch 1: 42, Branch 2: 42"


async def test_resumed_wait_without_successors_keeps_run_awaiting_while_another_waits() -> None:
    """hitl, TS bug fixed: resuming a successor-less wait leaves the run awaiting the other wait."""
    flow = (
        create_flow("hitl-dangling")
        .node("start", const("go"))
        .wait("w1")
        .wait("w2")
        .node("after2", passthrough)
        .edge("start", "w1")
        .edge("start", "w2")
        .edge("w2", "after2")
    )
    runtime = FlowRuntime()
    r1 = await flow.run(runtime)
    r2 = await flow.resume(runtime, r1.serialized_context, {"output": "one"}, "w1")
    assert r2.status == "awaiting"
    assert awaiting_ids(r2) == ["w2"]
    assert r2.outputs["w1"] == "one"
    r3 = await flow.resume(runtime, r2.serialized_context, {"output": "two"}, "w2")
    assert r3.status == "completed"
    assert r3.outputs["after2"] == "two"


def review_flow():
    return (
        create_flow("hitl-review")
        .node("submit", const("doc"))
        .wait("review")
        .node("publish", Counter("published"))
        .node("discard", Counter("discarded"))
        .edge("submit", "review")
        .edge("review", "publish", action="approve")
        .edge("review", "discard", action="reject")
    )


async def test_resume_follows_the_given_action() -> None:
    """hitl, TS bug fixed: resume with action 'reject' takes the 'reject' edge only."""
    flow = review_flow()
    runtime = FlowRuntime()
    r1 = await flow.run(runtime)
    final = await flow.resume(runtime, r1.serialized_context, {"output": "no", "action": "reject"})
    assert final.status == "completed"
    assert final.outputs["discard"] == "discarded"
    assert "publish" not in final.outputs


async def test_resume_with_unknown_action_is_refused() -> None:
    """hitl (DESIGN §4): an action no edge handles raises UnknownActionError and the context stays
    resumable.
    """
    flow = review_flow()
    runtime = FlowRuntime()
    r1 = await flow.run(runtime)
    with pytest.raises(UnknownActionError):
        await flow.resume(runtime, r1.serialized_context, {"action": "maybe"}, "review")
    final = await flow.resume(runtime, r1.serialized_context, {"action": "approve"}, "review")
    assert final.outputs["publish"] == "published"


async def test_resume_of_a_finished_run_is_refused() -> None:
    """hitl (TS resume errors): resuming a context that awaits nothing raises NotAwaitingError."""
    flow = create_flow("hitl-done").node("a", const(1))
    runtime = FlowRuntime()
    done = await flow.run(runtime)
    with pytest.raises(NotAwaitingError):
        await flow.resume(runtime, done.serialized_context, {"output": 1})


async def test_all_join_after_resumed_wait_waits_for_the_other_pending_wait() -> None:
    """hitl, TS bug fixed: a join fed by two waits does not run when only one of them is resumed."""
    join = Counter("joined")
    flow = (
        create_flow("hitl-join-waits")
        .node("start", const("go"))
        .wait("w1")
        .wait("w2")
        .node("join", join)
        .edge("start", "w1")
        .edge("start", "w2")
        .edge("w1", "join")
        .edge("w2", "join")
    )
    runtime = FlowRuntime()
    r1 = await flow.run(runtime)
    r2 = await flow.resume(runtime, r1.serialized_context, {"output": "one"}, "w1")
    assert r2.status == "awaiting"
    assert "join" not in r2.outputs
    assert join.calls == 0
    r3 = await flow.resume(runtime, r2.serialized_context, {"output": "two"}, "w2")
    assert r3.status == "completed"
    assert join.calls == 1
    assert join.inputs == [{"w1": "one", "w2": "two"}]


async def test_all_join_after_resumed_wait_waits_for_a_still_running_branch() -> None:
    """hitl, TS bug fixed: after a resume, a join waits for its slower branch instead of firing
    early.
    """

    async def slow(node: NodeContext) -> str:
        for _ in range(5):
            await anyio.sleep(0)
        return f"{node.input}+{node.node_id}"

    join = Counter("joined")
    flow = (
        create_flow("hitl-join-running")
        .wait("w")
        .node("fast", suffix("+fast"))
        .node("slow1", slow)
        .node("slow2", slow)
        .node("join", join)
        .edge("w", "fast")
        .edge("w", "slow1")
        .edge("slow1", "slow2")
        .edge("fast", "join")
        .edge("slow2", "join")
    )
    runtime = FlowRuntime()
    r1 = await flow.run(runtime)
    final = await flow.resume(runtime, r1.serialized_context, {"output": "x"}, "w")
    assert final.status == "completed"
    assert join.calls == 1
    assert join.inputs == [{"fast": "x+fast", "slow2": "x+slow1+slow2"}]


# =============================================================================================
# sleep.test.ts — "SleepNode output passthrough"
# =============================================================================================


async def double(node: NodeContext) -> int:
    return node.input * 2


def sleep_flow(duration: float):
    return (
        create_flow("sleep-passthrough")
        .node("start", const(42))
        .sleep("pause", duration=duration)
        .node("double", double)
        .edge("start", "pause")
        .edge("pause", "double")
    )


async def test_sleep_passes_its_input_through_on_resume(fake_clock: FakeClock) -> None:
    """sleep: after the timer is due, resuming with no output gives the sleep its input (42) as
    output.
    """
    flow = sleep_flow(0.010)
    runtime = FlowRuntime(clock=fake_clock)
    first = await flow.run(runtime)
    assert first.status == "awaiting"
    assert first.awaiting[0].reason == "timer"
    assert first.awaiting[0].wake_at == fake_clock.now() + timedelta(milliseconds=10)
    fake_clock.advance(0.020)
    final = await flow.resume(runtime, first.serialized_context, {}, "pause")
    assert final.status == "completed"
    assert final.outputs["pause"] == 42
    assert final.outputs["double"] == 84


async def test_sleep_resumed_before_wake_time_is_refused(fake_clock: FakeClock) -> None:
    """sleep (DESIGN §4): resuming a timer before wake_at raises TimerNotDueError."""
    flow = sleep_flow(10)
    runtime = FlowRuntime(clock=fake_clock)
    first = await flow.run(runtime)
    fake_clock.advance(5)
    with pytest.raises(TimerNotDueError):
        await flow.resume(runtime, first.serialized_context, None, "pause")


async def test_scheduler_auto_resumes_a_due_sleep(fake_clock: FakeClock) -> None:
    """sleep: with the scheduler open, a due sleep is auto-resumed and the run completes."""
    flow = sleep_flow(1)
    runtime = FlowRuntime(clock=fake_clock)
    results: list[RunResult] = []
    async with runtime.scheduler(interval=1, on_result=results.append) as scheduler:
        first = await flow.run(runtime)
        assert first.status == "awaiting"
        assert [t.node_id for t in scheduler.pending()] == ["pause"]
        fake_clock.advance(2)
        await anyio.wait_all_tasks_blocked()
        assert scheduler.pending() == []
    assert len(results) == 1
    assert results[0].run_id == first.run_id
    assert results[0].status == "completed"
    assert results[0].outputs["double"] == 84


async def test_scheduler_does_not_resume_a_wait_resumed_manually_before_its_deadline(
    fake_clock: FakeClock,
) -> None:
    """sleep, TS bug fixed: a wait resumed by hand before its deadline is never resumed again by the
    scheduler.
    """
    flow = (
        create_flow("sched-manual")
        .node("start", const("go"))
        .wait("approve", timeout=60)
        .node("done", Counter("done"))
        .edge("start", "approve")
        .edge("approve", "done")
        .edge("approve", "done", action="timeout")
    )
    runtime = FlowRuntime(clock=fake_clock)
    results: list[RunResult] = []
    async with runtime.scheduler(interval=1, on_result=results.append) as scheduler:
        first = await flow.run(runtime)
        assert [t.node_id for t in scheduler.pending()] == ["approve"]
        final = await flow.resume(runtime, first.serialized_context, {"output": "yes"}, "approve")
        assert final.status == "completed"
        assert scheduler.pending() == []
        fake_clock.advance(120)
        await anyio.wait_all_tasks_blocked()
    assert results == []
    assert scheduler.fired == 0


async def test_scheduler_wakes_sleep_from_the_newest_context_after_a_manual_resume(
    fake_clock: FakeClock,
) -> None:
    """sleep, TS bug fixed: after a manual resume of a parallel wait, the scheduler resumes the
    sleep from the newest context, once.
    """
    flow = (
        create_flow("sched-newest")
        .node("start", const("go"))
        .sleep("nap", duration=10)
        .wait("approve")
        .node("after-nap", passthrough)
        .edge("start", "nap")
        .edge("start", "approve")
        .edge("nap", "after-nap")
    )
    runtime = FlowRuntime(clock=fake_clock)
    results: list[RunResult] = []
    async with runtime.scheduler(interval=1, on_result=results.append) as scheduler:
        first = await flow.run(runtime)
        assert sorted(awaiting_ids(first)) == ["approve", "nap"]
        second = await flow.resume(runtime, first.serialized_context, {"output": "yes"}, "approve")
        assert second.status == "awaiting"
        assert awaiting_ids(second) == ["nap"]
        fake_clock.advance(11)
        await anyio.wait_all_tasks_blocked()
        fake_clock.advance(30)
        await anyio.wait_all_tasks_blocked()
        assert scheduler.pending() == []
    assert len(results) == 1
    assert results[0].status == "completed"
    assert results[0].revision == second.revision + 1
    assert results[0].outputs["approve"] == "yes"
    assert results[0].outputs["after-nap"] == "go"


async def test_scheduler_re_registers_a_run_that_awaits_again(fake_clock: FakeClock) -> None:
    """sleep, TS bug fixed: an auto-resume that reaches a second sleep registers it, and each timer
    fires once.
    """
    flow = (
        create_flow("sched-two-sleeps")
        .node("start", const(1))
        .sleep("s1", duration=5)
        .sleep("s2", duration=5)
        .node("end", Counter("end"))
        .edge("start", "s1")
        .edge("s1", "s2")
        .edge("s2", "end")
    )
    runtime = FlowRuntime(clock=fake_clock)
    results: list[RunResult] = []
    async with runtime.scheduler(interval=1, on_result=results.append) as scheduler:
        await flow.run(runtime)
        fake_clock.advance(6)
        await anyio.wait_all_tasks_blocked()
        assert [r.status for r in results] == ["awaiting"]
        assert [t.node_id for t in scheduler.pending()] == ["s2"]
        fake_clock.advance(6)
        await anyio.wait_all_tasks_blocked()
        fake_clock.advance(60)
        await anyio.wait_all_tasks_blocked()
    assert [r.status for r in results] == ["awaiting", "completed"]
    assert results[-1].outputs["end"] == "end"


# =============================================================================================
# runtime/runtime.test.ts (unit) — "FlowRuntime"
# =============================================================================================


async def test_runtime_without_options_runs_a_flow() -> None:
    """runtime unit 'should initialize with options': FlowRuntime() needs no options and holds no
    run state.
    """
    runtime = FlowRuntime()
    assert dict(runtime.registry) == {}
    assert dict(runtime.dependencies) == {}
    result = await create_flow("one").node("A", const("x")).run(runtime)
    assert result.status == "completed"


async def test_hand_written_blueprint_node_executes_from_runtime_registry() -> None:
    """runtime unit 'should execute individual nodes': a node whose `uses` key is in the runtime
    registry runs.
    """
    bp = Blueprint.from_json(
        '{"id":"node","nodes":[{"id":"A","uses":"test","params":{}}],"edges":[]}'
    )
    runtime = FlowRuntime(registry={"test": const("result")})
    result = await runtime.run(bp)
    assert result.status == "completed"
    assert result.outputs["A"] == "result"


async def test_node_execution_error_is_recorded_not_raised() -> None:
    """runtime unit 'should handle executeNode errors'; Python differs by design: the failure is
    recorded, and raise_for_status re-raises it.
    """

    async def boom(node: NodeContext) -> None:
        raise RuntimeError("Execution failed")

    result = await create_flow("err").node("A", boom).run(FlowRuntime())
    assert result.status == "failed"
    [err] = result.errors
    assert (err.node_id, err.type, err.message, err.attempt) == (
        "A",
        "RuntimeError",
        "Execution failed",
        1,
    )
    with pytest.raises(Exception, match="Execution failed") as info:
        result.raise_for_status()
    assert isinstance(info.value.__cause__, RuntimeError)


async def test_unlabelled_edge_leads_to_next_node() -> None:
    """runtime unit 'should determine next nodes correctly': A -> B runs B with A's output."""
    b = Counter("b")
    result = (
        await create_flow("next")
        .node("A", const("test"))
        .node("B", b)
        .edge("A", "B")
        .run(FlowRuntime())
    )
    assert result.status == "completed"
    assert b.inputs == ["test"]


async def test_edge_transform_expression_computes_target_input() -> None:
    """runtime unit 'should apply edge transforms': 'input * 2' turns 5 into B's input 10."""
    b = Counter("b")
    flow = create_flow("t").node("A", const(5)).node("B", b).edge("A", "B", transform="input * 2")
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert b.inputs == [10]


async def test_already_cancelled_control_gives_cancelled_status() -> None:
    """runtime unit 'should respect abort signals': a pre-cancelled RunControl cancels the run."""
    control = RunControl()
    control.cancel()
    result = await FlowRuntime().run(create_flow("empty").to_blueprint(), control=control)
    assert result.status == "cancelled"


async def test_scheduler_starts_and_stops_with_its_block(fake_clock: FakeClock) -> None:
    """runtime unit 'should start and stop scheduler': the scheduler is attached only while its
    block is open.
    """
    runtime = FlowRuntime(clock=fake_clock)
    async with runtime.scheduler() as scheduler:
        assert scheduler in runtime.schedulers
        assert scheduler.pending() == []
    assert runtime.schedulers == []


SLEEP_WORKFLOW_JSON = (
    '{"id":"sleep-workflow","nodes":[{"id":"start","uses":"test","params":{}},'
    '{"id":"sleep","uses":"sleep","params":{"duration":100}}],'
    '"edges":[{"source":"start","target":"sleep"}]}'
)


async def test_scheduler_registers_an_awaiting_run_with_a_timer(fake_clock: FakeClock) -> None:
    """runtime unit 'should register awaiting workflow with timer'; Python registers results
    returned while the scheduler is open (TS also registers without a started scheduler).
    """
    bp = Blueprint.from_json(SLEEP_WORKFLOW_JSON)
    runtime = FlowRuntime(
        registry={"test": const("done")}, blueprints={bp.id: bp}, clock=fake_clock
    )
    async with runtime.scheduler(interval=1) as scheduler:
        result = await runtime.run(bp)
        assert result.status == "awaiting"
        [timer] = scheduler.pending()
    assert (timer.run_id, timer.node_id, timer.kind) == (result.run_id, "sleep", "timer")
    assert timer.due == fake_clock.now() + timedelta(milliseconds=100)  # JSON duration is ms


async def test_scheduler_resumes_an_expired_timer(fake_clock: FakeClock) -> None:
    """runtime unit 'should resume expired timer workflow': start -> sleep(1 ms) -> end completes
    once the clock passes the timer.
    """
    flow = (
        create_flow("expired")
        .node("start", const("done"))
        .sleep("sleep", duration=timedelta(milliseconds=1))
        .node("end", suffix("!"))
        .edge("start", "sleep")
        .edge("sleep", "end")
    )
    runtime = FlowRuntime(clock=fake_clock)
    results: list[RunResult] = []
    async with runtime.scheduler(interval=0.1, on_result=results.append) as scheduler:
        first = await flow.run(runtime)
        assert first.status == "awaiting"
        fake_clock.advance(0.2)
        await anyio.wait_all_tasks_blocked()
        assert scheduler.pending() == []
    assert [r.status for r in results] == ["completed"]
    assert results[0].outputs["end"] == "done!"


# =============================================================================================
# runtime/traverser.test.ts — "GraphTraverser" (ported as observable run behaviour)
# =============================================================================================


async def test_empty_blueprint_completes_with_no_nodes() -> None:
    """traverser 'should initialize with blueprint and state': an empty blueprint has no nodes and
    completes.
    """
    bp = create_flow("empty").to_blueprint()
    assert bp.nodes == ()
    result = await FlowRuntime().run(bp)
    assert result.status == "completed"
    assert result.outputs == {}


def recorder(order: list[str], value: Any = None):
    async def fn(node: NodeContext) -> Any:
        order.append(node.node_id)
        return value if value is not None else node.node_id

    return fn


async def test_linear_flow_starts_at_the_node_without_incoming_edges() -> None:
    """traverser 'start nodes in simple linear workflow' / 'mark node as completed': A runs first,
    then B, then nothing.
    """
    order: list[str] = []
    flow = create_flow("lin").node("B", recorder(order)).node("A", recorder(order)).edge("A", "B")
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert order == ["A", "B"]


async def test_parallel_branches_start_at_the_common_source() -> None:
    """traverser 'start nodes in parallel branches': with A -> B and A -> C, A runs first."""
    order: list[str] = []
    flow = (
        create_flow("par")
        .node("A", recorder(order))
        .node("B", recorder(order))
        .node("C", recorder(order))
        .edge("A", "B")
        .edge("A", "C")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert order[0] == "A"
    assert sorted(order[1:]) == ["B", "C"]


async def test_cycle_without_entry_node_is_entered_at_its_first_node() -> None:
    """traverser 'should handle cycles if not strict': A <-> B starts at A and loops until the
    step limit stops it.
    """
    flow = create_flow("cyc").node("A", const(1)).node("B", const(2)).edge("A", "B").edge("B", "A")
    result = await flow.run(FlowRuntime(max_steps=5))
    assert result.status == "failed"
    assert result.errors[0].type == "RunLimitError"
    assert set(result.outputs) == {"A", "B"}


async def test_all_join_node_runs_once() -> None:
    """traverser 'should not return node twice': a diamond's join node runs exactly once."""
    d = Counter("d")
    flow = (
        create_flow("diamond")
        .node("A", const("a"))
        .node("B", const("b"))
        .node("C", const("c"))
        .node("D", d)
        .edge("A", "B")
        .edge("A", "C")
        .edge("B", "D")
        .edge("C", "D")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert d.calls == 1
    assert d.inputs == [{"B": "b", "C": "c"}]


def test_blueprint_lists_all_node_ids() -> None:
    """traverser 'should return correct node IDs': the blueprint holds every node id."""
    bp = create_flow("ids").node("A", const(1)).node("B", const(2)).edge("A", "B").to_blueprint()
    assert {n.id for n in bp.nodes} == {"A", "B"}


async def test_fallback_node_is_not_a_start_node() -> None:
    """traverser 'should identify fallback nodes': a fallback target never runs on its own."""
    fb = Counter("fb")
    flow = create_flow("fb").node("A", const("a"), fallback="B").node("B", fb)
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert fb.calls == 0
    assert "B" not in result.outputs


async def test_any_join_runs_once_at_first_arrival() -> None:
    """traverser 'should handle join strategy "any"': C runs once, with the first arriving input."""

    async def late(node: NodeContext) -> str:
        for _ in range(5):
            await anyio.sleep(0)
        return "b"

    c = Counter("c")
    flow = (
        create_flow("any")
        .node("A", const("a"))
        .node("B", late)
        .node("C", c, join="any")
        .edge("A", "C")
        .edge("B", "C")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["B"] == "b"
    assert c.calls == 1
    assert c.inputs == ["a"]


async def test_all_join_runs_after_every_predecessor() -> None:
    """traverser 'should handle join strategy "all"': C runs once both A and B are done, with both
    outputs.
    """

    async def late(node: NodeContext) -> str:
        for _ in range(5):
            await anyio.sleep(0)
        return "b"

    c = Counter("c")
    flow = (
        create_flow("all")
        .node("A", const("a"))
        .node("B", late)
        .node("C", c, join="all")
        .edge("A", "C")
        .edge("B", "C")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert c.calls == 1
    assert c.inputs == [{"A": "a", "B": "b"}]


async def test_skipped_branch_does_not_block_all_join() -> None:
    """traverser, TS bug fixed: with A -(false)-> B -> D and A -> C -> D, D runs with C's output
    only.
    """
    b, d = Counter("b"), Counter("d")
    flow = (
        create_flow("dead-path")
        .node("A", const("a"))
        .node("B", b)
        .node("C", suffix("+c"))
        .node("D", d)
        .edge("A", "B", condition="1 === 2")
        .edge("A", "C")
        .edge("B", "D")
        .edge("C", "D")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert b.calls == 0
    assert d.calls == 1
    assert d.inputs == [{"C": "a+c"}]


async def test_join_with_every_branch_dead_is_skipped_not_stalled() -> None:
    """traverser, TS bug fixed: a join whose branches all died is skipped; the run completes."""
    d = Counter("d")
    flow = (
        create_flow("all-dead")
        .node("A", act("stop"))
        .node("B", const("b"))
        .node("C", const("c"))
        .node("D", d)
        .node("E", const("e"))
        .edge("A", "B", action="go")
        .edge("A", "C", action="go")
        .edge("A", "E", action="stop")
        .edge("B", "D")
        .edge("C", "D")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert d.calls == 0
    assert result.outputs["E"] == "e"
    assert set(result.outputs) == {"A", "E"}


async def test_unmatched_action_runs_no_successor() -> None:
    """traverser, TS bug fixed: action 'x' with only 'y'/'z' edges and no default edge runs neither
    target.
    """
    y, z = Counter("y"), Counter("z")

    async def a(node: NodeContext) -> NodeResult[str]:
        return NodeResult(output="a", action="x")

    flow = (
        create_flow("no-match")
        .node("A", a)
        .node("Y", y)
        .node("Z", z)
        .edge("A", "Y", action="y")
        .edge("A", "Z", action="z")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert (y.calls, z.calls) == (0, 0)
    assert set(result.outputs) == {"A"}


# =============================================================================================
# runtime.test.ts (integration) — Core Execution
# =============================================================================================


async def test_linear_blueprint_passes_output_along() -> None:
    """integration 'simple linear blueprint': A -> B gives B 'resultA_B'."""
    flow = create_flow("linear").node("A", const("resultA")).node("B", suffix("_B")).edge("A", "B")
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["B"] == "resultA_B"


async def test_fan_in_node_without_inputs_gets_dict_of_predecessor_outputs() -> None:
    """integration 'DAG fan-out/fan-in'; Python differs by design: D without `inputs` gets {pred_id:
    output} instead of undefined.
    """
    d = Counter("d")
    flow = (
        create_flow("fan")
        .node("A", const("a"))
        .node("B", const("b"))
        .node("C", const("c"))
        .node("D", d)
        .edge("A", "D")
        .edge("B", "D")
        .edge("C", "D")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert d.inputs == [{"A": "a", "B": "b", "C": "c"}]


async def test_failed_branch_in_fan_in_fails_run_and_join_never_runs() -> None:
    """integration 'fail the workflow if a branch fails in a fan-in': B raises, the run fails, D
    never runs.
    """

    async def boom(node: NodeContext) -> None:
        raise ValueError("B broke")

    d = Counter("d")
    flow = (
        create_flow("fan-fail")
        .node("A", const("a"))
        .node("B", boom)
        .node("C", const("c"))
        .node("D", d)
        .edge("A", "D")
        .edge("B", "D")
        .edge("C", "D")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "failed"
    assert any(e.node_id == "B" for e in result.errors)
    assert "D" not in result.outputs
    assert d.calls == 0


async def test_multiple_start_nodes_feed_a_join() -> None:
    """integration 'multiple start nodes'; Python differs by design: C (no `inputs`) gets {'A': ...,
    'B': ...}.
    """
    c = Counter("c")
    flow = (
        create_flow("multi-start")
        .node("A", const("a"))
        .node("B", const("b"))
        .node("C", c)
        .edge("A", "C")
        .edge("B", "C")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert c.inputs == [{"A": "a", "B": "b"}]


async def test_cycle_with_entry_node_loops_until_its_condition_fails() -> None:
    """integration 'cycle when strict mode is off'; Python has no strict mode: a reachable cycle
    runs until its exit condition holds.
    """

    async def tick(node: NodeContext) -> int:
        n = node.context.get("n", 0) + 1
        node.context.set("n", n)
        return n

    end = Counter("end")
    flow = (
        create_flow("poll")
        .node("start", const(0))
        .node("A", tick)
        .node("B", passthrough)
        .node("end", end)
        .edge("start", "A")
        .edge("A", "B")
        .edge("B", "A", condition="input < 3")
        .edge("B", "end", condition="input >= 3")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.context["n"] == 3
    assert end.calls == 1


def test_cycle_of_only_two_nodes_is_entered_at_its_first_node() -> None:
    """integration 'cycle when strict mode is on'; Python has no strict mode: A <-> B is
    entered at A (as TS does when not strict), and lint says so (FC008).
    """
    flow = (
        create_flow("strict").node("A", const(1)).node("B", const(2)).edge("A", "B").edge("B", "A")
    )
    issues = lint_blueprint(flow.to_blueprint())
    assert [(i.code, i.node_id) for i in issues] == [("FC008", "A")]


async def test_runaway_cycle_fails_with_run_limit_error() -> None:
    """integration cycle cases (DESIGN §4): an unbounded cycle is stopped by max_steps with a
    RunLimitError record.
    """
    flow = (
        create_flow("runaway")
        .node("start", const(0))
        .node("A", const(1))
        .node("B", const(2))
        .edge("start", "A")
        .edge("A", "B")
        .edge("B", "A")
    )
    result = await flow.run(FlowRuntime(max_steps=50))
    assert result.status == "failed"
    assert result.errors[-1].type == RunLimitError.__name__


async def test_fallback_runs_when_main_node_fails() -> None:
    """integration 'execute fallback node when main node fails': the fallback's success completes
    the run without errors.
    """

    async def boom(node: NodeContext) -> None:
        raise ValueError("A failed")

    flow = (
        create_flow("fallback").node("A", boom, fallback="B").node("B", const("fallback success"))
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["B"] == "fallback success"
    assert result.outputs["A"] == "fallback success"  # DESIGN: it stands in for A
    assert result.errors == ()


async def test_retries_then_fallback_continues_along_failed_nodes_edges() -> None:
    """integration 'retry then fallback after max retries': 3 attempts, one fallback call, and
    endNode gets the fallback's output.
    """
    attempts = 0

    async def failing(node: NodeContext) -> None:
        nonlocal attempts
        attempts += 1
        raise RuntimeError("always")

    fb = Counter("fallback-success")
    flow = (
        create_flow("retry-fallback")
        .node("start", const("s"))
        .node("failingNode", failing, max_retries=3, fallback="fallbackNode")
        .node("fallbackNode", fb)
        .node("endNode", end_with)
        .edge("start", "failingNode")
        .edge("failingNode", "endNode")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert attempts == 3
    assert fb.calls == 1
    assert result.outputs["endNode"] == "end-with-fallback-success"


async def test_fallback_heals_only_its_own_node() -> None:
    """integration, TS bug fixed: a successful fallback does not hide an unrelated failure; the run
    is failed.
    """

    async def boom(node: NodeContext) -> None:
        raise ValueError(node.node_id)

    flow = (
        create_flow("fallback-scope")
        .node("A", boom, fallback="F")
        .node("F", const("healed"))
        .node("C", boom)
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "failed"
    assert [e.node_id for e in result.errors] == ["C"]
    assert result.outputs["A"] == "healed"


async def test_failing_fallback_fails_the_run() -> None:
    """integration fallback cases (DESIGN §4): when the fallback itself fails, the run is failed."""

    async def boom(node: NodeContext) -> None:
        raise ValueError(node.node_id)

    flow = create_flow("fallback-fails").node("A", boom, fallback="F").node("F", boom)
    result = await flow.run(FlowRuntime())
    assert result.status == "failed"
    assert result.errors


async def test_retry_delay_spaces_attempts_by_exact_backoff() -> None:
    """integration, TS bug fixed: retry_delay=5 with backoff 2 puts attempts at +0, +5 and +15
    seconds.
    """
    clock = FakeClock(autojump=True)
    t0 = clock.now()
    seen: list[timedelta] = []

    async def flaky(node: NodeContext) -> str:
        seen.append(clock.now() - t0)
        if node.attempt < 3:
            raise RuntimeError("not yet")
        return "ok"

    flow = create_flow("delay").node("A", flaky, max_retries=3, retry_delay=5, retry_backoff=2)
    result = await flow.run(FlowRuntime(clock=clock))
    assert result.status == "completed"
    assert seen == [timedelta(0), timedelta(seconds=5), timedelta(seconds=15)]
    assert clock.now() - t0 == timedelta(seconds=15)


async def test_retry_delay_is_not_applied_after_the_last_attempt() -> None:
    """integration, TS bug fixed: three failing attempts with retry_delay=2 advance the clock by
    exactly 4 seconds.
    """
    clock = FakeClock(autojump=True)
    t0 = clock.now()

    async def boom(node: NodeContext) -> None:
        raise RuntimeError("no")

    flow = create_flow("delay-fail").node("A", boom, max_retries=3, retry_delay=2)
    result = await flow.run(FlowRuntime(clock=clock))
    assert result.status == "failed"
    assert result.errors[0].attempt == 3
    assert clock.now() - t0 == timedelta(seconds=4)


async def test_timeout_fails_a_slow_node() -> None:
    """integration, TS bug fixed: a node exceeding timeout=1 fails with a TimeoutError after exactly
    1 virtual second.
    """
    clock = FakeClock(autojump=True)
    t0 = clock.now()

    async def hang(node: NodeContext) -> None:
        await anyio.Event().wait()

    after = Counter("after")
    flow = create_flow("timeout").node("A", hang, timeout=1).node("B", after).edge("A", "B")
    result = await flow.run(FlowRuntime(clock=clock))
    assert result.status == "failed"
    [err] = result.errors
    assert (err.node_id, err.type, err.attempt) == ("A", "TimeoutError", 1)
    assert after.calls == 0
    assert clock.now() - t0 == timedelta(seconds=1)


async def test_timeout_applies_to_each_retry_attempt() -> None:
    """integration, TS bug fixed: with max_retries=2 both attempts time out and the error records
    attempt 2.
    """
    clock = FakeClock(autojump=True)
    t0 = clock.now()
    calls = 0

    async def hang(node: NodeContext) -> None:
        nonlocal calls
        calls += 1
        await anyio.Event().wait()

    flow = create_flow("timeout-retry").node("A", hang, timeout=1, max_retries=2)
    result = await flow.run(FlowRuntime(clock=clock))
    assert result.status == "failed"
    assert calls == 2
    assert result.errors[0].attempt == 2
    assert clock.now() - t0 == timedelta(seconds=2)


async def test_node_finishing_within_timeout_succeeds(fake_clock: FakeClock) -> None:
    """integration, TS bug fixed: a timeout does not affect a node that finishes in time."""
    flow = create_flow("timeout-ok").node("A", const("fast"), timeout=5)
    result = await flow.run(FlowRuntime(clock=fake_clock))
    assert result.status == "completed"
    assert result.outputs["A"] == "fast"


def independent_flow(n: int, impl: Any):
    flow = create_flow(f"indep-{n}")
    for i in range(n):
        flow.node(f"n{i}", impl)
    return flow


async def test_concurrency_limit_bounds_nodes_in_flight() -> None:
    """integration 'respect concurrency limit': five independent nodes with concurrency=2 never
    exceed 2 at once.
    """
    meter = Concurrency()
    result = await independent_flow(5, meter).run(FlowRuntime(concurrency=2))
    assert result.status == "completed"
    assert len(result.outputs) == 5
    assert meter.max == 2


async def test_unbounded_concurrency_runs_all_ready_nodes_at_once() -> None:
    """integration 'unlimited concurrency when not specified': four independent nodes are all in
    flight together.
    """
    meter = Concurrency()
    result = await independent_flow(4, meter).run(FlowRuntime())
    assert result.status == "completed"
    assert meter.max == 4


async def test_concurrency_one_runs_nodes_sequentially() -> None:
    """integration 'sequential execution with concurrency: 1': three nodes run one at a time."""
    meter = Concurrency()
    result = await independent_flow(3, meter).run(FlowRuntime(concurrency=1))
    assert result.status == "completed"
    assert len(result.outputs) == 3
    assert meter.max == 1


async def test_action_routing_reads_shared_context() -> None:
    """integration 'conditional edges and context': B's action 'path-c' runs C, which reads A's
    context value.
    """

    async def a(node: NodeContext) -> None:
        node.context.set("shared_value", 42)

    async def b(node: NodeContext) -> NodeResult[bool]:
        return NodeResult(output=True, action="path-c")

    async def c(node: NodeContext) -> str:
        return f"C received {node.context.get('shared_value')}"

    flow = (
        create_flow("ctx-route")
        .node("A", a)
        .node("B", b)
        .node("C", c)
        .node("D", const("d"))
        .edge("A", "B")
        .edge("B", "C", action="path-c")
        .edge("B", "D", action="path-d")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["C"] == "C received 42"
    assert "D" not in result.outputs
    assert result.context["shared_value"] == 42


# =============================================================================================
# runtime.test.ts (integration) — State Management & Data Flow
# =============================================================================================


async def test_output_is_saved_under_node_id() -> None:
    """integration 'auto-save output by ID': A's output is outputs['A']."""
    result = await create_flow("save").node("A", const("test")).run(FlowRuntime())
    assert result.outputs["A"] == "test"


async def test_string_inputs_mapping_reads_a_node_output() -> None:
    """integration 'simple string inputs mapping': inputs='A' gives B A's output."""
    flow = (
        create_flow("in-str")
        .node("A", const("data"))
        .node("B", suffix("_B"), inputs="A")
        .edge("A", "B")
    )
    result = await flow.run(FlowRuntime())
    assert result.outputs["B"] == "data_B"


async def test_mapping_inputs_builds_an_input_dict() -> None:
    """integration 'complex object inputs mapping': inputs={'data': 'A'} gives B {'data': A's
    output}.
    """

    async def b(node: NodeContext) -> str:
        return f"{node.input['data']['key']}_B"

    flow = (
        create_flow("in-map")
        .node("A", const({"key": "value"}))
        .node("B", b, inputs={"data": "A"})
        .edge("A", "B")
    )
    result = await flow.run(FlowRuntime())
    assert result.outputs["B"] == "value_B"


async def test_single_predecessor_output_is_input_without_mapping() -> None:
    """integration 'single-predecessor output used as input': A -> B gives 'data_B'."""
    flow = create_flow("in-single").node("A", const("data")).node("B", suffix("_B")).edge("A", "B")
    result = await flow.run(FlowRuntime())
    assert result.outputs["B"] == "data_B"


async def test_edge_transform_feeds_the_target() -> None:
    """integration 'edge transform': A(10) -> B with transform 'input * 2' gives B 20."""
    flow = (
        create_flow("xform")
        .node("A", const(10))
        .node("B", passthrough)
        .edge("A", "B", transform="input * 2")
    )
    result = await flow.run(FlowRuntime())
    assert result.outputs["B"] == 20


async def test_none_output_is_saved() -> None:
    """integration 'undefined output saved': a node returning nothing has outputs['A'] present and
    None.
    """

    async def nothing(node: NodeContext) -> None:
        return None

    async def explicit(node: NodeContext) -> NodeResult[None]:
        return NodeResult(output=None)

    result = await create_flow("none").node("A", nothing).node("B", explicit).run(FlowRuntime())
    assert result.status == "completed"
    assert "A" in result.outputs
    assert result.outputs["A"] is None
    assert "B" in result.outputs
    assert result.outputs["B"] is None


async def test_multi_predecessor_node_without_mapping_gets_predecessor_dict() -> None:
    """integration 'no input for multi-predecessor node'; Python differs by design: C gets {'A':
    ..., 'B': ...}, not undefined.
    """

    async def c(node: NodeContext) -> str:
        return "no-input" if node.input is None else f"keys={sorted(node.input)}"

    flow = (
        create_flow("multi-no-map")
        .node("A", const(1))
        .node("B", const(2))
        .node("C", c)
        .edge("A", "C")
        .edge("B", "C")
    )
    result = await flow.run(FlowRuntime())
    assert result.outputs["C"] == "keys=['A', 'B']"


# =============================================================================================
# runtime.test.ts (integration) — Control Flow
# =============================================================================================


async def test_returned_action_selects_the_edge() -> None:
    """integration 'follow edge by returned action': action 'success' runs B, not C."""

    async def a(node: NodeContext) -> NodeResult[str]:
        return NodeResult(output="a", action="success")

    b, c = Counter("b"), Counter("c")
    flow = (
        create_flow("act")
        .node("A", a)
        .node("B", b)
        .node("C", c)
        .edge("A", "B", action="success")
        .edge("A", "C", action="fail")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert (b.calls, c.calls) == (1, 0)


async def test_true_condition_expression_selects_the_edge() -> None:
    """integration 'edge condition true': "result.output.status === 'OK'" runs B, the 'ERROR' edge
    does not run C.
    """
    b, c = Counter("b"), Counter("c")
    flow = (
        create_flow("cond")
        .node("A", const({"status": "OK"}))
        .node("B", b)
        .node("C", c)
        .edge("A", "B", condition="result.output.status === 'OK'")
        .edge("A", "C", condition="result.output.status === 'ERROR'")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert (b.calls, c.calls) == (1, 0)


async def test_false_condition_skips_its_edge() -> None:
    """integration 'conditional edge false': '1 === 2' skips B while the plain edge runs C."""
    b, c = Counter("b"), Counter("c")
    flow = (
        create_flow("cond-false")
        .node("A", const("a"))
        .node("B", b)
        .node("C", c)
        .edge("A", "B", condition="1 === 2")
        .edge("A", "C")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert (b.calls, c.calls) == (0, 1)


async def test_unmatched_action_falls_back_to_the_default_edge() -> None:
    """integration 'default edge when no other path matches': action 'unknown' takes the unlabelled
    edge to C.
    """

    async def a(node: NodeContext) -> NodeResult[str]:
        return NodeResult(output="a", action="unknown")

    b, c = Counter("b"), Counter("c")
    flow = (
        create_flow("default-edge")
        .node("A", a)
        .node("B", b)
        .node("C", c)
        .edge("A", "B", action="known")
        .edge("A", "C")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert (b.calls, c.calls) == (0, 1)


# =============================================================================================
# runtime.test.ts (integration) — Extensibility & Observability
# =============================================================================================


class Tagged(Middleware):
    def __init__(self, tag: str, log: list[str]) -> None:
        self.tag, self.log = tag, log

    async def around_node(self, node: NodeContext, call_next: Any) -> Any:
        self.log.append(f"before{self.tag}")
        result = await call_next()
        self.log.append(f"after{self.tag}")
        return result


async def test_around_node_middleware_nests_first_outermost() -> None:
    """integration 'aroundNode LIFO order': two middlewares log before1, before2, exec, after2,
    after1.
    """
    log: list[str] = []

    async def a(node: NodeContext) -> str:
        log.append("exec")
        return "a"

    flow = create_flow("mw-order").node("A", a)
    result = await flow.run(FlowRuntime(middleware=[Tagged("1", log), Tagged("2", log)]))
    assert result.status == "completed"
    assert log == ["before1", "before2", "exec", "after2", "after1"]


async def test_around_node_can_short_circuit() -> None:
    """integration 'aroundNode short-circuit': a middleware that skips call_next supplies the
    output.
    """
    a = Counter("real")

    class Short(Middleware):
        async def around_node(self, node: NodeContext, call_next: Any) -> Any:
            return NodeResult(output="short-circuit")

    result = await create_flow("mw-short").node("A", a).run(FlowRuntime(middleware=[Short()]))
    assert result.status == "completed"
    assert result.outputs["A"] == "short-circuit"
    assert a.calls == 0


class Hooks(Middleware):
    def __init__(self) -> None:
        self.before: list[str] = []
        self.after: list[tuple[str, Any, BaseException | None]] = []

    async def before_node(self, node: NodeContext) -> None:
        self.before.append(node.node_id)

    async def after_node(self, node: NodeContext, result: Any, error: BaseException | None) -> None:
        self.after.append((node.node_id, result, error))


async def test_before_and_after_node_are_called_once_each() -> None:
    """integration 'beforeNode/afterNode called once each' for a single node."""
    hooks = Hooks()
    result = (
        await create_flow("mw-hooks").node("A", const("a")).run(FlowRuntime(middleware=[hooks]))
    )
    assert result.status == "completed"
    assert hooks.before == ["A"]
    assert hooks.after == [("A", "a", None)]


async def test_after_node_is_called_when_the_node_fails() -> None:
    """integration 'afterNode called even if node fails': once, with the error."""
    hooks = Hooks()

    async def boom(node: NodeContext) -> None:
        raise ValueError("bad")

    result = await create_flow("mw-fail").node("A", boom).run(FlowRuntime(middleware=[hooks]))
    assert result.status == "failed"
    assert len(hooks.after) == 1
    node_id, value, error = hooks.after[0]
    assert (node_id, value) == ("A", None)
    assert isinstance(error, ValueError)


async def test_run_emits_workflow_start_and_finish() -> None:
    """integration 'emits workflow:start and workflow:finish'."""
    bus = InMemoryEventLogger()
    result = await create_flow("ev").node("A", const("a")).run(FlowRuntime(event_bus=bus))
    assert result.status == "completed"
    types = bus.types()
    assert types[0] == "workflow:start"
    assert types[-1] == "workflow:finish"
    assert bus.of("workflow:finish")[0].payload["status"] == "completed"


async def test_run_emits_node_start_finish_retry_and_error() -> None:
    """integration 'emits node:start, node:finish, node:retry, node:error': A fails once then
    succeeds, B always fails.
    """
    bus = InMemoryEventLogger()

    async def flaky(node: NodeContext) -> str:
        if node.attempt == 1:
            raise RuntimeError("first try")
        return "a"

    async def boom(node: NodeContext) -> None:
        raise RuntimeError("always")

    flow = create_flow("ev-nodes").node("A", flaky, max_retries=2).node("B", boom)
    result = await flow.run(FlowRuntime(event_bus=bus))
    assert result.status == "failed"
    types = set(bus.types())
    assert {"node:start", "node:finish", "node:retry", "node:error"} <= types
    assert [e.node_id for e in bus.of("node:retry")] == ["A"]
    assert [e.node_id for e in bus.of("node:error")] == ["B"]


async def test_dependencies_reach_node_functions() -> None:
    """integration 'dependencies passed to NodeFunction': node.deps['db'] is the object given;
    Python injects no logger.
    """
    db = object()
    seen: list[Any] = []

    async def a(node: NodeContext) -> None:
        seen.append(node.deps["db"])

    result = await create_flow("deps").node("A", a).run(FlowRuntime(dependencies={"db": db}))
    assert result.status == "completed"
    assert len(seen) == 1
    assert seen[0] is db


# =============================================================================================
# runtime.test.ts (integration) — Cancellation
# =============================================================================================


async def test_cancel_during_node_gives_cancelled_status_and_keeps_context() -> None:
    """integration 'cancelled status if aborted mid-flight', TS bug fixed: the cancelled result
    keeps A's output and state.
    """
    control = RunControl()
    b = Counter("b")

    async def a(node: NodeContext) -> str:
        node.context.set("seen", True)
        control.cancel()
        return "A"

    flow = create_flow("cancel").node("A", a).node("B", b).edge("A", "B")
    result = await flow.run(FlowRuntime(), control=control)
    assert result.status == "cancelled"
    assert result.outputs["A"] == "A"
    assert result.context["seen"] is True
    assert b.calls == 0
    assert result.serialized_context  # the context is kept, not discarded


async def test_cancel_reaches_the_in_flight_node() -> None:
    """integration 'passes AbortSignal to NodeContext'; Python equivalent: cancel() cancels the
    running node and keeps earlier outputs.
    """
    control = RunControl()
    cancelled: list[str] = []
    started = anyio.Event()

    async def hang(node: NodeContext) -> None:
        started.set()
        try:
            await anyio.Event().wait()
        except anyio.get_cancelled_exc_class():
            cancelled.append(node.node_id)
            raise

    flow = create_flow("cancel-inflight").node("A", const("A")).node("B", hang).edge("A", "B")
    results: list[RunResult] = []

    async def go() -> None:
        results.append(await flow.run(FlowRuntime(), control=control))

    async with anyio.create_task_group() as tg:
        tg.start_soon(go)
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        control.cancel()
    [result] = results
    assert result.status == "cancelled"
    assert cancelled == ["B"]
    assert result.outputs == {"A": "A"}


# =============================================================================================
# runtime.test.ts (integration) — Boundary Conditions
# =============================================================================================


async def test_nodes_without_edges_all_run() -> None:
    """integration boundary 'blueprint structure': nodes without edges each run and the run
    completes.
    """
    result = await independent_flow(3, const("x")).run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs == {"n0": "x", "n1": "x", "n2": "x"}


@pytest.mark.parametrize(
    "node_id",
    ["node@#$%^&*()", "节点🚀", "a" * 1000, "node.subnode", "node/sub/node"],
)
async def test_unusual_node_ids_work(node_id: str) -> None:
    """integration boundary 'node IDs': unusual ids run and key their output."""
    result = await create_flow("ids").node(node_id, const("test")).run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs[node_id] == "test"


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "a" * 10000,
        {},
        {"a": {"b": {"c": {"d": {"e": [1, 2, {"f": True}]}}}}},
        list(range(1000)),
        {"s": "x", "n": 1, "f": 1.5, "b": False, "none": None, "list": [1, "2"]},
    ],
    ids=["none", "empty", "long", "empty-dict", "nested", "int-list", "mixed"],
)
async def test_output_values_are_kept(value: Any) -> None:
    """integration boundary 'output values': any encodable output is kept as-is (Python asserts
    equality, TS identity).
    """
    result = await create_flow("vals").node("A", const(value)).run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["A"] == value


@pytest.mark.parametrize(
    "value",
    [None, "", 9007199254740991, -9007199254740991, math.inf, -math.inf, []],
    ids=["none", "empty", "max-safe", "min-safe", "inf", "-inf", "empty-list"],
)
async def test_initial_state_values_reach_nodes(value: Any) -> None:
    """integration boundary 'initial context values': a state value read with context.get comes back
    unchanged.
    """

    async def read(node: NodeContext) -> Any:
        return node.context.get("testKey")

    result = await create_flow("init").node("A", read).run(FlowRuntime(), {"testKey": value})
    assert result.status == "completed"
    assert result.outputs["A"] == value


async def test_nan_initial_state_value_reaches_node() -> None:
    """integration boundary 'initial context values' (NaN): a NaN state value reads back as NaN."""

    async def read(node: NodeContext) -> Any:
        return node.context.get("testKey")

    result = await create_flow("nan").node("A", read).run(FlowRuntime(), {"testKey": math.nan})
    assert result.status == "completed"
    assert math.isnan(result.outputs["A"])


@pytest.mark.parametrize("concurrency", [1, 2, 5, 10, 0, -1])
async def test_any_concurrency_setting_completes(concurrency: int) -> None:
    """integration boundary 'concurrency': limits 1, 2, 5, 10, 0 (unbounded) and -1 all complete."""
    n = max(1, min(2 * concurrency, 20))
    result = await independent_flow(n, const("x")).run(FlowRuntime(concurrency=concurrency))
    assert result.status == "completed"
    assert len(result.outputs) == n


async def test_chain_of_one_hundred_nodes_completes() -> None:
    """integration boundary 'chain of 100 nodes': node99 sees 99 increments."""

    async def inc(node: NodeContext) -> int:
        return 0 if node.input is None else node.input + 1

    flow = create_flow("chain")
    for i in range(100):
        flow.node(f"node{i}", inc)
        if i:
            flow.edge(f"node{i - 1}", f"node{i}")
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["node99"] == 99


async def test_dense_dag_runs_every_node_once() -> None:
    """integration boundary 'dense DAG': ten nodes with edges i -> j for all i < j run once each."""
    counters = [Counter(i) for i in range(10)]
    flow = create_flow("dense")
    for i, c in enumerate(counters):
        flow.node(f"n{i}", c)
    for i in range(10):
        for j in range(i + 1, 10):
            flow.edge(f"n{i}", f"n{j}")
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert [c.calls for c in counters] == [1] * 10
    assert counters[9].inputs == [{f"n{i}": i for i in range(9)}]


class OddError(Exception):
    def __str__(self) -> str:
        return ""


@pytest.mark.parametrize(
    "exc",
    [ValueError("an error"), RuntimeError(), Exception(None), KeyError(42), OddError()],
    ids=["value-error", "no-message", "none-message", "key-error", "empty-str"],
)
async def test_any_raised_exception_fails_the_run_with_an_error_record(exc: Exception) -> None:
    """integration boundary 'node throws': whatever a node raises, the run is failed with an error
    record.
    """

    async def boom(node: NodeContext) -> None:
        raise exc

    result = await create_flow("throws").node("A", boom).run(FlowRuntime())
    assert result.status == "failed"
    assert len(result.errors) == 1
    assert result.errors[0].node_id == "A"
    assert result.errors[0].type == type(exc).__name__


async def test_plain_string_return_is_the_output() -> None:
    """integration boundary 'node returning a non-dict': a bare string is the node's output."""
    result = await create_flow("plain").node("A", const("invalid result")).run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["A"] == "invalid result"


@pytest.mark.parametrize(
    "value",
    [None, {"a": {"b": [1, {"c": None}]}}],
    ids=["none", "nested"],
)
async def test_context_value_set_by_one_node_is_read_by_the_next(value: Any) -> None:
    """integration boundary 'context.set': B reads exactly what A stored."""

    async def a(node: NodeContext) -> None:
        node.context.set("k", value)

    async def b(node: NodeContext) -> Any:
        return node.context.get("k", "missing")

    result = await create_flow("ctx").node("A", a).node("B", b).edge("A", "B").run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["B"] == value
    assert result.context["k"] == value


async def test_circular_context_value_raises_serialization_error_naming_the_key() -> None:
    """integration boundary 'context.set circular'; Python differs by design (DESIGN §4): an
    unencodable value raises SerializationError naming the key.
    """

    async def a(node: NodeContext) -> None:
        loop: dict[str, Any] = {}
        loop["self"] = loop
        node.context.set("circ", loop)

    with pytest.raises(SerializationError, match="circ"):
        await create_flow("circular").node("A", a).run(FlowRuntime())


# --- describe.skip('Concurrency and Race Conditions'): two cases ported ----------------------


async def test_shared_counter_increments_are_not_lost() -> None:
    """integration (skipped in TS) 'shared counter': 50 concurrent nodes incrementing a state
    counter reach 50.
    """

    async def inc(node: NodeContext) -> None:
        await anyio.sleep(0)
        node.context.set("nextId", node.context.get("nextId", 0) + 1)

    result = await independent_flow(50, inc).run(FlowRuntime(concurrency=10))
    assert result.status == "completed"
    assert result.context["nextId"] == 50


async def test_partial_failure_keeps_successful_outputs() -> None:
    """integration (skipped in TS) 'partial failures': a failed run still reports the outputs that
    succeeded.
    """

    async def boom(node: NodeContext) -> None:
        await anyio.sleep(0)
        raise RuntimeError("x")

    flow = create_flow("partial").node("ok", const("fine")).node("bad", boom)
    result = await flow.run(FlowRuntime())
    assert result.status == "failed"
    assert result.outputs["ok"] == "fine"
    assert [e.node_id for e in result.errors] == ["bad"]
