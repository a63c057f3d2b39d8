"""``Middleware.around_segment`` and the trace headers a context carries (``RunResult.trace``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from flowcraft import (
    ContextIntegrityError,
    FlowRuntime,
    Middleware,
    NodeContext,
    Resume,
    RunResult,
    Segment,
    UnknownActionError,
    create_flow,
)
from flowcraft.testing import FakeClock


def echo(n: NodeContext) -> Any:
    return n.input


class Recorder(Middleware):
    """Records every segment and its outcome; writes ``carry`` if given headers."""

    def __init__(self, write: dict[str, str] | None = None) -> None:
        self.seen: list[tuple[Segment, RunResult | BaseException]] = []
        self.write = write

    async def around_segment(
        self, segment: Segment, call_next: Callable[[], Awaitable[RunResult]]
    ) -> RunResult:
        if self.write is not None:
            segment.carry.clear()
            segment.carry.update(self.write)
        try:
            result = await call_next()
        except Exception as exc:
            self.seen.append((segment, exc))
            raise
        self.seen.append((segment, result))
        return result


def approval() -> Any:
    flow = create_flow("approval").node("a", lambda n: 1).wait("approve").node("done", echo)
    flow.edge("a", "approve").edge("approve", "done", action="yes")
    flow.edge("approve", "a", action="again")
    return flow


async def test_every_kind_of_call_is_one_segment() -> None:
    """run, resume, fire and cancel each pass once through around_segment, with what they are."""
    clock = FakeClock()
    flow = approval()
    bp = flow.to_blueprint()
    rec = Recorder()
    rt = FlowRuntime(registry=flow.registry, clock=clock, middleware=[rec])
    first = await rt.run(bp, run_id="r1")
    second = await rt.resume(bp, first, Resume(output="ok", action="yes", by="ann"))
    timed = create_flow("t").sleep("nap", duration=60).node("b", echo)
    timed.edge("nap", "b")
    rt.registry = timed.registry
    napping = await rt.run(timed.to_blueprint(), run_id="r2")
    clock.advance(60)
    fired = await rt.fire(timed.to_blueprint(), napping, "nap")
    other = await rt.run(bp, run_id="r3", registry=flow.registry)
    await rt.cancel(bp, other, reason="no", by="bob", registry=flow.registry)
    kinds = [(s.kind, s.flow_id, s.run_id, s.revision) for s, _ in rec.seen]
    assert kinds == [
        ("run", "approval", "r1", 0),
        ("resume", "approval", "r1", 1),
        ("run", "t", "r2", 0),
        ("fire", "t", "r2", 1),
        ("run", "approval", "r3", 0),
        ("cancel", "approval", "r3", 1),
    ]
    resumed = rec.seen[1][0]
    assert (resumed.action, resumed.by, resumed.node_id) == ("yes", "ann", None)
    assert [a.node_id for a in resumed.awaiting] == ["approve"]
    assert rec.seen[1][1] is second
    assert second.revision == 2
    assert rec.seen[3][0].started_at == clock.now()
    assert isinstance(rec.seen[3][1], RunResult)
    assert rec.seen[3][1].revision == fired.revision
    assert rec.seen[5][0].by == "bob"


async def test_a_segment_hook_keeps_the_shortcuts() -> None:
    """A middleware overriding only around_segment does not force the general engine."""
    rt = FlowRuntime(middleware=[Recorder()])
    assert rt._config.segment_hooks
    assert not rt._config.has_hooks
    assert rt._config.line == rt._config.fast
    plain = FlowRuntime(middleware=[Middleware()])  # overrides nothing: nothing to call
    assert not plain._config.segment_hooks
    assert not plain._config.has_hooks


async def test_carry_travels_in_the_context_to_the_next_segment() -> None:
    """What a hook writes in carry is in the result, in the signed bytes, and the next trace."""
    flow = approval()
    bp = flow.to_blueprint()
    writer = Recorder({"traceparent": "00-1-2-01"})
    keys = {"k": b"secret"}
    rt = FlowRuntime(registry=flow.registry, middleware=[writer], signing_keys=keys)
    first = await rt.run(bp)
    assert first.trace == {"traceparent": "00-1-2-01"}
    # Another process, no hooks: the headers decode and pass through untouched.
    reader = FlowRuntime(registry=flow.registry, signing_keys=keys)
    assert reader.inspect(bp, first.serialized_context).trace == {"traceparent": "00-1-2-01"}
    again = await reader.resume(bp, first.serialized_context, {"action": "again"})
    assert again.trace == {"traceparent": "00-1-2-01"}
    # A hook in a third process sees them as the previous segment's and replaces them.
    rec = Recorder({"traceparent": "00-3-4-01"})
    third = FlowRuntime(registry=flow.registry, middleware=[rec], signing_keys=keys)
    done = await third.resume(bp, again.serialized_context, {"action": "yes"})
    segment = rec.seen[0][0]
    assert segment.trace == {"traceparent": "00-1-2-01"}
    assert done.trace == segment.carry == {"traceparent": "00-3-4-01"}
    # The headers are signed with the rest.
    tampered = first.serialized_context.replace(b"00-1-2-01", b"00-9-2-01")
    with pytest.raises(ContextIntegrityError):
        reader.inspect(bp, tampered)


async def test_nothing_is_written_when_no_hook_writes() -> None:
    """A hook that leaves carry alone changes no byte of any context."""
    flow = approval()
    bp = flow.to_blueprint()
    clock = FakeClock()
    bare = FlowRuntime(registry=flow.registry, clock=clock)
    hooked = FlowRuntime(registry=flow.registry, clock=clock, middleware=[Recorder()])
    a = await bare.run(bp, run_id="r")
    b = await hooked.run(bp, run_id="r")
    assert a.serialized_context == b.serialized_context
    assert b.trace == {}
    a2 = await bare.resume(bp, a, {"output": 1, "action": "yes"})
    b2 = await hooked.resume(bp, b, {"output": 1, "action": "yes"})
    assert a2.serialized_context == b2.serialized_context


async def test_a_refused_resume_raises_through_the_hook_and_changes_nothing() -> None:
    """call_next raises the caller's mistake; the context stays usable as it was."""
    flow = approval()
    bp = flow.to_blueprint()
    rec = Recorder({"traceparent": "x"})
    rt = FlowRuntime(registry=flow.registry, middleware=[rec])
    first = await rt.run(bp)
    with pytest.raises(UnknownActionError):
        await rt.resume(bp, first, {"action": "maybe"})
    assert isinstance(rec.seen[-1][1], UnknownActionError)
    assert rec.seen[-1][0].action == "maybe"
    done = await rt.resume(bp, first, {"action": "yes"})
    assert done.status == "completed"


