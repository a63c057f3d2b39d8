"""Static typing checks (mypy --strict runs this file; pytest does not collect it)."""

from __future__ import annotations

from typing import assert_type

from flowcraft import (
    Awaiting,
    Blueprint,
    Flow,
    FlowRuntime,
    NodeContext,
    NodeError,
    NodeResult,
    RunControl,
    RunResult,
    create_flow,
)


async def submit(node: NodeContext) -> str:
    node.context.set("k", 1)
    return "ok"


def decide(node: NodeContext) -> NodeResult[int]:
    return NodeResult(output=1, action="go")


async def check() -> None:
    flow = create_flow("f").node("a", submit).node("b", decide).wait("w").edge("a", "b")
    assert_type(flow, Flow)
    bp = flow.to_blueprint()
    assert_type(bp, Blueprint)
    assert_type(bp.digest, str)
    rt = FlowRuntime(registry=flow.registry)
    result = await rt.run(bp, {"x": 1})
    assert_type(result, RunResult)
    assert_type(result.serialized_context, bytes)
    assert_type(result.awaiting, tuple[Awaiting, ...])
    assert_type(result.errors, tuple[NodeError, ...])
    again = await rt.resume(bp, result.serialized_context, {"output": 1, "action": "go"}, "w")
    assert_type(again.revision, int)
    peeked = rt.peek(result.serialized_context)
    assert_type(peeked, RunResult)
    assert_type(peeked.signed_by, str | None)
    shorthand = await flow.run(rt)
    assert_type(shorthand, RunResult)
    spread = await rt.run(bp, {"xs": [1]}, control=RunControl(on_scatter=lambda node, n: True))
    outcomes = await rt.run_items(bp, spread, "b_scatter", [0])
    assert_type(outcomes, list[bytes])
    assert_type(rt.fail_items([0], ValueError("lost"), attempts=3), list[bytes])
    assert_type(rt.fail_batches(spread, ValueError("lost"), attempts=3), RunResult)
    gathered = await rt.gather(bp, spread, {"b_scatter": dict(enumerate(outcomes))})
    assert_type(gathered, RunResult)
