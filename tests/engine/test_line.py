"""The straight-line fast path gives byte-for-byte the contexts the engine gives."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
from hypothesis import given, settings
from hypothesis import strategies as st

from flowcraft import FlowcraftError, FlowRuntime, NodeContext, NodeResult, create_flow
from flowcraft._blueprint import Blueprint
from flowcraft.testing import FakeClock

KINDS = ("plain", "async", "result", "raise", "pause", "wait", "timed", "sleep", "state")


@dataclass
class Spec:
    kinds: list[str]
    edges: list[tuple[int, int, str | None]]
    fallbacks: dict[int, int]
    decisions: list[tuple[Any, str | None]]
    max_steps: int


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    """Mostly straight flows, sometimes with labels, fan-outs, joins, failures and pauses."""
    n = draw(st.integers(1, 7))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(n)]
    edges: list[tuple[int, int, str | None]] = []
    for i in range(n - 1):
        if draw(st.integers(0, 5)):  # usually a line to the next node
            edges.append((i, i + 1, draw(st.sampled_from([None, None, None, "a", "b"]))))
        if draw(st.integers(0, 2)) == 0 and i + 2 < n:  # sometimes a skip ahead: fan-out, join
            edges.append((i, draw(st.integers(i + 2, n - 1)), draw(st.sampled_from([None, "a"]))))
    fallbacks = {
        i: j
        for i in range(n)
        for j in range(i + 1, n)
        if kinds[i] == "raise" and kinds[j] == "plain" and draw(st.integers(0, 3)) == 0
    }
    decisions = draw(
        st.lists(
            st.tuples(st.sampled_from([None, 1, "x"]), st.sampled_from([None, "a", "b"])),
            min_size=8,
            max_size=8,
        )
    )
    return Spec(kinds, edges, fallbacks, decisions, draw(st.sampled_from([2, 3, 100])))


def build(spec: Spec) -> tuple[Blueprint, dict[str, object]]:
    def plain(n: NodeContext) -> str:
        return f"{n.node_id}<{n.input}>"

    async def async_plain(n: NodeContext) -> str:
        return f"{n.node_id}[{n.input}]"

    def result(n: NodeContext) -> NodeResult[str]:
        return NodeResult(output=n.node_id, action=n.params["action"])

    def boom(n: NodeContext) -> str:
        raise ValueError(f"{n.node_id} failed on {n.input!r}")

    def pause(n: NodeContext) -> str:
        n.pause(f"{n.node_id} wants a look")

    def state(n: NodeContext) -> int:
        n.context.set(n.node_id, n.input)
        return len(str(n.input))

    fns = {"plain": plain, "async": async_plain, "result": result, "raise": boom}
    fns |= {"pause": pause, "state": state}
    flow = create_flow("line")
    for i, kind in enumerate(spec.kinds):
        name = f"n{i}"
        if kind == "wait":
            flow.wait(name)
        elif kind == "timed":
            flow.wait(name, timeout=60)
        elif kind == "sleep":
            flow.sleep(name, duration=30)
        else:
            fallback = f"n{spec.fallbacks[i]}" if i in spec.fallbacks else None
            action = "a" if i % 2 else None
            flow.node(name, fns[kind], params={"action": action}, fallback=fallback, name=kind)
    for src, dst, action in spec.edges:
        flow.edge(f"n{src}", f"n{dst}", action=action)
    return flow.to_blueprint(), flow.registry


async def play(spec: Spec, bp: Blueprint, registry: dict[str, object], lines: bool) -> list[Any]:
    """Run, then resume the first awaiting node with each decision in turn; record everything."""
    clock = FakeClock()
    rt = FlowRuntime(registry=registry, clock=clock, max_steps=spec.max_steps)
    rt._lines = lines
    seen: list[Any] = []
    result = await rt.run(bp, {"seed": 1}, run_id="r1")
    seen.append(result.serialized_context)
    for output, action in spec.decisions:
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


@settings(max_examples=400)
@given(specs())
def test_straight_line_and_engine_write_the_same_contexts(spec: Spec) -> None:
    bp, registry = build(spec)

    async def both() -> tuple[list[Any], list[Any]]:
        return await play(spec, bp, registry, True), await play(spec, bp, registry, False)

    fast, engine = anyio.run(both)
    assert fast == engine


async def test_the_straight_line_is_taken_by_a_run_and_a_resume() -> None:
    """The comparison above means something only if the fast path runs: count its handovers."""
    from flowcraft import _line

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


async def test_quick_resumes_refuse_what_the_engine_refuses() -> None:
    """Deadlines, unknown actions, bad data and wrong nodes: same errors, same results."""

    async def play_quick(lines: bool) -> list[Any]:
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
            rt = FlowRuntime(registry=flow.registry, clock=clock)
            rt._lines = lines
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
    for lines in (True, False):
        rt = FlowRuntime(registry=flow.registry, clock=FakeClock())
        rt._lines = lines
        first = await flow.run(rt, run_id="d")
        results.append(await flow.resume(rt, first, {"action": "ok"}))
    assert results[0].serialized_context == results[1].serialized_context
    assert results[0].outputs["j"] == ["yes"]
