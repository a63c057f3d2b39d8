"""LangGraph versions of the benchmark flows (imported only when langgraph is installed)."""

from __future__ import annotations

import itertools
import uuid
from typing import Any, TypedDict

from langgraph.checkpoint.memory import MemorySaver
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

RESUME = {"output": {"approved": True}, "action": "approved"}


def version() -> str:
    from importlib.metadata import version as v

    return v("langgraph")


class ApprovalState(TypedDict, total=False):
    submit: str
    approve: Any
    process: str


async def _submit(state: ApprovalState) -> dict[str, Any]:
    return {"submit": "submitted"}


async def _approve(state: ApprovalState) -> dict[str, Any]:
    return {"approve": interrupt("approve")}


async def _process(state: ApprovalState) -> dict[str, Any]:
    return {"process": "paid" if state["approve"]["output"]["approved"] else "refused"}


def _route(state: ApprovalState) -> str:
    return "process" if state["approve"]["action"] == "approved" else END


def approval_graph() -> Any:
    g = StateGraph(ApprovalState)
    g.add_node("submit", _submit)
    g.add_node("approve", _approve)
    g.add_node("process", _process)
    g.add_edge(START, "submit")
    g.add_edge("submit", "approve")
    g.add_conditional_edges("approve", _route, ["process", END])
    g.add_edge("process", END)
    return g.compile(checkpointer=MemorySaver())


def approval_op() -> Any:
    """One approval: invoke → interrupt (checkpoint saved) → Command(resume=...) → done."""
    graph = approval_graph()
    ids = itertools.count()
    checked = False

    async def op() -> Any:
        nonlocal checked
        config = {"configurable": {"thread_id": f"t{next(ids)}"}}
        first = await graph.ainvoke({}, config)
        final = await graph.ainvoke(Command(resume=RESUME), config)
        if not checked:
            if "__interrupt__" not in first or final.get("process") != "paid":
                raise RuntimeError(f"langgraph approval: {first!r} then {final!r}")
            checked = True
        return final

    return op


async def approval_context_bytes() -> int:
    """Size of the serialized checkpoint LangGraph stores at the interrupt."""
    graph = approval_graph()
    config = {"configurable": {"thread_id": "size"}}
    await graph.ainvoke({}, config)
    saver = graph.checkpointer
    tup = saver.get_tuple(config)
    _, blob = saver.serde.dumps_typed(tup.checkpoint)
    size = len(blob)
    for write in tup.pending_writes or ():
        size += len(saver.serde.dumps_typed(write[2])[1])
    return size


def _state_type(keys: list[str]) -> Any:
    return TypedDict("State", dict.fromkeys(keys, int), total=False)  # type: ignore[operator]


def _writer(key: str) -> Any:
    async def node(state: Any) -> dict[str, int]:
        return {key: 1}

    return node


def chain_op(n: int) -> Any:
    keys = [f"n{i}" for i in range(n)]
    g = StateGraph(_state_type(keys))
    for k in keys:
        g.add_node(k, _writer(k))
    g.add_edge(START, keys[0])
    for a, b in itertools.pairwise(keys):
        g.add_edge(a, b)
    g.add_edge(keys[-1], END)
    graph = g.compile()
    config = {"recursion_limit": n + 10}

    async def op() -> Any:
        out = await graph.ainvoke({}, config)
        if len(out) != n:
            raise RuntimeError(f"langgraph chain wrote {len(out)} keys")
        return out

    return op


def fanout_op(n: int) -> Any:
    branches = [f"b{i}" for i in range(n)]
    g = StateGraph(_state_type(["src", "join", *branches]))
    g.add_node("src", _writer("src"))
    g.add_node("join", _writer("join"))
    g.add_edge(START, "src")
    for b in branches:
        g.add_node(b, _writer(b))
        g.add_edge("src", b)
    g.add_edge(branches, "join")
    g.add_edge("join", END)
    graph = g.compile()

    async def op() -> Any:
        out = await graph.ainvoke({})
        if len(out) != n + 2:
            raise RuntimeError(f"langgraph fan-out wrote {len(out)} keys")
        return out

    return op


