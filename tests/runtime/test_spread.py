"""``on_scatter``, ``run_items``, ``gather``: a batch run item by item ends as in one call."""

from __future__ import annotations

from typing import Any

import pytest

from flowcraft import (
    FlowRuntime,
    NodeContext,
    NodeNotAwaitingError,
    NotAwaitingError,
    RunControl,
    RunResult,
    create_flow,
)


def item(node: NodeContext) -> int:
    x = int(node.input)
    if x < 0:
        node.pause(f"check {x}")
    if x == 13:
        raise ValueError("13 is unlucky")
    return x * 2


def flow() -> Any:
    return (
        create_flow("b")
        .batch("b", item, input_key="xs", output_key="out", max_retries=2)
        .node("after", lambda n: len(n.input), name="after")
        .edge("b", "after")
    )


def shape(r: RunResult) -> tuple[Any, ...]:
    return (
        r.status,
        r.outputs,
        r.context,
        [a.node_id for a in r.awaiting],
        [(e.node_id, e.type, e.message, e.attempt) for e in r.errors],
        [(h.event, h.node_id) for h in r.history],
    )


@pytest.mark.parametrize("xs", [[1, 2, 3], [4, -1, 5, -2], [1, 13, 2], [7]])
async def test_items_run_elsewhere_and_gathered_end_as_in_one_call(xs: list[int]) -> None:
    f = flow()
    bp = f.to_blueprint()
    rt = FlowRuntime(registry=f.registry)
    whole = await rt.run(bp, {"xs": xs}, run_id="r")
    asked: list[tuple[str, int]] = []
    control = RunControl(on_scatter=lambda n, k: not asked.append((n, k)))
    left = await rt.run(bp, {"xs": xs}, run_id="r", control=control)
    assert asked == [("b_scatter", len(xs))]
    assert left.status == "awaiting"
    assert left.history == ()  # a batch left to workers is no pause
    outcomes = {}
    for i in reversed(range(len(xs))):  # one call per item, in any order
        outcomes[i] = (await rt.run_items(bp, left, "b_scatter", [i]))[0]
    gathered = await rt.gather(bp, left, {"b_scatter": outcomes})
    alone = await rt.gather(bp, left, {})  # no outcome at all: every item runs here
    assert shape(gathered)[:5] == shape(whole)[:5]
    assert shape(alone)[:5] == shape(whole)[:5]
    assert shape(gathered)[5] == shape(whole)[5]


async def test_run_items_of_a_batch_not_left_to_workers_is_refused() -> None:
    f = flow()
    bp = f.to_blueprint()
    rt = FlowRuntime(registry=f.registry)
    whole = await rt.run(bp, {"xs": [-1]})
    with pytest.raises(NodeNotAwaitingError):
        await rt.run_items(bp, whole, "b_scatter", [0])


async def test_items_that_could_not_run_fail_the_batch_as_an_item_raising_in_one_call() -> None:
    """``fail_items`` outcomes make ``gather`` end the batch as one call whose item raised."""
    f = flow()
    bp = f.to_blueprint()
    rt = FlowRuntime(registry=f.registry)
    whole = await rt.run(bp, {"xs": [1, 13, 2]}, run_id="r")
    control = RunControl(on_scatter=lambda n, k: True)
    left = await rt.run(bp, {"xs": [1, 13, 2]}, run_id="r", control=control)
    ran = await rt.run_items(bp, left, "b_scatter", [0, 2])
    [failed] = rt.fail_items([1], ValueError("13 is unlucky"), attempts=2)
    outcomes = {0: ran[0], 1: failed, 2: ran[1]}
    gathered = await rt.gather(bp, left, {"b_scatter": outcomes})
    assert gathered.status == "failed"
    assert shape(gathered)[:5] == shape(whole)[:5]


async def test_a_batch_that_cannot_be_gathered_fails_the_run_without_its_blueprint() -> None:
    """``fail_batches`` reads the context as ``peek`` does: no blueprint, nothing runs."""
    f = flow()
    bp = f.to_blueprint()
    rt = FlowRuntime(registry=f.registry)
    control = RunControl(on_scatter=lambda n, k: True)
    left = await rt.run(bp, {"xs": [1, 2]}, run_id="r", control=control)
    assert left.status == "awaiting"
    failed = FlowRuntime().fail_batches(left, ValueError("gone"), attempts=3)
    assert (failed.status, failed.revision, failed.awaiting) == ("failed", left.revision + 1, ())
    [error] = failed.errors
    assert (error.node_id, error.type, error.attempt) == ("b_scatter", "ValueError", 3)
    assert error.message == "batch 'b_scatter' could not be gathered: ValueError('gone')"
    assert rt.inspect(bp, failed.serialized_context).status == "failed"
    with pytest.raises(NotAwaitingError):
        rt.fail_batches(failed, ValueError("again"))
