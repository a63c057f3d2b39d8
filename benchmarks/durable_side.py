"""``python -m benchmarks --durable``: the approval flow, durable, beside LangGraph and DBOS.

Per backend (SQLite files in a temporary directory, PostgreSQL at ``FLOWCRAFT_TEST_POSTGRES``),
every implementation runs in this one process, interleaved round by round:

* ``latency``: start → paused (committed) and resume → completed (committed), medians;
* ``throughput``: start + resume pairs per second, 1 at a time and 16 at once;
* ``bytes_per_paused_run``: storage growth (tables and indexes) over paused runs ÷ their number
  (PostgreSQL: also flowcraft's alone, before any peer connects, ``bytes_per_paused_run_alone``);
* ``list50``: 50 paused runs, oldest first, among N stored (where the peer can list by status);
* ``timers``: N due durable timers fired (where the peer has durable timers).

SQLite runs at ``synchronous=FULL`` everywhere (flowcraft's default, ``NORMAL``, is shown for
information as ``flowcraft-normal``); every implementation's settings are printed with it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import anyio

from ._harness import emit

POSTGRES_DSN = os.environ.get(
    "FLOWCRAFT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
# ``sqlite-journal``: flowcraft beside DBOS on the SQLite file DBOS makes (its rollback journal;
# the ``sqlite`` pass gives DBOS a WAL file, which is faster for it). Latency, throughput, bytes.
BACKENDS = ("sqlite", "sqlite-journal", "postgres")
TARGETS = {
    "sqlite": {"langgraph": 4.0, "dbos": 12.0},
    "sqlite-journal": {"dbos-journal": 12.0},
    "postgres": {"langgraph": 3.0, "dbos": 6.0},
}
MAX_BYTES = 1024


class Sizes:
    quick: ClassVar[dict[str, int]] = {
        "rounds": 1,
        "pairs": 2,
        "tp_pairs": 4,
        "tp_rounds": 1,
        "paused": 50,  # fewer grow no page at all (a paused run is ~0.6 KB)
        "list": 1000,
        "timers": 20,
    }
    full: ClassVar[dict[str, int]] = {
        "rounds": 7,
        "pairs": 15,
        "tp_pairs": 64,
        "tp_rounds": 3,
        "paused": 300,
        "list": 100_000,
        "timers": 10_000,
    }


# --- flowcraft ----------------------------------------------------------------------------------


def _approval_flow() -> Any:
    from flowcraft import create_flow

    async def submit(node: Any) -> str:
        return "submitted"

    async def pay(node: Any) -> str:
        return "paid"

    return (
        create_flow("approval")
        .node("submit", submit)
        .wait("approve")
        .node("pay", pay)
        .edge("submit", "approve")
        .edge("approve", "pay", action="approved")
    )


class FlowcraftImpl:
    """``FlowService.start`` (returns awaiting) → ``resume`` with an action (returns completed)."""

    def __init__(self, backend: str, tmp: Path, synchronous: str = "FULL") -> None:
        from flowcraft import FlowRuntime
        from flowcraft.stores import FlowService, PostgresStore, SqliteStore

        self.backend = backend
        self.synchronous = synchronous
        self.name = "flowcraft" if synchronous == "FULL" else "flowcraft-normal"
        self.ns = f"fc{uuid.uuid4().hex[:8]}"
        self.path = tmp / f"{self.name}.db"
        self.store: Any = (
            SqliteStore(self.path, namespace=self.ns, synchronous=synchronous)  # type: ignore[arg-type]
            if backend == "sqlite"
            else PostgresStore(POSTGRES_DSN, namespace=self.ns)
        )
        self.service = FlowService(FlowRuntime(), self.store, flows=[_approval_flow()])

    async def start(self, run_id: str) -> None:
        res = await self.service.start("approval", run_id=run_id)
        if res.status != "awaiting":
            raise RuntimeError(f"flowcraft start ended {res.status}")

    async def resume(self, run_id: str) -> None:
        res = await self.service.resume(run_id, {"action": "approved"}, idempotency_key="k")
        if res.status != "completed":
            raise RuntimeError(f"flowcraft resume ended {res.status}")

    def settings(self) -> dict[str, Any]:
        if self.backend == "sqlite":
            return {"store": "SqliteStore", "journal_mode": "wal", "synchronous": self.synchronous}
        return {"store": "PostgresStore", "pool": f"max {self.store.pool_size}"}

    async def list50(self) -> Any:
        return await self.service.list(status="awaiting", limit=50)

    async def timers(self, n: int, per_start_s: float) -> dict[str, Any]:
        from flowcraft import FlowRuntime
        from flowcraft.stores import DurableScheduler, FlowService, PostgresStore, SqliteStore
        from flowcraft.testing import FakeClock

        from . import ops

        ns = self.ns + "t"
        store: Any = (
            SqliteStore(self.path, namespace=ns, synchronous=self.synchronous)  # type: ignore[arg-type]
            if self.backend == "sqlite"
            else PostgresStore(POSTGRES_DSN, namespace=ns)
        )
        clock = FakeClock(ops.T0)
        service = FlowService(
            FlowRuntime(clock=clock), store, flows=ops.flows(), keep_checkpoints=0
        )
        try:
            await ops.fill(service, store, n, n)  # n runs asleep on a 60 s timer
            clock.advance(61)
            sched = DurableScheduler(service, batch=500)
            t = time.perf_counter()
            while sched.fired < n:
                if not await sched.tick():
                    break
            took = time.perf_counter() - t
        finally:
            await store.close()
            await _drop_flowcraft(self.backend, ns)
        return {
            "n": sched.fired,
            "fire_s": round(took, 3),
            "us_per_timer": round(took / n * 1e6, 1),
            "note": "due timers fired by DurableScheduler.tick (each a claimed resume)",
        }

    async def close(self) -> None:
        await self.store.close()
        await _drop_flowcraft(self.backend, self.ns)


async def _drop_flowcraft(backend: str, ns: str) -> None:
    if backend != "postgres":
        return
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        for table in ("runs", "history", "idempotency", "leases", "checkpoints", "counts"):
            await conn.execute(f"DROP TABLE IF EXISTS {ns}_{table} CASCADE")


# --- storage and bulk fill, by SQL ----------------------------------------------------------------


async def stored_bytes(impl: Any) -> int:
    """Bytes the implementation's tables and indexes occupy now."""
    if impl.backend == "sqlite":
        path = impl.path if impl.name.startswith(("flowcraft", "langgraph")) else impl.sqlite_path

        def size() -> int:
            conn = sqlite3.connect(path)  # sees committed WAL frames: no checkpoint needed
            try:
                pages = conn.execute("PRAGMA page_count").fetchone()[0]
                free = conn.execute("PRAGMA freelist_count").fetchone()[0]
                return int((pages - free) * conn.execute("PRAGMA page_size").fetchone()[0])
            finally:
                conn.close()

        return await anyio.to_thread.run_sync(size)
    import psycopg

    if impl.name.startswith("flowcraft"):
        where, arg = "n.nspname = 'public' AND c.relname LIKE %s", impl.ns + r"\_%"
    else:
        where, arg = "n.nspname = %s", impl.schema
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            f"JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND {where}",
            (arg,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def sql_fill(impl: Any, n: int, awaiting_id: str, done_id: str) -> None:
    """N run rows copied from two templates (every 20th paused, the rest finished)."""
    if impl.name.startswith("flowcraft"):
        table, id_col, created = f"{impl.ns}_runs", "run_id", "created_at"
    else:
        table = "workflow_status" if impl.backend == "sqlite" else f"{impl.schema}.workflow_status"
        id_col, created = "workflow_uuid", "created_at"
    pg = impl.backend == "postgres"
    ph = "%s" if pg else "?"

    def statements(cols: list[str]) -> list[tuple[str, tuple[Any, ...]]]:
        out = []
        mod = "%%" if pg else "%"
        for template, cond in ((awaiting_id, f"g.n {mod} 20 = 0"), (done_id, f"g.n {mod} 20 <> 0")):
            select = ", ".join(
                "'fill' || g.n" if c == id_col else f"t.{c} + g.n" if c == created else f"t.{c}"
                for c in cols
            )
            gen = (
                f"generate_series(0, {n - 1}) AS g(n)"
                if pg
                else f"(WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s "
                f"WHERE n < {n - 1}) SELECT n FROM s) AS g"
            )
            out.append(
                (
                    f"INSERT INTO {table} ({', '.join(cols)}) SELECT {select} FROM {gen}, "
                    f"{table} AS t WHERE t.{id_col} = {ph} AND {cond}",
                    (template,),
                )
            )
        return out

    if pg:
        import psycopg

        schema, name = table.split(".") if "." in table else ("public", table)
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s ORDER BY ordinal_position",
                (schema, name),
            )
            cols = [r[0] for r in await cur.fetchall()]
            for sql, args in statements(cols):
                await conn.execute(sql, args)  # type: ignore[arg-type]
        return
    path = impl.path if impl.name.startswith("flowcraft") else impl.sqlite_path

    def run() -> None:
        conn = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            cols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            conn.execute("BEGIN IMMEDIATE")
            for sql, args in statements(cols):
                conn.execute(sql, args)
            conn.execute("COMMIT")
        finally:
            conn.close()

    await anyio.to_thread.run_sync(run)


