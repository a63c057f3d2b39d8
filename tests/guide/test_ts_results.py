"""A dict shaped like a TS node result (``{"output", "action"}``) is read as a ``NodeResult``."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcraft import BaseNode, FlowRuntime, NodeContext, NodeResult, create_flow
from flowcraft._values import ts_result


def branch_flow(value: object, **node_kw: Any) -> Any:
    def decide(node: NodeContext) -> object:
        return value

    return (
        create_flow("ts-result")
        .node("decide", decide, **node_kw)
        .node("retry", lambda n: "retried")
        .node("plain", lambda n: "plain")
        .edge("decide", "retry", action="retry")
        .edge("decide", "plain")
    )


@pytest.mark.parametrize("node_kw", [{}, {"max_retries": 2}, {"timeout": 5}])
async def test_output_and_action_dict_routes_by_its_action(node_kw: dict[str, Any]) -> None:
    """``{"output": "503", "action": "retry"}`` takes the retry edge, on every engine path."""
    result = await branch_flow({"output": "503", "action": "retry"}, **node_kw).run(FlowRuntime())
    assert result.outputs["decide"] == "503"
    assert result.outputs["retry"] == "retried"
    assert "plain" not in result.outputs


async def test_output_only_dict_is_its_output() -> None:
    """``{"output": x}`` is the output x, like TS ``return { output: x }``."""
    result = await branch_flow({"output": "Expense submitted"}).run(FlowRuntime())
    assert result.outputs["decide"] == "Expense submitted"
    assert result.outputs["plain"] == "plain"


async def test_wrapped_dict_stays_a_plain_value() -> None:
    """``NodeResult(output={...})`` returns a TS-shaped dict as a value."""
    value = {"output": 1, "action": "retry"}
    result = await branch_flow(NodeResult(output=value)).run(FlowRuntime())
    assert result.outputs["decide"] == value
    assert "retry" not in result.outputs


async def test_class_node_and_async_node_results_are_read_too() -> None:
    """``exec`` of a class node and an async function may return the TS shape."""

    class Decide(BaseNode):
        async def exec(self, prepared: Any, node: NodeContext) -> dict[str, str]:
            return {"output": "x", "action": "retry"}

    async def decide(node: NodeContext) -> dict[str, str]:
        return {"action": "retry"}

    for impl in (Decide, decide):
        flow = (
            create_flow("c")
            .node("decide", impl)
            .node("retry", lambda n: "retried")
            .edge("decide", "retry", action="retry")
        )
        result = await flow.run(FlowRuntime())
        assert result.outputs["retry"] == "retried"


@given(
    st.dictionaries(
        st.sampled_from(["output", "action", "other"]),
        st.one_of(st.none(), st.text(max_size=3), st.integers()),
    )
)
def test_only_non_empty_output_action_dicts_with_text_action_are_results(
    value: dict[str, Any],
) -> None:
    """The rule, exactly: non-empty, keys within {output, action}, action a str or None."""
    got = ts_result(value)
    expected = (
        bool(value)
        and set(value) <= {"output", "action"}
        and (value.get("action") is None or isinstance(value.get("action"), str))
    )
    assert (got is not None) == expected
    if got is not None:
        assert (got.output, got.action) == (value.get("output"), value.get("action"))
