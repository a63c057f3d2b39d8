"""Instruction counts per operation under valgrind's callgrind: a noise-free ratio to the floor.

Wall-clock medians on a shared 2-core machine move by tens of percent between runs; callgrind
counts executed instructions, which do not depend on what else the machine is doing. Each
(scenario, implementation) runs in its own process twice — with 0 and with N operations after
the same warm-up — and the difference divided by N is the cost of one operation.

    python -m benchmarks.instructions            # needs valgrind on PATH
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SCENARIOS = ("approval", "chain100", "fanout20")
N = {"approval": 400, "chain100": 60, "fanout20": 40}
WORKER = """
import sys, anyio
from benchmarks import floor, flows
scenario, impl, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if impl == "floor":
    op = {
        "approval": lambda: floor.approval(flows.RESUME),
        "chain100": floor.make_chain(100),
        "fanout20": floor.make_fanout(20),
    }[scenario]
else:
    op = {
        "approval": flows.approval_op(),
        "chain100": flows.run_op(flows.chain_flow(100), 100),
        "fanout20": flows.run_op(flows.fanout_flow(20), 22),
    }[scenario]
async def main():
    for _ in range(20):
        await op()
    for _ in range(n):
        await op()
anyio.run(main)
"""


def count(scenario: str, impl: str, n: int, workdir: Path) -> int:
    """Total instructions of one worker process."""
    out = workdir / f"cg.{scenario}.{impl}.{n}"
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            "-c",
            WORKER,
            scenario,
            impl,
            str(n),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    match = re.search(r"Collected : (\d+)", proc.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind output:\n{proc.stderr[-2000:]}")
    return int(match.group(1))


def main() -> None:
    if shutil.which("valgrind") is None:
        print(json.dumps({"skipped": "valgrind is not installed"}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in SCENARIOS:
            n = N[scenario]
            per_op = {}
            for impl in ("floor", "flowcraft"):
                base = count(scenario, impl, 0, Path(tmp))
                total = count(scenario, impl, n, Path(tmp))
                per_op[impl] = (total - base) / n
            print(
                json.dumps(
                    {
                        "scenario": scenario,
                        "instructions_per_op": {k: round(v) for k, v in per_op.items()},
                        "ratio_to_floor": round(per_op["flowcraft"] / per_op["floor"], 2),
                    }
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
