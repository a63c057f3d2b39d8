"""Run the scenarios and print one JSON line per implementation (see README.md)."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
import msgspec

from . import floor, flows, peer_ts
from ._harness import Settings, emit, measure, us

LG = "langgraph"
TS = "flowcraft-ts"


@dataclass
class Run:
    """What one ``python -m benchmarks`` invocation knows: settings and cached peer results."""

    settings: Settings
    quick: bool
    peers: bool
    _lg: Any = None
    _lg_error: str | None = None
    _ts: dict[str, Any] | None = None
    _ts_error: str | None = None
    _ts_tried: bool = False
    failures: list[str] = field(default_factory=list)

    def langgraph(self) -> Any:
        """The LangGraph peer module, or ``None`` (``skip_reason(LG)`` says why)."""
        if not self.peers:
            self._lg_error = "--no-peers"
        elif self._lg is None and self._lg_error is None:
            try:
                from . import peer_langgraph
            except ImportError as exc:
                self._lg_error = f"langgraph not importable ({exc}); pip install langgraph"
            else:
                self._lg = peer_langgraph
        return self._lg

    def ts(self) -> dict[str, Any] | None:
        """Flowcraft TS timings (one Node process for every flow), or ``None``."""
        if not self.peers:
            self._ts_error = "--no-peers"
        elif not self._ts_tried:
            self._ts_tried = True
            try:
                self._ts = peer_ts.run(quick=self.quick)
            except peer_ts.PeerUnavailable as exc:
                self._ts_error = str(exc)
        return self._ts

    def skip_reason(self, peer: str) -> str:
        return (self._lg_error if peer == LG else self._ts_error) or "unavailable"


def _ratio(a: float, b: float | None) -> float | None:
    return round(a / b, 3) if b else None


def _report(
    run: Run,
    scenario: str,
    results: dict[str, float | None],
    *,
    extra: dict[str, dict[str, Any]] | None = None,
    targets: Callable[[dict[str, Any]], dict[str, bool]] | None = None,
    unit: str = "us_per_op",
) -> None:
    """Emit floor, flowcraft and peer lines for one scenario, with ratios between them."""
    extra = extra or {}
    base = results.get("floor")
    for impl, value in results.items():
        if value is None:
            emit({"scenario": scenario, "impl": impl, "skipped": run.skip_reason(impl)})
            continue
        rec: dict[str, Any] = {"scenario": scenario, "impl": impl, unit: value}
        rec["ratio_to_floor"] = _ratio(value, base)
        if impl.startswith("flowcraft") and impl != TS:
            peers = {p: _ratio(v, value) for p, v in results.items() if p in (LG, TS) and v}
            if peers:
                # How many times the peer's number is flowcraft's (>1: flowcraft wins).
                rec["speedup_vs" if unit == "us_per_op" else "times_smaller_than"] = peers
        rec.update(extra.get(impl, {}))
        if impl == "flowcraft" and targets is not None:
            rec["targets_met"] = targets(rec)
        emit(rec)


# --- scenarios ------------------------------------------------------------------------------


async def approval(run: Run) -> None:
    s = run.settings
    await flows.check_approval()
    results: dict[str, float | None] = {}
    extra: dict[str, dict[str, Any]] = {}

    results["floor"] = us(await measure(lambda: floor.approval(flows.RESUME), s))
    ctx = await floor.approval_run()
    extra["floor"] = {
        "parts_us": {
            "run": us(await measure(floor.approval_run, s)),
            "resume": us(await measure(lambda: floor.approval_resume(ctx, flows.RESUME), s)),
        }
    }

    results["flowcraft"] = us(await measure(flows.approval_op(), s))
    fl = flows.approval_flow()
    bp = fl.to_blueprint()
    rt = flows.FlowRuntime(registry=fl.registry)
    paused = (await rt.run(bp)).serialized_context
    extra["flowcraft"] = {
        "parts_us": {
            "run": us(await measure(lambda: rt.run(bp), s)),
            "resume": us(await measure(lambda: rt.resume(bp, paused, flows.RESUME, "approve"), s)),
        }
    }
    await _peers(run, "approval", results, extra, lambda lg: lg.approval_op())
    _report(
        run,
        "approval",
        results,
        extra=extra,
        targets=lambda r: {
            "ratio_to_floor<=8": r["ratio_to_floor"] <= 8,
            **_speedup_target(r, TS, 5),
        },
    )


async def chain100(run: Run) -> None:
    s, n = run.settings, 100
    results: dict[str, float | None] = {
        "floor": us(await measure(floor.make_chain(n), s)),
        "flowcraft": us(await measure(flows.run_op(flows.chain_flow(n), n), s)),
        "flowcraft-sync-nodes": us(
            await measure(flows.run_op(flows.chain_flow(n, sync=True), n), s)
        ),
    }
    extra: dict[str, dict[str, Any]] = {
        impl: {"us_per_node": round(v / n, 3)} for impl, v in results.items() if v
    }
    await _peers(run, "chain100", results, extra, lambda lg: lg.chain_op(n))
    _report(
        run,
        "chain100",
        results,
        extra=extra,
        targets=lambda r: {
            "ratio_to_floor<=10": r["ratio_to_floor"] <= 10,
            "us_per_node<=1.7": r["us_per_node"] <= 1.7,
            **_speedup_target(r, TS, 7),
        },
    )


async def fanout20(run: Run) -> None:
    s, n = run.settings, 20
    results: dict[str, float | None] = {
        "floor": us(await measure(floor.make_fanout(n), s)),
        "flowcraft": us(await measure(flows.run_op(flows.fanout_flow(n), n + 2), s)),
        # For information (no target): branches that suspend once each, so each needs a task.
        "flowcraft-suspending-branches": us(
            await measure(flows.run_op(flows.fanout_flow(n, suspending=True), n + 2), s)
        ),
    }
    extra: dict[str, dict[str, Any]] = {
        "flowcraft-suspending-branches": {
            "note": "each branch awaits anyio.lowlevel.checkpoint(): one task per branch"
        }
    }
    await _peers(run, "fanout20", results, extra, lambda lg: lg.fanout_op(n))
    _report(
        run,
        "fanout20",
        results,
        extra=extra,
        targets=lambda r: {
            "ratio_to_floor<=0.35": r["ratio_to_floor"] <= 0.35,
            **_speedup_target(r, TS, 1),
        },
    )


async def _scaling(
    run: Run, scenario: str, n: int, ref_n: int, make_floor: Any, make_flow: Any, extra_nodes: int
) -> None:
    s = run.settings
    s = Settings(**{**s.__dict__, "repeats": min(s.repeats, 3), "warmup": min(s.warmup, 1)})
    big = us(await measure(flows.run_op(make_flow(n), n + extra_nodes), s))
    small = us(await measure(flows.run_op(make_flow(ref_n), ref_n + extra_nodes), run.settings))
    chain_ref = us(await measure(flows.run_op(flows.chain_flow(100), 100), run.settings)) / 100
    per_node = big / (n + extra_nodes)
    ref_per_node = small / (ref_n + extra_nodes)
    floor_big = us(await measure(make_floor(n), s))
    floor_small = us(await measure(make_floor(ref_n), run.settings))
    floor_per_node = floor_big / (n + extra_nodes)
    floor_ref = floor_small / (ref_n + extra_nodes)
    results: dict[str, float | None] = {"floor": floor_big, "flowcraft": big}
    extra = {
        "floor": {
            "n": n,
            "us_per_node": round(floor_per_node, 3),
            f"us_per_node_at_{ref_n}": round(floor_ref, 3),
            "linearity": round(floor_per_node / floor_ref, 3),
        },
        "flowcraft": {
            "n": n,
            "us_per_node": round(per_node, 3),
            f"us_per_node_at_{ref_n}": round(ref_per_node, 3),
            "linearity": round(per_node / ref_per_node, 3),
            "us_per_node_chain100": round(chain_ref, 3),
        },
    }
    _report(
        run,
        scenario,
        results,
        extra=extra,
        targets=lambda r: {"linearity<=1.5": r["linearity"] <= 1.5},
    )


async def chain10000(run: Run) -> None:
    n = 200 if run.quick else 10_000
    await _scaling(run, "chain10000", n, 100, floor.make_chain, flows.chain_flow, 0)


async def fanout5000(run: Run) -> None:
    n = 50 if run.quick else 5_000
    ref = 10 if run.quick else 100
    await _scaling(run, "fanout5000", n, ref, floor.make_fanout, flows.fanout_flow, 2)


async def timers10000(run: Run) -> None:
    n = 20 if run.quick else 10_000
    repeats = 1 if run.quick else 3
    await flows.timers(min(n, 200))  # warm-up
    samples = [await flows.timers(n) for _ in range(repeats)]
    register = statistics.median(r for r, _ in samples)
    fire = statistics.median(f for _, f in samples)

    async def floor_op() -> int:
        return await floor.timers(n)

    s = run.settings
    results: dict[str, float | None] = {
        "floor": us(await measure(floor_op, s)) / n,
        "flowcraft": us(fire),
    }
    results = {k: round(v, 3) if v else v for k, v in results.items()}
    extra = {
        "floor": {"n": n, "note": "heap push + pop + continuation call, per timer"},
        "flowcraft": {
            "n": n,
            "note": "per timer: FakeClock.advance -> scheduler loop resumes every due run",
            "register_us_per_run": us(register),
        },
    }
    _report(run, "timers10000", results, extra=extra)


async def approval_context_bytes(run: Run) -> None:
    data = await flows.approval_context()
    results: dict[str, float | None] = {
        "floor": len(floor.approval_context()),
        "flowcraft": len(data),
    }
    extra: dict[str, dict[str, Any]] = {
        "floor": {"format": "msgpack"},
        "flowcraft": {"format": "msgpack", "breakdown": _breakdown(data)},
    }
    lg = run.langgraph()
    if lg is None:
        results[LG] = None
    else:
        try:
            results[LG] = await lg.approval_context_bytes()
            extra[LG] = {"format": "checkpoint serde (msgpack)", "version": lg.version()}
        except Exception as exc:
            run._lg_error = f"{type(exc).__name__}: {exc}"
            results[LG] = None
    ts = run.ts()
    results[TS] = ts["approval_context_bytes"] if ts else None
    if ts:
        extra[TS] = {"format": "JSON", "version": ts["version"]}
    _report(
        run,
        "approval_context_bytes",
        results,
        extra=extra,
        unit="bytes",
        targets=lambda r: {"bytes<=160": r["bytes"] <= 160},
    )


def _breakdown(data: bytes) -> dict[str, int]:
    """Encoded bytes per envelope field: where the context's size goes."""
    try:
        from flowcraft._envelope.records import Envelope

        names = list(Envelope.__struct_fields__)
    except (ImportError, AttributeError):
        names = []
    raw = msgspec.msgpack.decode(data)
    if not isinstance(raw, list):
        return {}
    enc = msgspec.msgpack.Encoder()
    out = {}
    for i, value in enumerate(raw):
        key = names[i] if i < len(names) else f"field{i}"
        out[key] = len(enc.encode(value))
    return out


