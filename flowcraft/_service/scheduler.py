"""The durable scheduler: fires timers and expiries found in a store's due index."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowcraft._errors import FlowcraftError, NotAwaitingError, RevisionConflictError, StoreError
from flowcraft._values import RunResult

if TYPE_CHECKING:
    from flowcraft._service.service import FlowService

__all__ = ["DurableScheduler"]

log = logging.getLogger("flowcraft.scheduler")
_MAX_FIRINGS_PER_RUN = 100  # per tick; a run with more due deadlines continues next tick


class DurableScheduler:
    """Polls the store for due runs.

    ``async with service.scheduler(interval)`` runs one in the background; construct one
    directly and call ``tick()`` to drive it by hand (tests, cron jobs).

    Each tick recovers runs left ``running`` by a dead process, then, for each due run it can
    lease, fires its due timers and wait expiries one at a time (each firing is stored with
    compare-and-set and recorded in the run's history), and cancels runs past ``max_pause``
    when the service has ``cancel_expired=True``.
    """

    def __init__(
        self,
        service: FlowService,
        interval: float = 1.0,
        on_result: Callable[[RunResult], Any] | None = None,
        batch: int = 100,
    ) -> None:
        self._svc = service
        self._interval = interval
        self._on_result = on_result
        self._batch = batch
        self.fired = 0
        self.expired = 0
        self.recovered = 0
        self.ticks = 0

    def __repr__(self) -> str:
        return (
            f"flowcraft.DurableScheduler(fired={self.fired}, expired={self.expired}, "
            f"recovered={self.recovered})"
        )

    async def tick(self) -> int:
        """Do everything due now; return how many runs were fired, expired or recovered."""
        svc = self._svc
        store = svc.store
        count = 0
        for result in await svc.recover():
            self.recovered += 1
            count += 1
            await self._emit(result)
        now = svc.runtime.clock.now()
        for stored in await store.due(now, self._batch):
            run_id = stored.run_id
            if run_id in svc._controls or run_id in svc.busy:
                continue  # a task of this process is on it (leases are per process)
            svc.busy.add(run_id)
            try:
                lease = f"run:{run_id}"
                if await store.acquire_lease(lease, svc.owner, svc.lease_ttl, now):
                    try:
                        count += await self._fire_run(run_id)
                    finally:
                        await store.release_lease(lease, svc.owner)
            finally:
                svc.busy.discard(run_id)
        self.ticks += 1
        return count

    async def _fire_run(self, run_id: str) -> int:
        svc = self._svc
        done = 0
        for _ in range(_MAX_FIRINGS_PER_RUN):
            stored = await svc.store.get(run_id)
            if stored.status != "awaiting" or stored.held:
                break
            now = svc.runtime.clock.now()
            try:
                target = svc.due_node(stored, now)
                if target is None:
                    if svc.cancel_expired and stored.expired(now):
                        await svc._cancel_stored(stored, "max_pause", "scheduler", event="expire")
                        self.expired += 1
                        done += 1
                    break
                result = await svc.fire(stored, *target)
            except (RevisionConflictError, NotAwaitingError):
                break  # someone else changed the run; look again next tick
            except FlowcraftError:
                log.exception("durable scheduler: cannot fire run %s", run_id)
                break
            self.fired += 1
            done += 1
            await self._emit(result)
        return done

    async def _emit(self, result: RunResult) -> None:
        if self._on_result is not None:
            res = self._on_result(result)
            if inspect.isawaitable(res):
                await res

    async def loop(self) -> None:
        """Tick, then sleep ``interval`` on the runtime's clock, forever."""
        clock = self._svc.runtime.clock
        while True:
            try:
                await self.tick()
            except StoreError:
                log.exception("durable scheduler: store error; retrying next tick")
            await clock.sleep(self._interval)
