"""The floor: the least work any Python runtime must do for each benchmark flow.

Definition (issue 6): call the node functions (async functions awaited), keep outputs in a dict,
and for approval encode a context dict with msgspec msgpack at the pause and decode it at the
resume. No run id, no history, no timestamps: the floor context is just the outputs and the
name of the waiting node. The fan-out floor runs one anyio task per branch in a task group.
Nothing else: no routing tables, no validation, no events. A runtime cannot beat these numbers
except by not spawning tasks (fan-out) or not calling the functions.
"""

from __future__ import annotations

import heapq
from typing import Any

import anyio
import msgspec

_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


async def submit(_: object) -> str:
    return "submitted"


async def process(decision: Any) -> str:
    return "paid" if decision["approved"] else "refused"


async def step(_: object) -> int:
    return 1


# --- approval -------------------------------------------------------------------------------


async def approval_run() -> bytes:
    """Run until the wait: call ``submit``, then encode the context at the pause."""
    outputs = {"submit": await submit(None)}
    ctx = {"outputs": outputs, "waiting": "approve"}
    return _ENCODER.encode(ctx)


async def approval_resume(data: bytes, resume: dict[str, Any]) -> dict[str, Any]:
    """Decode the context, complete the wait with the resume output, route by action."""
    ctx = _DECODER.decode(data)
    outputs = ctx["outputs"]
    outputs[ctx["waiting"]] = resume["output"]
    if resume["action"] == "approved":
        outputs["process"] = await process(resume["output"])
    return outputs


async def approval(resume: dict[str, Any]) -> dict[str, Any]:
    return await approval_resume(await approval_run(), resume)


def approval_context() -> bytes:
    """The floor's context at the pause (for the size scenario)."""
    ctx = {"outputs": {"submit": "submitted"}, "waiting": "approve"}
    return _ENCODER.encode(ctx)


# --- chain ----------------------------------------------------------------------------------


def make_chain(n: int) -> Any:
    ids = [f"n{i}" for i in range(n)]
    fns = [step] * n

    async def chain() -> dict[str, Any]:
        outputs: dict[str, Any] = {}
        value: Any = None
        for node_id, fn in zip(ids, fns, strict=True):
            value = await fn(value)
            outputs[node_id] = value
        return outputs

    return chain


# --- fan-out --------------------------------------------------------------------------------


def make_fanout(n: int) -> Any:
    ids = [f"b{i}" for i in range(n)]

    async def fanout() -> dict[str, Any]:
        outputs: dict[str, Any] = {"src": await step(None)}
        src = outputs["src"]

        async def branch(node_id: str) -> None:
            outputs[node_id] = await step(src)

        async with anyio.create_task_group() as tg:
            for node_id in ids:
                tg.start_soon(branch, node_id)
        outputs["join"] = await step({i: outputs[i] for i in ids})
        return outputs

    return fanout


# --- timers ---------------------------------------------------------------------------------


async def timers(n: int) -> int:
    """Register ``n`` deadlines in a heap, pop them all as due, call each continuation."""
    heap: list[tuple[float, int, dict[str, Any]]] = []
    for i in range(n):
        heapq.heappush(heap, (30.0, i, {"a": 1}))
    fired = 0
    now = 30.0
    while heap and heap[0][0] <= now:
        _, _, outputs = heapq.heappop(heap)
        outputs["nap"] = outputs["a"]
        outputs["b"] = await step(outputs["nap"])
        fired += 1
    return fired
