"""Handing claimed segments to an executor (DESIGN §12): ``FlowService(..., executor=...)``.

Without an executor a segment is claimed and executed in the calling process (§8). With one,
the caller only *claims*: the one compare-and-set of §8 stores the intent, a lease and a fresh
claim id in the run, and *after* that write a ``Delivery`` naming that claim is handed to the
executor (a message queue). A worker calls ``FlowService.execute(run_id, revision,
delivery_id)``: it takes the claim over with one more compare-and-set and replays the stored
intent there, exactly as recovery does.

* **The stored run is the outbox.** The intent is recorded with the claim, before anything is
  published; a crash between the two (or a broker that loses the message) leaves a ``running``
  run whose lease lapses, and the sweep (``recover``, run by every durable scheduler tick)
  claims it again under a new delivery id and publishes that.
* **Duplicates and stale messages are no-ops.** A delivery executes only while the run is
  ``running`` at exactly its ``revision`` under its ``delivery_id``. The take-over moves the
  revision and the claim id, so of N copies one executes; a copy delivered later (a
  redelivery after a worker died, a re-publish by the sweep) finds the run moved on and does
  nothing. A worker that dies mid-node leaves its own lease to lapse: the sweep re-publishes.
* **Timers never ride the broker**: the durable scheduler claims due runs and publishes
  ``fire`` deliveries when they are due; nothing is ever published with a delay.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import anyio
import msgspec

from flowcraft._errors import FlowcraftError
from flowcraft._service.parts import Host, control_key, decode_intent, handed, new_token
from flowcraft._service.segment import cas
from flowcraft._values import RunResult
from flowcraft.stores._base import HistoryRecord, StoredRun

__all__ = [
    "DELIVERY_VERSION",
    "Delivery",
    "DeliveryError",
    "Executor",
    "dispatch",
    "is_current",
    "pending",
    "redispatch",
    "settled",
]

log = logging.getLogger("flowcraft.service")

#: The version of the ``Delivery`` format. Version 2 adds ``item`` (batch items spread over
#: workers, kind ``"item"``); every other delivery is still written as version 1, so workers of
#: the previous release keep executing them. A message of another version is refused.
DELIVERY_VERSION = 2
_READABLE = (1, 2)


class DeliveryError(FlowcraftError, ValueError):
    """A message is not a ``Delivery`` this version of flowcraft can read."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"not a flowcraft delivery: {detail}")
        self.detail = detail


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One message for an executor: which claim of which run to execute. Never the state.

    ``revision`` and ``delivery_id`` are the stored revision and claim id the intent was
    recorded under; ``kind`` and ``node_id`` say what the intent is (for logs and routing;
    the intent itself, with any resume data, stays in the store). ``v`` is the format version.
    """

    run_id: str
    revision: int
    delivery_id: str
    kind: str
    flow_id: str
    node_id: str | None = None
    v: int = 1
    item: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The message body: a JSON object of strings and integers (version 1 has no ``item``)."""
        body: dict[str, Any] = msgspec.to_builtins(self)
        if self.item is None:
            del body["item"]
        return body

    @classmethod
    def from_json(cls, body: Any) -> Delivery:
        """Read a message body (a dict or JSON text); ``DeliveryError`` if it is not one."""
        try:
            if isinstance(body, str | bytes):
                body = msgspec.json.decode(body)
            if not isinstance(body, dict):
                raise DeliveryError(f"expected an object, got {type(body).__name__}")
            if body.get("v") not in _READABLE:
                raise DeliveryError(f"version {body.get('v')!r}, expected 1 or {DELIVERY_VERSION}")
            return msgspec.convert(body, cls)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise DeliveryError(str(exc)) from exc


@runtime_checkable
class Executor(Protocol):
    """Where a ``FlowService`` sends the segments it claimed (``flowcraft.celery``, ...).

    ``submit`` publishes one delivery and returns once the message is handed over (it is
    called after the claim is stored). It must not delay the message: timers are the durable
    scheduler's. A delivery it fails to publish is published again by the sweep once the
    claim's lease lapses.

    An executor with a true ``fan_out`` attribute also gets the items of every ``.batch`` as
    deliveries of kind ``"item"``, ``items_per_task`` (default 1) items each: the segment
    that reaches the batch stores the run with the batch pending and its items in the outbox,
    workers run them (``FlowService.execute_item``) and merge their outcomes into the run by
    compare-and-set, and the merge that completes the set stores the ``"gather"`` claim.
    """

    async def submit(self, delivery: Delivery) -> None:
        """Publish ``delivery``; a worker calls ``FlowService.execute`` with its fields."""
        ...


def pending(stored: StoredRun) -> RunResult:
    """What ``start``/``resume`` return once they handed the segment over: status ``running``.

    ``serialized_context`` is empty; ``await service.settled(run_id)`` waits for the outcome.
    """
    return handed(stored)


async def dispatch(host: Host, executor: Executor, claimed: StoredRun) -> RunResult:
    """Publish the delivery of a claim already stored; a failed publish waits for the sweep."""
    intent = decode_intent(claimed.intent)
    delivery = Delivery(
        run_id=claimed.run_id,
        revision=claimed.revision,
        delivery_id=claimed.claim or "",
        kind=intent.kind,
        flow_id=claimed.flow_id,
        node_id=intent.node_id,
    )
    try:
        await executor.submit(delivery)
    except Exception:
        log.exception(
            "flowcraft service: delivery of run %s not published; the sweep publishes it "
            "when its lease lapses",
            claimed.run_id,
        )
    return pending(claimed)


async def redispatch(host: Host, executor: Executor, stored: StoredRun) -> RunResult:
    """The sweep: claim a run whose lease lapsed under a new delivery id and publish that.

    The old delivery (queued, lost, or the one a dead worker was executing) becomes stale. A
    pause or cancel left for the old claim is carried over to the new one.
    """
    now = host.now()
    claimed = msgspec.structs.replace(
        stored,
        revision=stored.revision + 1,
        owner=host.owner,
        lease_until=now + timedelta(seconds=host.lease_ttl),
        claim=new_token(),
    )
    record = HistoryRecord(at=now, event="recover", by=host.owner)
    await cas(host, claimed, stored.revision, history=[record])
    request = await host.store.recall(stored.run_id, control_key(stored.claim or ""))
    if request is not None:
        await host.store.remember(stored.run_id, control_key(claimed.claim or ""), request)
    return await dispatch(host, executor, claimed)


def is_current(stored: StoredRun, revision: int, delivery_id: str) -> bool:
    """Whether a delivery still names the claim the store holds (otherwise: a no-op)."""
    return stored.status == "running" and stored.revision == revision and (
        stored.claim == delivery_id
    )


async def settled(host: Host, run_id: str) -> StoredRun:
    """Poll the store until ``run_id`` is not running."""
    step = min(0.05, host.poll_interval)
    while True:
        stored = await host.store.get(run_id)  # RunNotFoundError: a refused start
        if stored.status != "running":
            return stored
        await anyio.sleep(step)