def _speedup_target(rec: dict[str, Any], peer: str, factor: float) -> dict[str, bool]:
    speed = rec.get("speedup_vs", {}).get(peer)
    if speed is None:
        return {}
    op = ">" if factor == 1 else ">="
    return {f"speedup_vs_{peer}{op}{factor:g}": speed > factor if factor == 1 else speed >= factor}


async def _peers(
    run: Run,
    scenario: str,
    results: dict[str, float | None],
    extra: dict[str, dict[str, Any]],
    lg_op: Callable[[Any], Callable[[], Awaitable[object]]],
) -> None:
    lg = run.langgraph()
    results[LG] = None
    if lg is not None:
        try:
            results[LG] = us(await measure(lg_op(lg), run.settings))
            extra[LG] = {"version": lg.version()}
        except Exception as exc:  # a peer that breaks is skipped, not fatal
            run._lg_error = f"{type(exc).__name__}: {exc}"
    ts = run.ts()
    results[TS] = round(ts["us_per_op"][scenario], 3) if ts else None
    if ts:
        extra[TS] = {"version": ts["version"], "node": ts["node"]}
        if scenario == "approval":
            extra[TS]["note"] = "unlabelled approve->process edge: TS 2.x resume ignores action"
    if scenario == "chain100":
        for impl in (LG, TS):
            if results.get(impl):
                extra.setdefault(impl, {})["us_per_node"] = round(results[impl] / 100, 3)  # type: ignore[operator]


