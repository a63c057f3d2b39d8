"""Operating durable runs at scale: ``python -m benchmarks.ops [--runs N] [--timers T]``.

Fills each store with N stored runs (most finished, 5 % awaiting a wait, some awaiting a
timer), then times, medians of repeated calls, one JSON line per store and scenario:
``list 50 awaiting`` (first page and a deep cursor page), ``list 50 of one flow``, ``stats``,
firing T due timers through the durable scheduler (each a real claimed resume; wall
time, and this process's CPU time, which a shared machine's load does not inflate), and
``cleanup`` of every finished run (one ``service.cleanup`` call).
``--skip pairs,timers,cleanup`` leaves those scenarios out.
Stores whose server is unreachable are skipped. The fill writes store records directly
(each run with its history); PostgreSQL's tables are then vacuumed and analyzed, as
autovacuum would after a bulk load (it is off on this machine's server).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio

from flowcraft import FlowRuntime, NodeContext, create_flow
from flowcraft.stores import (
    DurableScheduler,
    FlowService,
    PostgresStore,
    RedisStore,
    RunStore,
    SqliteStore,
    StoredRun,
)
from flowcraft.testing import FakeClock

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def flows() -> list[Any]:
    async def woke(node: NodeContext) -> str:
        return "woke"

    return [
        create_flow("nap").sleep("nap", duration=60).node("woke", woke).edge("nap", "woke"),
        create_flow("approval").wait("approve").node("done", woke).edge("approve", "done"),
    ]


async def fill(service: FlowService, store: RunStore, n: int, timers: int) -> None:
    """N runs: a template of each kind is made by the service, then copied under new ids.

    Each copy gets its template's history, as a run the service made has one.
    """
    await service.start("approval", run_id="tmpl-wait")
    await service.start("nap", run_id="tmpl-nap")
    waiting = await store.get("tmpl-wait")
    napping = await store.get("tmpl-nap")
    trail = {
        "approval": await store.history("tmpl-wait"),
        "nap": await store.history("tmpl-nap"),
    }
    done = StoredRun(
        run_id="x",
        flow_id="approval",
        status="completed",
        revision=0,
        created_at=T0,
        updated_at=T0,
    )
    sem = anyio.Semaphore(8)

    async def one(i: int) -> None:
        at = T0 + timedelta(microseconds=i)
        if i < timers:
            base = napping
        elif i % 20 == 0:
            base = waiting
        else:
            base = done
        run = StoredRun(
            **{
                **{f: getattr(base, f) for f in base.__struct_fields__},
                "run_id": f"r{i:07d}",
                "revision": 0,
                "created_at": at,
            }
        )
        async with sem:
            await store.create(run, history=trail[run.flow_id])

    async with anyio.create_task_group() as tg:
        for i in range(n):
            tg.start_soon(one, i)


async def analyze(ns: str) -> None:
    """``VACUUM ANALYZE`` the tables: what autovacuum does after a bulk load on a default
    server (this machine's runs with ``autovacuum = off``). Without it the planner has no
    statistics and no visibility map, so index-only scans read the table.
    """
    import psycopg

    dsn = "postgresql://postgres@127.0.0.1:5432/test"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for table in ("runs", "history", "idempotency", "checkpoints", "counts"):
            await conn.execute(f"VACUUM ANALYZE {ns}_{table}")


async def timed(fn: Any, repeat: int = 15) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        await fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1000


async def pairs(service: FlowService, rounds: int = 9) -> dict[str, float]:
    """Median ms of one start + resume, and of 16 pairs run sequentially vs concurrently.

    Measured in a steady state, as in a service that has been running: a warm-up of
    concurrent pairs first opens the store's connections (PostgreSQL: up to ``pool_size``,
    a backend started each) and lets the driver prepare the statements on each of them.
    """
    seq: list[float] = []
    par: list[float] = []
    one: list[float] = []

    async def pair() -> None:
        run_id = uuid.uuid4().hex
        await service.start("approval", run_id=run_id)
        await service.resume(run_id, {"action": "approved"}, idempotency_key="k")

    for _ in range(8):
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(pair)
    for _ in range(rounds):
        for _ in range(8):
            t = time.perf_counter()
            await pair()
            one.append(time.perf_counter() - t)
        t = time.perf_counter()
        for _ in range(16):
            await pair()
        seq.append(time.perf_counter() - t)
        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(16):
                tg.start_soon(pair)
        par.append(time.perf_counter() - t)
    s, c = statistics.median(seq), statistics.median(par)
    return {
        "start_resume_ms": round(statistics.median(one) * 1000, 3),
        "pairs16_sequential_ms": round(s * 1000, 1),
        "pairs16_concurrent_ms": round(c * 1000, 1),
        "pairs16_speedup": round(s / c, 2),
    }


async def bench(kind: str, n: int, timers: int, skip: frozenset[str] = frozenset()) -> None:
    ns = f"bench{uuid.uuid4().hex[:8]}"
    tmp = tempfile.mkdtemp()
    store: RunStore
    if kind == "sqlite":
        store = SqliteStore(f"{tmp}/ops.db")
    elif kind == "redis":
        store = RedisStore("redis://127.0.0.1:6379/14", namespace=ns)
    else:
        store = PostgresStore("postgresql://postgres@127.0.0.1:5432/test", namespace=ns)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        print(json.dumps({"store": kind, "skipped": str(exc)[:80]}))
        return
    clock = FakeClock(T0)
    service = FlowService(FlowRuntime(clock=clock), store, flows=flows(), keep_checkpoints=0)
    t = time.perf_counter()
    await fill(service, store, n, timers)
    out = {"store": kind, "runs": n, "fill_s": round(time.perf_counter() - t, 1)}
    if kind == "postgres":
        await analyze(ns)
    first = await service.list(status="awaiting", limit=50)
    deep = first
    for _ in range(5):
        deep = await service.list(status="awaiting", limit=50, cursor=deep.next_cursor)
    out["list50_awaiting_ms"] = round(await timed(lambda: service.list(status="awaiting")), 3)
    out["list50_awaiting_deep_ms"] = round(
        await timed(lambda: service.list(status="awaiting", cursor=deep.next_cursor)), 3
    )
    out["list50_flow_ms"] = round(await timed(lambda: service.list(flow_id="nap")), 3)
    out["list50_wait_reason_ms"] = round(await timed(lambda: service.list(reason="wait")), 3)
    out["stats_ms"] = round(await timed(service.stats), 3)
    if "pairs" not in skip:
        out.update(await pairs(service))
    if "timers" not in skip:
        clock.advance(61)
        sched = DurableScheduler(service, batch=500)
        t, cpu = time.perf_counter(), time.process_time()
        while sched.fired < timers:
            if not await sched.tick():
                break
        out["timers"] = sched.fired
        out["timers_fire_s"] = round(time.perf_counter() - t, 2)
        # This process's CPU (its threads included): what a loaded machine cannot inflate.
        out["timers_cpu_s"] = round(time.process_time() - cpu, 2)
    if "cleanup" not in skip:
        # The fill's finished runs (19 in 20 of those not asleep), deleted in one call.
        t = time.perf_counter()
        out["cleanup_deleted"] = await service.cleanup(clock.now() + timedelta(days=1))
        out["cleanup_s"] = round(time.perf_counter() - t, 2)
    print(json.dumps(out), flush=True)
    await store.close()
    if kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url("redis://127.0.0.1:6379/14")
        keys = [k async for k in client.scan_iter(f"{ns}:*")]
        for i in range(0, len(keys), 1000):
            await client.delete(*keys[i : i + 1000])
        await client.aclose()
    elif kind == "postgres":
        import psycopg

        dsn = "postgresql://postgres@127.0.0.1:5432/test"
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            for table in ("runs", "history", "idempotency", "leases", "checkpoints", "counts"):
                await conn.execute(f"DROP TABLE IF EXISTS {ns}_{table}")
            for fn in ("counts_fn", "counts_set_fn"):
                await conn.execute(f"DROP FUNCTION IF EXISTS {ns}_{fn}()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--timers", type=int, default=1_000)
    parser.add_argument("--stores", default="sqlite,postgres,redis")
    parser.add_argument("--skip", default="", help="scenarios to leave out: pairs,timers,cleanup")
    args = parser.parse_args()
    skip = frozenset(filter(None, args.skip.split(",")))
    for kind in args.stores.split(","):
        anyio.run(bench, kind, args.runs, args.timers, skip)


if __name__ == "__main__":
    main()
