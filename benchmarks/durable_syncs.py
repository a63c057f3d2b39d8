"""Synced writes per durable start + resume: ``python -m benchmarks.durable_syncs [--pairs N]``.

At equal durability every implementation ends a start and a resume on a synced write, and on
a disk an ``fsync`` costs far more than the Python around it, so the number of syncs per pair
bounds the ratio any amount of CPU work can reach: with ``k`` syncs for a peer and ``m`` for
flowcraft, both paying ``f`` ms per sync plus their CPU, peer ÷ flowcraft tends to ``k / m``
as ``f`` grows, and can exceed it only by the peer's CPU over flowcraft's.

Each implementation (SQLite, ``synchronous=FULL``, the approval flow of
``benchmarks.durable_side``) runs in a child process under ``strace -f -c`` counting
``fsync``/``fdatasync``: once with N pairs after a warm-up, once with none; the difference ÷ N
is its syncs per pair. The same children, without strace, time N pairs. One JSON line per
implementation, then the synced-commit latency of this disk (SQLite ``FULL`` minus ``NORMAL``).
Needs ``strace``; the peers come from the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

IMPLS = ("flowcraft", "langgraph", "dbos", "dbos-journal")
_SYNCS = ("fsync", "fdatasync")


async def _open(name: str, tmp: Path) -> Any:
    from . import durable_side

    if name == "flowcraft":
        return durable_side.FlowcraftImpl("sqlite", tmp, "FULL")
    if name == "langgraph":
        from . import peer_langgraph

        return await peer_langgraph.LangGraphImpl("sqlite", "async").open("", tmp)
    from . import peer_dbos

    return peer_dbos.open_dbos("sqlite", "", tmp, wal=name == "dbos")


async def _child(name: str, pairs: int, warmup: int) -> None:
    """Warm up, then run ``pairs`` start + resume pairs; print their wall time per pair."""
    with tempfile.TemporaryDirectory() as tmp:
        impl = await _open(name, Path(tmp))
        for _ in range(warmup):
            run_id = uuid.uuid4().hex
            await impl.start(run_id)
            await impl.resume(run_id)
        t = time.perf_counter()
        for _ in range(pairs):
            run_id = uuid.uuid4().hex
            await impl.start(run_id)
            await impl.resume(run_id)
        per_pair = (time.perf_counter() - t) / pairs * 1e3 if pairs else 0.0
        await impl.close()
    print(json.dumps({"ms_per_pair": round(per_pair, 3)}), flush=True)


def _syncs(name: str, pairs: int, warmup: int) -> int:
    """fsync + fdatasync calls of a child running ``pairs`` pairs, counted by strace."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(
            [
                "strace", "-f", "-c", "-e", f"trace={','.join(_SYNCS)}", "-o", out.name,
                sys.executable, "-m", "benchmarks.durable_syncs", "--child", name,
                "--pairs", str(pairs), "--warmup", str(warmup),
            ],
            check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).parent.parent,
        )
        total = 0
        for line in out.read().splitlines():
            parts = line.split()
            if parts and parts[-1] in _SYNCS:
                total += int(parts[3])  # % time, seconds, usecs/call, calls, [errors,] syscall
        return total


def _timed(name: str, pairs: int, warmup: int) -> float:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.durable_syncs", "--child", name,
         "--pairs", str(pairs), "--warmup", str(warmup)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent,
    )
    return float(json.loads(done.stdout.splitlines()[-1])["ms_per_pair"])


def synced_commit_ms(commits: int = 300) -> float:
    """ms a WAL commit at ``FULL`` costs over one at ``NORMAL`` on this disk (one fdatasync)."""
    per: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sync in ("NORMAL", "FULL"):
            conn = sqlite3.connect(f"{tmp}/{sync}.db", isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={sync}")
            conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
            conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, b"x") for i in range(100)])
            t = time.perf_counter()
            for i in range(commits):
                conn.execute("UPDATE t SET v = ? WHERE k = ?", (os.urandom(400), i % 100))
            per[sync] = (time.perf_counter() - t) / commits * 1e3
            conn.close()
    return per["FULL"] - per["NORMAL"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--child", choices=IMPLS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        anyio.run(_child, args.child, args.pairs, args.warmup)
        return
    if shutil.which("strace") is None:
        print(json.dumps({"skipped": "strace is not installed (apt-get install strace)"}))
        return
    f = synced_commit_ms()
    for name in args.impls.split(","):
        try:
            base = _syncs(name, 0, args.warmup)
            syncs = (_syncs(name, args.pairs, args.warmup) - base) / args.pairs
            ms = _timed(name, args.pairs, args.warmup)
        except subprocess.CalledProcessError as exc:
            print(json.dumps({"impl": name, "skipped": f"child failed ({exc.returncode})"}))
            continue
        print(json.dumps({
            "impl": name, "syncs_per_pair": round(syncs, 2), "ms_per_pair": ms,
            "ms_in_syncs": round(syncs * f, 3), "ms_besides_syncs": round(ms - syncs * f, 3),
        }), flush=True)
    print(json.dumps({"synced_commit_ms": round(f, 3)}))


if __name__ == "__main__":
    main()
