"""LangGraph versions of the benchmark flows (imported only when langgraph is installed)."""

from __future__ import annotations

import itertools
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
