"""Batches spread over workers (DESIGN §12): item deliveries, merges, one gather.

With an executor whose ``fan_out`` is true, every segment's ``RunControl.on_scatter`` takes the
batches the run reaches. The segment then commits the run **still running**, its context
waiting on the batch, and in the same write stores the intent ``batch`` holding a ``Fanout``:
the outbox of the items (``per`` items a delivery) and, later, their outcomes. After that
write, ``publish_items`` hands one ``Delivery`` of kind ``"item"`` per pending chunk to the
executor. The run's claim id (the fan-out's ``token``) does not change until the gather.

A worker holding an item delivery (``execute_item``):

1. takes a **lease of its own** on that chunk (``store.acquire_lease``, renewed while the items
   run), so of two copies delivered at once one runs the items and the other acks;
2. runs the items from the stored context (``FlowRuntime.run_items``: retries, timeouts and
   ``node.pause()`` exactly as in one process);
3. **merges** their outcomes into the run by compare-and-set, keyed by the chunk's first item:
   a chunk already merged (a duplicate, a redelivery) or a run that moved on (stale) is a
   no-op. The merge that completes the set writes, in the same compare-and-set, the intent
   ``gather``; only that write can, so the gather is stored once, and it runs under the claim
   of §8 (``FlowService.execute``): one delivery of it executes, however many are published.

A pause or cancel sent while the items run is left under the fan-out's claim id, as for any
running segment, and applies at the gather. Lost messages: a merge renews the run's lease;
when no merge lands for a lease, the sweep (``resweep``) re-publishes the chunks not merged yet
(copies of chunks in flight find their lease held and ack), so a chunk should take well under
``lease_ttl``: a longer one is re-published every ``lease_ttl`` (harmless copies, but copies).
Items are at-least-once only across crashes, like every node.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import anyio
import msgspec

from flowcraft._errors import RevisionConflictError, RunNotFoundError, StoreError
from flowcraft._service.executor import Delivery, Executor
from flowcraft._service.parts import (
    Fanout,
    Host,
    Intent,
    decode_intent,
    encode_intent,
    handed,
    new_token,
)
from flowcraft._service.segment import cas
from flowcraft._values import RunResult
from flowcraft.stores._base import HistoryRecord, StoredRun

__all__ = ["execute_item", "publish_items", "resweep"]

log = logging.getLogger("flowcraft.service")


def _current(stored: StoredRun, token: str) -> tuple[Intent, Fanout] | None:
    """The fan-out ``stored`` runs under ``token``, or None (stale: the run moved on)."""
    if stored.status != "running" or stored.claim != token or not stored.intent:
        return None
    try:
        intent = decode_intent(stored.intent)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if intent.kind != "batch" or intent.fanout is None:
        return None
    return intent, intent.fanout


async def publish_items(host: Host, executor: Executor, stored: StoredRun) -> None:
    """Publish a delivery per chunk of ``stored``'s fan-out not merged yet (after its write)."""
    found = _current(stored, stored.claim or "")
    if found is None:
        return
    for node_id, start in found[1].pending():
        delivery = Delivery(
            run_id=stored.run_id,
            revision=stored.revision,
            delivery_id=stored.claim or "",
            kind="item",
            flow_id=stored.flow_id,
            node_id=node_id,
            item=start,
            v=2,
        )
        try:
            await executor.submit(delivery)
        except Exception:
            log.exception(
                "flowcraft service: item %s/%d of run %s not published; the sweep publishes "
                "it when the run's lease lapses",
                node_id,
                start,
                stored.run_id,
            )
            return


async def _publish_gather(host: Host, executor: Executor, stored: StoredRun) -> None:
    delivery = Delivery(
        run_id=stored.run_id,
        revision=stored.revision,
        delivery_id=stored.claim or "",
        kind="gather",
        flow_id=stored.flow_id,
    )
    try:
        await executor.submit(delivery)
    except Exception:
        log.exception(
            "flowcraft service: gather of run %s not published; the sweep publishes it when "
            "the run's lease lapses",
            stored.run_id,
        )


async def resweep(host: Host, executor: Executor, stored: StoredRun) -> RunResult:
    """The sweep of a fan-out whose lease lapsed: renew it, re-publish what is not merged."""
    now = host.now()
    renewed = msgspec.structs.replace(
        stored,
        revision=stored.revision + 1,
        owner=host.owner,
        lease_until=now + timedelta(seconds=host.lease_ttl),
        updated_at=now,
    )
    record = HistoryRecord(at=now, event="recover", by=host.owner)
    await cas(host, renewed, stored.revision, history=[record])
    await publish_items(host, executor, renewed)
    return handed(renewed)


