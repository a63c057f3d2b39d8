"""An instance of the flow's declared state type is an initial state; other non-mappings get a
specific error."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import msgspec
import pytest

from flowcraft import FlowRuntime, InitialStateError, NodeContext, create_flow


@dataclass
class Expense:
    user: str
    amount: int
    day: date


class Ticket(msgspec.Struct):
    title: str
    priority: int = 1


def submit(node: NodeContext) -> str:
    return f"{node.context.get('user')} {node.context.get('amount')}"


async def test_dataclass_instance_is_accepted_as_initial_state() -> None:
    """``run(bp, Expense(...))`` starts with one state key per field, typed."""
    flow = create_flow("expense", state=Expense).node("submit", submit).wait("approve")
    flow.edge("submit", "approve")
    runtime = FlowRuntime(registry=flow.registry)
    first = await runtime.run(flow.to_blueprint(), Expense("Alice", 1500, date(2024, 1, 2)))
    assert first.outputs["submit"] == "Alice 1500"
    assert first.context == {"user": "Alice", "amount": 1500, "day": date(2024, 1, 2)}
    final = await runtime.resume(flow.to_blueprint(), first.serialized_context, {"output": 1})
    assert final.context["day"] == date(2024, 1, 2)  # typed again after the round trip


async def test_struct_instance_is_accepted_as_initial_state() -> None:
    """A ``msgspec.Struct`` state type works the same way."""
    flow = create_flow("ticket", state=Ticket).node("t", lambda n: n.context.get("title"))
    result = await flow.run(FlowRuntime(), Ticket("printer on fire"))
    assert result.outputs["t"] == "printer on fire"
    assert result.context == {"title": "printer on fire", "priority": 1}


async def test_other_object_says_what_to_pass() -> None:
    """A non-mapping that is not the state type names the flow, the type and what to pass."""
    flow = create_flow("expense", state=Expense).node("submit", submit)
    with pytest.raises(InitialStateError, match=r"flow 'expense': the initial state is a Ticket, "
                       r"not a mapping\. Pass a Expense instance"):
        await flow.run(FlowRuntime(), Ticket("x"))


async def test_untyped_flow_suggests_declaring_the_state_type() -> None:
    """Without a declared type, the error says to pass a dict or declare ``state=``."""
    flow = create_flow("plain").node("submit", submit)
    with pytest.raises(InitialStateError, match=r"create_flow\('plain', state=YourType\)"):
        await flow.run(FlowRuntime(), Expense("Alice", 1, date(2024, 1, 1)))
    with pytest.raises(TypeError):  # InitialStateError is a TypeError too
        await flow.run(FlowRuntime(), [("user", "Alice")])
