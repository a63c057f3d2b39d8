"""Approvals executed by Celery workers; timers fired by the durable scheduler, never the broker.

Needs RabbitMQ (or Redis) as the broker and PostgreSQL as the store::

    pip install 'flowcraft[celery,postgres]'
    # a worker (run as many as you like, on as many machines):
    celery -A examples.celery_approvals worker -Q approvals --pool=solo
    # the durable scheduler (fires timers and sweeps lapsed claims; run one or more):
    python -m examples.celery_approvals scheduler
    # a client: start a run, approve it, print the outcome:
    python -m examples.celery_approvals client
"""

from __future__ import annotations

import os
import sys

import anyio
from celery import Celery

from flowcraft import FlowRuntime, FlowService, NodeContext, create_flow
from flowcraft.celery import CeleryExecutor, install, safe_settings
from flowcraft.stores import PostgresStore

BROKER = os.environ.get("BROKER", "amqp://guest:guest@127.0.0.1:5672//")
STORE = os.environ.get("STORE", "postgresql://postgres@127.0.0.1:5432/test")


async def submit(node: NodeContext) -> str:
    return "submitted"


async def pay(node: NodeContext) -> str:
    # Runs on a worker. At-least-once across a worker crash: key the payment on node.run_id.
    return "paid"


async def remind(node: NodeContext) -> str:
    return "reminded"


flow = (
    create_flow("expense")
    .node("submit", submit, name="submit")
    .wait("approve", timeout=3600, on_timeout="timeout")
    .node("pay", pay, name="pay")
    .node("remind", remind, name="remind")
    .edge("submit", "approve")
    .edge("approve", "pay", action="approved")
    .edge("approve", "remind", action="timeout")
)

app = Celery("approvals", broker=BROKER)
app.conf.update(safe_settings(BROKER), task_default_queue="approvals")
service = FlowService(
    FlowRuntime(), PostgresStore(STORE, namespace="approvals"), [flow],
    executor=CeleryExecutor(app, queue="approvals"),
)
install(app, service)  # refuses unsafe worker settings, naming them


async def client() -> None:
    handed = await service.start("expense", {"amount": 42})  # returns at once: "running"
    waiting = await service.settled(handed.run_id)
    print("awaiting:", [a.node_id for a in waiting.awaiting])
    await service.resume(handed.run_id, {"action": "approved"}, by="ann", idempotency_key="a1")
    done = await service.settled(handed.run_id)
    print(done.status, done.outputs)


async def scheduler() -> None:
    async with service.scheduler(1.0):
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(scheduler if sys.argv[1:] == ["scheduler"] else client)
