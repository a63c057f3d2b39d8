"""The flow the OpenTelemetry tests pause in one process and resume in another.

``main`` is the other process (run it imported, so the flow's functions keep their module
name and the blueprint its digest): it reads a context (hex) on stdin, resumes it with its own
in-memory span exporter, and prints the spans and the new context as JSON.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from flowcraft import Flow, FlowRuntime, NodeContext, create_flow

KEYS = {"k1": b"otel-secret"}


def echo(n: NodeContext) -> Any:
    return n.input


def approval() -> Flow:
    flow = create_flow("expense").node("submit", lambda n: {"amount": 40})
    flow.wait("approve").node("pay", echo)
    flow.edge("submit", "approve").edge("approve", "pay", action="yes")
    return flow


def spans_json(spans: Any) -> list[dict[str, Any]]:
    out = []
    for s in spans:
        out.append(
            {
                "name": s.name,
                "trace_id": s.context.trace_id,
                "span_id": s.context.span_id,
                "parent": s.parent.span_id if s.parent is not None else None,
                "attributes": dict(s.attributes or {}),
                "links": [
                    {
                        "trace_id": link.context.trace_id,
                        "span_id": link.context.span_id,
                        "attributes": dict(link.attributes or {}),
                    }
                    for link in s.links
                ],
            }
        )
    return out


async def resume_here(context: bytes) -> dict[str, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from flowcraft.otel import instrument

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    flow = approval()
    runtime = FlowRuntime(registry=flow.registry, signing_keys=KEYS)
    instrument(runtime, tracer_provider=provider)
    result = await runtime.resume(flow.to_blueprint(), context, {"output": "ok", "action": "yes"})
    return {
        "status": result.status,
        "context": result.serialized_context.hex(),
        "spans": spans_json(exporter.get_finished_spans()),
    }


def main() -> None:
    import anyio

    data = bytes.fromhex(sys.stdin.read().strip())
    print(json.dumps(anyio.run(resume_here, data)))
