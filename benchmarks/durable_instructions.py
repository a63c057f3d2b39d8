"""Instructions per durable start + resume, under callgrind.

    python -m benchmarks.durable_instructions [N]

Each store (``memory``: the service's own cost; ``sqlite``: ``SqliteStore()`` at its default
``NORMAL``) runs in its own process twice under valgrind's callgrind — 0 and N approval
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
import sys, tempfile, anyio
from pathlib import Path
from flowcraft import FlowRuntime
from flowcraft.stores import FlowService, MemoryStore, SqliteStore
from benchmarks.durable_side import _approval_flow

kind, n = sys.argv[1], int(sys.argv[2])

async def main():
    tmp = tempfile.mkdtemp()
    store = MemoryStore() if kind == "memory" else SqliteStore(Path(tmp) / "x.db")
    service = FlowService(FlowRuntime(), store, flows=[_approval_flow()])
    for i in range(30 + n):
        await service.start("approval", run_id=f"r{i}")
        await service.resume(f"r{i}", {"action": "approved"}, idempotency_key="k")
    await store.close()

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
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("memory", "sqlite"):
            per_pair = (count(kind, n, Path(tmp)) - count(kind, 0, Path(tmp))) // n
            print(f"{kind}: {per_pair:,} instructions per durable start + resume")


if __name__ == "__main__":
    main()
