"""A worker process for the race tests: ``python -m tests.service._worker KIND WHERE``.

Reads one JSON line of deliveries from stdin, prints ``ready``, waits for ``go``, then sends
every delivery at once (one task each) and prints one JSON line per outcome.
"""

from __future__ import annotations

import hashlib
import json
import sys
from typing import Any

import anyio

from flowcraft import AlreadyDecidedError, FlowcraftError, FlowRuntime
from flowcraft.stores import FlowService
from tests.service._support import flows, open_store


async def deliver(service: FlowService, d: dict[str, Any], out: list[dict[str, Any]]) -> None:
    data = {"action": d["action"]} if d.get("action") else None
    row: dict[str, Any] = {"run": d["run"], "by": d.get("by")}
    try:
        result = await service.resume(
            d["run"], data, d.get("node"), by=d.get("by"), idempotency_key=d.get("key")
        )
        row["ok"] = True
        row["ctx"] = hashlib.sha1(result.serialized_context).hexdigest()
    except AlreadyDecidedError as exc:
        row.update(ok=False, error="AlreadyDecidedError", action=exc.action, winner=exc.by)
    except FlowcraftError as exc:
        row.update(ok=False, error=type(exc).__name__, message=str(exc))
    out.append(row)


async def main() -> None:
    kind, where = sys.argv[1:3]
    deliveries = json.loads(sys.stdin.readline())
    store = open_store(kind, where)
    service = FlowService(FlowRuntime(), store, flows=flows(), poll_interval=0.05, lease_ttl=10)
    await store.recall("warm", "up")  # connect before the start line
    print("ready", flush=True)
    sys.stdin.readline()
    out: list[dict[str, Any]] = []
    async with anyio.create_task_group() as tg:
        for d in deliveries:
            tg.start_soon(deliver, service, d, out)
    for row in out:
        print(json.dumps(row), flush=True)
    await store.close()


if __name__ == "__main__":
    anyio.run(main)
