"""Review: the straight line (``rt._lines``) agrees with the engine across the API; branches
that run inline (no task) keep what tasks gave them: order, isolation, concurrency."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from flowcraft import BaseNode, FlowcraftError, FlowRuntime, NodeContext, Resume, create_flow
from flowcraft.stores import FlowService, MemoryStore
from flowcraft.testing import FakeClock, InMemoryEventLogger


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
    """Run ``scenario`` with the straight line on and off; the two traces must agree."""
    traces: list[list[Any]] = [[], []]
    for lines, out in zip((True, False), traces, strict=True):
        await refused(out, scenario(lines, out))
    assert traces[0] == traces[1]
    return traces[0][:-1]


def echo(n: NodeContext) -> Any:
    return n.input


def runtime(flow: Any, lines: bool, **kw: Any) -> FlowRuntime:
    kw.setdefault("clock", FakeClock())
    rt = FlowRuntime(registry=flow.registry, **kw)
    rt._lines = lines
    return rt


def approval() -> Any:
    flow = create_flow("approval").node("submit", lambda n: "submitted").node("done", echo)
    flow.wait("w", timeout=60, on_timeout="late", description="boss").node("chase", echo)
    flow.node("pay", lambda n: ["paid", n.input]).edge("submit", "w").edge("pay", "done")
    return flow.edge("w", "pay", action="ok").edge("w", "chase", action="late")


EXPECTED = ("TimerNotDueError", "completed", "awaiting", "cancelled", "WaitExpiredError")
EXPECTED += ("completed", "completed")


async def test_approval_round_trips_and_refusals_agree() -> None:
    async def scenario(lines: bool, out: list[Any]) -> None:
        flow, bp = approval(), approval().to_blueprint()
        before = SimpleNamespace(before_node=lambda node: anyio.sleep(0))
        for kw in (
            *({}, {"serializer": "json"}, {"signing_keys": {"k": b"secret"}}),
            *({"event_bus": InMemoryEventLogger()}, {"middleware": [before]}),
        ):
            clock = FakeClock()
            rt = runtime(flow, lines, clock=clock, **kw)
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


async def test_typed_state_wait_schema_and_unencodable_values_agree() -> None:
    look = lambda n: [type(n.context.get("when")).__name__, repr(n.input)]  # noqa: E731
    flow = create_flow("typed", state=Typed).node("a", lambda n: 1).wait("w", schema=Typed)
    flow.node("b", look).node("bad", lambda n: object()).wait("w2").node("c", lambda n: 0)
    flow.edge("a", "w").edge("w", "b").edge("b", "w2").edge("w2", "c").edge("c", "bad")

    async def scenario(lines: bool, out: list[Any]) -> None:
        rt, bp = runtime(flow, lines), flow.to_blueprint()
        first = await rt.run(bp, {"when": "2026-01-01T00:00:00Z"}, run_id="r")
        await refused(out, rt.resume(bp, first, {"output": {"approved": "x"}}))
        out.append(snap(second := await rt.resume(bp, first, {"output": {"approved": True}})))
        await refused(out, rt.resume(bp, second, {"output": object()}))
        await refused(out, rt.resume(bp, second, {"output": 1}))

    trace = [t[0] for t in await both(scenario)]
    assert trace == ["ResumeDataError", "awaiting", "SerializationError", "SerializationError"]


async def test_scheduler_fires_sleeps_and_expired_waits_alike() -> None:
    flow = create_flow("timers").node("a", lambda n: 1).sleep("nap", duration=5)
    flow.node("b", lambda n: n.input + 1).wait("w", timeout=3).node("late", lambda n: n.input)
    flow.edge("a", "nap").edge("nap", "b").edge("b", "w").edge("w", "late")

    async def scenario(lines: bool, out: list[Any]) -> None:
        clock = FakeClock()
        rt, bp, seen = runtime(flow, lines, clock=clock), flow.to_blueprint(), []
        async with rt.scheduler(interval=1, on_result=seen.append) as sched:
            out.append(snap(await rt.run(bp, run_id="r")))
            for _ in range(10):
                clock.advance(1)
                for _ in range(5):
                    await anyio.lowlevel.checkpoint()
                out.append(sched.pending())
        out.append([snap(r) for r in seen])

    assert [r[0] for r in (await both(scenario))[-1]] == ["awaiting", "completed"]


async def test_subflows_resume_expire_and_run_under_flow_service_alike() -> None:
    child = create_flow("child").node("c1", lambda n: n.context.get("input"))
    child.wait("cw", timeout=10).node("c2", lambda n: ["c2", n.input])
    child.edge("c1", "cw").edge("cw", "c2")
    flow = create_flow("parent").node("a", lambda n: "in").node("z", echo)
    flow.subflow("s", "child", outputs={"got": "c2"}).edge("a", "s").edge("s", "z")

    async def scenario(lines: bool, out: list[Any]) -> None:
        clock = FakeClock()
        rt, bp = runtime(flow, lines, clock=clock, blueprints={"child": child}), flow.to_blueprint()
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

    async def scenario(lines: bool, out: list[Any]) -> None:
        for steps in (1, 3, 6, 9, 100):
            rt, bp = runtime(flow, lines, max_steps=steps), flow.to_blueprint()
            result = await rt.run(bp, {"k": "v", "items": [1, 2]}, run_id="r")
            out.append(snap(result))
            while result.status == "awaiting":
                data = None if result.awaiting[0].reason == "pause" else {"output": 7}
                result = await rt.resume(bp, result, data)
                out.append(snap(result))

    assert (await both(scenario))[-1][0] == "completed"


async def test_blueprint_change_and_migrate_agree() -> None:
    moved = create_flow("approval", version="2").node("submit", lambda n: "submitted").wait("w2")
    moved.node("pay", lambda n: ["paid2", n.input]).edge("submit", "w2").edge("w2", "pay")

    async def scenario(lines: bool, out: list[Any]) -> None:
        first = await runtime(approval(), lines).run(approval().to_blueprint(), run_id="r")
        rt, bp = runtime(moved, lines), moved.to_blueprint()
        await refused(out, rt.resume(bp, first, {"output": 1}))
        rename = lambda view: view.awaiting.update(w="w2")  # noqa: E731
        out.append(snap(await rt.resume(bp, first, {"output": 1}, migrate=rename)))

    assert [t[0] for t in await both(scenario)] == ["BlueprintMismatchError", "completed"]


# Fan-outs take the engine whatever ``_lines`` says: these pin what branches got from running as
# tasks before non-suspending branches ran inline.


async def sibling(n: NodeContext) -> str:
    await anyio.lowlevel.checkpoint()
    n.deps["a_done"].set()
    return "sibling"


async def fails(n: NodeContext) -> str:
    raise ValueError("down")


async def fails_late(n: NodeContext) -> str:
    await anyio.lowlevel.checkpoint()
    raise ValueError("down")


async def rescue(n: NodeContext) -> str:
    await n.deps["a_done"].wait()
    return "rescued"


async def test_inline_branch_whose_fallback_suspends_does_not_block_its_siblings() -> None:
    """``b`` fails inline; its fallback waits for ``a``, which only starts after ``b`` is done."""
    flow = create_flow("fb").node("s", lambda n: 0).node("a", sibling).node("f", rescue)
    flow.node("b", fails, fallback="f").edge("s", "a").edge("s", "b")
    rt = runtime(flow, True, dependencies={"a_done": anyio.Event()})
    with anyio.fail_after(2):  # with ``b`` inline, its fallback would wait forever
        result = await flow.run(rt, run_id="r")
    assert result.outputs == {"s": 0, "a": "sibling", "f": "rescued", "b": "rescued"}


async def cache_hit() -> str:
    return "hit"  # awaited, but completes at once (a cache hit): the caller never suspends


async def x_node(n: NodeContext) -> str:
    return f"x:{await cache_hit()}:{VAR.get()}"


async def y_node(n: NodeContext) -> str:
    VAR.set("leaked")
    return "y"


VAR: contextvars.ContextVar[str] = contextvars.ContextVar("VAR", default="unset")


async def fan_out() -> Any:
    flow = create_flow("any").node("s", lambda n: 0).node("x", x_node).node("y", y_node)
    flow.node("j", echo, join="any").edge("s", "x").edge("s", "y").edge("x", "j").edge("y", "j")
    token = VAR.set("unset")
    try:
        return await flow.run(runtime(flow, True), run_id="r")
    finally:
        VAR.reset(token)


async def test_inline_branch_does_not_overtake_an_earlier_branch() -> None:
    """Neither branch suspends: the first edge's branch used to run first and win the any-join."""
    result = await fan_out()
    assert list(result.outputs) == ["s", "x", "y", "j"]
    assert result.outputs["j"] == result.outputs["x"]


