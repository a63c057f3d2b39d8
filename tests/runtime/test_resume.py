from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flowcraft import (
    AmbiguousResumeError,
    BlueprintMismatchError,
    ContextDecodeError,
    ContextIntegrityError,
    FlowRuntime,
    NodeContext,
    NodeNotAwaitingError,
    NodeResult,
    NotAwaitingError,
    Resume,
    ResumeDataError,
    ResumeError,
    SerializationError,
    TimerNotDueError,
    UnknownActionError,
    WaitExpiredError,
    create_flow,
)
from flowcraft.testing import FakeClock


def submit(n: NodeContext) -> str:
    n.context.set("request", {"amount": 1500})
    return "submitted"


def process(n: NodeContext) -> NodeResult[str]:
    decision: Decision = n.input  # the wait's schema turned the resume output into a Decision
    return NodeResult(output="paid" if decision.approved else "refused")


class Decision(msgspec.Struct):
    approved: bool
    note: str = ""


def approval_flow() -> Any:
    return (
        create_flow("expense")
        .node("submit", submit)
        .wait("approve", schema=Decision, timeout=timedelta(hours=24), on_timeout="timeout")
        .node("process", process)
        .node("refuse", lambda n: "refused")
        .node("expired", lambda n: "expired")
        .edge("submit", "approve")
        .edge("approve", "process", action="approved")
        .edge("approve", "refuse", action="rejected")
        .edge("approve", "expired", action="timeout")
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def paused(clock: FakeClock) -> tuple[Any, FlowRuntime, bytes]:
    flow = approval_flow()
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    first = await rt.run(flow.to_blueprint(), {"tenant": "acme"})
    assert first.status == "awaiting"
    return flow.to_blueprint(), rt, first.serialized_context


async def assert_still_resumes(bp: Any, rt: FlowRuntime, ctx: bytes) -> None:
    """The untouched context still resumes correctly after a refused resume."""
    final = await rt.resume(
        bp, ctx, {"output": {"approved": True}, "action": "approved"}, "approve"
    )
    assert final.status == "completed"
    assert final.outputs["process"] == "paid"
    assert final.revision == 2


async def test_resume_follows_the_action(paused: Any) -> None:
    """The resume's action picks the edge (TS ignored it)."""
    bp, rt, ctx = paused
    result = await rt.resume(bp, ctx, {"output": {"approved": False}, "action": "rejected"})
    assert result.outputs["refuse"] == "refused"
    assert "process" not in result.outputs


async def test_resume_accepts_a_resume_struct_and_records_who(paused: Any) -> None:
    """Resume(output, action, by) works like the dict and is recorded in history."""
    bp, rt, ctx = paused
    result = await rt.resume(
        bp, ctx, Resume(output={"approved": True}, action="approved", by="bob")
    )
    assert result.status == "completed"
    resume = next(h for h in result.history if h.event == "resume")
    assert (resume.node_id, resume.by, resume.action) == ("approve", "bob", "approved")


async def test_schema_converts_output_for_the_next_node(paused: Any) -> None:
    """The wait's schema validates the output and the next node receives the typed value."""
    bp, rt, ctx = paused
    seen: list[Any] = []

    def look(n: NodeContext) -> str:
        seen.append(n.input)
        return "paid"

    reg = {**rt.registry, bp.nodes[2].uses: look}
    await rt.resume(bp, ctx, {"output": {"approved": True}, "action": "approved"}, registry=reg)
    assert seen == [Decision(approved=True)]


@pytest.mark.parametrize(
    ("data", "node_id", "error", "match"),
    [
        (
            {"output": {"approved": True}, "action": "maybe"},
            "approve",
            UnknownActionError,
            r"run '.*': node 'approve' has no edge for action 'maybe'.*Resume with one of: "
            r"'approved', 'rejected', 'timeout'",
        ),
        (
            {"output": {"approved": True}},
            "approve",
            UnknownActionError,
            "no edge for action None",
        ),
        (
            {"output": {"approved": "very"}, "action": "approved"},
            "approve",
            ResumeDataError,
            r"run '.*': invalid resume data for node 'approve': Expected `bool`",
        ),
        (
            {"output": {"approved": True}, "action": "approved", "extra": 1},
            "approve",
            ResumeDataError,
            "unexpected key",
        ),
        ("approved", "approve", ResumeDataError, "expected a mapping or Resume"),
        ({"action": 7}, "approve", ResumeDataError, "action must be a string"),
        (
            {"output": {"approved": True}, "action": "approved"},
            "submit",
            NodeNotAwaitingError,
            r"node 'submit' is not awaiting \(awaiting: 'approve'\).*Resume one of",
        ),
        (
            {"output": {"approved": True}, "action": "approved"},
            "ghost",
            NodeNotAwaitingError,
            "node 'ghost' is not awaiting",
        ),
    ],
)
async def test_bad_resume_raises_specific_error_and_changes_nothing(
    paused: Any, data: Any, node_id: str, error: type[ResumeError], match: str
) -> None:
    """Every refused resume names the run and node, says what to do, and changes nothing."""
    bp, rt, ctx = paused
    before = bytes(ctx)
    with pytest.raises(error, match=match):
        await rt.resume(bp, ctx, data, node_id)
    assert ctx == before
    await assert_still_resumes(bp, rt, ctx)


async def test_resume_of_finished_run_raises_not_awaiting(paused: Any) -> None:
    """A completed run cannot be resumed again."""
    bp, rt, ctx = paused
    done = await rt.resume(bp, ctx, {"output": {"approved": True}, "action": "approved"})
    with pytest.raises(NotAwaitingError, match=r"run '.*' is completed, not awaiting"):
        await rt.resume(bp, done.serialized_context, {"action": "approved"})


async def test_expired_wait_refuses_late_decisions_but_takes_the_timeout(
    paused: Any, clock: FakeClock
) -> None:
    """After the wait's timeout, a human decision raises WaitExpiredError; on_timeout applies."""
    bp, rt, ctx = paused
    clock.advance(timedelta(hours=24, seconds=1))
    with pytest.raises(WaitExpiredError, match=r"wait 'approve' expired at .* 'timeout'"):
        await rt.resume(bp, ctx, {"output": {"approved": True}, "action": "approved"})
    result = await rt.resume(bp, ctx, {"output": None, "action": "timeout"})
    assert result.outputs["expired"] == "expired"


async def test_resume_with_another_blueprint_raises_mismatch(paused: Any) -> None:
    """A context from another blueprint (or a changed one) raises BlueprintMismatchError."""
    bp, rt, ctx = paused
    changed = approval_flow().node("audit", lambda n: 1).edge("process", "audit")
    with pytest.raises(BlueprintMismatchError, match="started with blueprint 'expense'"):
        await rt.resume(
            changed.to_blueprint(),
            ctx,
            {"output": {"approved": True}, "action": "approved"},
            registry=changed.registry,
        )
    await assert_still_resumes(bp, rt, ctx)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda b: b[: len(b) // 2],
        lambda b: b"",
        lambda b: b"\xff" * 20,
        lambda b: b'{"not": "ours"}',
        lambda b: msgspec.msgpack.encode([99, "x", "y", "z", 1, "s", {}, {}]),
    ],
)
async def test_corrupted_context_raises_decode_error(paused: Any, mangle: Any) -> None:
    """Truncated, garbage, foreign or future-format bytes raise ContextDecodeError."""
    bp, rt, ctx = paused
    with pytest.raises(ContextDecodeError, match="cannot decode the serialized context"):
        await rt.resume(bp, mangle(ctx), {"action": "approved"})
    await assert_still_resumes(bp, rt, ctx)


