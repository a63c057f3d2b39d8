"""The app the CLI and MCP tests operate: ``--app tests.adapters.cli_app:service``.

``FLOWCRAFT_TEST_STORE`` says where runs live: ``sqlite:PATH`` or ``postgres:NAMESPACE``
(on ``FLOWCRAFT_TEST_POSTGRES``); ``FLOWCRAFT_TEST_KEYS`` (``id=secret``) signs contexts.
"""

from __future__ import annotations

import os

import msgspec

from flowcraft import Approvals, FlowRuntime, FlowService, NodeContext, NodeResult, create_flow
from flowcraft.stores import PostgresStore, RunStore, SqliteStore

POSTGRES_DSN = os.environ.get(
    "FLOWCRAFT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)


class Decision(msgspec.Struct):
    """What the manager decides."""

    approved: bool
    comment: str = ""


async def submit(node: NodeContext) -> str:
    node.context.set("amount", node.context.get("amount", 1500))
    return "submitted"


async def pay(node: NodeContext) -> NodeResult:
    return NodeResult(output="paid")


async def refuse(node: NodeContext) -> NodeResult:
    return NodeResult(output="refused")


expense = (
    create_flow("expense")
    .node("submit", submit)
    .wait("approval", schema=Decision, description="Manager approves the expense")
    .node("pay", pay)
    .node("refuse", refuse)
    .edge("submit", "approval")
    .edge("approval", "pay", action="approved")
    .edge("approval", "refuse", action="rejected")
)

quorum = (
    create_flow("quorum")
    .node("submit", submit)
    .wait("approve", approvals=Approvals(required=2), description="Two managers approve")
    .node("pay", pay)
    .edge("submit", "approve")
    .edge("approve", "pay", action="approve")
)

timer = create_flow("nap").node("submit", submit).sleep("nap", duration=0.2).node("pay", pay)
timer = timer.edge("submit", "nap").edge("nap", "pay")


def _store() -> RunStore:
    where = os.environ.get("FLOWCRAFT_TEST_STORE", "sqlite:flowcraft-test.db")
    kind, _, arg = where.partition(":")
    if kind == "postgres":
        return PostgresStore(POSTGRES_DSN, namespace=arg)
    return SqliteStore(arg)


def _keys() -> dict[str, str] | None:
    raw = os.environ.get("FLOWCRAFT_TEST_KEYS")
    if not raw:
        return None
    key_id, _, secret = raw.partition("=")
    return {key_id: secret}


service = FlowService(
    FlowRuntime(signing_keys=_keys()), _store(), [expense, quorum, timer], poll_interval=0.05
)
