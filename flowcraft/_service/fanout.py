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

A chunk a worker cannot run at all (``run_items`` raises a ``FlowcraftError``: the flow changed
under the run, the worker lacks it, the context does not load there; an item's own exception is
an outcome, not this) is a fault of the run, never a message re-published forever: the fault is
recorded on the run (``fault``, ``fault_count``, a ``fault`` history record naming the batch and
item) and pushes the sweep back (the run's lease: ``lease_ttl``, doubled per attempt of that
chunk). Its ``fault_attempts``-th attempt merges its items as failed with that error, so the
batch ends as in one process when an item raises (the run fails naming the item).

The gather itself may be refused too (it raises before changing anything: the flow changed on
the worker that takes it, the context does not load there; so may a recovery finishing the
batches without workers). Undoing its claim as other refused segments do would leave the run
awaiting with nothing to wait for, so its claim is undone to the run as it was before: still
running, the gather pending under its delivery id (``refused``), with the fault recorded (a
``fault`` history record naming the batch and the attempt) and the run's lease, when the sweep
publishes the gather again, ``lease_ttl`` doubled per refusal ahead. Its ``fault_attempts``-th
refusal ends the run failed with that error (``FlowRuntime.fail_batches``; no blueprint needed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import timedelta

import anyio
import msgspec

from flowcraft._errors import FlowcraftError, RevisionConflictError, RunNotFoundError, StoreError
from flowcraft._service.executor import Delivery, Executor
from flowcraft._service.parts import (
    Fanout,
    Host,
    Intent,
    decode_intent,
    encode_intent,
    handed,
    new_token,
    remembered,
)
from flowcraft._service.segment import (
    Refused,
    backoff_until,
    cas,
    failed_as_is,
    stored_from,
)
from flowcraft._values import RunResult
from flowcraft.stores._base import HistoryRecord, StoredRun

__all__ = ["CHUNK_ATTEMPTS", "execute_item", "publish_items", "refused", "resweep"]

log = logging.getLogger("flowcraft.service")

#: How often a chunk may fail to run at all (its worker raised a ``FlowcraftError``) before
#: its items fail the batch, by default (``FlowService(fault_attempts=)``). The sweep waits
#: ``lease_ttl`` after the first, twice that after the second, ... (at most an hour) before
#: it publishes the chunk again.
CHUNK_ATTEMPTS = 3

#: What a write of a fan-out makes of the run as read (``_update``): the next run and its
#: history, or None to write nothing.
Change = Callable[[StoredRun, Intent, Fanout], tuple[StoredRun, Sequence[HistoryRecord]] | None]


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
    """Run one chunk of a fan-out and merge its outcomes; False when it was a no-op.

    A chunk that cannot run here (a ``FlowcraftError`` from ``run_items``) is a fault of the
    run (``_fault``): the error is raised once it is recorded, or, on the chunk's last attempt,
    its items are merged as failed with it (True).
    """
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
        outcomes: list[bytes] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(_renew, host, name, me)
            try:
                bp, reg = host.flow(stored.flow_id)
                outcomes = await host.runtime.run_items(
                    bp, stored.context, node_id, indices, registry=reg
                )
            except Exception as exc:  # handled below, outside the task group
                failure: Exception | None = exc
            else:
                failure = None
            finally:
                tg.cancel_scope.cancel()
        if isinstance(failure, FlowcraftError):
            # The chunk cannot run here (not an item failing: that is an outcome).
            landed, gathered = await _fault(host, stored, token, node_id, indices, failure)
            if not landed:
                return False
        elif failure is not None:
            raise failure
        else:
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


async def _update(host: Host, run_id: str, token: str, seen: StoredRun, change: Change) -> bool:
    """Write ``change`` of the fan-out ``run_id`` runs under ``token``, by compare-and-set.

    ``seen`` is the run as last read: tried first (no other chunk wrote since, the common case
    with few workers: no read). A conflict (another chunk wrote first) reads the run and applies
    ``change`` to that. False when nothing was written: the run moved on (stale), or ``change``
    declined.
    """
    store = host.store
    stored: StoredRun | None = seen
    while True:
        if stored is None:
            stored = await store.get(run_id)
        found = _current(stored, token)
        made = None if found is None else change(stored, *found)
        if made is None:
            return False
        run, history = made
        try:
            await store.save(run, stored.revision, history=history)
        except RevisionConflictError:
            stored = None
            continue
        except StoreError:
            # The reply was lost; the write may have landed. Every write of a fan-out keeps
            # the claim id, so look at the intent itself.
            again = await store.get(run_id)
            if again.revision != run.revision or again.intent != run.intent:
                stored = None
                continue
        return True


def _merged(
    host: Host,
    stored: StoredRun,
    intent: Intent,
    fan: Fanout,
    node_id: str,
    outcomes: dict[int, bytes],
) -> tuple[StoredRun, bool]:
    """``stored`` with a chunk's outcomes merged; whether that completes the set (a gather)."""
    done = dict(fan.done)
    done[node_id] = {**done.get(node_id, {}), **outcomes}
    fan = msgspec.structs.replace(fan, done=done)
    complete = fan.complete()
    kind = "gather" if complete else "batch"
    now = host.now()
    until = now + timedelta(seconds=host.lease_ttl)  # progress: the sweep waits
    if stored.lease_until is not None and stored.lease_until > until:
        until = stored.lease_until  # or longer, while another chunk's fault backs it off
    run = msgspec.structs.replace(
        stored,
        revision=stored.revision + 1,
        updated_at=now,
        lease_until=until,
        intent=encode_intent(
            msgspec.structs.replace(intent, kind=kind, fanout=fan), stored.run_id
        ),
    )
    return run, complete


async def _merge(
    host: Host,
    run_id: str,
    token: str,
    node_id: str,
    outcomes: dict[int, bytes],
    seen: StoredRun,
) -> StoredRun | None:
    """Merge a chunk's outcomes into the run by compare-and-set, keyed by its first item.

    Returns the run as written when this merge completed the set (its intent is now the
    gather), else None: merged with others pending, or a no-op (merged already, or stale).
    """
    start = min(outcomes)
    written: list[tuple[StoredRun, bool]] = []

    def change(
        stored: StoredRun, intent: Intent, fan: Fanout
    ) -> tuple[StoredRun, Sequence[HistoryRecord]] | None:
        if start in fan.done.get(node_id, {}):
            return None
        written[:] = [_merged(host, stored, intent, fan, node_id, outcomes)]
        return written[0][0], ()

    if not await _update(host, run_id, token, seen, change):
        return None
    run, complete = written[0]
    return run if complete else None


async def _fault(
    host: Host,
    seen: StoredRun,
    token: str,
    node_id: str,
    indices: list[int],
    exc: FlowcraftError,
) -> tuple[bool, StoredRun | None]:
    """A chunk no worker could run (``exc``): record the fault and back off, or fail its items.

    The fault is written on the run (``fault``, ``fault_count``, a ``fault`` history record)
    with the chunk's attempts in the fan-out, and the run's lease (when the sweep publishes
    the chunk again) moved ``lease_ttl * 2**(attempt - 1)`` ahead; then ``exc`` is raised for
    the caller. The ``fault_attempts``-th attempt instead merges the items as failed with
    ``exc`` in the same write: returns True and the run when that completed the set (else
    None). ``(False, None)``: nothing written (a copy merged the chunk, or the run moved on).
    """
    run_id = seen.run_id
    start = indices[0]
    reason = f"{type(exc).__name__}: {exc}"
    written: list[tuple[StoredRun, bool, int]] = []

    def change(
        stored: StoredRun, intent: Intent, fan: Fanout
    ) -> tuple[StoredRun, Sequence[HistoryRecord]] | None:
        if start in fan.done.get(node_id, {}):
            return None  # a copy of the chunk ran elsewhere and merged
        attempt = fan.faults.get(node_id, {}).get(start, 0) + 1
        faults = {**fan.faults, node_id: {**fan.faults.get(node_id, {}), start: attempt}}
        fan = msgspec.structs.replace(fan, faults=faults)
        now = host.now()
        stored = msgspec.structs.replace(
            stored, fault=reason, fault_count=stored.fault_count + 1
        )
        record = HistoryRecord(
            at=now,
            event="fault",
            node_id=node_id,
            by=host.owner,
            reason=reason,
            data={"item": start, "items": len(indices), "attempt": attempt},
        )
        if attempt >= host.fault_attempts:
            failed = host.runtime.fail_items(indices, exc, attempts=attempt)
            run, complete = _merged(
                host, stored, intent, fan, node_id, dict(zip(indices, failed, strict=True))
            )
        else:
            until = backoff_until(host, attempt, stored)
            complete = False
            run = msgspec.structs.replace(
                stored,
                revision=stored.revision + 1,
                updated_at=now,
                lease_until=until,
                intent=encode_intent(msgspec.structs.replace(intent, fanout=fan), run_id),
            )
        written[:] = [(run, complete, attempt)]
        return run, [record]

    if not await _update(host, run_id, token, seen, change):
        return False, None  # merged elsewhere, or the run moved on: nothing to record
    run, complete, attempt = written[0]
    where = f"items {indices[0]}..{indices[-1]} of batch {node_id!r} of run {run_id!r}"
    if attempt < host.fault_attempts:
        log.warning(
            "flowcraft service: %s could not run (attempt %d of %d, published again after "
            "%s): %s",
            where,
            attempt,
            host.fault_attempts,
            run.lease_until,
            reason,
        )
        raise exc
    log.error(
        "flowcraft service: %s could not run in %d attempts; they fail the batch: %s",
        where,
        attempt,
        reason,
    )
    return True, run if complete else None


def refused(
    host: Host, before: StoredRun, intent: Intent, latest: StoredRun, exc: Exception
) -> Refused:
    """What a refused gather writes (``Segment.abandon``): a fault of the run, not its undoing.

    ``before`` is the run as the gather's claim found it (running, the gather or the batch
    pending under its delivery id), ``latest`` as the claim left it. The run goes back to
    ``before`` with the fault recorded (``fault``, ``fault_count``, a ``fault`` history record
    naming the batch and the attempt, the refusals in the fan-out) and its lease, when the
    sweep publishes the gather again, ``lease_ttl * 2**(attempt - 1)`` ahead. The
    ``fault_attempts``-th refusal ends the run failed with ``exc`` instead (its result is
    returned); when even that cannot read the context, the run is stored failed as it is.
    """
    fan = intent.fanout or Fanout(items={})
    attempt = fan.refusals + 1
    reason = f"{type(exc).__name__}: {exc}"
    now = host.now()
    record = HistoryRecord(
        at=now,
        event="fault",
        node_id=next(iter(fan.items), None),
        by=host.owner,
        reason=reason,
        data={"gather": True, "attempt": attempt},
    )
    fault = {"fault": reason, "fault_count": before.fault_count + 1}
    where = f"the gather of run {before.run_id!r}"
    if attempt < host.fault_attempts:
        fan = msgspec.structs.replace(fan, refusals=attempt)
        run = msgspec.structs.replace(
            before,
            revision=latest.revision + 1,
            updated_at=now,
            lease_until=backoff_until(host, attempt, before),
            intent=encode_intent(msgspec.structs.replace(intent, fanout=fan), before.run_id),
            **fault,
        )
        log.warning(
            "flowcraft service: %s was refused (attempt %d of %d, published again after %s): %s",
            where,
            attempt,
            host.fault_attempts,
            run.lease_until,
            reason,
        )
        return Refused(run, [record])
    log.error(
        "flowcraft service: %s was refused %d times; the run fails: %s", where, attempt, reason
    )
    try:
        result = host.runtime.fail_batches(before.context, exc, attempts=attempt)
    except FlowcraftError:
        log.exception("flowcraft service: run %s stored failed as it is", before.run_id)
        run = failed_as_is(before, latest, now, fault)
        return Refused(run, [record, HistoryRecord(at=now, event="failed")])
    run = msgspec.structs.replace(stored_from(host, latest, result, now, None), **fault)
    history = [record, HistoryRecord(at=now, event="failed", revision=result.revision)]
    idem = None
    if intent.key is not None:
        idem = (intent.key, remembered(intent.digest, result.serialized_context))
    return Refused(run, history, idem, result)
