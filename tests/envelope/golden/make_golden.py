"""Write golden contexts for the current envelope format.

Run ``python tests/envelope/golden/make_golden.py``.

Each fixed flow below is run (and for some, resumed part-way) at a fixed clock and run id, and
its context is written as ``format{FORMAT}-{case}[.signed].{msgpack,json}``. Commit the files.
Files of older formats are never rewritten or deleted: ``tests/envelope/test_golden.py``
resumes every one of them, so a format change must keep decoding them, and must come with new files.

Node implementations carry explicit ``name=`` keys so the blueprint digest does not depend on the
module this file is imported as.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from flowcraft import Flow, FlowRuntime, NodeContext, NodeResult, RunResult, create_flow
from flowcraft.testing import FakeClock

HERE = Path(__file__).resolve().parent
START = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
# A test-only key: golden files prove old signed contexts verify, not that this key is secret.
SIGNING_KEYS = {"golden-2026": b"flowcraft golden test key, not a secret"}
VARIANTS = ("msgpack", "json", "signed.msgpack", "signed.json")


# --- node implementations (stable names) ----------------------------------------------------


def submit(n: NodeContext) -> str:
    n.context.set("request", {"user": "alice", "amount": 1500, "tags": ["travel", "q1"]})
    return "submitted"


def process(n: NodeContext) -> str:
    return "paid" if n.input["approved"] else "refused"


def refuse(n: NodeContext) -> str:
    return "refused"


def begin(n: NodeContext) -> str:
    n.context.set("started_at", n.context.get("now", "unknown"))
    return "started"


def finish(n: NodeContext) -> str:
    return f"finished after {n.input}"


def fan_out(n: NodeContext) -> dict[str, int]:
    return {"items": 2}


def merge(n: NodeContext) -> dict[str, Any]:
    return {"merged": dict(sorted(n.input.items()))}


def draft(n: NodeContext) -> str:
    rounds = n.context.get("rounds", 0) + 1
    n.context.set("rounds", rounds)
    return f"draft {rounds}"


def publish(n: NodeContext) -> str:
    return f"published after {n.context.get('rounds')} rounds: {n.input}"


def send(n: NodeContext) -> NodeResult[str]:
    return NodeResult(output="sent", action="done")


# --- flows --------------------------------------------------------------------------------------


def approval() -> Flow:
    return (
        create_flow("golden-approval")
        .node("submit", submit, name="golden.submit")
        .wait("approve", timeout=24 * 3600, description="manager approval")
        .node("process", process, name="golden.process")
        .node("refuse", refuse, name="golden.refuse")
        .edge("submit", "approve")
        .edge("approve", "process", action="approved")
        .edge("approve", "refuse", action="rejected")
    )


def timer() -> Flow:
    return (
        create_flow("golden-timer")
        .node("begin", begin, name="golden.begin")
        .sleep("nap", duration="5m")
        .node("finish", finish, name="golden.finish")
        .edge("begin", "nap")
        .edge("nap", "finish")
    )


def join() -> Flow:
    return (
        create_flow("golden-join")
        .node("fan", fan_out, name="golden.fan")
        .wait("left")
        .wait("right")
        .node("merge", merge, name="golden.merge")
        .edge("fan", "left")
        .edge("fan", "right")
        .edge("left", "merge")
        .edge("right", "merge")
    )


def loop() -> Flow:
    return (
        create_flow("golden-loop")
        .node("intro", begin, name="golden.begin")
        .node("draft", draft, name="golden.draft")
        .wait("review")
        .node("publish", publish, name="golden.publish")
        .edge("intro", "draft")
        .edge("draft", "review")
        .edge("review", "draft", action="revise")
        .edge("review", "publish", action="accept")
    )


def gate() -> Flow:
    return (
        create_flow("golden-gate")
        .node("submit", submit, name="golden.submit")
        .node("send", send, pause_before=True, name="golden.send")
        .node("after", finish, name="golden.finish")
        .edge("submit", "send")
        .edge("send", "after", action="done")
    )


Step = tuple[float, str, Any]  # (seconds to advance the clock first, node id, resume data)


@dataclass(frozen=True)
class Case:
    """One golden context: how to reach it, how to finish it, and what the finish looks like."""

    build: Callable[[], Flow]
    state: dict[str, Any]
    before: list[Step]  # applied before the context is written
    after: list[Step]  # applied by the test to the stored context
    awaiting: list[str]  # awaiting node ids in the stored context
    outputs: dict[str, Any]
    final_state: dict[str, Any] = field(default_factory=dict)


REQUEST = {"user": "alice", "amount": 1500, "tags": ["travel", "q1"]}

CASES: dict[str, Case] = {
    "approval": Case(
        approval,
        {"tenant": "acme"},
        [],
        [(60.0, "approve", {"output": {"approved": True, "note": "ok"}, "action": "approved"})],
        ["approve"],
        {
            "submit": "submitted",
            "approve": {"approved": True, "note": "ok"},
            "process": "paid",
        },
        {"tenant": "acme", "request": REQUEST},
    ),
    "timer": Case(
        timer,
        {"now": "morning"},
        [],
        [(300.0, "nap", None)],
        ["nap"],
        {"begin": "started", "nap": "started", "finish": "finished after started"},
        {"now": "morning", "started_at": "morning"},
    ),
    "join": Case(
        join,
        {},
        [],
        [(0.0, "right", {"output": 2}), (0.0, "left", {"output": 1})],
        ["left", "right"],
        {
            "fan": {"items": 2},
            "left": 1,
            "right": 2,
            "merge": {"merged": {"left": 1, "right": 2}},
        },
    ),
    "join-half": Case(
        join,
        {},
        [(0.0, "right", {"output": 2})],
        [(0.0, "left", {"output": 1})],
        ["left"],
        {
            "fan": {"items": 2},
            "left": 1,
            "right": 2,
            "merge": {"merged": {"left": 1, "right": 2}},
        },
    ),
    "loop": Case(
        loop,
        {},
        [(0.0, "review", {"output": "more detail", "action": "revise"})],
        [(0.0, "review", {"output": "fine", "action": "accept"})],
        ["review"],
        {
            "intro": "started",
            "draft": "draft 2",
            "review": "fine",
            "publish": "published after 2 rounds: fine",
        },
        {"rounds": 2, "started_at": "unknown"},
    ),
    "gate": Case(
        gate,
        {},
        [],
        [(0.0, "send", None)],
        ["send"],
        {"submit": "submitted", "send": "sent", "after": "finished after sent"},
        {"request": REQUEST},
    ),
}


def runtime(flow: Flow, clock: FakeClock, variant: str) -> FlowRuntime:
    """The runtime a variant is written and read with."""
    signed = variant.startswith("signed.")
    return FlowRuntime(
        registry=flow.registry,
        clock=clock,
        serializer="json" if variant.endswith("json") else "msgpack",
        signing_keys=SIGNING_KEYS if signed else None,
    )


async def apply(
    rt: FlowRuntime, flow: Flow, clock: FakeClock, ctx: bytes | RunResult, steps: list[Step]
) -> RunResult | bytes:
    """Resume ``ctx`` with each step in turn, advancing the fake clock first."""
    bp = flow.to_blueprint()
    for seconds, node_id, data in steps:
        clock.advance(seconds)
        ctx = await rt.resume(bp, ctx, data, node_id)
    return ctx


async def context_for(name: str, variant: str) -> bytes:
    """Run case ``name`` at the fixed clock and run id and return its serialized context."""
    case = CASES[name]
    flow = case.build()
    clock = FakeClock(START)
    rt = runtime(flow, clock, variant)
    first = await rt.run(flow.to_blueprint(), case.state, run_id=f"golden-{name}")
    result = await apply(rt, flow, clock, first, case.before)
    assert isinstance(result, RunResult)
    assert result.status == "awaiting", result
    assert sorted(a.node_id for a in result.awaiting) == sorted(case.awaiting)
    return result.serialized_context


def file_name(fmt: int, name: str, variant: str) -> str:
    return f"format{fmt}-{name}.{variant}"


async def main() -> None:
    from flowcraft._envelope.records import FORMAT

    for name in CASES:
        for variant in VARIANTS:
            path = HERE / file_name(FORMAT, name, variant)
            path.write_bytes(await context_for(name, variant))
            sys.stdout.write(f"wrote {path.relative_to(HERE.parent.parent)}\n")


if __name__ == "__main__":
    anyio.run(main)