# --- measurement ----------------------------------------------------------------------------------


def _ids() -> Callable[[], str]:
    prefix = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))
    return lambda: f"{prefix}-{next(counter)}"


async def latency(impls: list[Any], size: dict[str, int]) -> dict[str, dict[str, float]]:
    """Median ms of start → paused and resume → completed, impls rotated each round."""
    new_id = _ids()
    samples: dict[str, tuple[list[float], list[float]]] = {i.name: ([], []) for i in impls}
    for r in range(size["rounds"]):
        for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
            starts, resumes = samples[impl.name]
            for _ in range(size["pairs"]):
                run_id = new_id()
                t0 = time.perf_counter()
                await impl.start(run_id)
                t1 = time.perf_counter()
                await impl.resume(run_id)
                t2 = time.perf_counter()
                starts.append(t1 - t0)
                resumes.append(t2 - t1)
    return {
        name: {
            "start_ms": round(statistics.median(s) * 1e3, 3),
            "resume_ms": round(statistics.median(r) * 1e3, 3),
            "start_resume_ms": round((statistics.median(s) + statistics.median(r)) * 1e3, 3),
        }
        for name, (s, r) in samples.items()
    }


async def throughput(impls: list[Any], size: dict[str, int]) -> dict[str, dict[str, float]]:
    """Start + resume pairs per second with 1 and 16 in flight (medians, interleaved)."""
    new_id = _ids()
    out: dict[str, dict[str, list[float]]] = {i.name: {"c1": [], "c16": []} for i in impls}

    async def pairs(impl: Any, count: int, concurrency: int) -> float:
        todo = iter(range(count))

        async def worker() -> None:
            for _ in todo:
                run_id = new_id()
                await impl.start(run_id)
                await impl.resume(run_id)

        t = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        return count / (time.perf_counter() - t)

    for r in range(size["tp_rounds"]):
        for impl in impls[r % len(impls) :] + impls[: r % len(impls)]:
            out[impl.name]["c1"].append(await pairs(impl, size["tp_pairs"], 1))
            out[impl.name]["c16"].append(await pairs(impl, size["tp_pairs"] * 4, 16))
    return {
        name: {f"pairs_per_s_{k}": round(statistics.median(v), 1) for k, v in d.items()}
        for name, d in out.items()
    }


