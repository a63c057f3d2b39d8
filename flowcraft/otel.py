"""OpenTelemetry traces and metrics that follow a run across its pauses (extra ``otel``).

``instrument(runtime)`` (or ``instrument(service)``) is the one call::

    from flowcraft.otel import instrument

    instrumentation = instrument(service)          # or instrument(runtime)
    async with instrumentation.watch(interval=15):  # service gauges: refreshed in the background
        ...

Traces: a span per segment (``flowcraft.run``, ``flowcraft.resume``, ``flowcraft.fire``,
``flowcraft.cancel``) and, with ``nodes=True``, a child span per node attempt (``flowcraft.node
<id>``: retries are separate spans, failures recorded as exception events). The segment's
trace context travels in the run's context (``RunResult.trace``, signed with it); the segment
that continues the run — in another process, days later — carries a span link to it. For a
service, the segment span also covers the claim (its store write is a child span
``flowcraft.claim``), and the commit that stores the result is a child span ``flowcraft.commit``
(it ends after its parent: the segment span measures the claim and the execution).

Metrics: ``flowcraft.runs.started``, ``flowcraft.runs.finished`` (by ``flowcraft.status``),
``flowcraft.segment.duration``, ``flowcraft.resume.latency`` (pause to decision),
``flowcraft.timer.lag`` and ``flowcraft.timer.failures`` (firings that raised; for a service,
every run the durable scheduler faulted and backed off, and every failed scheduler tick); for a
service, observable gauges ``flowcraft.runs.awaiting``, ``flowcraft.wait.oldest_age`` and
``flowcraft.timers.faulted`` per flow, ``flowcraft.scheduler.lag`` and
``flowcraft.scheduler.tick_age``.

Depends on ``opentelemetry-api`` only, and never configures an SDK or exporter: the
application does (see the README). Without an SDK the spans are non-recording and nothing
is written to contexts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace import Link, Span, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised in a subprocess (tests/adapters)
    raise ImportError(
        "flowcraft.otel needs OpenTelemetry's API: pip install 'flowcraft[otel]'"
    ) from exc

from flowcraft import (
    Awaiting,
    FlowRuntime,
    FlowService,
    Middleware,
    NodeContext,
    NodeResult,
    RunResult,
    Segment,
    ServiceEvent,
    TimerNotDueError,
    __version__,
)

__all__ = ["ATTRIBUTES", "METRICS", "SPAN_NAMES", "Instrumentation", "instrument"]

log = logging.getLogger("flowcraft.otel")

#: Span name of each kind of segment, and of a service's claim and commit (children of the
#: segment span); a node attempt's span is ``"flowcraft.node <node id>"``.
SPAN_NAMES: Mapping[str, str] = {
    "run": "flowcraft.run",
    "resume": "flowcraft.resume",
    "fire": "flowcraft.fire",
    "cancel": "flowcraft.cancel",
    "claim": "flowcraft.claim",
    "commit": "flowcraft.commit",
}
FLOW_ID = "flowcraft.flow.id"
RUN_ID = "flowcraft.run.id"
NODE_ID = "flowcraft.node.id"
ACTION = "flowcraft.action"
STATUS = "flowcraft.status"
REVISION = "flowcraft.revision"
ATTEMPT = "flowcraft.node.attempt"
KIND = "flowcraft.segment.kind"
AWAITING = "flowcraft.awaiting"
ERROR_TYPE = "error.type"
#: Every attribute name this module writes (pinned by the tests).
ATTRIBUTES = (FLOW_ID, RUN_ID, NODE_ID, ACTION, STATUS, REVISION, ATTEMPT, KIND, AWAITING)
#: Every metric this module records, with its unit.
METRICS: Mapping[str, str] = {
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
_FINISHED = frozenset({"completed", "failed", "cancelled"})
#: The segment whose nodes are running (node spans read its flow id).
_SEGMENT: ContextVar[Segment | None] = ContextVar("flowcraft_otel_segment", default=None)
#: The service's claim this task made last, until the segment it starts takes it.
_CLAIM: ContextVar[ServiceEvent | None] = ContextVar("flowcraft_otel_claim", default=None)
#: The run and span of the segment this task ran last (its commit is a child of that span).
_LAST: ContextVar[tuple[str, trace.SpanContext] | None] = ContextVar(
    "flowcraft_otel_last", default=None
)


def instrument(
    target: FlowRuntime | FlowService,
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    propagator: TextMapPropagator | None = None,
    nodes: bool = True,
) -> Instrumentation:
    """Trace and measure every segment ``target`` executes; return the handle to undo it.

    Adds one ``Middleware`` (outermost) to the runtime (a service's runtime for a service).
    ``tracer_provider``/``meter_provider`` default to the global ones. ``propagator`` writes
    the trace context into the run's context (default: W3C Trace Context only; pass
    ``opentelemetry.propagate.get_global_textmap()`` to carry baggage too). ``nodes=False``
    keeps segment spans and metrics only: no span per node, and the runtime keeps its
    shortcuts. For a service, the per-flow gauges report what ``Instrumentation.refresh``
    last read (``Instrumentation.watch`` refreshes in the background), and a listener added to
    ``FlowService.listeners`` traces claims and commits and counts the durable scheduler's
    faults and ticks.
    """
    service = target if isinstance(target, FlowService) else None
    runtime = target.runtime if isinstance(target, FlowService) else target
    tracer = trace.get_tracer("flowcraft", __version__, tracer_provider)
    meter = metrics.get_meter("flowcraft", __version__, meter_provider)
    cls = _NodeTracing if nodes else _SegmentTracing
    middleware = cls(tracer, meter, propagator or TraceContextTextMapPropagator())
    runtime.middleware = [
        middleware,
        *(m for m in runtime.middleware if not isinstance(m, _SegmentTracing)),
    ]
    inst = Instrumentation(runtime, middleware, service)
    if service is not None:
        inst._gauges(meter)
        for listener in list(service.listeners):
            if isinstance(getattr(listener, "__self__", None), Instrumentation):
                service.listeners.remove(listener)  # instrumenting again replaces
        service.listeners.append(inst._heard)
    return inst


@dataclass(eq=False)
class _Snapshot:
    """What the service gauges report: read by ``refresh``, aged at collection time."""

    awaiting: dict[str, int] = field(default_factory=dict)
    oldest: dict[str, datetime] = field(default_factory=dict)
    faulted: dict[str, int] = field(default_factory=dict)
    lag: float | None = None


class Instrumentation:
    """What ``instrument`` did: undo it, and keep a service's gauges fresh."""

    def __init__(
        self, runtime: FlowRuntime, middleware: Middleware, service: FlowService | None
    ) -> None:
        self.runtime = runtime
        self.middleware = middleware
        self.service = service
        self.active = True
        #: How many awaiting runs (oldest first) ``refresh`` looks at for ``timers.faulted``.
        self.fault_scan = 1000
        self._snapshot = _Snapshot()
        self._last_tick: datetime | None = None

    def __repr__(self) -> str:
        return f"flowcraft.otel.Instrumentation(active={self.active}, service={self.service!r})"

    def uninstrument(self) -> None:
        """Remove the middleware; the gauges report nothing from now on."""
        self.runtime.middleware = [m for m in self.runtime.middleware if m is not self.middleware]
        if self.service is not None and self._heard in self.service.listeners:
            self.service.listeners.remove(self._heard)
        self.active = False

    async def refresh(self) -> None:
        """Read the service's per-flow numbers for the gauges: two index-backed questions.

        ``FlowService.stats()`` gives the awaiting runs and the oldest ``awaiting_since`` of
        each flow (no run is read); ``FlowService.health(scan=fault_scan)`` the scheduler lag
        (the due index) and the faulted runs among the ``fault_scan`` oldest awaiting and
        running ones.
        """
        service = self.service
        if service is None:
            raise TypeError("refresh() needs an instrumented FlowService, not a FlowRuntime")
        stats = await service.stats()
        health = await service.health(scan=self.fault_scan)
        faulted: dict[str, int] = {}
        for fault in health.faults:
            faulted[fault.flow_id] = faulted.get(fault.flow_id, 0) + 1
        self._snapshot = _Snapshot(
            awaiting=dict(stats.awaiting_by_flow),
            oldest=dict(stats.awaiting_since_by_flow),
            faulted=faulted,
            lag=health.scheduler_lag,
        )

    @asynccontextmanager
    async def watch(self, interval: float = 15.0) -> AsyncIterator[Instrumentation]:
        """Refresh the service gauges every ``interval`` seconds (runtime clock) while open."""
        import anyio

        service = self.service
        if service is None:
            raise TypeError("watch() needs an instrumented FlowService, not a FlowRuntime")

        async def loop() -> None:
            while True:
                try:
                    await self.refresh()
                except Exception:  # a store that is down must not stop the loop
                    log.exception("flowcraft.otel: refreshing service gauges")
                await service.runtime.clock.sleep(interval)

        async with anyio.create_task_group() as tg:
            tg.start_soon(loop)
            try:
                yield self
            finally:
                tg.cancel_scope.cancel()

    def _gauges(self, meter: metrics.Meter) -> None:
        def per_flow(values: Callable[[_Snapshot, datetime], Mapping[str, float]]) -> Any:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                if not self.active or self.service is None:
                    return []
                now = self.service.runtime.clock.now()
                found = values(self._snapshot, now)
                return [Observation(v, {FLOW_ID: flow}) for flow, v in found.items()]

            return callback

        def lag(options: CallbackOptions) -> Iterable[Observation]:
            value = self._snapshot.lag
            if not self.active or self.service is None or value is None:
                return []
            return [Observation(value)]

        def tick_age(options: CallbackOptions) -> Iterable[Observation]:
            last = self._last_tick
            if not self.active or self.service is None or last is None:
                return []
            now = self.service.runtime.clock.now()
            return [Observation(max(0.0, (now - last).total_seconds()))]

        meter.create_observable_gauge(
            "flowcraft.runs.awaiting",
            [per_flow(lambda s, now: s.awaiting)],
            unit="{run}",
            description="Runs awaiting a decision or a timer, per flow.",
        )
        meter.create_observable_gauge(
            "flowcraft.wait.oldest_age",
            [
                per_flow(
                    lambda s, now: {
                        f: max(0.0, (now - t).total_seconds()) for f, t in s.oldest.items()
                    }
                )
            ],
            unit="s",
            description="How long the longest-waiting awaiting run of each flow has waited.",
        )
        meter.create_observable_gauge(
            "flowcraft.timers.faulted",
            [per_flow(lambda s, now: s.faulted)],
            unit="{run}",
            description="Awaiting runs whose last timer firing failed (backed off), per flow.",
        )
        meter.create_observable_gauge(
            "flowcraft.scheduler.lag",
            [lag],
            unit="s",
            description="How overdue the first due timer or expiry of the service is.",
        )
        meter.create_observable_gauge(
            "flowcraft.scheduler.tick_age",
            [tick_age],
            unit="s",
            description="Time since a scheduler of this process last ticked without failing.",
        )

    def _heard(self, event: ServiceEvent) -> None:
        """``FlowService.listeners``: claims and commits as spans, faults and ticks counted."""
        if not self.active:
            return
        tracing = self.middleware
        assert isinstance(tracing, _SegmentTracing)
        kind = event.kind
        if kind == "claim":
            _CLAIM.set(event)
        elif kind == "commit":
            last = _LAST.get()
            if last is not None and last[0] == event.run_id:
                _LAST.set(None)
                parent = trace.set_span_in_context(trace.NonRecordingSpan(last[1]))
                tracing._step(event, parent)
        elif kind == "tick":
            if event.error is not None:
                tracing.failures.add(1, {KIND: "tick", ERROR_TYPE: _error_type(event.error)})
            elif self.service is not None:
                self._last_tick = self.service.runtime.clock.now()
        elif kind == "fault":
            attrs: dict[str, Any] = {KIND: "fire", FLOW_ID: event.flow_id or ""}
            if event.error is not None:
                attrs[ERROR_TYPE] = _error_type(event.error)
            tracing.failures.add(1, attrs)


