"""What ``flowcraft.otel`` costs: ``python -m benchmarks.otel`` (needs ``opentelemetry-sdk``).

Each scenario of ``python -m benchmarks`` (approval, chain100, fanout20) runs on runtimes that
differ only in instrumentation, measured side by side in one process:

* ``off``: not instrumented (what every user who does not call ``instrument`` runs);
* ``noop``: instrumented, no SDK configured (OpenTelemetry's no-op providers);
* ``segments``: an SDK recording spans and metrics, ``nodes=False`` (span processors and
  exporters excluded: a provider with none, so the cost is flowcraft's and the SDK's spans);
* ``nodes``: the same with a span per node attempt (the default).

Also prints the approval context's size at the pause, off and on.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

from . import flows
from ._harness import Settings, emit, measure, us


def _variants() -> dict[str, dict[str, Any] | None]:
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider()  # records spans; no processor, no exporter
    meter = MeterProvider(metric_readers=[InMemoryMetricReader()])
    noop = {
        "tracer_provider": trace.NoOpTracerProvider(),
        "meter_provider": metrics.NoOpMeterProvider(),
    }
    sdk = {"tracer_provider": tracer, "meter_provider": meter}
    return {
        "off": None,
        "noop": {**noop, "nodes": False},
        "segments": {**sdk, "nodes": False},
        "nodes": {**sdk, "nodes": True},
    }


def _op(scenario: str, how: dict[str, Any] | None) -> Any:
    from flowcraft.otel import instrument

    if scenario == "approval":
        flow = flows.approval_flow()
        bp = flow.to_blueprint()
        rt = flows._runtime(flow)
        if how is not None:
            instrument(rt, **how)

        async def approval() -> Any:
            first = await rt.run(bp)
            return await rt.resume(bp, first.serialized_context, flows.RESUME, "approve")

        return approval
    flow = flows.chain_flow(100) if scenario == "chain100" else flows.fanout_flow(20)
    bp = flow.to_blueprint()
    rt = flows._runtime(flow)
    if how is not None:
        instrument(rt, **how)

    async def run() -> Any:
        return await rt.run(bp)

    return run


async def main(quick: bool, rounds: int) -> None:
    settings = Settings.quick() if quick else Settings()
    variants = _variants()
    for scenario in ("approval", "chain100", "fanout20"):
        ops = {name: _op(scenario, how) for name, how in variants.items()}
        best: dict[str, float] = {}
        for _ in range(rounds):  # interleaved rounds: the neighbours' noise hits every variant
            for name, op in ops.items():
                t = await measure(op, settings)
                best[name] = min(best.get(name, t), t)
        base = best["off"]
        for name, t in best.items():
            ratio = round(t / base, 3)
            emit({"scenario": scenario, "otel": name, "us_per_op": us(t), "vs_off": ratio})
    for name in ("off", "nodes"):
        flow = flows.approval_flow()
        rt = flows._runtime(flow)
        how = variants[name]
        if how is not None:
            from flowcraft.otel import instrument

            instrument(rt, **how)
        first = await rt.run(flow.to_blueprint())
        emit({"scenario": "approval-context", "otel": name, "bytes": len(first.serialized_context)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    anyio.run(main, args.quick, args.rounds)
