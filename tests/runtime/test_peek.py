"""``FlowRuntime.peek``: verify and decode a context with no blueprint at hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from flowcraft import (
    Approvals,
    BlueprintMismatchError,
    ContextDecodeError,
    ContextIntegrityError,
    FlowRuntime,
    NodeContext,
    RunResult,
    create_flow,
)
from flowcraft.testing import FakeClock


class Expense(msgspec.Struct):
    amount: int
    initiator: str = "eve"


def expense(approvals: Approvals | None = None) -> Any:
    def submit(n: NodeContext) -> dict[str, int]:
        n.context.set("submitted", True)
        return {"amount": n.context.get("amount")}

    return (
        create_flow("expense", state=Expense)
        .node("submit", submit)
        .wait("approve", approvals=approvals, timeout=timedelta(hours=4), on_timeout="expired",
              description="a manager approves")
        .node("pay", lambda n: "paid")
        .node("lapse", lambda n: "lapsed")
        .edge("submit", "approve")
        .edge("approve", "pay", action="approve")
        .edge("approve", "lapse", action="expired")
    )


async def awaiting(rt: FlowRuntime, flow: Any) -> RunResult:
    result: RunResult = await rt.run(flow.to_blueprint(), Expense(amount=900), run_id="r-1")
    assert result.status == "awaiting"
    return result


def same_facts(peeked: RunResult, result: RunResult) -> None:
    """What ``peek`` reads is what the run returned (state as builtins: no flow to type it)."""
    assert peeked.status == result.status == "awaiting"
    assert (peeked.run_id, peeked.blueprint_id, peeked.revision) == ("r-1", "expense", 1)
    assert peeked.context == {"amount": 900, "initiator": "eve", "submitted": True}
    assert peeked.outputs == {"submit": {"amount": 900}}
    assert peeked.awaiting == result.awaiting
    (wait,) = peeked.awaiting
    assert (wait.node_id, wait.reason, wait.description) == ("approve", "wait",
                                                             "a manager approves")
    assert wait.expires_at == wait.since + timedelta(hours=4)
    assert peeked.history == result.history
    assert peeked.errors == ()
    assert dict(peeked.trace) == {}


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
async def test_peek_reads_a_context_without_its_blueprint(serializer: str) -> None:
    flow = expense()
    result = await awaiting(FlowRuntime(registry=flow.registry, serializer=serializer), flow)
    reader = FlowRuntime(serializer=serializer)  # no registry, no blueprints
    peeked = reader.peek(result.serialized_context)
    same_facts(peeked, result)
    assert peeked.serialized_context == result.serialized_context
    assert peeked.signed_by is None
    assert reader.peek(result).revision == 1  # the RunResult carrying it
    # A default (msgpack) runtime reads JSON too, as resume does.
    same_facts(FlowRuntime().peek(result.serialized_context), result)


async def test_peek_reads_a_json_context_kept_as_text() -> None:
    flow = expense()
    result = await awaiting(FlowRuntime(registry=flow.registry, serializer="json"), flow)
    text = result.serialized_context.decode()
    peeked = FlowRuntime(serializer="json").peek(text)
    same_facts(peeked, result)
    assert peeked.serialized_context == result.serialized_context


async def test_peek_verifies_the_signature_and_names_the_key() -> None:
    flow = expense()
    keys = {"k1": b"old", "k2": "new"}
    result = await awaiting(
        FlowRuntime(registry=flow.registry, signing_keys=keys, signing_key_id="k1"), flow
    )
    assert result.signed_by == "k1"
    peeked = FlowRuntime(signing_keys=keys).peek(result.serialized_context)
    same_facts(peeked, result)
    assert peeked.signed_by == "k1"  # verified under k1 though k2 signs new contexts
    with pytest.raises(ContextIntegrityError, match="no signing_keys"):
        FlowRuntime().peek(result.serialized_context)


async def test_peek_refuses_a_foreign_key_tampered_or_unsigned_context() -> None:
    flow = expense()
    result = await awaiting(FlowRuntime(registry=flow.registry, signing_keys={"k1": "s"}), flow)
    ctx = result.serialized_context
    with pytest.raises(ContextIntegrityError, match="unknown key id"):
        FlowRuntime(signing_keys={"k2": "s"}).peek(ctx)
    with pytest.raises(ContextIntegrityError, match="signature does not match"):
        FlowRuntime(signing_keys={"k1": "other"}).peek(ctx)  # same id, another secret
    reader = FlowRuntime(signing_keys={"k1": "s"})
    for i in (len(ctx) - 1, len(ctx) // 2, 5, 9):  # payload, middle, key id, signature
        tampered = bytearray(ctx)
        tampered[i] ^= 0x01
        with pytest.raises(ContextIntegrityError):
            reader.peek(bytes(tampered))
    unsigned = (await awaiting(FlowRuntime(registry=flow.registry), flow)).serialized_context
    with pytest.raises(ContextIntegrityError, match="not signed"):
        reader.peek(unsigned)


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
async def test_peek_refuses_truncated_and_foreign_bytes(serializer: str) -> None:
    flow = expense()
    ctx = (await awaiting(FlowRuntime(registry=flow.registry, serializer=serializer), flow))
    data = ctx.serialized_context
    reader = FlowRuntime()
    for bad in (data[: len(data) // 2], data[:-1], b"", b"\x00not a context", b"{}"):
        with pytest.raises(ContextDecodeError):
            reader.peek(bad)
    with pytest.raises(ContextDecodeError, match="over the limit"):
        FlowRuntime(max_context_bytes=len(data) - 1).peek(data)
    signed = await awaiting(FlowRuntime(registry=flow.registry, signing_keys={"k": "s"}), flow)
    with pytest.raises(ContextIntegrityError):
        FlowRuntime(signing_keys={"k": "s"}).peek(signed.serialized_context[:-3])


async def test_peek_shows_a_quorum_wait_with_its_votes() -> None:
    clock = FakeClock()
    flow = expense(Approvals(required=3))
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    bp = flow.to_blueprint()
    result = await awaiting(rt, flow)
    for who in ("ann", "bob"):
        clock.advance(60)
        result = await rt.resume(bp, result, {"action": "approve", "output": "ok"}, "approve",
                                 by=who)
    assert result.status == "awaiting"
    peeked = FlowRuntime().peek(result.serialized_context)
    assert peeked.revision == 3
    (wait,) = peeked.awaiting
    assert wait.node_id == "approve"
    assert wait.approved_by == ("ann", "bob")
    assert [(h.event, h.by) for h in peeked.history if h.event == "vote"] == [
        ("vote", "ann"),
        ("vote", "bob"),
    ]
    assert peeked.history == result.history


async def test_peek_validates_nothing_against_a_flow() -> None:
    """A context of a flow this runtime has never seen decodes; inspect would check it."""
    flow = expense()
    result = await awaiting(FlowRuntime(registry=flow.registry), flow)
    other = create_flow("other").node("a", lambda n: None)
    rt = FlowRuntime(registry=other.registry)
    assert rt.peek(result).blueprint_id == "expense"
    with pytest.raises(BlueprintMismatchError, match="expense"):
        rt.inspect(other.to_blueprint(), result)
    # inspect checks and types the state; peek leaves the builtins as decoded.
    typed = FlowRuntime(registry=flow.registry).inspect(flow.to_blueprint(), result)
    assert typed.awaiting == FlowRuntime().peek(result).awaiting