async def execute_item(
    host: Host, executor: Executor | None, run_id: str, token: str, node_id: str, start: int
) -> bool:
    """Run one chunk of a fan-out and merge its outcomes; False when it was a no-op."""
    store = host.store
    name = f"flowcraft:item:{run_id}:{token}:{node_id}/{start}"
    me = f"{host.owner}:{new_token()}"  # one lease holder per call, even in one process
    if not await store.acquire_lease(name, me, host.lease_ttl, host.now()):
        return False  # a copy of this delivery is running it
    try:
        try:
            stored = await store.get(run_id)  # read under the lease: what it protects
        except RunNotFoundError:
            return False
        found = _current(stored, token)
        if found is None or not _wanted(found[1], node_id, start):
            return False
        fan = found[1]
        indices = list(range(start, min(start + fan.per, fan.items[node_id])))
        bp, reg = host.flow(stored.flow_id)
        outcomes: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_renew, host, name, me)
            try:
                outcomes = await host.runtime.run_items(
                    bp, stored.context, node_id, indices, registry=reg
                )
            except Exception as exc:  # re-raised below, outside the task group
                failure: Exception | None = exc
            else:
                failure = None
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        merged = dict(zip(indices, outcomes, strict=True))
        gathered = await _merge(host, run_id, token, node_id, merged, stored)
        if gathered is not None and executor is not None:
            await _publish_gather(host, executor, gathered)
        return True
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await store.release_lease(name, me)
            except StoreError:
                log.warning("flowcraft service: lease %s not released; it lapses", name)


def _wanted(fan: Fanout, node_id: str, start: int) -> bool:
    """Whether the chunk at ``start`` of ``node_id`` exists and is not merged yet."""
    n = fan.items.get(node_id)
    if n is None or start < 0 or start >= n or start % fan.per:
        return False
    return start not in fan.done.get(node_id, {})


async def _renew(host: Host, name: str, me: str) -> None:
    """Keep a chunk's lease while its items run (a stalled worker loses it to a copy)."""
    clock = host.runtime.clock
    while True:
        await clock.sleep(host.lease_ttl / 3)
        try:
            if not await host.store.acquire_lease(name, me, host.lease_ttl, clock.now()):
                log.warning("flowcraft service: lease %s was taken over", name)
                return
        except StoreError:
            log.exception("flowcraft service: renewing lease %s", name)


async def _merge(
    host: Host,
    run_id: str,
    token: str,
    node_id: str,
    outcomes: dict[int, bytes],
    seen: StoredRun | None = None,
) -> StoredRun | None:
    """Merge a chunk's outcomes into the run by compare-and-set, keyed by its first item.

    ``seen`` is the run as last read: tried first (no other chunk merged since, the common
    case with few workers: no read). Returns the run as written when this merge completed the
    set (its intent is now the gather), else None: merged with others pending, or a no-op
    (merged already, or stale).
    """
    start = min(outcomes)
    store = host.store
    while True:
        stored = seen if seen is not None else await store.get(run_id)
        seen = None
        found = _current(stored, token)
        if found is None or start in found[1].done.get(node_id, {}):
            return None
        intent, fan = found
        done = dict(fan.done)
        done[node_id] = {**done.get(node_id, {}), **outcomes}
        fan = msgspec.structs.replace(fan, done=done)
        complete = fan.complete()
        kind = "gather" if complete else "batch"
        now = host.now()
        run = msgspec.structs.replace(
            stored,
            revision=stored.revision + 1,
            updated_at=now,
            lease_until=now + timedelta(seconds=host.lease_ttl),  # progress: the sweep waits
            intent=encode_intent(msgspec.structs.replace(intent, kind=kind, fanout=fan), run_id),
        )
        try:
            await store.save(run, stored.revision)
        except RevisionConflictError:
            continue  # another chunk merged first: merge into that
        except StoreError:
            # The reply was lost; the write may have landed. Every merge keeps the claim id,
            # so look at the intent itself.
            again = await store.get(run_id)
            if again.revision != run.revision or again.intent != run.intent:
                continue
        return run if complete else None