# --- durable: SqliteSaver / PostgresSaver (async variants: the runs are async) ------------------


def durable_approval_graph(saver: Any) -> Any:
    """The approval graph on a durable checkpointer."""
    g = StateGraph(ApprovalState)
    g.add_node("submit", _submit)
    g.add_node("approve", _approve)
    g.add_node("process", _process)
    g.add_edge(START, "submit")
    g.add_edge("submit", "approve")
    g.add_conditional_edges("approve", _route, ["process", END])
    g.add_edge("process", END)
    return g.compile(checkpointer=saver)


class LangGraphImpl:
    """``ainvoke`` → ``interrupt()`` (checkpoint committed) → ``Command(resume=...)`` → END.

    ``durability`` is LangGraph's own: ``"async"`` (its default: a checkpoint per step, written
    beside the next step, all committed before ``ainvoke`` returns) or ``"exit"`` (one
    checkpoint when the invocation returns: at the interrupt and at the end).
    """

    def __init__(self, backend: str, durability: str) -> None:
        self.backend = backend
        self.durability = durability
        self.name = "langgraph" if durability == "async" else f"langgraph-{durability}"
        self._close: list[Any] = []
        self.schema: str | None = None
        self.graph: Any = None

    async def open(self, url: str, tmp: Any) -> LangGraphImpl:
        if self.backend == "sqlite":
            import aiosqlite
            from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

            self.path = tmp / f"{self.name}.db"
            conn = await aiosqlite.connect(self.path)
            self._close.append(conn.close)
            saver = AsyncSqliteSaver(conn)
            await saver.setup()  # sets journal_mode=WAL; synchronous stays SQLite's FULL
            await conn.execute("PRAGMA synchronous=FULL")
            async with conn.execute("PRAGMA synchronous") as cur:
                self._sync = (await cur.fetchone())[0]
            async with conn.execute("PRAGMA journal_mode") as cur:
                self._journal = (await cur.fetchone())[0]
        else:
            import psycopg
            from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            self.schema = f"lg_bench_{uuid.uuid4().hex[:8]}"
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as c:
                await c.execute(f"CREATE SCHEMA {self.schema}")
            pool = AsyncConnectionPool(
                url,
                min_size=1,
                max_size=8,
                open=False,
                kwargs={
                    "autocommit": True,
                    "prepare_threshold": 0,
                    "row_factory": dict_row,
                    "options": f"-c search_path={self.schema}",
                },
            )
            await pool.open()
            self._close.append(pool.close)
            saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
            await saver.setup()
        self.graph = durable_approval_graph(saver)
        self.config = {"durability": self.durability}
        return self

    async def start(self, run_id: str) -> None:
        out = await self.graph.ainvoke(
            {}, {"configurable": {"thread_id": run_id}}, durability=self.durability
        )
        if "__interrupt__" not in out:
            raise RuntimeError(f"langgraph did not pause: {out!r}")

    async def resume(self, run_id: str) -> None:
        out = await self.graph.ainvoke(
            Command(resume=RESUME),
            {"configurable": {"thread_id": run_id}},
            durability=self.durability,
        )
        if out.get("process") != "paid":
            raise RuntimeError(f"langgraph approval ended with {out!r}")

    def settings(self) -> dict[str, Any]:
        saver = "AsyncSqliteSaver" if self.backend == "sqlite" else "AsyncPostgresSaver"
        out: dict[str, Any] = {"saver": saver, "durability": self.durability}
        if self.backend == "sqlite":
            out["journal_mode"] = self._journal
            out["synchronous"] = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[self._sync]
        else:
            out["pool"] = "psycopg_pool, max 8"
        return out

    async def close(self) -> None:
        for fn in reversed(self._close):
            await fn()
