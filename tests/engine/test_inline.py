"""Nodes that cannot suspend run inline (no task); nodes that can still run concurrently."""

from __future__ import annotations

import contextvars
import types
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft._engine.plan import never_suspends
from flowcraft.testing import FakeClock


async def no_await(n: NodeContext) -> int:
    return 1


async def awaits(n: NodeContext) -> int:
    await anyio.lowlevel.checkpoint()
    return 1


async def async_with(n: NodeContext) -> int:
    async with anyio.Lock():
        return 1


async def async_for(n: NodeContext) -> list[int]:
    return [x async for x in _agen()]


async def _agen() -> Any:
    yield 1


def sync(n: NodeContext) -> int:
    return 1


class Holder:
    async def method(self, n: NodeContext) -> int:
        return 1

    async def __call__(self, n: NodeContext) -> int:
        return 1


@types.coroutine
def generator_based(n: NodeContext) -> Any:
    yield
    return 1


@pytest.mark.parametrize(
    ("fn", "expected"),
    [
        (no_await, True),
        (Holder().method, True),
        (awaits, False),
        (async_with, False),
        (async_for, False),
        (sync, False),  # may return a coroutine: not known until called
        (lambda n: 1, False),
        (Holder(), False),  # a callable object: not inspected
        (generator_based, False),
        (len, False),
    ],
)
def test_never_suspends_reads_the_bytecode(fn: object, expected: bool) -> None:
    assert never_suspends(fn) is expected


@pytest.mark.fast_only
async def test_fan_out_of_non_suspending_nodes_spawns_no_task() -> None:
    caller = anyio.get_current_task().id
    seen: list[object] = []

    async def branch(n: NodeContext) -> str:
        seen.append(anyio.get_current_task().id)
        return n.node_id

    flow = create_flow("inline").node("src", no_await).node("join", lambda n: n.input, join="all")
    for i in range(5):
        flow.node(f"b{i}", branch).edge("src", f"b{i}").edge(f"b{i}", "join")
    result = await flow.run(FlowRuntime(registry=flow.registry))
    assert result.status == "completed"
    assert result.outputs["join"] == {f"b{i}": f"b{i}" for i in range(5)}
    assert seen == [caller] * 5


async def test_suspending_branches_still_run_concurrently() -> None:
    """Each branch waits for the other: run one after the other, they would never finish."""
    arrived = {"a": anyio.Event(), "b": anyio.Event()}

    async def meet(n: NodeContext) -> str:
        me, other = n.params["me"], n.params["other"]
        arrived[me].set()
        await arrived[other].wait()
        return me

    flow = (
        create_flow("meet")
        .node("src", no_await)
        .node("a", meet, params={"me": "a", "other": "b"})
        .node("b", meet, params={"me": "b", "other": "a"})
        .node("i", no_await)
        .node("join", lambda n: n.input, join="all")
        .edge("src", "a")
        .edge("src", "b")
        .edge("src", "i")
        .edge("a", "join")
        .edge("b", "join")
        .edge("i", "join")
    )
    with anyio.fail_after(5):
        result = await flow.run(FlowRuntime(registry=flow.registry))
    assert result.status == "completed"
    assert result.outputs["join"] == {"a": "a", "b": "b", "i": 1}


async def test_an_inline_branch_failing_fails_the_run_and_stops_the_others() -> None:
    started: list[str] = []

    async def boom(n: NodeContext) -> int:
        raise ValueError("bad branch")

    async def slow(n: NodeContext) -> int:
        started.append(n.node_id)
        await anyio.sleep(0.01)
        return 1

    flow = (
        create_flow("fail")
        .node("src", no_await)
        .node("boom", boom)
        .node("slow", slow)
        .edge("src", "boom")
        .edge("src", "slow")
    )
    result = await flow.run(FlowRuntime(registry=flow.registry))
    assert result.status == "failed"
    assert [(e.node_id, e.type) for e in result.errors] == [("boom", "ValueError")]
    assert "slow" not in result.outputs


async def test_a_branch_not_started_when_a_sibling_fails_never_starts() -> None:
    """``boom`` could suspend (so it gets a task) but fails at once: ``slow`` must not start."""
    started: list[str] = []

    async def boom(n: NodeContext) -> int:
        if n.input is None:  # never true here; the await makes this node need a task
            await anyio.lowlevel.checkpoint()
        raise ValueError("bad branch")

    async def slow(n: NodeContext) -> int:
        started.append(n.node_id)
        await anyio.lowlevel.checkpoint()
        return 1

    flow = (
        create_flow("fail-fast")
        .node("src", no_await)
        .node("boom", boom)
        .node("slow", slow)
        .edge("src", "boom")
        .edge("src", "slow")
    )
    result = await flow.run(FlowRuntime(registry=flow.registry))
    assert result.status == "failed"
    assert [e.node_id for e in result.errors] == ["boom"]
    assert started == []


def echo(n: NodeContext) -> Any:
    return n.input


# What branches got from running as tasks, kept now that non-suspending branches run inline.


def runtime(flow: Any, **kw: Any) -> FlowRuntime:
    kw.setdefault("clock", FakeClock())
    return FlowRuntime(registry=flow.registry, **kw)


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
    rt = runtime(flow, dependencies={"a_done": anyio.Event()})
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
        return await flow.run(runtime(flow), run_id="r")
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
        result = await flow.run(runtime(flow), run_id="r")
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
        rt = runtime(flow, dependencies={"a_done": anyio.Event()})
        seen.append(list((await flow.run(rt, run_id="r")).outputs))
    assert seen == [["s", "slow"], ["s", "slow"]]
