"""flowcraft.otel: spans per segment and node attempt, links across pauses, metrics, gauges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from flowcraft import FlowRuntime, FlowService, NodeContext, NodeResult, create_flow
from flowcraft.otel import ATTRIBUTES, METRICS, SPAN_NAMES, instrument
from flowcraft.stores import MemoryStore
from flowcraft.testing import FakeClock
from tests.adapters._otel_flow import KEYS, approval, echo, spans_json
from tests.adapters.conftest import points

ROOT = Path(__file__).resolve().parents[2]


def per_flow(found: dict[str, list[Any]], name: str) -> dict[str, Any]:
    return {p.attributes["flowcraft.flow.id"]: p.value for p in found[name]}


def by_name(finished: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name == name]


def test_names_are_pinned() -> None:
    """Span, attribute and metric names are a contract: dashboards depend on them."""
    assert dict(SPAN_NAMES) == {
        "run": "flowcraft.run",
        "resume": "flowcraft.resume",
        "fire": "flowcraft.fire",
        "cancel": "flowcraft.cancel",
        "claim": "flowcraft.claim",
        "commit": "flowcraft.commit",
    }
    assert ATTRIBUTES == (
        "flowcraft.flow.id",
        "flowcraft.run.id",
        "flowcraft.node.id",
        "flowcraft.action",
        "flowcraft.status",
        "flowcraft.revision",
        "flowcraft.node.attempt",
        "flowcraft.segment.kind",
        "flowcraft.awaiting",
    )
    assert dict(METRICS) == {
        "flowcraft.runs.started": "{run}",
        "flowcraft.runs.finished": "{run}",
        "flowcraft.segment.duration": "s",
        "flowcraft.resume.latency": "s",
        "flowcraft.timer.lag": "s",
        "flowcraft.timer.failures": "{firing}",
        "flowcraft.runs.awaiting": "{run}",
        "flowcraft.wait.oldest_age": "s",
        "flowcraft.scheduler.lag": "s",
        "flowcraft.timers.faulted": "{run}",
        "flowcraft.scheduler.tick_age": "s",
    }


async def test_segment_and_node_spans_with_their_attributes(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A run and its resume: one span per segment, node spans as children, attributes set."""
    provider, exporter = spans
    flow = approval()
    bp = flow.to_blueprint()
    runtime = FlowRuntime(registry=flow.registry)
    instrument(runtime, tracer_provider=provider)
    first = await runtime.run(bp, run_id="r1")
    done = await runtime.resume(bp, first, {"output": "ok", "action": "yes"})
    assert done.status == "completed"
    finished = exporter.get_finished_spans()
    [run] = by_name(finished, "flowcraft.run")
    [resume] = by_name(finished, "flowcraft.resume")
    [submit] = by_name(finished, "flowcraft.node submit")
    [pay] = by_name(finished, "flowcraft.node pay")
    assert dict(run.attributes or {}) == {
        "flowcraft.flow.id": "expense",
        "flowcraft.run.id": "r1",
        "flowcraft.status": "awaiting",
        "flowcraft.revision": 1,
        "flowcraft.awaiting": ("approve",),
    }
    assert dict(resume.attributes or {}) == {
        "flowcraft.flow.id": "expense",
        "flowcraft.run.id": "r1",
        "flowcraft.action": "yes",
        "flowcraft.status": "completed",
        "flowcraft.revision": 2,
    }
    assert dict(submit.attributes or {}) == {
        "flowcraft.flow.id": "expense",
        "flowcraft.run.id": "r1",
        "flowcraft.node.id": "submit",
        "flowcraft.node.attempt": 1,
    }
    assert submit.parent is not None
    assert submit.parent.span_id == run.context.span_id
    assert pay.parent is not None
    assert pay.parent.span_id == resume.context.span_id
    # The resume is linked to the segment that paused, and the context carries its id.
    assert [link.context.span_id for link in resume.links] == [run.context.span_id]
    assert first.trace["traceparent"].split("-")[2] == f"{run.context.span_id:016x}"
    assert done.trace["traceparent"].split("-")[2] == f"{resume.context.span_id:016x}"


