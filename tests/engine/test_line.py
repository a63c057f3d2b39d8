"""The fast paths give byte-for-byte the contexts and errors the general engine gives.

Every test here compares the two ways itself (``tests.switch``), across the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcraft import (
    BaseNode,
    Blueprint,
    FlowcraftError,
    FlowRuntime,
    NodeContext,
    Resume,
    create_flow,
)
from flowcraft.stores import FlowService, MemoryStore
from flowcraft.testing import FakeClock, InMemoryEventLogger
from tests import switch
from tests.strategies import FEATURES, Spec, build, flow_specs

#: Mostly straight flows with every kind of node the generator makes: sync and async tasks,
#: plain values and NodeResults, retries, failures with fallbacks, loops, gates, pauses inside
#: nodes, state writes, any-joins, waits and sleeps (not RunControl pausers: no control here).
LINE = FEATURES - {"pausers"}
line_flows = flow_specs(
    min_nodes=1,
    max_nodes=7,
    kinds=("task",) * 6 + ("wait", "wait", "sleep"),
    line=True,
    features=LINE,
)
Decision = tuple[Any, str | None]
line_decisions = st.lists(
    st.tuples(st.sampled_from([None, 1, "x"]), st.sampled_from([None, "a", "b"])),
    min_size=8,
    max_size=8,
)


async def play(
    bp: Blueprint,
    registry: dict[str, object],
    decisions: list[Decision],
    max_steps: int,
    fast: bool,
) -> list[Any]:
    """Run, then resume the first awaiting node with each decision in turn; record everything."""
    clock = FakeClock()
    rt = switch.runtime(fast, registry=registry, clock=clock, max_steps=max_steps)
    seen: list[Any] = []
    result = await rt.run(bp, {"seed": 1}, run_id="r1")
    seen.append(result.serialized_context)
    for output, action in decisions:
        if result.status != "awaiting":
            break
        clock.advance(31 if action == "b" else 1)  # sometimes past a sleep or a wait's timeout
        target = result.awaiting[0]
        data: Any = None
        if target.reason == "wait":
            data = {"output": output, "action": action}
        try:
            if action == "b" and output != "x":  # what a scheduler does: fire a deadline
                result = await rt.fire(bp, result, target.node_id)
            else:
                result = await rt.resume(bp, result, data, target.node_id)
        except FlowcraftError as exc:
            seen.append((type(exc).__name__, str(exc)))
            continue
        seen.append(result.serialized_context)
    seen.append((result.status, result.outputs, result.context, result.errors))
    return seen


@pytest.mark.compares_fast_paths
@settings(max_examples=400)
@given(line_flows, line_decisions, st.sampled_from([2, 3, 100]))
def test_straight_line_and_engine_write_the_same_contexts(
    spec: Spec, decisions: list[Decision], max_steps: int
) -> None:
    flow = build(spec)
    bp, registry = flow.to_blueprint(), flow.registry

    async def both() -> tuple[list[Any], list[Any]]:
        fast = await play(bp, registry, decisions, max_steps, True)
        return fast, await play(bp, registry, decisions, max_steps, False)

    fast, engine = anyio.run(both)
    assert fast == engine


@pytest.mark.fast_only
async def test_the_straight_line_is_taken_by_a_run_and_a_resume() -> None:
    """The comparison above means something only if the fast path runs: count its handovers."""
    from flowcraft._engine import line as _line

    handovers: list[str] = []
    real = _line._engine

    def spy(*args: Any) -> Any:
        handovers.append("engine")
        return real(*args)

    flow = (
        create_flow("approval")
        .node("submit", lambda n: "submitted")
        .wait("approve")
        .node("process", lambda n: f"paid {n.input}")
        .edge("submit", "approve")
        .edge("approve", "process", action="ok")
    )
    rt = FlowRuntime(registry=flow.registry)
    _line._engine = spy
    try:
        first = await flow.run(rt)
        final = await flow.resume(rt, first, {"output": 5, "action": "ok"}, "approve")
    finally:
        _line._engine = real
    assert final.outputs == {"submit": "submitted", "approve": 5, "process": "paid 5"}
    assert [e.event for e in final.history] == ["pause", "resume"]
    assert handovers == []


@pytest.mark.compares_fast_paths
async def test_quick_resumes_refuse_what_the_engine_refuses() -> None:
    """Deadlines, unknown actions, bad data and wrong nodes: same errors, same results."""

    async def play_quick(fast: bool) -> list[Any]:
        flow = (
            create_flow("quick")
            .node("a", lambda n: "a")
            .wait("w", timeout=60)
            .node("b", lambda n: f"b<{n.input}>")
            .node("t", lambda n: "late")
            .edge("a", "w")
            .edge("w", "b", action="ok")
            .edge("w", "t", action="timeout")
        )
        seen: list[Any] = []
        for advance, data, node in [
            (0, {"output": 1, "action": "ok"}, "w"),
            (0, {"output": 1, "action": "nope"}, None),
            (0, {"output": 1}, None),
            (0, {"output": 1, "action": "ok", "extra": 1}, None),
            (0, {"output": 1, "action": 3}, None),
            (0, {"output": 1, "action": "ok"}, "a"),
            (0, "approved", None),
            (61, {"output": 1, "action": "ok"}, None),
            (61, {"output": 1, "action": "timeout"}, "w"),
        ]:
            clock = FakeClock()
            rt = switch.runtime(fast, registry=flow.registry, clock=clock)
            first = await flow.run(rt, run_id="q")
            clock.advance(advance)
            try:
                result = await flow.resume(rt, first, data, node, by="ann")
            except FlowcraftError as exc:
                seen.append((type(exc).__name__, str(exc)))
            else:
                seen.append((result.status, result.outputs, result.serialized_context))
        return seen

    fast, engine = await play_quick(True), await play_quick(False)
    assert fast == engine
    assert [s[0] for s in fast] == [
        "completed",
        "UnknownActionError",
        "UnknownActionError",
        "ResumeDataError",
        "ResumeDataError",
        "NodeNotAwaitingError",
        "ResumeDataError",
        "WaitExpiredError",
        "completed",
    ]
    assert fast[0][1]["b"] == "b<1>"
    assert fast[-1][1] == {"a": "a", "w": None, "t": "late"}


@pytest.mark.compares_fast_paths
async def test_a_dead_exit_into_a_join_is_left_to_the_engine() -> None:
    """``no`` dies when the decision is ``ok``: the join must hear that, or it never runs."""
    flow = (
        create_flow("dead-join")
        .node("a", lambda n: "a")
        .wait("w")
        .node("yes", lambda n: "yes")
        .node("no", lambda n: "no")
        .node("after_no", lambda n: "after")
        .node("j", lambda n: sorted(n.input), join="all")
        .edge("a", "w")
        .edge("w", "yes", action="ok")
        .edge("w", "no", action="no")
        .edge("no", "after_no")
        .edge("yes", "j")
        .edge("after_no", "j")
    )
    results = []
    for fast in (True, False):
        rt = switch.runtime(fast, registry=flow.registry, clock=FakeClock())
        first = await flow.run(rt, run_id="d")
        results.append(await flow.resume(rt, first, {"action": "ok"}))
    assert results[0].serialized_context == results[1].serialized_context
    assert results[0].outputs["j"] == ["yes"]


def snap(r: Any) -> tuple[Any, ...]:
    public = (r.status, r.outputs, r.context, r.errors, r.awaiting, r.history, r.revision)
    return (*public, r.serialized_context)


async def refused(out: list[Any], call: Awaitable[Any]) -> None:
    try:
        result = await call
        out.append(snap(result) if result is not None else None)
    except FlowcraftError as exc:
        out.append((type(exc).__name__, str(exc)))


async def both(scenario: Callable[[bool, list[Any]], Awaitable[None]]) -> list[Any]:
    """Run ``scenario`` with the fast paths on and off; the two traces must agree."""
    traces: list[list[Any]] = [[], []]
    for fast, out in zip((True, False), traces, strict=True):
        await refused(out, scenario(fast, out))
    assert traces[0] == traces[1]
    return traces[0][:-1]


def echo(n: NodeContext) -> Any:
    return n.input


def runtime(flow: Any, fast: bool, **kw: Any) -> FlowRuntime:
    kw.setdefault("clock", FakeClock())
    return switch.runtime(fast, registry=flow.registry, **kw)


def approval() -> Any:
    flow = create_flow("approval").node("submit", lambda n: "submitted").node("done", echo)
    flow.wait("w", timeout=60, on_timeout="late", description="boss").node("chase", echo)
    flow.node("pay", lambda n: ["paid", n.input]).edge("submit", "w").edge("pay", "done")
    return flow.edge("w", "pay", action="ok").edge("w", "chase", action="late")


EXPECTED = ("TimerNotDueError", "completed", "awaiting", "cancelled", "WaitExpiredError")


EXPECTED += ("completed", "completed")


@pytest.mark.compares_fast_paths
async def test_approval_round_trips_and_refusals_agree() -> None:
    async def scenario(fast: bool, out: list[Any]) -> None:
        flow, bp = approval(), approval().to_blueprint()
        before = SimpleNamespace(before_node=lambda node: anyio.sleep(0))
        for kw in (
            *({}, {"serializer": "json"}, {"signing_keys": {"k": b"secret"}}),
            *({"event_bus": InMemoryEventLogger()}, {"middleware": [before]}),
        ):
            clock = FakeClock()
            rt = runtime(flow, fast, clock=clock, **kw)
            first = await rt.run(bp, {"n": 1}, run_id="r")
            out.append(snap(first))
            await refused(out, rt.resume(bp, first, {"action": "nope"}))
            await refused(out, rt.resume(bp, first, {"action": "ok"}, "submit"))
            await refused(out, rt.fire(bp, first, "w"))
            await refused(out, rt.resume(bp, first, Resume(output=2, action="ok", by="ann")))
            out.append(snap(rt.inspect(bp, first)))
            out.append(snap(await rt.cancel(bp, first, reason="no", by="bob")))
            clock.advance(61)
            await refused(out, rt.resume(bp, first, {"action": "ok"}))
            await refused(out, rt.resume(bp, first, {"action": "late", "output": 9}))
            await refused(out, rt.fire(bp, first, "w", by="cron"))

    trace = [t[0] for t in await both(scenario)]
    assert trace == [*("awaiting", "UnknownActionError", "NodeNotAwaitingError"), *EXPECTED] * 5


class Typed(msgspec.Struct):
    approved: bool = False
    when: datetime | None = None


@pytest.mark.compares_fast_paths
async def test_typed_state_wait_schema_and_unencodable_values_agree() -> None:
    look = lambda n: [type(n.context.get("when")).__name__, repr(n.input)]  # noqa: E731
    flow = create_flow("typed", state=Typed).node("a", lambda n: 1).wait("w", schema=Typed)
    flow.node("b", look).node("bad", lambda n: object()).wait("w2").node("c", lambda n: 0)
    flow.edge("a", "w").edge("w", "b").edge("b", "w2").edge("w2", "c").edge("c", "bad")

    async def scenario(fast: bool, out: list[Any]) -> None:
        rt, bp = runtime(flow, fast), flow.to_blueprint()
        first = await rt.run(bp, {"when": "2026-01-01T00:00:00Z"}, run_id="r")
        await refused(out, rt.resume(bp, first, {"output": {"approved": "x"}}))
        out.append(snap(second := await rt.resume(bp, first, {"output": {"approved": True}})))
        await refused(out, rt.resume(bp, second, {"output": object()}))
        await refused(out, rt.resume(bp, second, {"output": 1}))

    trace = [t[0] for t in await both(scenario)]
    assert trace == ["ResumeDataError", "awaiting", "SerializationError", "SerializationError"]


@pytest.mark.compares_fast_paths
async def test_scheduler_fires_sleeps_and_expired_waits_alike() -> None:
    flow = create_flow("timers").node("a", lambda n: 1).sleep("nap", duration=5)
    flow.node("b", lambda n: n.input + 1).wait("w", timeout=3).node("late", lambda n: n.input)
    flow.edge("a", "nap").edge("nap", "b").edge("b", "w").edge("w", "late")

    async def scenario(fast: bool, out: list[Any]) -> None:
        clock = FakeClock()
        rt, bp, seen = runtime(flow, fast, clock=clock), flow.to_blueprint(), []
        async with rt.scheduler(interval=1, on_result=seen.append) as sched:
            out.append(snap(await rt.run(bp, run_id="r")))
            for _ in range(10):
                clock.advance(1)
                for _ in range(5):
                    await anyio.lowlevel.checkpoint()
                out.append(sched.pending())
        out.append([snap(r) for r in seen])

    assert [r[0] for r in (await both(scenario))[-1]] == ["awaiting", "completed"]


@pytest.mark.compares_fast_paths
async def test_subflows_resume_expire_and_run_under_flow_service_alike() -> None:
    child = create_flow("child").node("c1", lambda n: n.context.get("input"))
    child.wait("cw", timeout=10).node("c2", lambda n: ["c2", n.input])
    child.edge("c1", "cw").edge("cw", "c2")
    flow = create_flow("parent").node("a", lambda n: "in").node("z", echo)
    flow.subflow("s", "child", outputs={"got": "c2"}).edge("a", "s").edge("s", "z")

    async def scenario(fast: bool, out: list[Any]) -> None:
        clock = FakeClock()
        rt, bp = runtime(flow, fast, clock=clock, blueprints={"child": child}), flow.to_blueprint()
        first = await rt.run(bp, run_id="r")
        out += [snap(first), snap(await rt.resume(bp, first, {"output": 1}, "s/cw"))]
        svc = FlowService(rt, MemoryStore(), [flow])
        out.append(snap(await svc.start("parent", {"x": 1}, run_id="q")))
        out.append(snap(await svc.resume("q", {"output": 5}, "s/cw", by="ann")))
        out.append([(h.event, h.node_id, h.by) for h in await svc.history("q")])
        clock.advance(11)
        out.append(snap(await rt.fire(bp, first, "s/cw")))

    trace = await both(scenario)
    assert [trace[i][0] for i in (0, 1, 2, 3, 5)] == ["awaiting", "completed"] * 2 + ["completed"]


class Doubler(BaseNode):
    async def exec(self, prepared: Any, node: NodeContext) -> Any:
        return prepared * 2


def inc(n: NodeContext) -> int:
    n.context.set("i", n.context.get("i", 0) + 1)
    return n.context.get("i")


async def fails(n: NodeContext) -> str:
    raise ValueError("down")


@pytest.mark.compares_fast_paths
async def test_batch_loop_class_gate_inputs_fallback_and_step_limits_agree() -> None:
    flow = create_flow("mix").node("s", lambda n: 2).node("cls", Doubler)
    flow.node("gate", lambda n: n.input, pause_before=True)
    flow.node("pick", lambda n: n.input, inputs={"x": "cls", "k": "k"})
    flow.batch("bt", lambda n: n.input * 10, input_key="items", output_key="res")
    flow.node("body", inc).wait("w").node("end", lambda n: n.input)
    flow.loop("lp", start="body", end="end", condition="context.i < 2")
    flow.node("bad", fails, fallback="fb").node("fb", lambda n: "rescued")
    for src, dst in [("s", "cls"), ("cls", "gate"), ("gate", "pick"), ("pick", "bt")]:
        flow.edge(src, dst)
    flow.edge("bt", "body").edge("body", "w").edge("w", "end").edge("lp", "bad", action="break")

    async def scenario(fast: bool, out: list[Any]) -> None:
        for steps in (1, 3, 6, 9, 100):
            rt, bp = runtime(flow, fast, max_steps=steps), flow.to_blueprint()
            result = await rt.run(bp, {"k": "v", "items": [1, 2]}, run_id="r")
            out.append(snap(result))
            while result.status == "awaiting":
                data = None if result.awaiting[0].reason == "pause" else {"output": 7}
                result = await rt.resume(bp, result, data)
                out.append(snap(result))

    assert (await both(scenario))[-1][0] == "completed"


@pytest.mark.compares_fast_paths
async def test_blueprint_change_and_migrate_agree() -> None:
    moved = create_flow("approval", version="2").node("submit", lambda n: "submitted").wait("w2")
    moved.node("pay", lambda n: ["paid2", n.input]).edge("submit", "w2").edge("w2", "pay")

    async def scenario(fast: bool, out: list[Any]) -> None:
        first = await runtime(approval(), fast).run(approval().to_blueprint(), run_id="r")
        rt, bp = runtime(moved, fast), moved.to_blueprint()
        await refused(out, rt.resume(bp, first, {"output": 1}))
        rename = lambda view: view.awaiting.update(w="w2")  # noqa: E731
        out.append(snap(await rt.resume(bp, first, {"output": 1}, migrate=rename)))

    assert [t[0] for t in await both(scenario)] == ["BlueprintMismatchError", "completed"]
