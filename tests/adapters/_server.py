"""A real uvicorn server on 127.0.0.1 (a free port) in a thread, and the flows the tests drive."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import uvicorn

from flowcraft import Clock, FlowRuntime, FlowService, NodeContext, NodeResult, create_flow
from flowcraft.http import BearerAuth, FlowApp, Principal, create_app
from flowcraft.stores import MemoryStore, RunStore

READER = "read-token"
STARTER = "start-token"
DECIDER = "decide-token"
ADMIN = "admin-token"
NOBODY = "nobody-token"

TOKENS = {
    READER: Principal("reader", frozenset({"execution:read"})),
    STARTER: Principal("starter", frozenset({"execution:start", "execution:read"})),
    DECIDER: Principal("alice", frozenset({"execution:cancel", "execution:read"})),
    ADMIN: Principal("admin", frozenset({"execution:read", "execution:start", "execution:cancel"})),
    NOBODY: Principal("nobody", frozenset()),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Decision(msgspec.Struct):
    approved: bool
    comment: str = ""


def build_service(
    store: RunStore | None = None, effects: list[str] | None = None, clock: Clock | None = None
) -> FlowService:
    """Two flows: the seed's (one unlabelled wait) and an approval with approve/reject edges."""
    seen = effects if effects is not None else []

    async def submit(node: NodeContext) -> str:
        node.context.set("request", {"user": "Alice", "amount": 1500})
        return "submitted"

    async def process(node: NodeContext) -> NodeResult[str]:
        seen.append(f"{node.run_id}:process")
        decision: dict[str, Any] = node.input or {}
        return NodeResult(output="paid" if decision.get("approved") else "refused")

    async def done(node: NodeContext) -> str:
        seen.append(f"{node.run_id}:{node.node_id}")
        return node.node_id

    seed = (
        create_flow("seed")
        .node("submit", submit)
        .wait("require-approval", description="Requires manager approval")
        .node("process", process)
        .edge("submit", "require-approval")
        .edge("require-approval", "process")
    )
    approval = (
        create_flow("approval")
        .node("submit", submit)
        .wait("manager", description="Approve <b>the expense</b>", schema=Decision)
        .node("pay", done)
        .node("refuse", done)
        .edge("submit", "manager")
        .edge("manager", "pay", action="approved")
        .edge("manager", "refuse", action="rejected")
    )
    runtime = FlowRuntime(clock=clock)
    return FlowService(runtime, store or MemoryStore(), [seed, approval])


def build_app(service: FlowService, **kw: Any) -> FlowApp:
    kw.setdefault("auth", BearerAuth(TOKENS))
    return create_app(service, **kw)


class _Server(uvicorn.Server):
    """A uvicorn server that says when it listens."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = _Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    if not server.ready.wait(10):
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