async def paused_bytes(
    impls: list[Any], size: dict[str, int]
) -> tuple[dict[str, int], dict[str, str]]:
    """Storage growth per paused run; also returns one paused run id per implementation.

    Measured, the paused runs are resumed, all but the one returned (the list fill's
    template). Each paused DBOS workflow on SQLite polls the database in its ``recv`` (every
    1 ms here): 300 of them kept 90-96 % of a core busy in the background of an idle process
    (5 % once resumed), which slowed every later scenario of every implementation (list,
    timers: flowcraft's 3,000 timers 4.3 s beside them, process CPU 5.4 s).
    """
    new_id = _ids()
    out, paused = {}, {}
    for impl in impls:
        before = await stored_bytes(impl)
        ids = [new_id() for _ in range(size["paused"])]
        for run_id in ids:
            await impl.start(run_id)
        out[impl.name] = round((await stored_bytes(impl) - before) / size["paused"])
        paused[impl.name] = ids[-1]
        for run_id in ids[:-1]:
            await impl.resume(run_id)
    return out, paused


async def timed_ms(fn: Callable[[], Awaitable[Any]], repeat: int = 15) -> float:
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        page = await fn()
        samples.append(time.perf_counter() - t)
    if len(page) != 50:
        raise RuntimeError(f"list returned {len(page)} runs, expected 50")
    return round(statistics.median(samples) * 1e3, 3)


# --- orchestration -------------------------------------------------------------------------------