async def test_scheduler_firings_are_segments() -> None:
    """The in-process scheduler's firings pass through around_segment as kind fire."""
    clock = FakeClock()
    flow = create_flow("f").sleep("nap", duration=60).node("b", echo)
    flow.edge("nap", "b")
    rec = Recorder()
    rt = FlowRuntime(registry=flow.registry, clock=clock, middleware=[rec])
    results: list[RunResult] = []
    async with rt.scheduler(interval=1.0, on_result=results.append):
        await rt.run(flow.to_blueprint())
        clock.advance(60)
        await anyio.wait_all_tasks_blocked()
    assert [r.status for r in results] == ["completed"]
    assert [(s.kind, s.node_id) for s, _ in rec.seen] == [("run", None), ("fire", "nap")]
    assert rec.seen[1][0].awaiting[0].wake_at == rec.seen[1][0].started_at


async def test_segment_hooks_nest_first_outermost() -> None:
    """Several segment hooks nest in order; node hooks still run per node."""
    order: list[str] = []

    class Named(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        async def around_segment(
            self, segment: Segment, call_next: Callable[[], Awaitable[RunResult]]
        ) -> RunResult:
            order.append(f"{self.name}>")
            result = await call_next()
            order.append(f"<{self.name}")
            return result

        async def before_node(self, node: NodeContext) -> None:
            order.append(f"{self.name}:{node.node_id}")

    flow = create_flow("f").node("a", lambda n: 1)
    rt = FlowRuntime(registry=flow.registry, middleware=[Named("outer"), Named("inner")])
    await rt.run(flow.to_blueprint())
    assert order == ["outer>", "inner>", "outer:a", "inner:a", "<inner", "<outer"]


@pytest.mark.parametrize("serializer", ["msgpack", "json"])
async def test_headers_only_add_a_field_at_the_end(serializer: str) -> None:
    """A traced context is the plain one plus one last field; plain decoders skip it."""
    import msgspec

    from flowcraft._envelope.records import Envelope

    flow = approval()
    bp = flow.to_blueprint()
    clock = FakeClock()
    plain = FlowRuntime(registry=flow.registry, clock=clock, serializer=serializer)
    traced = FlowRuntime(
        registry=flow.registry,
        clock=clock,
        serializer=serializer,
        middleware=[Recorder({"traceparent": "00-ab-cd-01"})],
    )
    a = await plain.run(bp, run_id="r")
    b = await traced.run(bp, run_id="r")
    decode = msgspec.json.decode if serializer == "json" else msgspec.msgpack.decode
    assert decode(b.serialized_context)[:-1] == decode(a.serialized_context)
    assert decode(b.serialized_context)[-1] == {"traceparent": "00-ab-cd-01"}
    # An older flowcraft (a plain envelope decoder) reads it, ignoring the headers.
    old = decode(b.serialized_context, type=Envelope)
    assert old == decode(a.serialized_context, type=Envelope)
    # A runtime without hooks carries them on; text contexts too.
    text = b.serialized_context.decode() if serializer == "json" else b.serialized_context
    again = await plain.resume(bp, text, {"action": "again"})
    assert again.trace == {"traceparent": "00-ab-cd-01"}
    assert decode(again.serialized_context)[-1] == {"traceparent": "00-ab-cd-01"}
