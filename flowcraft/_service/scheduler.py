"""The durable scheduler: fires timers and expiries found in a store's due index."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio

from flowcraft._errors import RunNotFoundError
from flowcraft._service.parts import Claimed, Firing
from flowcraft._values import RunResult
from flowcraft.stores._base import StoredRun

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["DurableScheduler"]

log = logging.getLogger("flowcraft.scheduler")
#: Due runs claimed in one store write; the next ones are claimed while these fire.
_CLAIM_CHUNK = 50


class DurableScheduler:
    """Polls the store for due runs; never stops.

    ``async with service.scheduler(interval)`` runs one in the background; construct one
    directly (``DurableScheduler(service)``) and call ``tick()`` to drive it by hand (tests,
    cron jobs).

    Each tick recovers runs whose lease expired, then fires each due run's timers and wait
    expiries (each firing is a claimed segment, so it happens once however many schedulers
    run), and expires runs past their pause deadline (``max_pause``, ``expires_in``) along
    the service's ``on_expiry``; ``on_result`` hears every firing and every expiry.
    Due runs are taken ``batch`` at a time in ``(priority, due_at)`` order (lowest priority
    first), their timer firings claimed in one store write (on PostgreSQL and Redis 50 to a
    write, the next 50 while these fire), and started in that order, the nodes of up to
    ``concurrency`` of them running at once, and ``on_result`` hearing up to ``concurrency``
    results at once. Above 1, on a store over the network (PostgreSQL, Redis), a timer firing
    gives its place up once its nodes have run: the next ones run while its outcome is
    committed, and the store writes the waiting outcomes together; it takes a place again
    before anything else due for its run fires and before ``on_result`` hears it.
    ``concurrency=1`` keeps each firing's place through its commit: runs fire, and
    ``on_result`` hears them, strictly in that order.
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
        concurrency: int = 8,
    ) -> None:
        self._svc = service
        self._interval = interval
        self._on_result = on_result
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self._batch = batch
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._concurrency = concurrency
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
        start = time.time_ns() if host.listeners else 0
        count = 0
        for result in await svc.recover():
            self.recovered += 1
            count += 1
            await self._emit(result)
        done = [0]
        slots = anyio.Semaphore(self._concurrency)
        due: list[StoredRun] = []
        for stored in await host.store.due(host.now(), self._batch):
            if stored.run_id in host.controls or stored.run_id in host.busy:
                continue  # a task of this process is on it
            host.busy.add(stored.run_id)
            due.append(stored)
        # The plain timer firings of the page are claimed in one store write (each run its own
        # compare-and-set), on PostgreSQL and Redis ``_CLAIM_CHUNK`` at a time, the next part
        # while this one fires; the rest go through ``fire_due`` one by one.
        # A local store claims the page at once: its claim and the firings would only
        # share the CPU (and the GIL), not overlap a round trip.
        remote = getattr(host.store, "_remote", False)
        # concurrency=1 keeps a firing's place through its commit (strictly in due order), as
        # does a local store (nothing to overlap).
        early = remote and self._concurrency > 1
        size = _CLAIM_CHUNK if remote else max(len(due), 1)
        parts = [due[i : i + size] for i in range(0, len(due), size)]
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            # Runs start in the store's (priority, due_at) order; up to ``concurrency`` at once
            # overlap their store round trips (each is still its own claimed segment).
            started = 0
            try:
                claiming = _Claiming(svc, parts[0], tg) if parts else None
                for k, part in enumerate(parts):
                    assert claiming is not None
                    plans = await claiming.plans()
                    if isinstance(plans, Exception):
                        failure = plans  # raised once the runs already started are done
                        break
                    if k + 1 < len(parts):
                        claiming = _Claiming(svc, parts[k + 1], tg)
                    for stored, plan in zip(part, plans, strict=True):
                        if plan is not False:  # False: another writer got it first
                            try:
                                # Without a yield while slots are free: the runs started in
                                # one turn reach their commits together, and the store
                                # groups them.
                                slots.acquire_nowait()
                            except anyio.WouldBlock:
                                await slots.acquire()
                            tg.start_soon(self._fire, stored, plan, slots, done, early)
                        else:
                            host.busy.discard(stored.run_id)
                        started += 1
            finally:
                # Not started (a failed claim, a cancellation): claimed ones are recovered when
                # their lease ends.
                for stored in due[started:]:
                    host.busy.discard(stored.run_id)
        if failure is not None:
            raise failure
        self.ticks += 1
        self.last_tick_at = host.now()
        if host.listeners:
            host.notify("tick", None, start)
        return count + done[0]

    async def _fire(
        self,
        stored: StoredRun,
        plan: Claimed | bool,
        slots: anyio.Semaphore,
        done: list[int],
        early: bool,
    ) -> None:
        """Fire one due run; ``early``: its place is given up while its outcome commits."""
        svc = self._svc
        run_id = stored.run_id
        slot = _Slot(slots)
        try:
            try:
                if isinstance(plan, Claimed):
                    results, expired = await svc.fire_claimed(plan, slot if early else None)
                else:
                    results, expired = await svc.fire_due(run_id, stored)
            except RunNotFoundError:
                return
            except Exception as exc:  # isolate this run: record, back off, go on
                self.faults += 1
                log.warning("durable scheduler: run %s failed to fire: %s", run_id, exc)
                try:
                    await svc.record_fault(run_id, exc)
                except Exception:
                    log.exception("durable scheduler: cannot record the fault of run %s", run_id)
                if svc.host.listeners:
                    svc.host.notify("fault", stored, time.time_ns(), exc)
                return
            finally:
                svc.host.busy.discard(run_id)
            self.expired += expired
            self.fired += len(results) - expired
            done[0] += len(results)
            if results and self._on_result is not None:
                await slot.hold()  # on_result is heard by up to ``concurrency`` at once
            for result in results:
                await self._emit(result)
        finally:
            slot.release()

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
            start = time.time_ns()
            try:
                await self.tick()
            except Exception as exc:
                log.exception("durable scheduler: tick failed; retrying next interval")
                if self._svc.host.listeners:
                    self._svc.host.notify("tick", None, start, exc)
            # The runtime's clock is read afresh each time: it may have been replaced.
            await self._svc.host.runtime.clock.sleep(self._interval)


class _Slot:
    """One firing's place among ``concurrency`` (``parts.Slot``), taken when it started."""

    __slots__ = ("_held", "_slots")

    def __init__(self, slots: anyio.Semaphore) -> None:
        self._slots = slots
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._slots.release()

    async def hold(self) -> None:
        if not self._held:
            await self._slots.acquire()
            self._held = True


class _Claiming:
    """``claim_due`` of a part of a due page, in a task of its own: its plans, or its error."""

    def __init__(self, svc: Firing, runs: list[StoredRun], tg: TaskGroup) -> None:
        self._svc = svc
        self._runs = runs
        self._done = anyio.Event()
        self._out: list[Claimed | bool] | BaseException | None = None
        tg.start_soon(self._claim)

    async def _claim(self) -> None:
        try:
            self._out = await self._svc.claim_due(self._runs)
        except BaseException as exc:  # an error: the tick raises it after the runs it started
            self._out = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            self._done.set()

    async def plans(self) -> list[Claimed | bool] | Exception:
        """The plans, or the claim's error; a cancellation of the claim is raised here."""
        await self._done.wait()
        out = self._out
        if out is None:
            raise RuntimeError("the claim of a due page's part ended without an outcome")
        if isinstance(out, BaseException) and not isinstance(out, Exception):
            raise out
        return out