class _SegmentTracing(Middleware):
    """A span and measurements per segment; the trace context written into the run's context."""

    def __init__(
        self, tracer: trace.Tracer, meter: metrics.Meter, propagator: TextMapPropagator
    ) -> None:
        self.tracer = tracer
        self.propagator = propagator
        self.started = meter.create_counter(
            "flowcraft.runs.started", unit="{run}", description="Runs started."
        )
        self.finished = meter.create_counter(
            "flowcraft.runs.finished",
            unit="{run}",
            description="Runs that ended, by flowcraft.status (completed, failed, cancelled).",
        )
        self.duration = meter.create_histogram(
            "flowcraft.segment.duration",
            unit="s",
            description="Wall time of one run/resume/fire/cancel call.",
        )
        self.latency = meter.create_histogram(
            "flowcraft.resume.latency",
            unit="s",
            description="Time from a pause to the resume or firing that ended it.",
        )
        self.lag = meter.create_histogram(
            "flowcraft.timer.lag",
            unit="s",
            description="How late a timer or wait expiry fired after its deadline.",
        )
        self.failures = meter.create_counter(
            "flowcraft.timer.failures",
            unit="{firing}",
            description="Firings of a timer or wait expiry that raised.",
        )

    def __repr__(self) -> str:
        return "flowcraft.otel.Middleware()"

    async def around_segment(
        self, segment: Segment, call_next: Callable[[], Awaitable[RunResult]]
    ) -> RunResult:
        """Wrap the segment in a span linked to the one that paused the run."""
        flow = {FLOW_ID: segment.flow_id}
        attributes: dict[str, Any] = {FLOW_ID: segment.flow_id, RUN_ID: segment.run_id}
        if segment.node_id is not None:
            attributes[NODE_ID] = segment.node_id
        if segment.action is not None:
            attributes[ACTION] = segment.action
        links = self._links(segment)
        claimed = _CLAIM.get()
        if claimed is not None:
            _CLAIM.set(None)
            if claimed.run_id != segment.run_id:
                claimed = None
        span = self.tracer.start_span(
            SPAN_NAMES[segment.kind],
            attributes=attributes,
            links=links,
            start_time=claimed.start_ns if claimed is not None else None,
        )
        ctx = trace.set_span_in_context(span)
        if claimed is not None:
            self._step(claimed, ctx)
        _LAST.set((segment.run_id, span.get_span_context()) if claimed is not None else None)
        if span.get_span_context().is_valid:
            # The next segment links here. Nothing is written when no SDK records spans.
            segment.carry.clear()
            self.propagator.inject(segment.carry, context=ctx)
        if segment.kind == "run":
            self.started.add(1, flow)
        token = otel_context.attach(ctx)
        mark = _SEGMENT.set(segment)
        start = time.perf_counter()
        try:
            result = await call_next()
        except BaseException as exc:
            elapsed = time.perf_counter() - start
            kind = type(exc).__qualname__
            self.duration.record(elapsed, {**flow, KIND: segment.kind, STATUS: "error"})
            if (
                segment.kind == "fire"
                and claimed is None  # a service's firing: counted by its fault event
                and isinstance(exc, Exception)
                and not isinstance(exc, TimerNotDueError)
            ):
                self.failures.add(1, {**flow, ERROR_TYPE: kind})
            if isinstance(exc, Exception):
                span.record_exception(exc)
                span.set_attribute(ERROR_TYPE, kind)
                span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))
            span.end()
            raise
        finally:
            _SEGMENT.reset(mark)
            otel_context.detach(token)
        elapsed = time.perf_counter() - start
        self.duration.record(elapsed, {**flow, KIND: segment.kind, STATUS: result.status})
        if result.status in _FINISHED:
            self.finished.add(1, {**flow, STATUS: result.status})
        if segment.kind in ("resume", "fire"):
            self._waited(segment, flow)
        if span.is_recording():
            span.set_attribute(STATUS, result.status)
            span.set_attribute(REVISION, result.revision)
            if segment.kind == "run":
                span.set_attribute(RUN_ID, result.run_id)
            if result.status == "awaiting":
                span.set_attribute(AWAITING, [a.node_id for a in result.awaiting])
            failures = [e for e in result.errors if e.routed is None]
            if result.status == "failed" and failures:
                err = failures[0]
                span.set_status(
                    Status(StatusCode.ERROR, f"node {err.node_id!r}: {err.type}: {err.message}")
                )
        span.end()
        return result

    def _step(self, event: ServiceEvent, parent: otel_context.Context) -> None:
        """A service's claim or commit as a span of its own, timed by the service."""
        span = self.tracer.start_span(
            SPAN_NAMES[event.kind], context=parent, start_time=event.start_ns
        )
        if span.is_recording():
            span.set_attribute(FLOW_ID, event.flow_id or "")
            span.set_attribute(RUN_ID, event.run_id or "")
            if event.revision is not None:
                span.set_attribute(REVISION, event.revision)
            if event.status is not None:
                span.set_attribute(STATUS, event.status)
        span.end(end_time=event.end_ns)

    def _links(self, segment: Segment) -> list[Link]:
        if not segment.trace:
            return []
        found = trace.get_current_span(self.propagator.extract(segment.trace))
        previous = found.get_span_context()
        if not previous.is_valid:
            return []
        return [Link(previous, {REVISION: segment.revision})]

    def _waited(self, segment: Segment, flow: dict[str, Any]) -> None:
        """Record how long the resumed waits waited, and how late a firing was."""
        targets: list[Awaiting] = [
            a for a in segment.awaiting if segment.node_id in (None, a.node_id)
        ]
        if not targets:
            return
        at = segment.started_at
        since = min(a.since for a in targets)
        attrs = {**flow, KIND: segment.kind}
        if len(targets) == 1:
            attrs[NODE_ID] = targets[0].node_id
        self.latency.record(max(0.0, (at - since).total_seconds()), attrs)
        if segment.kind == "fire":
            target = targets[0]
            due = target.wake_at if target.reason == "timer" else target.expires_at
            if due is not None:
                self.lag.record(max(0.0, (at - due).total_seconds()), attrs)


