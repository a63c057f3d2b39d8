"""Run one flowcraft scenario in a loop, for a profiler.

Usage: ``python -m cProfile -s cumtime -m benchmarks.profile_one chain100 2000`` (or
``approval 20000``, ``fanout20 2000``).
"""

from __future__ import annotations

import sys

import anyio

from . import flows

OPS = {
    "approval": flows.approval_op,
    "chain100": lambda: flows.run_op(flows.chain_flow(100), 100),
    "fanout20": lambda: flows.run_op(flows.fanout_flow(20), 22),
}


def main(argv: list[str]) -> None:
    name = argv[0] if argv else "chain100"
    times = int(argv[1]) if len(argv) > 1 else 1000
    op = OPS[name]()

    async def go() -> None:
        for _ in range(times):
            await op()

    anyio.run(go)


if __name__ == "__main__":
    main(sys.argv[1:])
