"""The Celery app the worker subprocesses of ``test_celery*.py`` import (``celery -A ...``).

Configured by environment: ``FLOWCRAFT_CELERY_BROKER`` (broker URL), ``FLOWCRAFT_CELERY_QUEUE``,
``FLOWCRAFT_CELERY_STORE`` (``redis`` or ``postgres``), ``FLOWCRAFT_CELERY_NS`` (store
namespace), ``FLOWCRAFT_CELERY_TTL`` (lease seconds), ``FLOWCRAFT_CELERY_FANOUT`` (items per
task: batches spread over the workers; unset or 0: not), ``FLOWCRAFT_CELERY_TWICE`` (1: the
workers publish every message twice). Side effects go to ``FLOWCRAFT_TEST_EFFECTS`` (see
``tests/service/_support.py``).
"""

from __future__ import annotations

import os
from typing import Any

import anyio
from celery import Celery

from flowcraft import FlowRuntime, FlowService, NodeContext, create_flow
from flowcraft.celery import CeleryExecutor, install, safe_settings
from tests.service._support import (
    approval,
    effect,
    open_store,
    reminder,
    spread,
    two_waits,
)

_FLAKY: dict[str, int] = {}


async def escalate(node: NodeContext) -> str:
    effect("escalate", node.run_id)
    return "escalated"


async def flaky(node: NodeContext) -> str:
    """Fails its first attempt in each process that runs it (retried in the same segment)."""
    _FLAKY[node.run_id] = _FLAKY.get(node.run_id, 0) + 1
    if _FLAKY[node.run_id] == 1:
        raise RuntimeError("first attempt fails")
    effect("flaky", node.run_id)
    return "ok"


async def slow(node: NodeContext) -> str:
    """Stays in the node until the file ``FLOWCRAFT_CELERY_GATE`` names exists (a test kills
    the worker inside it, then opens the gate), or ``FLOWCRAFT_CELERY_SLOW`` seconds."""
    effect("slow-start", node.run_id)
    gate = os.environ.get("FLOWCRAFT_CELERY_GATE")
    if gate:
        while not os.path.exists(gate):
            await anyio.sleep(0.05)
    else:
        await anyio.sleep(float(os.environ.get("FLOWCRAFT_CELERY_SLOW", "3")))
    effect("slow-end", node.run_id)
    return "slow"


async def slow_item(node: NodeContext) -> int:
    """A batch item; item 1 takes long enough for a test to kill the worker inside it."""
    if node.input == 1:
        effect("slow-start", node.run_id)
        await anyio.sleep(float(os.environ.get("FLOWCRAFT_CELERY_SLOW", "3")))
        effect("slow-end", node.run_id)
    effect(node.node_id, node.run_id)
    return int(node.input) * 10


def crunch(node: NodeContext) -> int:
    """A CPU-bound batch item: a few milliseconds of pure Python (the fan-out benchmark)."""
    acc = 0
    for i in range(int(node.input)):
        acc = (acc * 31 + i) % 1_000_003
    return acc


async def done(node: NodeContext) -> str:
    effect("done", node.run_id)
    return "done"


def child() -> Any:
    return create_flow("child").wait("ok")


def flows() -> list[Any]:
    """The conformance flows: every worker and the test process know them all."""
    return [
        approval(),
        two_waits(),
        reminder("nap", 1.0),
        reminder("long", 3600.0),
        create_flow("escalation")
        .wait("approve", timeout=1.0, on_timeout="timeout")
        .node("pay", done, name="pay")
        .node("escalate", escalate, name="escalate")
        .edge("approve", "pay", action="approved")
        .edge("approve", "escalate", action="timeout"),
        create_flow("retry").node("flaky", flaky, name="flaky", max_retries=3),
        create_flow("parent")
        .subflow("sub", "child")
        .node("after", done, name="after")
        .edge("sub", "after"),
        create_flow("slow").node("slow", slow, name="slow").wait("next").edge("slow", "next"),
        child(),
        spread(),
        create_flow("slow-spread")
        .batch("sq", slow_item, input_key="xs")
        .node("after", done, name="after")
        .edge("sq", "after"),
        create_flow("crunch").batch("work", crunch, input_key="xs"),
    ]


def make_runtime() -> FlowRuntime:
    return FlowRuntime(blueprints={"child": child().to_blueprint()})


def make_service(kind: str, ns: str, executor: Any = None, ttl: float = 3.0) -> FlowService:
    store = open_store(kind, ns)
    return FlowService(
        make_runtime(), store, flows(), executor=executor, lease_ttl=ttl, poll_interval=0.2
    )


def make_app(broker: str) -> Celery:
    app = Celery("flowcraft-tests", broker=broker)
    app.conf.update(safe_settings(broker, time_limit=60))
    app.conf.update(
        worker_hijack_root_logger=False, broker_connection_retry_on_startup=True,
        task_default_queue=os.environ.get("FLOWCRAFT_CELERY_QUEUE", "flowcraft"),
    )
    return app


class Twice(CeleryExecutor):
    """Publishes every message twice (a broker that duplicates)."""

    def publish(self, body: dict[str, Any]) -> None:
        super().publish(body)
        super().publish(body)


if "FLOWCRAFT_CELERY_BROKER" in os.environ:
    app = make_app(os.environ["FLOWCRAFT_CELERY_BROKER"])
    per = int(os.environ.get("FLOWCRAFT_CELERY_FANOUT", "0"))
    kind = Twice if os.environ.get("FLOWCRAFT_CELERY_TWICE") == "1" else CeleryExecutor
    service = make_service(
        os.environ["FLOWCRAFT_CELERY_STORE"],
        os.environ["FLOWCRAFT_CELERY_NS"],
        kind(
            app, os.environ["FLOWCRAFT_CELERY_QUEUE"], fan_out=per > 0, items_per_task=max(1, per)
        ),
        float(os.environ.get("FLOWCRAFT_CELERY_TTL", "3")),
    )
    install(app, service)

    _BARE: list[Any] = []

    @app.task(name="flowcraft-tests.bare", ignore_result=True)  # type: ignore[untyped-decorator]
    def bare(key: str) -> None:
        """A bare task doing the node work of a segment (nothing) and counting itself, on one
        Redis connection reused by every task of the process (as the worker's store is)."""
        if not _BARE:
            from redis import Redis

            _BARE.append(Redis.from_url("redis://127.0.0.1:6379/13"))
        _BARE[0].incr(key)
