from __future__ import annotations

from typing import Any

import anyio
import pytest

from flowcraft import (
    FlowRuntime,
    NodeContext,
    NodeExecutionError,
    NodeResult,
    RunControl,
    create_flow,
)
from flowcraft.testing import FakeClock, InMemoryEventLogger


def const(value: Any, action: str | None = None) -> Any:
    async def node(n: NodeContext) -> Any:
        return NodeResult(output=value, action=action) if action else value

    return node


def echo(n: NodeContext) -> Any:
    return n.input


async def test_sync_and_async_nodes_both_run_and_pass_outputs_along() -> None:
    """Sync functions run inline, async ones are awaited; outputs flow to successors."""

    def double(n: NodeContext) -> int:
        return int(n.input) * 2

    flow = create_flow("f").node("a", const(21)).node("b", double).edge("a", "b")
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs == {"a": 21, "b": 42}
    assert result.revision == 1


async def test_action_routing_takes_only_matching_edges() -> None:
    """A node's action selects the edges labelled with it, nothing else."""
    flow = (
        create_flow("f")
        .node("a", const("x", action="left"))
        .node("l", echo)
        .node("r", echo)
        .edge("a", "l", action="left")
        .edge("a", "r", action="right")
    )
    result = await flow.run(FlowRuntime())
    assert set(result.outputs) == {"a", "l"}


async def test_unmatched_action_falls_back_to_unlabelled_edges_only() -> None:
    """An action with no edge takes the default (unlabelled) edges."""
    flow = (
        create_flow("f")
        .node("a", const(1, action="other"))
        .node("l", echo)
        .node("d", echo)
        .edge("a", "l", action="left")
        .edge("a", "d")
    )
    result = await flow.run(FlowRuntime())
    assert set(result.outputs) == {"a", "d"}