class _NodeTracing(_SegmentTracing):
    """Also a span per node attempt, a child of its segment's span."""

    async def around_node(self, node: NodeContext, call_next: Callable[[], Awaitable[Any]]) -> Any:
        """Wrap one attempt of a node in a span; a failure is an exception event."""
        segment = _SEGMENT.get()
        span: Span = self.tracer.start_span(f"flowcraft.node {node.node_id}")
        if span.is_recording():
            if segment is not None:
                span.set_attribute(FLOW_ID, segment.flow_id)
            span.set_attribute(RUN_ID, node.run_id)
            span.set_attribute(NODE_ID, node.node_id)
            span.set_attribute(ATTEMPT, node.attempt)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = await call_next()
            if span.is_recording():
                action = _action(result)
                if action is not None:
                    span.set_attribute(ACTION, action)
            return result
        except Exception as exc:
            kind = type(exc).__qualname__
            span.record_exception(exc)
            span.set_attribute(ERROR_TYPE, kind)
            span.set_status(Status(StatusCode.ERROR, f"{kind}: {exc}"))
            raise
        except BaseException as exc:  # the node paused (node.pause()) or was cancelled
            span.add_event("flowcraft.node.interrupted", {ERROR_TYPE: type(exc).__qualname__})
            raise
        finally:
            otel_context.detach(token)
            span.end()


def _error_type(exc: BaseException) -> str:
    """The exception's class name; a group of one (a task group's) names what it holds."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return type(exc).__qualname__


def _action(result: Any) -> str | None:
    """The action a node's return value chose (``NodeResult`` or a TS-shaped dict)."""
    if isinstance(result, NodeResult):
        return result.action
    if type(result) is dict and result and result.keys() <= {"output", "action"}:
        action = result.get("action")
        return action if isinstance(action, str) else None
    return None