async def test_signed_contexts_reject_tampering_and_unsigned_input(clock: FakeClock) -> None:
    """With signing keys, altered, unsigned or foreign-key contexts raise ContextIntegrityError."""
    flow = approval_flow()
    bp = flow.to_blueprint()
    rt = FlowRuntime(registry=flow.registry, clock=clock, signing_keys={"k1": b"secret"})
    ctx = (await rt.run(bp)).serialized_context
    tampered = ctx[:-1] + bytes([ctx[-1] ^ 1])
    with pytest.raises(ContextIntegrityError, match="signature does not match"):
        await rt.resume(bp, tampered, {"action": "approved"})
    unsigned = (await FlowRuntime(registry=flow.registry, clock=clock).run(bp)).serialized_context
    with pytest.raises(ContextIntegrityError, match="not signed"):
        await rt.resume(bp, unsigned, {"action": "approved"})
    other = FlowRuntime(registry=flow.registry, clock=clock, signing_keys={"k2": b"other"})
    with pytest.raises(ContextIntegrityError, match="unknown key id"):
        await other.resume(bp, ctx, {"action": "approved"})
    rotated = FlowRuntime(
        registry=flow.registry,
        clock=clock,
        signing_keys={"k1": b"secret", "k2": b"new"},
        signing_key_id="k2",
    )
    await assert_still_resumes(bp, rotated, ctx)


