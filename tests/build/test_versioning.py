from __future__ import annotations

import dataclasses
import enum
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypedDict

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcraft import (
    BlueprintMismatchError,
    ContextDecodeError,
    ContextView,
    FlowRuntime,
    NodeContext,
    SerializationError,
    create_flow,
)


def noop(n: NodeContext) -> None:
    return None


def v1() -> Any:
    return (
        create_flow("order", version="1")
        .node("start", noop)
        .wait("approve")
        .node("ship", lambda n: "shipped")
        .edge("start", "approve")
        .edge("approve", "ship")
    )


async def test_changed_blueprint_is_refused_naming_what_changed() -> None:
    """A resume on a changed blueprint raises BlueprintMismatchError listing the changes."""
    old = v1()
    first = await old.run(FlowRuntime())
    new = v1().node("audit", lambda n: "audited").edge("ship", "audit")
    with pytest.raises(BlueprintMismatchError, match=r"added 'audit'; changed 'ship'") as info:
        await new.resume(FlowRuntime(), first.serialized_context, {"output": 1})
    assert info.value.run_id == first.run_id


async def test_allow_blueprint_change_resumes_when_the_awaiting_node_still_exists() -> None:
    """allow_blueprint_change=True moves the run onto the new blueprint."""
    first = await v1().run(FlowRuntime())
    new = create_flow("order", version="2").node("start", noop).wait("approve")
    new.node("ship", lambda n: "shipped v2").edge("start", "approve").edge("approve", "ship")
    result = await new.resume(
        FlowRuntime(), first.serialized_context, {"output": 1}, allow_blueprint_change=True
    )
    assert result.outputs["ship"] == "shipped v2"
    # The new context belongs to the new blueprint now.
    assert FlowRuntime().inspect(
        new.to_blueprint(), result.serialized_context, registry=new.registry
    )


async def test_allow_blueprint_change_refuses_when_the_awaiting_node_is_gone() -> None:
    """If the awaiting node was removed, the change is refused with a pointer to migrate=."""
    first = await v1().run(FlowRuntime())
    new = create_flow("order").node("start", noop).wait("manager").edge("start", "manager")
    with pytest.raises(BlueprintMismatchError, match=r"'approve'.*migrate="):
        await new.resume(
            FlowRuntime(), first.serialized_context, {"output": 1}, allow_blueprint_change=True
        )


async def test_migrate_can_rename_the_awaiting_node_and_edit_state() -> None:
    """migrate= receives the old context and may move pauses and rewrite state."""
    first = await v1().run(FlowRuntime(), {"amount": 10})
    new = (
        create_flow("order", version="2")
        .node("start", noop)
        .wait("manager")
        .node("ship", lambda n: f"shipped {n.context.get('amount_cents')}")
        .edge("start", "manager")
        .edge("manager", "ship")
    )

    def upgrade(view: ContextView) -> None:
        assert view.version == "1"
        view.awaiting["approve"] = "manager"
        view.state["amount_cents"] = view.state.pop("amount") * 100

    result = await new.resume(
        FlowRuntime(), first.serialized_context, {"output": 1}, migrate=upgrade
    )
    assert result.status == "completed"
    assert result.outputs["ship"] == "shipped 1000"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Item(msgspec.Struct):
    sku: str
    price: Decimal


@dataclasses.dataclass
class Address:
    city: str
    since: datetime


class OrderState(TypedDict, total=False):
    color: Color
    when: datetime
    token: uuid.UUID
    total: Decimal
    items: list[Item]
    address: Address
    tags: dict[str, Color]


def typed_flow() -> Any:
    return (
        create_flow("typed", state=OrderState)
        .node("fill", noop)
        .wait("confirm")
        .node("check", lambda n: type(n.context.get("items")[0]).__name__)
        .edge("fill", "confirm")
        .edge("confirm", "check")
    )


async def test_declared_state_types_survive_the_round_trip() -> None:
    """Enums, datetimes, UUIDs, Decimals, Structs and dataclasses come back as themselves."""
    state: dict[str, Any] = {
        "color": Color.BLUE,
        "when": datetime(2026, 11, 23, 9, 30, tzinfo=UTC),
        "token": uuid.UUID(int=7),
        "total": Decimal("12.50"),
        "items": [Item(sku="a", price=Decimal("1.25"))],
        "address": Address(city="Lyon", since=datetime(2020, 1, 1, tzinfo=UTC)),
        "tags": {"x": Color.RED},
        "untyped": {"left": "alone"},
    }
    flow = typed_flow()
    for serializer in ("msgpack", "json"):
        rt = FlowRuntime(serializer=serializer)
        first = await flow.run(rt, state)
        final = await flow.resume(rt, first.serialized_context, {"output": True})
        assert final.context == state
        assert final.outputs["check"] == "Item"


async def test_state_not_matching_its_type_fails_loudly_with_the_key() -> None:
    """A wrong initial value, or a stored one that no longer fits, names the key."""
    flow = typed_flow()
    with pytest.raises(SerializationError, match="state key 'color'"):
        await flow.run(FlowRuntime(), {"color": "green"})
    untyped = create_flow("typed").node("fill", noop).wait("confirm").node("check", noop)
    untyped.edge("fill", "confirm").edge("confirm", "check")
    ctx = (await untyped.run(FlowRuntime(), {"when": "yesterday"})).serialized_context
    # Same blueprint id, so force the shape check through allow_blueprint_change.
    with pytest.raises(ContextDecodeError, match="state key 'when'"):
        await flow.resume(FlowRuntime(), ctx, {"output": 1}, allow_blueprint_change=True)


class Simple(TypedDict, total=False):
    n: int
    d: Decimal
    when: datetime
    colors: list[Color]


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "n": st.integers(-(2**63), 2**63 - 1),
            "d": st.decimals(allow_nan=False, allow_infinity=False, places=4),
            "when": st.datetimes(timezones=st.just(UTC)),
            "colors": st.lists(st.sampled_from(Color), max_size=4),
        },
    ),
    st.sampled_from(["msgpack", "json"]),
)
async def test_typed_state_round_trip_property(state: dict[str, Any], serializer: str) -> None:
    """decode(encode(state)) == state for generated typed states."""
    flow = create_flow("p", state=Simple).wait("w")
    rt = FlowRuntime(serializer=serializer)
    first = await flow.run(rt, state)
    back = rt.inspect(flow.to_blueprint(), first.serialized_context, registry=flow.registry)
    assert back.context == state
