"""The durable scheduler: fires timers and expiries found in a store's due index."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flowcraft._errors import RunNotFoundError
from flowcraft._service.parts import Firing
from flowcraft._values import RunResult

__all__ = ["DurableScheduler"]

log = logging.getLogger("flowcraft.scheduler")


class DurableScheduler:
    """Polls the store for due runs; never stops.

    ``async with service.scheduler(interval)`` runs one in the background; construct one
    directly (``DurableScheduler(service)``) and call ``tick()`` to drive it by hand (tests,
    cron jobs).

    Each tick recovers runs whose lease expired, then fires each due run's timers and wait
    expiries (each firing is a claimed segment, so it happens once however many schedulers
    run), and expires runs past their pause deadline (``max_pause``, ``expires_in``) along
    the service's ``on_expiry``; ``on_result`` hears every firing and every expiry.
    A run that fails to fire is isolated: its reason is recorded on the run (``fault``) and its
    next attempt backs off, so it never blocks the others. A store outage is logged and ridden
    out: the loop ticks again after ``interval``.
    """

    def __init__(
        self,
        service: Firing,
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
        self.faults = 0
        self.ticks = 0
        self.last_tick_at: datetime | None = None

    def __repr__(self) -> str:
        return (
            f"flowcraft.DurableScheduler(fired={self.fired}, expired={self.expired}, "
            f"recovered={self.recovered}, faults={self.faults})"
        )

    async def tick(self) -> int:
        """Do everything due now; return how many runs were fired, expired or recovered."""
        svc = self._svc
        host = svc.host
        count = 0
        for result in await svc.recover():
            self.recovered += 1
            count += 1
            await self._emit(result)
        for stored in await host.store.due(host.now(), self._batch):
            run_id = stored.run_id
            if run_id in host.controls or run_id in host.busy:
                continue  # a task of this process is on it
            host.busy.add(run_id)
            try:
                results, expired = await svc.fire_due(run_id)
            except RunNotFoundError:
                continue
            except Exception as exc:  # isolate this run: record, back off, go on
                self.faults += 1
                log.warning("durable scheduler: run %s failed to fire: %s", run_id, exc)
                try:
                    await svc.record_fault(run_id, exc)
                except Exception:
                    log.exception("durable scheduler: cannot record the fault of run %s", run_id)
                continue
            finally:
                host.busy.discard(run_id)
            self.expired += expired
            self.fired += len(results) - expired
            count += len(results)
            for result in results:
                await self._emit(result)
        self.ticks += 1
        self.last_tick_at = host.now()
        return count

    async def _emit(self, result: RunResult) -> None:
        if self._on_result is not None:
            try:
                res = self._on_result(result)
                if inspect.isawaitable(res):
                    await res
            except Exception:
                log.exception("durable scheduler: on_result failed for run %s", result.run_id)

    async def loop(self) -> None:
        """Tick, then sleep ``interval`` on the runtime's clock, forever."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("durable scheduler: tick failed; retrying next interval")
            # The runtime's clock is read afresh each time: it may have been replaced.
            await self._svc.host.runtime.clock.sleep(self._interval)
