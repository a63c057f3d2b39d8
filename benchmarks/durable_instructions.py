"""Instructions per durable start + resume, under callgrind.

    python -m benchmarks.durable_instructions [N] [STORE,...]

Each store (``memory``: the service's own cost; ``sqlite``: ``SqliteStore()`` at its default
``NORMAL``; ``postgres``: ``PostgresStore``, the client process only, the server is not counted)
runs in its own process twice under valgrind's callgrind — 0 and N approval
start + resume pairs after the same warm-up — and the difference divided by N is the cost of one
pair, worker threads included. Counts do not move with the machine's load, unlike wall time.
Needs valgrind on PATH.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = r"""
import sys, tempfile, uuid, anyio
from pathlib import Path
from flowcraft import FlowRuntime
from flowcraft.stores import FlowService, MemoryStore, PostgresStore, SqliteStore
from benchmarks.durable_side import POSTGRES_DSN, _approval_flow, _drop_flowcraft

kind, n = sys.argv[1], int(sys.argv[2])

async def main():
    tmp = tempfile.mkdtemp()
    ns = f"cg{uuid.uuid4().hex[:8]}"
    if kind == "memory":
        store = MemoryStore()
    elif kind == "sqlite":
        store = SqliteStore(Path(tmp) / "x.db")
    else:
        store = PostgresStore(POSTGRES_DSN, namespace=ns)
    service = FlowService(FlowRuntime(), store, flows=[_approval_flow()])
    try:
        for i in range(30 + n):
            await service.start("approval", run_id=f"r{i}")
            await service.resume(f"r{i}", {"action": "approved"}, idempotency_key="k")
    finally:
        await store.close()
        if kind == "postgres":
            await _drop_flowcraft("postgres", ns)

anyio.run(main)
"""


def count(kind: str, n: int, workdir: Path) -> int:
    """Total instructions of one worker process (all threads)."""
    out = workdir / f"cg.{kind}.{n}"
    subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            WORKER,
            kind,
            str(n),
        ],
        check=True,
        capture_output=True,
    )
    text = out.read_text()
    found = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(
        r"^totals:\s+(\d+)", text, re.M
    )
    if found is None:
        raise RuntimeError(f"no instruction total in {out}")
    return int(found.group(1))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    kinds = sys.argv[2].split(",") if len(sys.argv) > 2 else ["memory", "sqlite", "postgres"]
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            per_pair = (count(kind, n, Path(tmp)) - count(kind, 0, Path(tmp))) // n
            print(f"{kind}: {per_pair:,} instructions per durable start + resume")


if __name__ == "__main__":
    main()
