"""Approvals executed by Celery workers; timers fired by the durable scheduler, never the broker.

Needs RabbitMQ (or Redis) as the broker and PostgreSQL as the store::

    pip install 'flowcraft[celery,postgres]'
    # a worker (run as many as you like, on as many machines):
    celery -A examples.celery_approvals worker -Q approvals --pool=solo
    # the durable scheduler (fires timers and sweeps lapsed claims; run one or more):
    python -m examples.celery_approvals scheduler
    # a client: start a run, approve it, print the outcome:
    python -m examples.celery_approvals client
    # all three at once (a worker subprocess, the scheduler, the client): the demo
    python examples/celery_approvals.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


HERE = Path(__file__).resolve().parent


def spawn_worker() -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "celery", "-A", "celery_approvals", "worker", "-Q", "approvals",
           "--pool=solo", "--without-gossip", "--without-mingle", "--loglevel=WARNING"]
    return subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def demo() -> None:
    worker = spawn_worker()
    try:
        async with service.scheduler(1.0):
            with anyio.fail_after(60):
                await client()
        print("celery approvals: OK")
    finally:
        worker.terminate()
        worker.wait(20)
        await service.store.close()


if __name__ == "__main__":
    mode = sys.argv[1:2]
    anyio.run(scheduler if mode == ["scheduler"] else client if mode == ["client"] else demo)
