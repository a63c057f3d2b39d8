"""Durable-service cost: start → resume latency and throughput per store, before and after.

    python -m benchmarks.durable                   # this tree, every reachable store
    python -m benchmarks.durable --compare REF     # also REF (e.g. 332fcd3) in the same run

``--compare`` checks REF out into a temporary git worktree and runs this same script there
(``--worker``), alternating tree and REF per store, so both are measured side by side on the
same machine minute. One JSON line per (tree, store): median µs of one start→resume pair
(start awaits, resume completes), throughput in pairs/s, and store writes per pair
(create, save, remember, lease acquire/release, delete).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STORES = ("memory", "sqlite", "redis", "postgres")
REDIS_URL = os.environ.get("FLOWCRAFT_TEST_REDIS", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get("FLOWCRAFT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def measure(kind: str, n: int, tmp: str) -> dict[str, Any]:
    import anyio

    from flowcraft import FlowRuntime, create_flow
    from flowcraft.stores import FlowService, MemoryStore, PostgresStore, RedisStore, SqliteStore

    async def submit(node: Any) -> str:
        return "submitted"

    async def pay(node: Any) -> str:
        return "paid"

    flow = (
        create_flow("approval")
        .node("submit", submit, name="submit")
        .wait("approve")
        .node("pay", pay, name="pay")
        .edge("submit", "approve")
        .edge("approve", "pay", action="approved")
    )
    ns = f"bench{uuid.uuid4().hex[:8]}"
    store: Any
    if kind == "memory":
        store = MemoryStore()
    elif kind == "sqlite":
        store = SqliteStore(Path(tmp) / f"{ns}.db")
    elif kind == "redis":
        store = RedisStore(REDIS_URL, namespace=ns)
    else:
        store = PostgresStore(POSTGRES_DSN, namespace=ns)
    writes = 0

    def counted(name: str) -> None:
        inner = getattr(store, name)

        async def call(*a: Any, **kw: Any) -> Any:
            nonlocal writes
            writes += 1
            return await inner(*a, **kw)

        setattr(store, name, call)

    for name in ("create", "save", "remember", "acquire_lease", "release_lease", "delete"):
        if hasattr(store, name):
            counted(name)
    service = FlowService(FlowRuntime(), store, flows=[flow])
    try:
        for i in range(max(5, n // 10)):  # warm-up
            await service.start("approval", run_id=f"w{i}")
            await service.resume(f"w{i}", {"action": "approved"})
        writes = 0
        pairs: list[float] = []
        began = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            await service.start("approval", run_id=f"r{i}")
            await service.resume(f"r{i}", {"action": "approved"}, idempotency_key=f"k{i}")
            pairs.append(time.perf_counter() - t0)
        total = time.perf_counter() - began
    finally:
        await store.close()
        await drop(kind, ns)
    del anyio
    return {
        "store": kind,
        "us_per_pair": round(statistics.median(pairs) * 1e6, 1),
        "pairs_per_s": round(n / total, 1),
        "writes_per_pair": round(writes / n, 2),
        "n": n,
    }


async def drop(kind: str, ns: str) -> None:
    if kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(f"{ns}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    elif kind == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            for table in ("runs", "history", "idempotency", "leases"):
                await conn.execute(f"DROP TABLE IF EXISTS {ns}_{table}")


def worker(kind: str, n: int, label: str) -> None:
    import anyio

    with tempfile.TemporaryDirectory() as tmp:
        try:
            row = anyio.run(measure, kind, n, tmp)
        except Exception as exc:  # a server that is down: say so, go on
            row = {"store": kind, "skipped": f"{type(exc).__name__}: {exc}"}
    row["tree"] = label
    print(json.dumps(row), flush=True)


def run_in(tree: Path, kind: str, n: int, label: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    script = Path(__file__).resolve()
    subprocess.run(
        [sys.executable, str(script), "--worker", kind, "--n", str(n), "--label", label],
        env=env, cwd=tree, check=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", metavar="REF", help="also measure this git ref")
    parser.add_argument("--n", type=int, default=300, help="start→resume pairs per store")
    parser.add_argument("--stores", default=",".join(STORES))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="tree", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.label)
        return
    stores = args.stores.split(",")
    if not args.compare:
        for kind in stores:
            run_in(ROOT, kind, args.n, "tree")
        return
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(base), args.compare],
            check=True, capture_output=True,
        )
        try:
            for kind in stores:
                run_in(base, kind, args.n, args.compare)
                run_in(ROOT, kind, args.n, "tree")
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                check=True, capture_output=True,
            )


if __name__ == "__main__":
    main()