async def test_unserializable_state_raises_naming_the_key() -> None:
    """A state value msgspec cannot encode raises SerializationError naming the key."""

    def bad(n: NodeContext) -> None:
        n.context.set("conn", object())

    with pytest.raises(SerializationError, match="state key 'conn'"):
        await create_flow("f").node("a", bad).run(FlowRuntime())


def branch_flow() -> Any:
    return (
        create_flow("reviews")
        .node("start", lambda n: "doc")
        .wait("tech")
        .wait("legal")
        .node("merge", lambda n: n.input)
        .edge("start", "tech")
        .edge("start", "legal")
        .edge("tech", "merge")
        .edge("legal", "merge")
    )


async def test_several_waits_resume_one_at_a_time_and_status_stays_awaiting() -> None:
    """Resuming one wait keeps the run awaiting while another is pending; the join waits."""
    flow = branch_flow()
    rt = FlowRuntime()
    first = await flow.run(rt)
    assert sorted(a.node_id for a in first.awaiting) == ["legal", "tech"]
    with pytest.raises(AmbiguousResumeError, match="several nodes await"):
        await flow.resume(rt, first.serialized_context, {"output": "ok"})
    second = await flow.resume(rt, first.serialized_context, {"output": "tech ok"}, "tech")
    assert second.status == "awaiting"
    assert [a.node_id for a in second.awaiting] == ["legal"]
    assert "merge" not in second.outputs
    third = await flow.resume(rt, second.serialized_context, {"output": "legal ok"}, "legal")
    assert third.status == "completed"
    assert third.outputs["merge"] == {"tech": "tech ok", "legal": "legal ok"}
    assert [first.revision, second.revision, third.revision] == [1, 2, 3]


async def test_wait_without_successors_keeps_other_waits_pending() -> None:
    """A resumed wait with no outgoing edge does not force completed (TS bug fixed)."""
    flow = create_flow("f").node("s", lambda n: 1).wait("a").wait("b").edge("s", "a").edge("s", "b")
    rt = FlowRuntime()
    first = await flow.run(rt)
    second = await flow.resume(rt, first.serialized_context, {"output": 1}, "a")
    assert second.status == "awaiting"
    assert [a.node_id for a in second.awaiting] == ["b"]


