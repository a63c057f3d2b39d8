"""Nodes that cannot suspend run inline (no task); nodes that can still run concurrently."""

from __future__ import annotations

import types
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft._plan import never_suspends


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