async def test_context_var_set_in_one_branch_stays_out_of_its_siblings() -> None:
    """Each branch had its own task, so its own copy of the context variables."""
    assert (await fan_out()).outputs["x"] == "x:hit:unset"


async def test_an_inline_branch_runs_in_its_own_copy_of_the_context_variables() -> None:
    """``y`` runs inline (no task) before ``x``; what it sets stays in its own copy."""
    flow = create_flow("iso").node("s", lambda n: 0).node("y", y_node).node("x", x_node)
    flow.node("j", echo).edge("s", "y").edge("s", "x").edge("x", "j").edge("y", "j")
    token = VAR.set("unset")
    try:
        result = await flow.run(runtime(flow, True), run_id="r")
        assert VAR.get() == "unset"  # nor does it reach the caller
    finally:
        VAR.reset(token)
    assert result.outputs["j"] == {"x": "x:hit:unset", "y": "y"}


async def test_a_branch_that_started_before_its_sibling_failed_finishes() -> None:
    """Whether ``boom`` fails at once (inline) or after an await, ``slow`` had started first."""
    seen = []
    for boom in (fails, fails_late):
        flow = create_flow("fail").node("s", lambda n: 0).node("slow", sibling)
        flow.node("boom", boom, name="boom").edge("s", "slow").edge("s", "boom")
        rt = runtime(flow, True, dependencies={"a_done": anyio.Event()})
        seen.append(list((await flow.run(rt, run_id="r")).outputs))
    assert seen == [["s", "slow"], ["s", "slow"]]
