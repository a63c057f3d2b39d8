"""Scale out on Celery (DESIGN §12): many workers, exactly-once transitions, timers off the broker.

Client (any process)::

    app = Celery("approvals", broker="amqp://guest:guest@127.0.0.1:5672//")
    app.conf.update(safe_settings(app.conf.broker_url))
    service = FlowService(runtime, store, flows, executor=CeleryExecutor(app, queue="flowcraft"))
    install(app, service)          # in the module the worker imports
    handed = await service.start("approval", {...})   # status "running": returns at once
    done = await service.settled(handed.run_id)       # when the caller wants the outcome

Worker: ``celery -A approvals worker -Q flowcraft``. On RabbitMQ do not use ``--pool=solo``:
with late acks and prefetch 1, Celery 5.7's solo pool can leave the ack of a finished task
unsent until its event loop next wakes (80-400 ms measured per task); ``--pool=threads -c 1``
(one segment at a time, the same guarantees) does not. Each worker process keeps one event
loop and its store connections for all its tasks. Timers: run the durable scheduler
(``async with service.scheduler(1.0)``, or a beat entry for the ``flowcraft.tick`` task): it
publishes ``fire`` deliveries when timers are due. Nothing is ever published with an ETA.

A message is a ``flowcraft.Delivery`` as a JSON object (``run_id``, ``revision``,
``delivery_id``, ``kind``, ``flow_id``, ``node_id``, ``v``; ``item`` in version 2): never the
state, never pickle.
The store is the truth: the worker executes a delivery only while the run is still claimed
under it (``FlowService.execute``), so a redelivered, duplicated or stale message is a no-op
that acks. A decision the worker refuses (an unknown action, data failing the wait's schema)
leaves the run as it was; sent with an ``idempotency_key``, its caller reads the refusal back:
``await service.outcome(run_id, key)`` raises that error. Node side effects stay
at-least-once across a worker crash (the sweep re-publishes
the run, whose nodes since the last stored state run again).

Batches across workers: ``CeleryExecutor(app, fan_out=True, items_per_task=25)``. The segment
that reaches a ``.batch`` stores the run (still ``running``) with the batch pending and its
item chunks in the outbox, then publishes one ``item`` message per chunk. A worker runs a chunk
under a lease of its own (a duplicate copy acks without running it) and merges the outcomes
into the stored run by compare-and-set keyed by the chunk; the merge that completes the set
stores the ``gather`` claim in the same write and publishes it; one worker takes that claim and
runs the nodes after the batch, once. Never a chord or a group callback. Items behave as in one
process (the batch's retries and timeout, a failed item failing the batch, ``node.pause()``
pausing the item as ``"<batch>/<index>"``), except that an item's writes to the run's state
stay on its worker: only its return value travels. Lost item messages are re-published by the
sweep once no merge has renewed the run's lease for ``lease_ttl``. A chunk a worker cannot run
at all (the flow changed under the run) is a fault recorded on the run, re-published after a
backoff, and its third attempt fails its items (and so the batch) with that error.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import anyio.from_thread

from flowcraft import Delivery, DeliveryError, DurableScheduler, FlowcraftError, FlowService

try:
    import celery
except ImportError as exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "flowcraft.celery needs Celery: pip install 'flowcraft[celery]'"
    ) from exc

__all__ = [
    "TASK_NAME",
    "TICK_NAME",
    "CeleryExecutor",
    "UnsafeWorkerSettingsError",
    "check_settings",
    "install",
    "safe_settings",
]

log = logging.getLogger("flowcraft.celery")
T = TypeVar("T")

#: The pinned name of the task that executes deliveries (stable across releases).
TASK_NAME = "flowcraft.execute"
#: The pinned name of the task that runs one durable scheduler tick (for celery beat).
TICK_NAME = "flowcraft.tick"
_JSON = {"json", "application/json"}
_VISIBILITY_BROKERS = ("redis", "rediss", "sqs", "sentinel")


class UnsafeWorkerSettingsError(FlowcraftError, ValueError):
    """``install`` refused a Celery app whose settings would lose or duplicate segments."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            "unsafe Celery settings for flowcraft (app.conf.update(flowcraft.celery."
            f"safe_settings(broker_url)) sets them all):\n{lines}"
        )


def safe_settings(broker_url: str | None = None, time_limit: int = 300) -> dict[str, Any]:
    """Settings ``install`` accepts: late acks, requeue on a lost worker, prefetch 1, JSON only.

    On brokers with a visibility timeout (Redis, SQS) it is set above ``time_limit``.
    """
    conf: dict[str, Any] = {
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_time_limit": time_limit,
    }
    if broker_url and broker_url.split(":", 1)[0] in _VISIBILITY_BROKERS:
        conf["broker_transport_options"] = {"visibility_timeout": time_limit * 2}
    return conf


def check_settings(app: celery.Celery) -> list[str]:
    """What is unsafe about ``app``'s settings for flowcraft (empty: nothing)."""
    conf = app.conf
    problems: list[str] = []
    if not conf.task_acks_late:
        problems.append(
            "task_acks_late must be True (ack after the segment, so a dead worker's message "
            "is redelivered rather than lost)"
        )
    if not conf.task_reject_on_worker_lost:
        problems.append(
            "task_reject_on_worker_lost must be True (a worker killed mid-segment requeues "
            "its message instead of acking it)"
        )
    if conf.worker_prefetch_multiplier != 1:
        problems.append(
            f"worker_prefetch_multiplier must be 1, not {conf.worker_prefetch_multiplier} "
            "(prefetched messages wait behind a long segment and their claims lapse)"
        )
    accept = {str(c) for c in (conf.accept_content or ())}
    if not accept or not accept <= _JSON:
        problems.append(f"accept_content must be ['json'] only, not {sorted(accept)}")
    if conf.task_serializer != "json":
        problems.append(f"task_serializer must be 'json', not {conf.task_serializer!r}")
    url = str(conf.broker_url or "")
    if url.split(":", 1)[0] in _VISIBILITY_BROKERS:
        options = conf.broker_transport_options or {}
        timeout = float(options.get("visibility_timeout", 3600))
        limit = conf.task_time_limit
        if limit is None or timeout <= float(limit):
            problems.append(
                f"broker_transport_options['visibility_timeout'] ({timeout:g}s) must be above "
                f"task_time_limit ({limit}); otherwise a running segment is redelivered"
            )
    return problems


class CeleryExecutor:
    """A ``flowcraft.Executor`` publishing each ``Delivery`` as one ``flowcraft.execute`` task.

    Never with an ETA or countdown: timers are the durable scheduler's. ``fan_out=True``
    spreads the items of every ``.batch`` over the workers, ``items_per_task`` items per
    message (a chunk), gathered exactly once (see the module docstring).
    """

    def __init__(
        self,
        app: celery.Celery,
        queue: str = "flowcraft",
        *,
        fan_out: bool = False,
        items_per_task: int = 1,
    ) -> None:
        if items_per_task < 1:
            raise ValueError(f"items_per_task must be 1 or more, not {items_per_task}")
        self.app = app
        self.queue = queue
        self.fan_out = fan_out
        self.items_per_task = items_per_task
        self.published = 0

    def __repr__(self) -> str:
        fan = f", fan_out=True, items_per_task={self.items_per_task}" if self.fan_out else ""
        return f"flowcraft.celery.CeleryExecutor(queue={self.queue!r}{fan})"

    def publish(self, body: dict[str, Any]) -> None:
        """Send one message body (blocking)."""
        self.app.send_task(
            TASK_NAME, args=[body], queue=self.queue, serializer="json", ignore_result=True
        )
        self.published += 1

    async def submit(self, delivery: Delivery) -> None:
        """Publish ``delivery`` (in a worker thread: kombu blocks)."""
        await anyio.to_thread.run_sync(self.publish, delivery.to_json())


class _Loop:
    """One event loop per worker process (created after the fork), shared by its tasks.

    Store connections belong to the loop they were opened on, so every task of a process runs
    on the same loop.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._portal: anyio.from_thread.BlockingPortal | None = None

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        with self._lock:
            if self._portal is None or self._pid != os.getpid():
                manager = anyio.from_thread.start_blocking_portal()
                self._portal = manager.__enter__()
                self._pid = os.getpid()
                atexit.register(manager.__exit__, None, None, None)
            portal = self._portal
        return portal.call(fn, *args)


def install(app: celery.Celery, service: FlowService, *, check: bool = True) -> Any:
    """Register ``flowcraft.execute`` (and ``flowcraft.tick``) on ``app`` for ``service``.

    Refuses (``UnsafeWorkerSettingsError``, naming each setting) settings under which a
    message could be lost, run twice at once, or arrive as pickle. Returns the execute task.
    """
    if check:
        problems = check_settings(app)
        if problems:
            raise UnsafeWorkerSettingsError(problems)
    loop = _Loop()

    @app.task(  # type: ignore[untyped-decorator]
        name=TASK_NAME,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
        serializer="json",
    )
    def execute(body: Any) -> dict[str, Any]:
        try:
            d = Delivery.from_json(body)
        except DeliveryError as exc:
            log.error("flowcraft.celery: dropping a message that is not a delivery: %s", exc)
            return {"dropped": exc.detail}
        if d.kind == "item":
            if d.node_id is None or d.item is None:
                log.error("flowcraft.celery: dropping an item delivery without node or item")
                return {"dropped": "item delivery without node_id or item"}
            try:
                ran = loop.call(service.execute_item, d.run_id, d.delivery_id, d.node_id, d.item)
            except FlowcraftError as exc:  # a fault recorded on the run: the sweep backs off
                log.warning("flowcraft.celery: items of run %s refused: %s", d.run_id, exc)
                return {"run_id": d.run_id, "refused": type(exc).__name__}
            return {"run_id": d.run_id, "item": d.item, "ran": ran}
        try:
            result = loop.call(service.execute, d.run_id, d.revision, d.delivery_id)
        except FlowcraftError as exc:  # refused: the run was restored; nothing to retry
            log.warning("flowcraft.celery: run %s refused: %s", d.run_id, exc)
            return {"run_id": d.run_id, "refused": type(exc).__name__}
        if result is None:
            return {"run_id": d.run_id, "stale": True}
        return {"run_id": d.run_id, "status": result.status}

    @app.task(name=TICK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
    def tick() -> int:
        return loop.call(DurableScheduler(service).tick)

    return execute