async def open_impls(run: Any, backend: str, tmp: Path) -> tuple[list[Any], dict[str, str]]:
    """flowcraft (and flowcraft-normal on SQLite), then each peer that opens; skips say why."""
    if backend == "sqlite-journal":
        return await _open_journal(run, tmp)
    impls: list[Any] = [FlowcraftImpl(backend, tmp, "FULL")]
    if backend == "sqlite":
        impls.append(FlowcraftImpl(backend, tmp, "NORMAL"))
    skipped: dict[str, str] = {}
    if not run.peers:
        return impls, {"langgraph": "--no-peers", "dbos": "--no-peers"}
    try:
        from . import peer_langgraph

        for durability in ("async", "exit"):
            impls.append(
                await peer_langgraph.LangGraphImpl(backend, durability).open(POSTGRES_DSN, tmp)
            )
    except ImportError as exc:
        skipped["langgraph"] = (
            f"not importable ({exc}); pip install langgraph langgraph-checkpoint-sqlite "
            "langgraph-checkpoint-postgres aiosqlite 'psycopg[binary,pool]'"
        )
    except Exception as exc:
        skipped["langgraph"] = f"{type(exc).__name__}: {exc}"
    try:
        from . import peer_dbos

        impls.append(peer_dbos.open_dbos(backend, POSTGRES_DSN, tmp))
    except ImportError as exc:
        skipped["dbos"] = f"not importable ({exc}); pip install dbos"
    except Exception as exc:
        skipped["dbos"] = f"{type(exc).__name__}: {exc}"
    return impls, skipped


async def _open_journal(run: Any, tmp: Path) -> tuple[list[Any], dict[str, str]]:
    """flowcraft at ``FULL`` and DBOS on the SQLite file as DBOS makes it (rollback journal)."""
    impls: list[Any] = [FlowcraftImpl("sqlite", tmp, "FULL")]
    if not run.peers:
        return impls, {"dbos-journal": "--no-peers"}
    try:
        from . import peer_dbos

        impls.append(peer_dbos.open_dbos("sqlite", POSTGRES_DSN, tmp, wal=False))
    except ImportError as exc:
        return impls, {"dbos-journal": f"not importable ({exc}); pip install dbos"}
    except Exception as exc:
        return impls, {"dbos-journal": f"{type(exc).__name__}: {exc}"}
    return impls, {}


async def postgres_reachable() -> str | None:
    try:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, connect_timeout=3) as c:
            await c.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {POSTGRES_DSN} unreachable: {type(exc).__name__}: {exc}"
    return None


async def backend_run(run: Any, backend: str, size: dict[str, int]) -> None:
    if backend == "postgres" and (why := await postgres_reachable()):
        emit({"scenario": "durable", "backend": backend, "skipped": why})
        return
    with tempfile.TemporaryDirectory(prefix="durbench-") as tmpdir:
        tmp = Path(tmpdir)
        alone = await _bytes_alone(backend, tmp, size) if backend == "postgres" else None
        impls, skipped = await open_impls(run, backend, tmp)
        try:
            await _measure(impls, skipped, backend, size, alone)
        finally:
            for impl in reversed(impls):
                with contextlib.suppress(Exception):
                    await impl.close()
                schema = getattr(impl, "schema", None)
                if schema and backend == "postgres":
                    import psycopg

                    async with await psycopg.AsyncConnection.connect(
                        POSTGRES_DSN, autocommit=True
                    ) as conn:
                        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


async def _bytes_alone(backend: str, tmp: Path, size: dict[str, int]) -> int:
    """flowcraft's bytes per paused run with no peer connected.

    PostgreSQL keeps dead row versions while any session's transaction holds the xmin
    horizon back; DBOS keeps one open (``idle in transaction``, its advisory lock), so beside
    it the claim each start replaces is not pruned and counts as storage.
    """
    impl = FlowcraftImpl(backend, tmp, "FULL")
    try:
        await paused_bytes([impl], {**size, "paused": 30})  # the first pages
        out, _ = await paused_bytes([impl], size)
    finally:
        await impl.close()
    return out[impl.name]


