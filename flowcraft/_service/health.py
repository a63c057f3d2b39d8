"""``FlowService.health()``: what an operator checks first, as one typed value."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from flowcraft._errors import StoreError
from flowcraft._service.parts import Host, decode_intent
from flowcraft.stores._base import StoredRun, awaiting_since

__all__ = ["FaultKind", "RunFault", "ServiceHealth", "check"]


#: What is faulting: an awaiting run's timer (or wait expiry), a chunk of a batch spread over
#: workers that no worker could run, the gather of such a batch, recovery's replay of a step
#: checkpoint, or recovery reading the intent a running run was claimed for (the last four
#: on a run still ``running``).
FaultKind = Literal["timer", "chunk", "gather", "checkpoint", "intent"]


class RunFault(msgspec.Struct, frozen=True, kw_only=True):
    """A run whose durable work keeps failing: why, how often, and when it is tried again.

    ``kind`` says what fails (``FaultKind``): ``"timer"`` for an awaiting run's timer
    (``retry_at``: when the scheduler fires it again); ``"chunk"``, ``"gather"`` or
    ``"checkpoint"`` for a running run whose fan-out or recovered checkpoint is refused, and
    ``"intent"`` for one whose stored intent recovery cannot read (``IntentCorruptionError``)
    (``retry_at``: when the sweep or recovery tries again; the last allowed attempt fails
    the run). ``count`` is the run's ``fault_count``.
    """

    run_id: str
    flow_id: str
    reason: str
    count: int
    retry_at: datetime | None = None
    kind: FaultKind = "timer"


def _running_fault(run: StoredRun) -> FaultKind | None:
    """What still faults on a running run with a ``fault``, or None (it went on since).

    A fault stays on the run until its segment commits; it is current while the intent still
    counts it: a chunk retried and not merged yet, a refused gather, a refused checkpoint.
    """
    try:
        intent = decode_intent(run.intent)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # recovery refuses such a claim on its own, and says so
    fan = intent.fanout
    if fan is not None:
        if fan.refusals:
            return "gather"
        for node_id, tried in fan.faults.items():
            done = fan.done.get(node_id, {})
            if any(start not in done for start in tried):
                return "chunk"
    if intent.kind == "checkpoint" and intent.refusals:
        return "checkpoint"
    if intent.kind == "unreadable":
        return "intent"
    return None


class ServiceHealth(msgspec.Struct, frozen=True, kw_only=True):
    """The state of a ``FlowService`` and its store at ``checked_at``.

    ``ok`` is true when the store answered and no run has a fault. ``scheduler_running`` is
    whether a ``service.scheduler()`` loop is open in this process; ``scheduler_lag`` is how
    many seconds the most overdue timer or expiry has waited past its due time (0.0 when
    nothing is overdue), whichever process runs the scheduler. ``faults`` lists runs whose
    timer failed to fire, and running runs whose fan-out (a chunk no worker can run, a refused
    gather) or recovered checkpoint is refused, or whose stored intent recovery cannot read,
    with the reason recorded on them (looked for
    among the first ``scan`` awaiting runs and the first ``scan`` running ones).
    ``oldest_awaiting_since`` is exactly when the longest outstanding wait began
    (``StoredRun.awaiting_since``, read from the stores' index like
    ``RunStats.awaiting_since_by_flow``); ``oldest_awaiting`` is the run waiting longest among
    the ``scan`` runs looked at (the one that wait belongs to unless more runs await).
    """

    ok: bool
    checked_at: datetime
    store_reachable: bool
    store_error: str | None = None
    scheduler_running: bool = False
    last_tick_at: datetime | None = None
    scheduler_lag: float | None = None
    by_status: dict[str, int] = {}
    faults: tuple[RunFault, ...] = ()
    oldest_awaiting: str | None = None
    oldest_awaiting_since: datetime | None = None


async def check(
    host: Host, running: bool, last_tick: datetime | None, scan: int
) -> ServiceHealth:
    """Ask the store; a store that fails answers ``store_reachable=False`` with the reason."""
    now = host.now()
    store = host.store
    try:
        stats = await store.stats(now)
        due = await store.due(now, 1)
        lag = max(0.0, (now - due[0].due_at).total_seconds()) if due and due[0].due_at else 0.0
        faults: list[RunFault] = []
        oldest: tuple[str, datetime] | None = None
        for status in ("awaiting", "running"):
            cursor: str | None = None
            seen = 0
            while seen < scan:
                page = await store.list(status=status, limit=min(100, scan - seen), cursor=cursor)
                for run in page.runs:
                    if status == "awaiting":
                        began = awaiting_since(run) or run.updated_at
                        if oldest is None or began < oldest[1]:
                            oldest = (run.run_id, began)
                    if run.fault is None or run.status != status:
                        continue
                    kind: FaultKind | None = "timer"
                    if status == "running":
                        kind = _running_fault(run)
                    if kind is not None:
                        faults.append(
                            RunFault(
                                run_id=run.run_id,
                                flow_id=run.flow_id,
                                reason=run.fault,
                                count=run.fault_count,
                                retry_at=run.due_at if kind == "timer" else run.lease_until,
                                kind=kind,
                            )
                        )
                seen += max(len(page.runs), 1)
                cursor = page.next_cursor
                if cursor is None:
                    break
    except StoreError as exc:
        return ServiceHealth(
            ok=False,
            checked_at=now,
            store_reachable=False,
            store_error=str(exc),
            scheduler_running=running,
            last_tick_at=last_tick,
        )
    # Exact, from the stores' index of awaiting runs (no scan); the run named is the one
    # waiting longest among those scanned (the oldest overall when ``scan`` covered them all).
    since = min(stats.awaiting_since_by_flow.values(), default=None)
    if since is None and oldest is not None:
        since = oldest[1]
    return ServiceHealth(
        ok=not faults,
        checked_at=now,
        store_reachable=True,
        scheduler_running=running,
        last_tick_at=last_tick,
        scheduler_lag=lag,
        by_status=dict(stats.by_status),
        faults=tuple(faults),
        oldest_awaiting=oldest[0] if oldest else None,
        oldest_awaiting_since=since,
    )