async def test_no_match_and_no_default_routes_nowhere() -> None:
    """When nothing matches and there is no default edge, no successor runs (TS bug fixed)."""
    flow = (
        create_flow("f")
        .node("a", const(1, action="x"))
        .node("y", echo)
        .node("z", echo)
        .edge("a", "y", action="y")
        .edge("a", "z", action="z")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert set(result.outputs) == {"a"}


async def test_if_else_that_rejoins_runs_the_join_with_the_taken_branch() -> None:
    """Dead-path elimination lets an all-join run after one branch was not taken."""
    flow = (
        create_flow("f")
        .node("a", const(5, action="yes"))
        .node("yes", lambda n: "Y")
        .node("no", lambda n: "N")
        .node("join", echo)
        .edge("a", "yes", action="yes")
        .edge("a", "no", action="no")
        .edge("yes", "join")
        .edge("no", "join")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["join"] == {"yes": "Y"}
    assert "no" not in result.outputs


async def test_join_whose_every_branch_died_is_skipped_not_hung() -> None:
    """A join with no fired incoming edge is skipped, and the run completes."""
    flow = (
        create_flow("f")
        .node("a", const(0, action="stop"))
        .node("b", echo)
        .node("c", echo)
        .node("j", echo)
        .node("after", echo)
        .edge("a", "b", action="go")
        .edge("a", "c", action="go")
        .edge("b", "j")
        .edge("c", "j")
        .edge("j", "after")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert set(result.outputs) == {"a"}


async def test_condition_false_kills_the_edge_and_transform_shapes_input() -> None:
    """Conditions gate edges, transforms reshape the value delivered to the target."""
    flow = (
        create_flow("f")
        .node("a", const(10))
        .node("big", echo)
        .node("small", echo)
        .edge("a", "big", condition=lambda ec: ec.input > 5, transform=lambda ec: ec.input * 3)
        .edge("a", "small", condition="input <= 5")
    )
    result = await flow.run(FlowRuntime())
    assert result.outputs == {"a": 10, "big": 30}


async def test_any_join_runs_once_at_first_arrival() -> None:
    """A join "any" runs once, with the first arriving predecessor's output."""
    calls: list[Any] = []

    def record(n: NodeContext) -> Any:
        calls.append(n.input)
        return n.input

    flow = (
        create_flow("f")
        .node("s", const(0))
        .node("a", const("A"))
        .node("b", const("B"))
        .node("j", record, join="any")
        .edge("s", "a")
        .edge("s", "b")
        .edge("a", "j")
        .edge("b", "j")
    )
    result = await flow.run(FlowRuntime())
    assert len(calls) == 1
    assert calls[0] in ("A", "B")
    assert result.status == "completed"


async def test_inputs_mapping_reads_outputs_and_state() -> None:
    """Declared inputs resolve node ids to outputs and other names to state keys."""
    flow = (
        create_flow("f")
        .node("a", const({"v": 1}))
        .node("b", echo, inputs={"from_a": "a", "tenant": "tenant", "raw": "_outputs.a"})
        .edge("a", "b")
    )
    result = await flow.run(FlowRuntime(), {"tenant": "acme"})
    assert result.outputs["b"] == {"from_a": {"v": 1}, "tenant": "acme", "raw": {"v": 1}}


async def test_cycle_runs_until_exit_action() -> None:
    """A back edge loops; the exit edge fires once the loop ends."""

    def count(n: NodeContext) -> NodeResult[int]:
        i = n.context.get("i", 0) + 1
        n.context.set("i", i)
        return NodeResult(output=i, action="again" if i < 3 else "done")

    flow = (
        create_flow("f")
        .node("start", const(None))
        .node("count", count)
        .node("end", echo)
        .edge("start", "count")
        .edge("count", "count", action="again")
        .edge("count", "end", action="done")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.context["i"] == 3
    assert result.outputs["end"] == 3


async def test_runaway_cycle_fails_with_run_limit_error() -> None:
    """max_steps stops an endless loop with status failed and a RunLimitError record."""
    flow = (
        create_flow("f")
        .node("a", const(1))
        .node("b", const(1))
        .edge("a", "b")
        .edge("b", "a")
        .node("s", const(0))
        .edge("s", "a")
    )
    result = await flow.run(FlowRuntime(max_steps=50))
    assert result.status == "failed"
    assert result.errors[-1].type == "RunLimitError"
    assert "max_steps=50" in result.errors[-1].message


async def test_failure_is_recorded_not_raised_and_raise_for_status_chains_cause() -> None:
    """A failing node makes the run failed; raise_for_status gives the original as __cause__."""

    def boom(n: NodeContext) -> None:
        raise KeyError("missing")

    result = await create_flow("f").node("a", boom).run(FlowRuntime())
    assert result.status == "failed"
    assert result.errors[0].node_id == "a"
    assert result.errors[0].type == "KeyError"
    with pytest.raises(NodeExecutionError, match="node 'a' failed") as info:
        result.raise_for_status()
    assert isinstance(info.value.__cause__, KeyError)


async def test_retries_wait_with_backoff_on_the_clock() -> None:
    """retry_delay * retry_backoff^n is enforced through the clock; max_retries counts attempts."""
    clock = FakeClock(autojump=True)
    start = clock.now()
    attempts: list[int] = []

    def flaky(n: NodeContext) -> str:
        attempts.append(n.attempt)
        if n.attempt < 3:
            raise RuntimeError("flaky")
        return "ok"

    flow = create_flow("f").node("a", flaky, max_retries=3, retry_delay=2, retry_backoff=3)
    result = await flow.run(FlowRuntime(clock=clock))
    assert result.outputs["a"] == "ok"
    assert attempts == [1, 2, 3]
    assert (clock.now() - start).total_seconds() == pytest.approx(2 + 6)


async def test_timeout_is_enforced_on_the_clock() -> None:
    """A node running past its timeout is cancelled and fails with TimeoutError."""
    clock = FakeClock()
    started = anyio.Event()

    async def slow(n: NodeContext) -> str:
        started.set()
        await anyio.Event().wait()
        return "never"

    flow = create_flow("f").node("a", slow, timeout=5)
    box: list[Any] = []
    async with anyio.create_task_group() as tg:

        async def go() -> None:
            box.append(await flow.run(FlowRuntime(clock=clock)))

        tg.start_soon(go)
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        clock.advance(5)
    result = box[0]
    assert result.status == "failed"
    assert result.errors[0].type == "TimeoutError"
    assert "timed out after 5s" in result.errors[0].message


async def test_timeout_with_the_system_clock_fails_fast_nodes_never() -> None:
    """With the real clock, a quick node under a generous timeout succeeds."""
    result = await create_flow("f").node("a", const(1), timeout=30).run(FlowRuntime())
    assert result.outputs == {"a": 1}


async def test_fallback_stands_in_and_routing_continues_along_failed_node_edges() -> None:
    """The fallback's output becomes the failed node's output and its successors run."""

    def boom(n: NodeContext) -> None:
        raise ValueError("down")

    flow = (
        create_flow("f")
        .node("a", boom, max_retries=2, fallback="fb")
        .node("fb", lambda n: "cached")
        .node("next", echo)
        .edge("a", "next")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "completed"
    assert result.outputs["a"] == "cached"
    assert result.outputs["next"] == "cached"
    assert any(h.event == "fallback" for h in result.history)


async def test_fallback_does_not_hide_another_failure() -> None:
    """A fallback covers its own node only: another failing branch still fails the run."""

    def boom(n: NodeContext) -> None:
        raise ValueError("down")

    flow = (
        create_flow("f")
        .node("s", const(0))
        .node("a", boom, fallback="fb")
        .node("fb", lambda n: "ok")
        .node("b", boom)
        .edge("s", "a")
        .edge("s", "b")
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "failed"
    assert [e.node_id for e in result.errors] == ["b"]


async def test_concurrency_bound_is_respected() -> None:
    """No more than `concurrency` nodes run at once."""
    running = 0
    peak = 0

    async def work(n: NodeContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        for _ in range(3):
            await anyio.lowlevel.checkpoint()
        running -= 1

    flow = create_flow("f").node("s", const(0))
    for i in range(6):
        flow.node(f"w{i}", work).edge("s", f"w{i}")
    result = await flow.run(FlowRuntime(concurrency=2))
    assert result.status == "completed"
    assert peak == 2
    unbounded = await flow.run(FlowRuntime())
    assert unbounded.status == "completed"


async def test_parallel_branches_really_overlap() -> None:
    """Ready nodes run concurrently: two nodes can wait on each other."""
    a_started, b_started = anyio.Event(), anyio.Event()

    async def a(n: NodeContext) -> str:
        a_started.set()
        await b_started.wait()
        return "a"

    async def b(n: NodeContext) -> str:
        b_started.set()
        await a_started.wait()
        return "b"

    flow = (
        create_flow("f").node("s", const(0)).node("a", a).node("b", b).edge("s", "a").edge("s", "b")
    )
    with anyio.fail_after(5):
        result = await flow.run(FlowRuntime())
    assert result.outputs["a"] == "a"
    assert result.outputs["b"] == "b"


async def test_pause_before_gates_a_node_until_resumed() -> None:
    """pause_before makes the node await (reason "pause"); resuming runs it."""
    calls: list[int] = []

    def deploy(n: NodeContext) -> str:
        calls.append(1)
        return f"deployed {n.input}"

    flow = create_flow("f").node("build", const("v1")).node("deploy", deploy, pause_before=True)
    flow.edge("build", "deploy")
    rt = FlowRuntime()
    first = await flow.run(rt)
    assert first.status == "awaiting"
    assert first.awaiting[0].reason == "pause"
    assert calls == []
    final = await flow.resume(rt, first.serialized_context, by="ops")
    assert final.status == "completed"
    assert final.outputs["deploy"] == "deployed v1"
    assert final.history[-1].by == "ops"


async def test_node_pause_uses_resume_output_without_rerunning() -> None:
    """node.pause() awaits; the resume output becomes the node's output; fn is not re-run."""
    calls: list[int] = []

    def ask(n: NodeContext) -> None:
        calls.append(1)
        n.pause("need a human")

    flow = create_flow("f").node("ask", ask).node("use", echo).edge("ask", "use")
    rt = FlowRuntime()
    first = await flow.run(rt)
    assert first.status == "awaiting"
    assert first.awaiting[0].description == "need a human"
    final = await flow.resume(rt, first.serialized_context, {"output": 42})
    assert final.outputs == {"ask": 42, "use": 42}
    assert calls == [1]


async def test_pause_inside_node_is_not_swallowed_by_except_exception() -> None:
    """A node catching Exception still pauses."""

    def ask(n: NodeContext) -> None:
        try:
            n.pause()
        except Exception:  # pragma: no cover - must not happen
            return None

    result = await create_flow("f").node("ask", ask).run(FlowRuntime())
    assert result.status == "awaiting"


async def test_run_control_pause_lets_in_flight_finish_and_resume_continues() -> None:
    """control.pause stops scheduling; resume(bp, ctx) with no data continues the frontier."""
    control = RunControl()

    def first(n: NodeContext) -> str:
        control.pause("maintenance", by="ops")
        return "one"

    flow = create_flow("f").node("a", first).node("b", echo).node("c", echo)
    flow.edge("a", "b").edge("b", "c")
    rt = FlowRuntime()
    paused = await flow.run(rt, control=control)
    assert paused.status == "awaiting"
    assert paused.outputs == {"a": "one"}
    assert [(a.node_id, a.reason, a.requested_by) for a in paused.awaiting] == [
        ("b", "pause", "ops")
    ]
    final = await flow.resume(rt, paused.serialized_context)
    assert final.status == "completed"
    assert final.outputs == {"a": "one", "b": "one", "c": "one"}


async def test_run_control_cancel_keeps_the_context() -> None:
    """control.cancel cancels in-flight nodes and returns what was done so far."""
    control = RunControl()

    async def slow(n: NodeContext) -> None:
        control.cancel()
        await anyio.sleep_forever()

    flow = create_flow("f").node("a", const("done")).node("b", slow).edge("a", "b")
    result = await flow.run(FlowRuntime(), {"k": 1}, control=control)
    assert result.status == "cancelled"
    assert result.outputs == {"a": "done"}
    assert result.context == {"k": 1}
    assert result.history[-1].event == "cancel"


async def test_events_use_ts_names_and_cost_nothing_without_a_bus() -> None:
    """Events carry Flowcraft TS names; without a bus no event objects are built."""
    logger = InMemoryEventLogger()

    def setter(n: NodeContext) -> int:
        n.context.set("x", 1)
        return 1

    flow = (
        create_flow("f")
        .node("a", setter)
        .node("b", echo)
        .node("c", echo)
        .edge("a", "b", condition="input == 1")
        .edge("a", "c", condition="input == 2")
    )
    await flow.run(FlowRuntime(event_bus=logger))
    types = logger.types()
    assert types[0] == "workflow:start"
    assert types[-1] == "workflow:finish"
    for name in ("node:start", "node:finish", "edge:evaluate", "node:skipped", "context:change"):
        assert name in types
    assert logger.of("node:skipped")[0].node_id == "c"


async def test_async_event_bus_is_awaited() -> None:
    """An event bus whose emit is async receives every event, including workflow:finish."""
    seen: list[str] = []

    class Bus:
        async def emit(self, event: Any) -> None:
            await anyio.lowlevel.checkpoint()
            seen.append(event.type)

    await create_flow("f").node("a", const(1)).run(FlowRuntime(event_bus=Bus()))
    assert seen[0] == "workflow:start"
    assert seen[-1] == "workflow:finish"


async def test_dependencies_reach_nodes() -> None:
    """FlowRuntime(dependencies=...) is visible as node.deps."""
    db = object()
    seen: list[object] = []

    def use(n: NodeContext) -> None:
        seen.append(n.deps["db"])

    await create_flow("f").node("a", use).run(FlowRuntime(dependencies={"db": db}))
    assert seen == [db]


async def test_runtime_registry_is_used_for_string_uses() -> None:
    """A node given as a string key is resolved in the runtime registry."""
    bp = create_flow("f").node("a", "shared.double").to_blueprint()
    rt = FlowRuntime(registry={"shared.double": lambda n: 4})
    result = await rt.run(bp)
    assert result.outputs == {"a": 4}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_fan_out_and_join_work_on_every_anyio_backend(anyio_backend: str) -> None:
    """Parallel async branches overlap and join on asyncio (native tasks) and trio."""
    gate = anyio.Event()
    arrived = 0

    async def branch(n: NodeContext) -> str:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            gate.set()
        await gate.wait()  # only returns once all three branches are running at once
        return n.node_id

    flow = create_flow("f").node("s", const(0)).node("j", echo)
    for name in ("a", "b", "c"):
        flow.node(name, branch).edge("s", name).edge(name, "j")
    with anyio.fail_after(5):
        result = await flow.run(FlowRuntime())
    assert result.outputs["j"] == {"a": "a", "b": "b", "c": "c"}


async def test_cancelling_a_fan_out_cancels_every_branch() -> None:
    """RunControl.cancel during a fan-out cancels all in-flight branches and returns cancelled."""
    control = RunControl()
    started = 0
    cancelled = 0

    async def branch(n: NodeContext) -> None:
        nonlocal started, cancelled
        started += 1
        if started == 3:
            control.cancel()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise

    flow = create_flow("f").node("s", const(0))
    for name in ("a", "b", "c"):
        flow.node(name, branch).edge("s", name)
    with anyio.fail_after(5):
        result = await flow.run(FlowRuntime(), control=control)
    assert result.status == "cancelled"
    assert cancelled == 3
    assert result.outputs == {"s": 0}


async def test_checkpoints_after_every_node_resume_where_the_run_stopped() -> None:
    """on_checkpoint gets a resumable context after each node; resuming one finishes the run."""
    snapshots: list[bytes] = []

    async def keep(data: bytes) -> None:
        snapshots.append(data)

    calls: list[str] = []

    def step(n: NodeContext) -> str:
        calls.append(n.node_id)
        return n.node_id

    flow = create_flow("f").node("a", step).node("b", step).node("c", step)
    flow.edge("a", "b").edge("b", "c")
    rt = FlowRuntime()
    result = await flow.run(rt, control=RunControl(on_checkpoint=keep))
    assert result.status == "completed"
    assert len(snapshots) == 3
    # As if the process died right after "a": the snapshot continues with "b" and "c".
    after_a = await flow.resume(rt, snapshots[0])
    assert after_a.status == "completed"
    assert after_a.outputs == {"a": "a", "b": "b", "c": "c"}
    assert calls == ["a", "b", "c", "b", "c"]


async def test_run_control_pause_keeps_pause_before_gates() -> None:
    """A node paused by RunControl before its gate still asks for approval when continued."""
    control = RunControl()

    def first(n: NodeContext) -> str:
        control.pause("maintenance")
        return "one"

    flow = create_flow("f").node("a", first).node("deploy", echo, pause_before=True)
    flow.edge("a", "deploy")
    rt = FlowRuntime()
    paused = await flow.run(rt, control=control)
    continued = await flow.resume(rt, paused.serialized_context)
    assert continued.status == "awaiting"
    assert continued.awaiting[0].description == "pause_before"
    done = await flow.resume(rt, continued.serialized_context)
    assert done.outputs["deploy"] == "one"


async def test_a_raising_condition_fails_the_source_node_not_the_caller() -> None:
    """A condition or transform that raises is recorded as the source node's failure."""

    def bad_condition(ec: Any) -> bool:
        raise ZeroDivisionError("bad maths")

    flow = (
        create_flow("f")
        .node("a", const(1))
        .node("b", echo)
        .edge("a", "b", condition=bad_condition)
    )
    result = await flow.run(FlowRuntime())
    assert result.status == "failed"
    assert (result.errors[0].node_id, result.errors[0].type) == ("a", "ZeroDivisionError")
    assert result.outputs == {"a": 1}


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