async def _measure(
    impls: list[Any],
    skipped: dict[str, str],
    backend: str,
    size: dict[str, int],
    alone: int | None = None,
) -> None:
    import sys

    def progress(msg: str) -> None:
        print(f"# durable {backend}: {msg}", file=sys.stderr, flush=True)

    await latency(impls, {**size, "rounds": 1, "pairs": 3})  # warm-up
    progress("latency")
    lat = await latency(impls, size)
    progress("throughput")
    tp = await throughput(impls, size)
    progress("bytes per paused run")
    size_b, paused = await paused_bytes(impls, size)
    listing: dict[str, Any] = {}
    timers: dict[str, Any] = {}
    extras = backend != "sqlite-journal"  # list and timers: measured in the sqlite pass
    for impl in impls:
        if not extras or not hasattr(impl, "list50") or impl.name == "flowcraft-normal":
            continue
        progress(f"list 50 of {size['list']:,} ({impl.name})")
        # A finished template: one more run started and resumed.
        done = f"done-{uuid.uuid4().hex[:8]}"
        await impl.start(done)
        await impl.resume(done)
        t = time.perf_counter()
        await sql_fill(impl, size["list"], paused[impl.name], done)
        fill_s = time.perf_counter() - t
        listing[impl.name] = {
            "list50_ms": await timed_ms(impl.list50),
            "stored_runs": size["list"],
            "fill_s": round(fill_s, 1),
        }
    for impl in impls:
        if not extras or not hasattr(impl, "timers") or impl.name == "flowcraft-normal":
            continue
        progress(f"{size['timers']:,} timers ({impl.name})")
        per_start = lat[impl.name]["start_ms"] / 1e3
        timers[impl.name] = await impl.timers(size["timers"], per_start)
    none = {
        "langgraph": "no equivalent: checkpointers list checkpoints by thread/config, "
        "not runs by status",
        "dbos": "",
    }
    fc = impls[0].name
    for impl in impls:
        rec: dict[str, Any] = {"scenario": "durable", "backend": backend, "impl": impl.name}
        rec.update(lat[impl.name])
        rec.update(tp[impl.name])
        rec["bytes_per_paused_run"] = size_b[impl.name]
        if alone is not None and impl.name == impls[0].name:
            rec["bytes_per_paused_run_alone"] = alone
        if impl.name in listing:
            rec.update(listing[impl.name])
        elif impl.name.startswith("langgraph"):
            rec["list50"] = none["langgraph"]
        if impl.name in timers:
            rec["timers"] = timers[impl.name]
        elif impl.name.startswith("langgraph"):
            rec["timers"] = "none: LangGraph has no durable timers"
        rec["settings"] = impl.settings()
        if impl.name == fc:
            rec["speedup_vs"] = {
                o.name: {
                    "start": _r(lat[o.name]["start_ms"], lat[fc]["start_ms"]),
                    "resume": _r(lat[o.name]["resume_ms"], lat[fc]["resume_ms"]),
                    "start_resume": _r(lat[o.name]["start_resume_ms"], lat[fc]["start_resume_ms"]),
                    "throughput_c1": _r(tp[fc]["pairs_per_s_c1"], tp[o.name]["pairs_per_s_c1"]),
                    "throughput_c16": _r(tp[fc]["pairs_per_s_c16"], tp[o.name]["pairs_per_s_c16"]),
                    "bytes": _r(size_b[o.name], size_b[fc]),
                    **(
                        {"list50": _r(listing[o.name]["list50_ms"], listing[fc]["list50_ms"])}
                        if o.name in listing and fc in listing
                        else {}
                    ),
                    **(
                        {"timers": _r(timers[o.name]["us_per_timer"], timers[fc]["us_per_timer"])}
                        if "us_per_timer" in timers.get(o.name, {})
                        and "us_per_timer" in timers.get(fc, {})
                        else {}
                    ),
                }
                for o in impls[1:]
            }
            own = size_b[fc] if alone is None else alone
            met = {f"bytes_per_paused_run<={MAX_BYTES}": own <= MAX_BYTES}
            for peer, factor in TARGETS[backend].items():
                if peer in lat:
                    speed = lat[peer]["start_resume_ms"] / lat[fc]["start_resume_ms"]
                    met[f"start_resume_vs_{peer}>={factor:g}"] = speed >= factor
            rec["targets_met"] = met
        emit(rec)
    for peer, why in skipped.items():
        emit({"scenario": "durable", "backend": backend, "impl": peer, "skipped": why})


def _r(peer: float, ours: float) -> float | None:
    return round(peer / ours, 2) if ours else None


def main(run: Any, backends: list[str], quick: bool) -> None:
    size = Sizes.quick if quick else Sizes.full

    for backend in backends:  # one event loop each: DBOS shuts its loop's executor down on exit
        anyio.run(backend_run, run, backend, size)