async def test_a_resume_in_a_fresh_process_links_back_to_the_pause(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Paused here, resumed in a new process from the signed bytes: two traces, one link."""
    provider, exporter = spans
    flow = approval()
    runtime = FlowRuntime(registry=flow.registry, signing_keys=KEYS)
    instrument(runtime, tracer_provider=provider)
    first = await runtime.run(flow.to_blueprint())
    [run] = by_name(exporter.get_finished_spans(), "flowcraft.run")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", "from tests.adapters._otel_flow import main; main()"],
        input=first.serialized_context.hex(),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        check=True,
    )
    other = json.loads(proc.stdout)
    assert other["status"] == "completed"
    [resume] = [s for s in other["spans"] if s["name"] == "flowcraft.resume"]
    assert resume["trace_id"] != run.context.trace_id
    assert resume["parent"] is None
    assert resume["links"] == [
        {
            "trace_id": run.context.trace_id,
            "span_id": run.context.span_id,
            "attributes": {"flowcraft.revision": 1},
        }
    ]
    [pay] = [s for s in other["spans"] if s["name"] == "flowcraft.node pay"]
    assert pay["trace_id"] == resume["trace_id"]
    assert pay["parent"] == resume["span_id"]
    # The bytes that came back are signed and carry the resuming segment's trace context.
    back = runtime.inspect(flow.to_blueprint(), bytes.fromhex(other["context"]))
    assert back.trace["traceparent"].split("-")[1] == f"{resume['trace_id']:032x}"


async def test_a_failing_node_shows_each_attempt(
    spans: tuple[TracerProvider, InMemorySpanExporter], fake_clock: FakeClock
) -> None:
    """Retries are separate spans; each failure is an exception event; the run span fails."""
    provider, exporter = spans
    calls: list[int] = []

    def flaky(n: NodeContext) -> Any:
        calls.append(n.attempt)
        raise ConnectionError(f"down on attempt {n.attempt}")

    flow = create_flow("retry").node("call", flaky, max_retries=3)
    runtime = FlowRuntime(registry=flow.registry, clock=fake_clock)
    instrument(runtime, tracer_provider=provider)
    result = await runtime.run(flow.to_blueprint(), run_id="r")
    assert result.status == "failed"
    finished = exporter.get_finished_spans()
    attempts = by_name(finished, "flowcraft.node call")
    assert [(s.attributes or {})["flowcraft.node.attempt"] for s in attempts] == [1, 2, 3]
    for span, n in zip(attempts, [1, 2, 3], strict=True):
        assert span.status.status_code is StatusCode.ERROR
        assert (span.attributes or {})["error.type"] == "ConnectionError"
        [event] = span.events
        assert event.name == "exception"
        assert (event.attributes or {})["exception.message"] == f"down on attempt {n}"
    [run] = by_name(finished, "flowcraft.run")
    assert run.status.status_code is StatusCode.ERROR
    assert "ConnectionError: down on attempt 3" in (run.status.description or "")
    assert (run.attributes or {})["flowcraft.status"] == "failed"


async def test_node_actions_and_refused_resumes(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """A node's chosen action is on its span; a refused resume is an error span, then retried."""
    provider, exporter = spans
    flow = create_flow("route").node("pick", lambda n: NodeResult(output=1, action="left"))
    flow.node("left", echo).wait("ok").node("end", echo)
    flow.edge("pick", "left", action="left").edge("left", "ok").edge("ok", "end", action="yes")
    runtime = FlowRuntime(registry=flow.registry)
    instrument(runtime, tracer_provider=provider)
    bp = flow.to_blueprint()
    first = await runtime.run(bp)
    [pick] = by_name(exporter.get_finished_spans(), "flowcraft.node pick")
    assert (pick.attributes or {})["flowcraft.action"] == "left"
    with pytest.raises(Exception, match="maybe"):
        await runtime.resume(bp, first, {"action": "maybe"})
    [refused] = by_name(exporter.get_finished_spans(), "flowcraft.resume")
    assert refused.status.status_code is StatusCode.ERROR
    assert (refused.attributes or {})["error.type"] == "UnknownActionError"
    await runtime.resume(bp, first, {"action": "yes"})
    assert len(by_name(exporter.get_finished_spans(), "flowcraft.resume")) == 2


async def test_metrics_of_runs_segments_resumes_and_timers(
    meters: tuple[MeterProvider, InMemoryMetricReader], fake_clock: FakeClock
) -> None:
    """Counters by outcome; durations; pause-to-decision latency; timer lag and failures."""
    provider, reader = meters
    flow = approval()
    bp = flow.to_blueprint()
    runtime = FlowRuntime(registry=flow.registry, clock=fake_clock)
    instrument(runtime, meter_provider=provider, nodes=False)
    first = await runtime.run(bp)
    fake_clock.advance(90)
    await runtime.resume(bp, first, {"action": "yes"})
    other = await runtime.run(bp)
    await runtime.cancel(bp, other)
    timed = create_flow("nap").sleep("z", duration=60).node("b", echo)
    timed.edge("z", "b")
    tbp = timed.to_blueprint()
    napping = await runtime.run(tbp, registry=timed.registry)
    fake_clock.advance(75)
    await runtime.fire(tbp, napping, "z", registry=timed.registry)
    again = await runtime.run(tbp, registry=timed.registry)
    with pytest.raises(Exception, match="not due"):
        await runtime.fire(tbp, again, "z", registry=timed.registry)
    found = points(reader)
    assert per_flow(found, "flowcraft.runs.started") == {"expense": 2, "nap": 2}
    finished = {
        (p.attributes["flowcraft.flow.id"], p.attributes["flowcraft.status"]): p.value
        for p in found["flowcraft.runs.finished"]
    }
    assert finished == {
        ("expense", "completed"): 1,
        ("expense", "cancelled"): 1,
        ("nap", "completed"): 1,
    }
    kinds = {
        (p.attributes["flowcraft.segment.kind"], p.attributes["flowcraft.status"]): p.count
        for p in found["flowcraft.segment.duration"]
        if p.attributes["flowcraft.flow.id"] == "expense"
    }
    assert kinds == {("run", "awaiting"): 2, ("resume", "completed"): 1, ("cancel", "cancelled"): 1}
    latency = {p.attributes["flowcraft.segment.kind"]: p for p in found["flowcraft.resume.latency"]}
    assert latency["resume"].sum == 90.0
    assert latency["resume"].attributes["flowcraft.node.id"] == "approve"
    assert latency["fire"].sum == 75.0
    [lag] = found["flowcraft.timer.lag"]
    assert lag.sum == 15.0
    assert "flowcraft.timer.failures" not in found  # a timer not yet due is not a failure


async def test_service_gauges_per_flow(
    meters: tuple[MeterProvider, InMemoryMetricReader], fake_clock: FakeClock
) -> None:
    """Awaiting runs, oldest wait and scheduler lag per flow, from the service's list."""
    provider, reader = meters
    timed = create_flow("nap").sleep("z", duration=60).node("b", echo)
    timed.edge("z", "b")
    service = FlowService(FlowRuntime(clock=fake_clock), MemoryStore(), flows=[approval(), timed])
    inst = instrument(service, meter_provider=provider)
    await service.start("expense", run_id="a")
    fake_clock.advance(100)
    await service.start("expense", run_id="b")
    await service.start("nap", run_id="c")
    fake_clock.advance(70)
    await inst.refresh()
    found = points(reader)
    assert per_flow(found, "flowcraft.runs.awaiting") == {"expense": 2, "nap": 1}
    assert per_flow(found, "flowcraft.wait.oldest_age") == {"expense": 170.0, "nap": 70.0}
    [lag] = found["flowcraft.scheduler.lag"]
    assert lag.value == 10.0
    await service.resume("a", {"action": "yes"})
    await inst.refresh()
    found = points(reader)
    assert per_flow(found, "flowcraft.runs.awaiting") == {"expense": 1, "nap": 1}
    inst.uninstrument()
    assert "flowcraft.runs.awaiting" not in points(reader)


async def test_watch_refreshes_on_the_service_clock(
    meters: tuple[MeterProvider, InMemoryMetricReader], fake_clock: FakeClock
) -> None:
    """watch() refreshes the gauges in the background, sleeping on the runtime's clock."""
    import anyio

    provider, reader = meters
    service = FlowService(FlowRuntime(clock=fake_clock), MemoryStore(), flows=[approval()])
    inst = instrument(service, meter_provider=provider)
    async with inst.watch(interval=5):
        await anyio.wait_all_tasks_blocked()
        assert "flowcraft.runs.awaiting" not in points(reader)
        await service.start("expense")
        fake_clock.advance(5)
        await anyio.wait_all_tasks_blocked()
        [point] = points(reader)["flowcraft.runs.awaiting"]
        assert point.value == 1


async def test_nothing_is_written_when_nothing_records(
    spans: tuple[TracerProvider, InMemorySpanExporter], fake_clock: FakeClock
) -> None:
    """Without an SDK (no-op provider) contexts are byte-identical to uninstrumented ones."""
    flow = approval()
    bp = flow.to_blueprint()
    bare = FlowRuntime(registry=flow.registry, clock=fake_clock)
    quiet = FlowRuntime(registry=flow.registry, clock=fake_clock)
    instrument(quiet, tracer_provider=trace.NoOpTracerProvider())
    a = await bare.run(bp, run_id="r")
    b = await quiet.run(bp, run_id="r")
    assert a.serialized_context == b.serialized_context
    assert b.trace == {}
    # Recording: the context grows by the traceparent only.
    provider, _ = spans
    loud = FlowRuntime(registry=flow.registry, clock=fake_clock)
    instrument(loud, tracer_provider=provider)
    c = await loud.run(bp, run_id="r")
    assert list(c.trace) == ["traceparent"]
    assert len(c.serialized_context) - len(a.serialized_context) < 80


def test_segments_only_keeps_the_shortcuts_and_uninstrument_undoes() -> None:
    """nodes=False adds no node hook; instrumenting twice replaces; uninstrument removes."""
    runtime = FlowRuntime()
    first = instrument(runtime, nodes=False)
    assert runtime._config.line == runtime._config.fast
    second = instrument(runtime)
    assert list(runtime.middleware) == [second.middleware]
    assert not runtime._config.line
    second.uninstrument()
    first.uninstrument()
    assert list(runtime.middleware) == []
    assert "Instrumentation" in repr(first)


def test_import_without_opentelemetry_names_the_extra() -> None:
    """Importing flowcraft.otel with OpenTelemetry missing says which extra to install."""
    code = (
        "import sys\n"
        "for name in list(sys.modules):\n"
        "    if name.startswith('opentelemetry'):\n"
        "        del sys.modules[name]\n"
        "sys.modules['opentelemetry'] = None\n"
        "try:\n"
        "    import flowcraft.otel\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "import flowcraft\n"
        "print('core ok', 'flowcraft.otel' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "pip install 'flowcraft[otel]'" in proc.stdout
    assert "core ok False" in proc.stdout


def test_the_core_never_imports_opentelemetry() -> None:
    """Importing flowcraft (and running a flow) loads no OpenTelemetry module."""
    code = (
        "import sys, anyio, flowcraft\n"
        "flow = flowcraft.create_flow('f').node('a', lambda n: 1)\n"
        "rt = flowcraft.FlowRuntime(registry=flow.registry)\n"
        "anyio.run(rt.run, flow.to_blueprint())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_spans_json_helper_reads_links() -> None:
    """The helper the subprocess uses reports what the assertions read (sanity)."""
    assert spans_json([]) == []
