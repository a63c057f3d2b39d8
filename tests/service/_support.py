"""Shared by the durable-service tests: stores on every backend, flows that count side effects.

Side effects are lines appended to the file named by ``FLOWCRAFT_TEST_EFFECTS`` (one
``write`` of a short line with O_APPEND is atomic across processes), so a test counts how
often each node ran for each run, whichever process ran it.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import FlowEvent, NodeContext, create_flow
from flowcraft.stores import MemoryStore, PostgresStore, RedisStore, RunStore, SqliteStore

REDIS_URL = os.environ.get("FLOWCRAFT_TEST_REDIS", "redis://127.0.0.1:6379/15")
POSTGRES_DSN = os.environ.get(
    "FLOWCRAFT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
REQUIRE = os.environ.get("FLOWCRAFT_REQUIRE_SERVICES") == "1"
ROOT = Path(__file__).resolve().parent.parent.parent
KINDS = ["memory", "sqlite", "redis", "postgres"]
SHARED = ["sqlite", "redis", "postgres"]  # stores several processes can share


def unavailable(what: str, exc: BaseException) -> None:
    """Skip (or fail under FLOWCRAFT_REQUIRE_SERVICES=1) when a server cannot be reached."""
    msg = f"{what} is unreachable ({type(exc).__name__}: {exc}); start it or unset the store"
    if REQUIRE:
        pytest.fail(f"{msg}. FLOWCRAFT_REQUIRE_SERVICES=1 requires every server.")
    pytest.skip(msg)


def open_store(kind: str, where: str) -> RunStore:
    """A store of ``kind``: ``where`` is a file path (sqlite) or a namespace (servers)."""
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(where)
    if kind == "redis":
        return RedisStore(REDIS_URL, namespace=where)
    return PostgresStore(POSTGRES_DSN, namespace=where)


async def drop(kind: str, namespace: str) -> None:
    """Remove everything a test namespace created on a server."""
    if kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        keys = [k async for k in client.scan_iter(f"{namespace}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
    elif kind == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            for table in ("runs", "history", "idempotency", "leases", "checkpoints", "counts"):
                await conn.execute(f"DROP TABLE IF EXISTS {namespace}_{table}")
            for fn in ("counts_fn", "counts_set_fn"):
                await conn.execute(f"DROP FUNCTION IF EXISTS {namespace}_{fn}()")


@asynccontextmanager
async def backend(kind: str, tmp_path: Path) -> AsyncIterator[tuple[RunStore, str]]:
    """A fresh store of ``kind`` and its location, probed (skips when the server is down)."""
    where = str(tmp_path / "runs.db") if kind == "sqlite" else f"t{uuid.uuid4().hex[:12]}"
    store = open_store(kind, where)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        await store.close()
        unavailable(f"{kind} store", exc)
    try:
        yield store, where
    finally:
        await store.close()
        await drop(kind, where)


class Gate:
    """A store whose next ``parties`` reads (``get``) return only once all of them have read.

    So every racer sees the same stored revision before any of them claims. ``arm(n)`` sets
    it up for the next ``n`` reads (0: a plain store). The event is made on first use, in the
    loop the reads run in.
    """

    def __init__(self, inner: RunStore, parties: int = 0) -> None:
        self.inner = inner
        self.arm(parties)

    def arm(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.all_in: anyio.Event | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def get(self, run_id: str) -> Any:
        run = await self.inner.get(run_id)
        if self.arrived < self.parties:
            if self.all_in is None:
                self.all_in = anyio.Event()
            event = self.all_in
            self.arrived += 1
            if self.arrived == self.parties:
                event.set()
            with anyio.fail_after(10):
                await event.wait()
        return run


class Bus:
    """An event bus that keeps every event it is given, in order."""

    def __init__(self) -> None:
        self.events: list[FlowEvent] = []

    def emit(self, event: FlowEvent) -> None:
        self.events.append(event)


# --- flows whose nodes leave countable side effects -------------------------------------------


def effect(name: str, run_id: str) -> None:
    """Record that node ``name`` ran for ``run_id``."""
    path = os.environ.get("FLOWCRAFT_TEST_EFFECTS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{name} {run_id}\n".encode())
        finally:
            os.close(fd)


def effects(path: Path) -> Counter[tuple[str, str]]:
    """How often each (node, run) ran."""
    if not path.exists():
        return Counter()
    return Counter(tuple(line.split()) for line in path.read_text().splitlines())  # type: ignore[misc]


async def submit(node: NodeContext) -> str:
    effect("submit", node.run_id)
    return "submitted"


async def pay(node: NodeContext) -> str:
    effect("pay", node.run_id)
    await anyio.sleep(0.01)  # stay in the node a little: races overlap
    return "paid"


async def refuse(node: NodeContext) -> str:
    effect("refuse", node.run_id)
    await anyio.sleep(0.01)
    return "refused"


async def after_a(node: NodeContext) -> str:
    effect("after_a", node.run_id)
    await anyio.sleep(0.01)
    return "a"


async def after_b(node: NodeContext) -> str:
    effect("after_b", node.run_id)
    await anyio.sleep(0.01)
    return "b"


async def woke(node: NodeContext) -> str:
    effect("woke", node.run_id)
    return "woke"


def approval() -> Any:
    """submit → wait "approve" → pay (approved) | refuse (rejected)."""
    return (
        create_flow("approval")
        .node("submit", submit, name="submit")
        .wait("approve")
        .node("pay", pay, name="pay")
        .node("refuse", refuse, name="refuse")
        .edge("submit", "approve")
        .edge("approve", "pay", action="approved")
        .edge("approve", "refuse", action="rejected")
    )


def two_waits() -> Any:
    """submit → two waits in parallel, each with its own node after it."""
    return (
        create_flow("two-waits")
        .node("submit", submit, name="submit")
        .wait("a")
        .wait("b")
        .node("after_a", after_a, name="after_a")
        .node("after_b", after_b, name="after_b")
        .edge("submit", "a")
        .edge("submit", "b")
        .edge("a", "after_a")
        .edge("b", "after_b")
    )


def reminder(name: str = "reminder", seconds: float = 60) -> Any:
    """submit → sleep → woke."""
    return (
        create_flow(name)
        .node("submit", submit, name="submit")
        .sleep("nap", duration=seconds)
        .node("woke", woke, name="woke")
        .edge("submit", "nap")
        .edge("nap", "woke")
    )


TIMEOUT = 300.0  # model_flow's approval wait times out (the scheduler decides "timeout")
NAP = 60.0  # model_flow's sleep after an approval


def model_flow(effects: Counter[tuple[str, str]]) -> Any:
    """submit → approve (wait, times out) → pay → nap (sleep) → done | refuse | lapse."""

    def counted(name: str) -> Callable[[NodeContext], Coroutine[Any, Any, str]]:
        async def node(ctx: NodeContext) -> str:
            effects[(name, ctx.run_id)] += 1
            await anyio.lowlevel.checkpoint()  # let concurrent deliveries interleave
            return name

        return node

    return (
        create_flow("model")
        .node("submit", counted("submit"), name="submit")
        .wait("approve", timeout=TIMEOUT, on_timeout="timeout")
        .node("pay", counted("pay"), name="pay")
        .node("refuse", counted("refuse"), name="refuse")
        .node("lapse", counted("lapse"), name="lapse")
        .sleep("nap", duration=NAP)
        .node("done", counted("done"), name="done")
        .edge("submit", "approve")
        .edge("approve", "pay", action="approved")
        .edge("approve", "refuse", action="rejected")
        .edge("approve", "lapse", action="timeout")
        .edge("pay", "nap")
        .edge("nap", "done")
    )


COUNTS: Counter[tuple[str, str]] = Counter()  # in-process item runs (``square``), by test


def square(node: NodeContext) -> int:
    """A batch item: its square; -1 pauses the item, 13 fails it (every attempt)."""
    effect(node.node_id, node.run_id)
    COUNTS[(node.node_id, node.run_id)] += 1
    x = node.input
    if x == -1:
        node.pause("check -1")
    if x == 13:
        raise ValueError("13 is unlucky")
    return int(x) * int(x)


async def total(node: NodeContext) -> int:
    effect("total", node.run_id)
    COUNTS[("total", node.run_id)] += 1
    return sum(node.input)


def spread(per: int | None = None) -> Any:
    """prep → batch "sq" (``square`` over state ``xs``, 2 attempts) → total; a wait beside it."""
    return (
        create_flow("spread")
        .node("prep", submit, name="prep")
        .batch("sq", square, input_key="xs", output_key="squares", max_retries=2, chunk_size=per)
        .node("total", total, name="total")
        .wait("aside")
        .edge("prep", "sq")
        .edge("sq", "total")
        .edge("prep", "aside")
    )


def flows() -> list[Any]:
    """Every flow the workers know."""
    return [approval(), two_waits(), reminder()]