SCENARIOS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "approval": approval,
    "chain100": chain100,
    "fanout20": fanout20,
    "chain10000": chain10000,
    "fanout5000": fanout5000,
    "timers10000": timers10000,
    "approval_context_bytes": approval_context_bytes,
}


def _versions() -> dict[str, str]:
    out = {}
    for dist in (
        "flowcraft", "msgspec", "anyio", "langgraph", "langgraph-checkpoint",
        "langgraph-checkpoint-sqlite", "langgraph-checkpoint-postgres", "dbos", "psycopg",
    ):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny N, one repeat (for tests)")
    p.add_argument("--only", default="", help="comma-separated scenarios: " + ",".join(SCENARIOS))
    p.add_argument("--no-peers", action="store_true", help="skip LangGraph and Flowcraft TS")
    p.add_argument(
        "--durable",
        action="store_true",
        help="the durable approval flow on SQLite and PostgreSQL beside LangGraph and DBOS",
    )
    p.add_argument(
        "--backends",
        default="sqlite,sqlite-journal,postgres",
        help="with --durable: sqlite,sqlite-journal (DBOS on its own rollback journal),postgres",
    )
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    bad = [b for b in args.backends if b not in ("sqlite", "sqlite-journal", "postgres")]
    if bad:
        p.error(
            f"unknown backend(s) {', '.join(bad)}; choose from sqlite, sqlite-journal, postgres"
        )
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the selected scenarios; return 1 if any scenario crashed (the rest still run)."""
    args = _parse(argv)
    run = Run(
        settings=Settings.quick() if args.quick else Settings(),
        quick=args.quick,
        peers=not args.no_peers,
    )
    emit(
        {
            "scenario": "meta",
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "nproc": os.cpu_count(),
            "versions": _versions(),
            "quick": args.quick,
            **({"durable": args.backends} if args.durable else {}),
        }
    )
    if args.durable:
        from . import durable_side

        durable_side.main(run, args.backends, args.quick)
        return 0

    async def go() -> None:
        for name in args.names:
            t0 = time.perf_counter()
            try:
                await SCENARIOS[name](run)
            except Exception as exc:
                run.failures.append(name)
                error = f"{type(exc).__name__}: {exc}"
                emit({"scenario": name, "impl": "flowcraft", "error": error})
            print(f"# {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)

    anyio.run(go)
    return 1 if run.failures else 0