async def test_sleep_resumed_early_raises_timer_not_due_and_changes_nothing(
    clock: FakeClock,
) -> None:
    """A sleep resumed before wake_at raises TimerNotDueError; after it, it passes its input on."""
    flow = (
        create_flow("f")
        .node("a", lambda n: 42)
        .sleep("nap", duration="5m")
        .node("b", lambda n: n.input)
    )
    flow.edge("a", "nap").edge("nap", "b")
    rt = FlowRuntime(clock=clock)
    first = await flow.run(rt)
    assert first.awaiting[0].reason == "timer"
    assert first.awaiting[0].wake_at == clock.now() + timedelta(minutes=5)
    with pytest.raises(TimerNotDueError, match=r"timer 'nap' is not due until"):
        await flow.resume(rt, first.serialized_context)
    with pytest.raises(ResumeDataError, match="takes no output"):
        await flow.resume(rt, first.serialized_context, {"output": 1})
    clock.advance(300)
    final = await flow.resume(rt, first.serialized_context)
    assert final.outputs["b"] == 42


async def test_context_resumes_in_a_fresh_process(tmp_path: Path) -> None:
    """Bytes written by this process resume in a new python process with the same flow."""
    module = tmp_path / "myflow.py"
    module.write_text(
        textwrap.dedent(
            """
            from flowcraft import NodeResult, create_flow

            def submit(node):
                node.context.set("amount", 1500)
                return "submitted"

            def process(node):
                return NodeResult(output=f"paid {node.context.get('amount')} to {node.input}")

            flow = (
                create_flow("expense").node("submit", submit).wait("approve")
                .node("process", process).edge("submit", "approve")
                .edge("approve", "process", action="approved")
            )
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import myflow  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    first = await myflow.flow.run(FlowRuntime(serializer="json"))
    (tmp_path / "ctx.bin").write_bytes(first.serialized_context)
    script = textwrap.dedent(
        """
        import anyio, sys
        sys.path.insert(0, sys.argv[1])
        from myflow import flow
        from flowcraft import FlowRuntime

        async def main():
            data = open(sys.argv[1] + "/ctx.bin", "rb").read()
            result = await flow.resume(
                FlowRuntime(), data, {"output": "alice", "action": "approved"}
            )
            print(result.status, result.outputs["process"], result.revision)

        anyio.run(main)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.split(" ", 1)[0] == "completed"
    assert out.stdout.strip().endswith("paid 1500 to alice 2")


async def test_json_and_msgpack_contexts_are_both_readable() -> None:
    """A runtime reads either encoding, whatever it writes."""
    flow = branch_flow()
    json_ctx = (await flow.run(FlowRuntime(serializer="json"))).serialized_context
    assert json_ctx.startswith(b"[")
    result = await flow.resume(FlowRuntime(), json_ctx, {"output": 1}, "tech")
    assert result.status == "awaiting"


@pytest.mark.parametrize("timeout", [60, None], ids=["not-expired", "no-timeout"])
async def test_fire_on_a_wait_that_is_not_due_raises_timer_not_due(timeout: int | None) -> None:
    """`runtime.fire` refuses a wait before its deadline, or with none, and changes nothing."""
    clock = FakeClock()
    flow = (
        create_flow("f")
        .wait("w", timeout=timeout, on_timeout="timeout")
        .node("ok", lambda n: "ok")
        .node("late", lambda n: "late")
        .edge("w", "ok", action="ok")
        .edge("w", "late", action="timeout")
    )
    rt = FlowRuntime(registry=flow.registry, clock=clock)
    bp = flow.to_blueprint()
    first = await rt.run(bp)
    clock.advance(10)
    with pytest.raises(TimerNotDueError):
        await rt.fire(bp, first.serialized_context, "w")
    final = await rt.resume(bp, first.serialized_context, {"action": "ok"}, "w")
    assert (final.status, final.outputs) == ("completed", {"w": None, "ok": "ok"})


async def test_fire_refuses_to_open_a_pause_before_gate() -> None:
    """`fire` is for due timers and expired waits; it must not approve a pause_before gate."""
    flow = create_flow("f").node("g", lambda n: "ran", pause_before=True)
    rt = FlowRuntime(registry=flow.registry, clock=FakeClock())
    bp = flow.to_blueprint()
    first = await rt.run(bp)
    assert first.status == "awaiting"
    with pytest.raises(ResumeError):
        await rt.fire(bp, first.serialized_context, "g")
