"""A Hypothesis state machine of ``FlowService`` against a model (issue 12 point 7, issue 13).

Two services ("processes", distinct owners) share one store and one ``FakeClock``, configured
alike per example (``max_pause`` none or 100 s, ``on_expiry`` "keep" or "cancel"). Rules start
runs, deliver decisions (same or different actions, with or without idempotency keys, one at a
time or several at once), hold (optionally with ``expires_in``) and release, cancel, advance the
clock and tick the durable scheduler (timers, wait timeouts, pause expiries), simulate a crash
(a claim left by a process that died, or one still alive until its lease lapses) and recover,
roll back to a checkpoint (a held run stays held), fork, delete (forced or not) and the bulk
``pause_many/release_many/cancel_many`` (dry run or not). The model tracks, per run, where it
waits, the decision that won, what the store's history names as decided, holds, pause
deadlines, expiries, ``resume_count``, the kept checkpoints (as model snapshots, oldest first)
and the first result of every idempotency key; and, for all runs, how often each node ran and
how many ``workflow:expire`` events the bus heard. After every rule:

* each node ran exactly as often as the model says (once per decision, again after a rollback
  decided anew, never for a losing, late, expired or held decision);
* a held run refuses decisions (``RunHeldError``) and its timers do not fire; only its pause
  deadline is due;
* a decision past the pause deadline raises ``PauseExpiredError``, whether or not the scheduler
  expired the run yet; the scheduler cancels it or keeps it (then nothing more is due);
* a duplicate with the same key returns the first result; another decision gets
  ``AlreadyDecidedError`` naming the winner;
* no run is ``running`` unless it is a simulated crash;
* stored status, awaiting nodes, hold, pause deadline, due time, expiry mark,
  ``resume_count`` and the checkpoints kept are the model's; revisions only grow.

The machine runs on every store; Redis and PostgreSQL follow ``FLOWCRAFT_REQUIRE_SERVICES``.
"""

from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
import msgspec
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from flowcraft import (
    AlreadyDecidedError,
    CheckpointNotFoundError,
    FlowEvent,
    FlowRuntime,
    IdempotencyKeyReusedError,
    NotAwaitingError,
    PauseExpiredError,
    ResumeDataError,
    RunActiveError,
    RunHeldError,
    RunNotFoundError,
    WaitExpiredError,
)
from flowcraft._service.parts import Intent, encode_intent
from flowcraft.stores import DurableScheduler, FlowService, RunExistsError, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import KINDS, NAP, TIMEOUT, drop, model_flow, open_store, unavailable

RUNS = ("r0", "r1", "r2")  # started, and also the ids forks are made under
PICK = st.integers(0, 9)  # mostly a run that exists (``ServiceMachine.pick``)
ACTIONS = ("approved", "rejected")
DECISIONS = (*ACTIONS, "timeout")  # what a history can name as the approval's decision
KEYS = (None, "k1", "k2")
DEAD = "dead-process"
AFTER = {"approved": "pay", "rejected": "refuse", "timeout": "lapse"}
MAX_PAUSE = 100.0  # shorter than the wait's TIMEOUT, longer than the NAP: they all race
EXPIRES_IN = 150.0  # a hold's own deadline (later than max_pause's)
EXAMPLES = {"memory": 150, "sqlite": 40, "redis": 25, "postgres": 25}


@dataclass(frozen=True)
class Snap:
    """What a checkpoint holds, as the model sees it."""

    phase: str  # "approve" | "nap" | "completed" | "cancelled"
    deadline: datetime  # when the approval wait times out (absolute: kept in the context)
    nap_until: datetime | None
    winner: str | None

    @property
    def awaiting(self) -> tuple[str, ...]:
        return (self.phase,) if self.phase in ("approve", "nap") else ()


@dataclass
class Run:
    """What the model expects of one run."""

    phase: str  # "approve" | "nap" | "completed" | "cancelled"
    deadline: datetime
    nap_until: datetime | None = None
    winner: str | None = None  # the action that decided the approval wait (this state)
    said: str | None = None  # the newest decision or cancel/expire the store's history records
    held: bool = False
    pause_deadline: datetime | None = None
    expired: bool = False  # expired by the scheduler and kept (``on_expiry="keep"``)
    keys: dict[str, tuple[str, bytes | None]] = field(default_factory=dict)  # → action, result
    refused: dict[str, str] = field(default_factory=dict)  # key → action its replay refused
    crashed: tuple[str, str | None] | None = None  # a claim left by another process
    lease_until: datetime | None = None  # that claim's lease
    revision: int = 0
    resume_count: int = 0
    checkpoints: list[Snap] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.phase in ("completed", "cancelled")

    def snap(self) -> Snap:
        return Snap(self.phase, self.deadline, self.nap_until, self.winner)


async def _open(kind: str, where: str) -> RunStore:
    store = open_store(kind, where)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        await store.close()
        raise _Unreachable(f"{kind} store", exc) from exc
    return store


class _Unreachable(Exception):
    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(what)
        self.what, self.exc = what, exc


class _Bus:
    """Counts the bus events of one kind."""

    def __init__(self) -> None:
        self.heard: Counter[str] = Counter()

    def emit(self, event: FlowEvent) -> None:
        self.heard[event.type] += 1


class ServiceMachine(RuleBasedStateMachine):
    """``FlowService`` on one store against the model above."""

    kind = "memory"
    folder = "."

    def __init__(self) -> None:
        super().__init__()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.where = (
            str(Path(self.folder) / f"{uuid.uuid4().hex}.db")
            if self.kind == "sqlite"
            else f"m{uuid.uuid4().hex[:12]}"
        )
        self.store: RunStore = self.portal.call(_open, self.kind, self.where)
        self.clock = FakeClock()
        self.effects: Counter[tuple[str, str]] = Counter()
        self.expected: Counter[tuple[str, str]] = Counter()
        self.bus = _Bus()
        self.expiries = 0
        self.max_pause: float | None = None
        self.on_expiry: Literal["cancel", "keep"] = "keep"
        self.services: list[FlowService] = []
        self.runs: dict[str, Run] = {}

    @initialize(
        max_pause=st.sampled_from([None, MAX_PAUSE, MAX_PAUSE]),
        on_expiry=st.sampled_from(["keep", "cancel"]),
        started=st.integers(1, len(RUNS)),
    )
    def configure(
        self, max_pause: float | None, on_expiry: Literal["cancel", "keep"], started: int
    ) -> None:
        self.max_pause, self.on_expiry = max_pause, on_expiry
        flow = model_flow(self.effects)
        self.services = [
            FlowService(
                FlowRuntime(clock=self.clock, event_bus=self.bus),
                self.store,
                flows=[flow],
                owner=f"p{i}",
                max_pause=max_pause,
                on_expiry=on_expiry,
            )
            for i in range(2)
        ]
        for i in RUNS[:started]:  # most rules act on existing runs: have some from the start
            self.start(i, 0)

    def teardown(self) -> None:
        try:
            self.portal.call(self.store.close)
            self.portal.call(drop, self.kind, self.where)
        finally:
            self._portal_cm.__exit__(None, None, None)

    def call(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kw: Any) -> Any:
        async def go() -> Any:
            return await fn(*args, **kw)

        return self.portal.call(go)

    def outcome(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any, **kw: Any) -> Any:
        """The value returned, or the exception raised."""
        try:
            return self.call(fn, *args, **kw)
        except Exception as exc:
            return exc

    # --- the model's own transitions ----------------------------------------------------------

    def pick(self, n: int) -> str:
        """A run that exists, mostly (9 in 10, when there are some); else any id."""
        ids = sorted(self.runs)
        return ids[n % len(ids)] if ids and n < 9 else RUNS[n % len(RUNS)]

    def now(self) -> datetime:
        return self.clock.now()

    def committed(self, run: Run) -> None:
        """A segment stored the run's new state (a checkpoint); its pause deadline restarts."""
        awaiting = run.phase in ("approve", "nap")
        limit = self.max_pause
        run.pause_deadline = self.now() + timedelta(seconds=limit) if awaiting and limit else None
        run.held = run.expired = False
        run.checkpoints.append(run.snap())

    def decide(self, run_id: str, run: Run, action: str, key: str | None, result: Any) -> None:
        run.winner = run.said = action
        run.phase = "nap" if action == "approved" else "completed"
        if action == "approved":
            run.nap_until = self.now() + timedelta(seconds=NAP)
        if key is not None:
            run.keys[key] = (action, None if result is None else result.serialized_context)
        self.expected[(AFTER[action], run_id)] += 1
        self.committed(run)

    def lapsed(self, run: Run) -> bool:
        """Whether a crashed run's claim lease has lapsed (recovery may take it)."""
        until = run.lease_until
        return run.crashed is not None and until is not None and self.now() >= until

    def settle_crash(self, run_id: str, run: Run, recovered: dict[str, Any]) -> bool:
        """Recovery replays a lapsed claim's decision (refused once the wait expired)."""
        if run.crashed is None or not self.lapsed(run):
            return False
        action, key = run.crashed
        run.crashed = run.lease_until = None
        if self.now() >= run.deadline:
            # WaitExpiredError: the run is restored, awaiting, and the refused decision is not
            # counted (``recovered_prior`` puts back the count its claim found). Its key keeps
            # the refusal: the same decision sent again gets it (``FlowService.outcome``).
            run.resume_count -= 1
            if key is not None:
                run.refused[key] = action
            return False
        self.decide(run_id, run, action, key, recovered.get(run_id))
        return True

    def pause_lapsed(self, run: Run) -> bool:
        return run.expired or (run.pause_deadline is not None and self.now() >= run.pause_deadline)

    def fire_due(self, run_id: str, run: Run) -> int:
        """What a scheduler tick fires or expires for this run now (``fire_due``'s rules)."""
        now = self.now()
        if run.crashed is not None or run.finished or run.expired:
            return 0
        target: datetime | None = None
        if not run.held:
            if run.phase == "approve" and now >= run.deadline:
                target = run.deadline
            if run.phase == "nap" and run.nap_until is not None and now >= run.nap_until:
                target = run.nap_until
        deadline = run.pause_deadline
        if deadline is not None and deadline <= now and (target is None or target > deadline):
            self.expire(run_id, run)
            return 1
        if target is None:
            return 0
        if run.phase == "approve":
            run.winner = run.said = "timeout"
            run.phase = "completed"
            self.expected[("lapse", run_id)] += 1
        else:
            run.phase = "completed"
            self.expected[("done", run_id)] += 1
        self.committed(run)
        return 1

    def expire(self, run_id: str, run: Run) -> None:
        self.expiries += 1
        run.said = "cancel"  # an "expire" record: no decision is named after it
        if self.on_expiry == "cancel":
            run.phase = "cancelled"
            self.committed(run)
        else:
            run.expired = True

    def expected_refusal(self, run: Run | None) -> type[Exception] | None:
        """The error a decision gets now, or None if it applies (after any key lookup)."""
        if run is None:
            return RunNotFoundError
        if run.finished:
            return AlreadyDecidedError if run.said in DECISIONS else NotAwaitingError
        if self.pause_lapsed(run):
            return PauseExpiredError
        if run.held:
            return RunHeldError
        if run.phase == "nap":  # only the timer awaits: the history names the decision
            return AlreadyDecidedError if run.said in DECISIONS else ResumeDataError
        if self.now() >= run.deadline:
            return WaitExpiredError
        return None

    def check_refusal(self, got: Any, expected: type[Exception], run: Run | None) -> None:
        assert type(got) is expected, f"expected {expected.__name__}, got {got!r}"
        if expected is AlreadyDecidedError:
            assert run is not None
            assert got.action == run.said, (got, run.said)
            assert got.node_id == "approve"
        if expected is PauseExpiredError:
            assert run is not None
            assert (got.deadline, got.on_expiry) == (run.pause_deadline, self.on_expiry), got

    # --- rules: decisions ----------------------------------------------------------------------

    @rule(i=st.sampled_from(RUNS), svc=st.integers(0, 1))
    def start(self, i: str, svc: int) -> None:
        got = self.outcome(self.services[svc].start, "model", run_id=i)
        if i in self.runs:
            assert isinstance(got, RunExistsError), got
            return
        assert not isinstance(got, Exception), got
        assert got.status == "awaiting"
        run = Run(phase="approve", deadline=self.now() + timedelta(seconds=TIMEOUT))
        self.runs[i] = run
        self.expected[("submit", i)] += 1
        self.committed(run)

    @rule(
        n=PICK,
        svc=st.integers(0, 1),
        action=st.sampled_from(ACTIONS),
        key=st.sampled_from(KEYS),
    )
    def resume(self, n: int, svc: int, action: str, key: str | None) -> None:
        i = self.pick(n)
        run = self.runs.get(i)
        if run is not None and run.crashed is not None and not self.lapsed(run):
            return  # a live claim: the decision would wait for it (on a clock nobody moves)
        got = self.outcome(
            self.services[svc].resume, i, {"action": action}, by=f"user{svc}", idempotency_key=key
        )
        known = run is not None and key is not None and (key in run.keys or key in run.refused)
        if run is not None and run.crashed is not None and not known:
            # A decision waits for (recovers) the dead claim; one whose key was used already
            # replays its first result at once, whatever the run is doing.
            self.settle_crash(i, run, {})
        if run is not None and key is not None and key in run.refused:
            if run.refused[key] != action:  # a key stands for one decision
                assert isinstance(got, IdempotencyKeyReusedError), got
            else:  # the refusal the dead claim's replay got, as it was sent
                assert type(got) is WaitExpiredError, got
            return
        if run is not None and key is not None and key in run.keys:
            first_action, first = run.keys[key]
            if first_action != action:  # a key stands for one decision
                assert isinstance(got, IdempotencyKeyReusedError), got
                return
            assert not isinstance(got, Exception), got
            if first is not None:  # a duplicate returns the first result
                assert got.serialized_context == first
            else:
                run.keys[key] = (action, got.serialized_context)
            return
        expected = self.expected_refusal(run)
        if expected is not None:
            self.check_refusal(got, expected, run)
            return
        assert run is not None
        assert not isinstance(got, Exception), got
        run.resume_count += 1
        self.decide(i, run, action, key, got)

    @rule(
        n=PICK,
        deliveries=st.lists(
            st.tuples(st.integers(0, 1), st.sampled_from(ACTIONS), st.sampled_from(KEYS)),
            min_size=2,
            max_size=4,
        ),
    )
    def resume_at_once(self, n: int, deliveries: list[tuple[int, str, str | None]]) -> None:
        """Several deliveries at the same moment: one wins, the rest agree with it."""
        i = self.pick(n)
        run = self.runs.get(i)
        if run is None or run.crashed is not None or run.keys:
            return
        if self.expected_refusal(run) is not None:
            return

        async def all_at_once() -> list[Any]:
            out: list[Any] = [None] * len(deliveries)

            async def one(n: int, svc: int, action: str, key: str | None) -> None:
                try:
                    out[n] = await self.services[svc].resume(
                        i, {"action": action}, by=f"user{svc}", idempotency_key=key
                    )
                except Exception as exc:
                    out[n] = exc

            async with anyio.create_task_group() as tg:
                for n, (svc, action, key) in enumerate(deliveries):
                    tg.start_soon(one, n, svc, action, key)
            return out

        got = self.portal.call(all_at_once)
        pairs = list(zip(deliveries, got, strict=True))
        wins = [(d, g) for d, g in pairs if not isinstance(g, Exception)]
        assert wins, got
        (_, action, key), first = wins[0]
        for (_, a, k), g in wins[1:]:  # only duplicates of the winner succeed
            assert (a, k) == (action, key), got
            assert key is not None, got
            assert g.serialized_context == first.serialized_context
        run.resume_count += 1
        self.decide(i, run, action, key, first)
        for (_, a, k), g in pairs:
            if not isinstance(g, Exception):
                continue
            if k is not None and k == key:
                assert a != action, got
                assert isinstance(g, IdempotencyKeyReusedError), got
            else:
                self.check_refusal(g, AlreadyDecidedError, run)

    # --- rules: holds, cancels ------------------------------------------------------------------

    @rule(
        n=PICK,
        svc=st.integers(0, 1),
        by=st.sampled_from([None, "ops"]),
        expires_in=st.sampled_from([None, EXPIRES_IN]),
    )
    def hold(self, n: int, svc: int, by: str | None, expires_in: float | None) -> None:
        i = self.pick(n)
        run = self.runs.get(i)
        if run is not None and run.crashed is not None:
            return
        got = self.outcome(
            self.services[svc].pause, i, reason="audit", by=by, expires_in=expires_in
        )
        if run is None:
            assert type(got) is RunNotFoundError, got
        elif run.finished:
            assert type(got) is NotAwaitingError, got
        else:
            assert not isinstance(got, Exception), got
            assert got.held, got
            self.held(run, expires_in)

    def held(self, run: Run, expires_in: float | None = None) -> None:
        if not run.held and expires_in is not None:
            run.pause_deadline = self.now() + timedelta(seconds=expires_in)
        run.held = True

    @rule(n=PICK, svc=st.integers(0, 1))
    def release(self, n: int, svc: int) -> None:
        i = self.pick(n)
        run = self.runs.get(i)
        if run is not None and run.crashed is not None:
            return
        got = self.outcome(self.services[svc].release, i, by=f"user{svc}")
        if run is None:
            assert type(got) is RunNotFoundError, got
        elif run.finished:
            assert type(got) is NotAwaitingError, got
        else:
            assert not isinstance(got, Exception), got
            run.held = False

    @rule(n=PICK, svc=st.integers(0, 1))
    def cancel(self, n: int, svc: int) -> None:
        i = self.pick(n)
        run = self.runs.get(i)
        if run is not None and run.crashed is not None:
            return
        got = self.outcome(self.services[svc].cancel, i, reason="stop", by=f"user{svc}")
        if run is None:
            assert type(got) is RunNotFoundError, got
        elif run.finished:
            assert type(got) is NotAwaitingError, got
        else:
            assert not isinstance(got, Exception), got
            assert got.status == "cancelled"
            self.cancelled(run)

    def cancelled(self, run: Run) -> None:
        run.phase, run.said = "cancelled", "cancel"
        self.committed(run)

    @rule(
        op=st.sampled_from(["pause", "release", "cancel"]),
        svc=st.integers(0, 1),
        dry_run=st.booleans(),
    )
    def bulk(self, op: str, svc: int, dry_run: bool) -> None:
        """``pause_many``/``release_many``/``cancel_many`` over the awaiting runs of the flow."""
        service = self.services[svc]
        if op == "pause":
            got = self.call(service.pause_many, {"flow_id": "model"}, dry_run=dry_run, by="ops")
        elif op == "release":
            got = self.call(service.release_many, {"flow_id": "model"}, dry_run=dry_run)
        else:
            where = {"flow_id": "model", "status": "awaiting"}
            got = self.call(service.cancel_many, where, dry_run=dry_run, by="ops")
        awaiting = {i: r for i, r in self.runs.items() if r.crashed is None and not r.finished}
        assert set(got.matched) == set(awaiting), (got, self.runs)
        assert len(got.matched) == len(awaiting), got
        if op == "pause":
            changed = {i for i, r in awaiting.items() if not r.held}
        elif op == "release":
            changed = {i for i, r in awaiting.items() if r.held}
        else:
            changed = set(awaiting)
        assert set(got.changed) == changed, (got, self.runs)
        assert got.dry_run == dry_run
        if dry_run:
            return
        for i in changed:
            run = awaiting[i]
            if op == "pause":
                self.held(run)
            elif op == "release":
                run.held = False
            else:
                self.cancelled(run)

    # --- rules: time, scheduler, crashes ---------------------------------------------------------

    @rule(seconds=st.sampled_from([1.0, 29.0, 61.0, 150.0, 301.0]), then_tick=st.booleans())
    def advance(self, seconds: float, then_tick: bool) -> None:
        self.clock.advance(seconds)
        if then_tick:  # what a scheduler loop does after its sleep
            self.tick(0)

    @rule(
        n=PICK,
        moment=st.sampled_from(["pause_deadline", "deadline", "nap_until", "lease_until"]),
        then=st.sampled_from([None, "tick", "resume"]),
    )
    def advance_to(self, n: int, moment: str, then: str | None) -> None:
        """Move the clock to exactly one of a run's deadlines, then tick or decide at once.

        Boundaries are where bugs hide; plain ``advance`` steps rarely land on them.
        """
        run = self.runs.get(self.pick(n))
        when: datetime | None = None if run is None else getattr(run, moment)
        if when is not None and when > self.now():
            self.clock.advance((when - self.now()).total_seconds())
        if then == "tick":
            self.tick(0)
        elif then == "resume":
            self.resume(n, 1, "approved", None)

    @rule(svc=st.integers(0, 1))
    def tick(self, svc: int) -> None:
        recovered: list[Any] = []
        sched = DurableScheduler(self.services[svc], on_result=recovered.append)
        count = self.call(sched.tick)
        expected = 0
        by_run = {r.run_id: r for r in recovered}
        for run_id, run in self.runs.items():
            expected += self.settle_crash(run_id, run, by_run)
            expected += self.fire_due(run_id, run)
        assert count == expected, (count, expected, self.runs)
        assert len(recovered) == expected, recovered

    @rule(svc=st.integers(0, 1))
    def recover(self, svc: int) -> None:
        results = self.call(self.services[svc].recover)
        by_run = {r.run_id: r for r in results}
        replayed = {i for i, r in self.runs.items() if self.settle_crash(i, r, by_run)}
        assert set(by_run) == replayed, (by_run, replayed)

    @rule(
        n=PICK,
        action=st.sampled_from(ACTIONS),
        key=st.sampled_from(KEYS),
        lease=st.sampled_from([0.0, 100.0]),
    )
    def crash(self, n: int, action: str, key: str | None, lease: float) -> None:
        """A process claimed a decision and died (or stalls) before running a node.

        ``lease`` 0: its lease has lapsed already; 100: it lapses once the clock moves 100 s.
        """
        i = self.pick(n)
        run = self.runs.get(i)
        if run is None or run.phase != "approve" or run.held or run.crashed is not None:
            return
        if self.pause_lapsed(run):
            return  # that decision would have been refused (PauseExpiredError)
        if key is not None and (key in run.keys or key in run.refused):
            return
        stored = self.call(self.store.get, i)
        until = self.now() + timedelta(seconds=lease)
        dead = msgspec.structs.replace(
            stored,
            status="running",
            revision=stored.revision + 1,
            owner=DEAD,
            lease_until=until,
            claim=uuid.uuid4().hex,
            claim_key=key,
            intent=encode_intent(
                Intent(
                    kind="resume",
                    data={"action": action},
                    by=DEAD,
                    key=key,
                    counted_from=stored.resume_count,
                    resumed_before=stored.last_resumed_at,
                ),
                i,
            ),
            # As ``claim(resumed=True)`` counts it (and keeps the prior count in the intent).
            resume_count=stored.resume_count + 1,
            last_resumed_at=self.now(),
        )
        self.call(self.store.save, dead, stored.revision)
        run.crashed, run.lease_until = (action, key), until
        run.resume_count += 1

    # --- rules: checkpoints, rollback, fork, delete -----------------------------------------------

    def kept(self, i: str, run: Run) -> list[int]:
        """The stored checkpoints' revisions, after checking they are the model's, in order."""
        points = self.call(self.services[0].checkpoints, i)
        assert [(p.status, p.awaiting) for p in points] == [
            ({"approve": "awaiting", "nap": "awaiting"}.get(s.phase, s.phase), s.awaiting)
            for s in run.checkpoints
        ], (points, run.checkpoints)
        return [p.revision for p in points]

    @rule(n=PICK, svc=st.integers(0, 1), pick=st.integers(0, 7))
    def rollback(self, n: int, svc: int, pick: int) -> None:
        i = self.pick(n)
        run = self.runs.get(i)
        revisions = [] if run is None else self.kept(i, run)
        n = pick % (len(revisions) + 1)
        revision = revisions[n] if n < len(revisions) else 10_000  # none kept there
        got = self.outcome(self.services[svc].rollback, i, revision, by="ops", reason="redo")
        if run is None:
            assert type(got) is RunNotFoundError, got
            return
        if run.crashed is not None:
            assert type(got) is RunActiveError, got  # refused for a running run, live or not
            return
        if n == len(revisions):
            assert type(got) is CheckpointNotFoundError, got
            return
        assert not isinstance(got, Exception), got
        snap = run.checkpoints[n]
        held, hold_deadline = run.held, run.pause_deadline
        run.phase, run.deadline, run.nap_until, run.winner = (
            snap.phase,
            snap.deadline,
            snap.nap_until,
            snap.winner,
        )
        self.committed(run)  # a new revision and a new checkpoint; resume_count stays
        if held and not run.finished:
            # Only a release ends a hold: kept, with its deadline unless that already passed.
            run.held = True
            if hold_deadline is not None and hold_deadline > self.now():
                run.pause_deadline = hold_deadline

    @rule(
        n=PICK,
        new=st.sampled_from(RUNS),
        svc=st.integers(0, 1),
        pick=st.integers(0, 7),
    )
    def fork(self, n: int, new: str, svc: int, pick: int) -> None:
        i = self.pick(n)
        run = self.runs.get(i)
        revisions = [] if run is None else self.kept(i, run)
        n = pick % (len(revisions) + 1)
        revision = revisions[n] if n < len(revisions) else 10_000
        got = self.outcome(self.services[svc].fork, i, revision, new_run_id=new, by="ops")
        if run is None:
            assert type(got) is RunNotFoundError, got
            return
        if n == len(revisions):
            assert type(got) is CheckpointNotFoundError, got
            return
        if new in self.runs:
            assert type(got) is RunExistsError, got
            return
        assert not isinstance(got, Exception), got
        snap = run.checkpoints[n]
        forked = Run(
            phase=snap.phase, deadline=snap.deadline, nap_until=snap.nap_until, winner=snap.winner
        )
        self.committed(forked)
        self.runs[new] = forked

    @rule(n=PICK, svc=st.integers(0, 1), force=st.booleans())
    def delete(self, n: int, svc: int, force: bool) -> None:
        i = self.pick(n)
        run = self.runs.get(i)
        got = self.outcome(self.services[svc].delete, i, force=force)
        if run is None:
            assert type(got) is RunNotFoundError, got
            return
        if run.crashed is not None and not self.lapsed(run) and not force:
            assert type(got) is RunActiveError, got  # a live claim: refused unless forced
            return
        assert got is None, got
        del self.runs[i]

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def stored_runs_match_the_model(self) -> None:
        for run_id in RUNS:
            run = self.runs.get(run_id)
            if run is None:
                got = self.outcome(self.store.get, run_id)
                assert isinstance(got, RunNotFoundError), got
                continue
            stored = self.call(self.store.get, run_id)
            assert stored.revision >= run.revision, (stored, run)  # revisions only grow
            run.revision = stored.revision
            assert stored.resume_count == run.resume_count, (stored, run)
            self.kept(run_id, run)  # the checkpoints kept are the model's, in order
            if run.crashed is not None:
                assert (stored.status, stored.owner) == ("running", DEAD), stored
                continue
            # Never running without a live lease: between rules nothing runs at all.
            assert stored.status != "running", stored
            status = {"approve": "awaiting", "nap": "awaiting"}.get(run.phase, run.phase)
            assert stored.status == status, (stored, run)
            assert stored.held == run.held, (stored, run)
            assert (stored.expired_at is not None) == run.expired, (stored, run)
            if run.finished:
                continue
            assert stored.awaiting == (run.phase,), (stored, run)
            assert stored.pause_deadline == run.pause_deadline, (stored, run)
            timer = run.deadline if run.phase == "approve" else run.nap_until
            due = [d for d in (run.pause_deadline, None if run.held else timer) if d]
            # A held run's timers do not fire (only its pause deadline is due); an expired,
            # kept run has nothing due at all.
            assert stored.due_at == (None if run.expired else min(due, default=None)), (
                stored,
                run,
            )

    @invariant()
    def every_node_ran_as_often_as_the_model_says(self) -> None:
        assert +self.effects == +self.expected, (self.effects, self.expected, self.runs)

    @invariant()
    def every_expiry_was_announced(self) -> None:
        assert self.bus.heard["workflow:expire"] == self.expiries, (self.bus.heard, self.runs)


@pytest.mark.parametrize("kind", KINDS)
def test_the_service_behaves_like_its_model(kind: str) -> None:
    """Random sequences of operations on two services match the model (see the module doc)."""
    with tempfile.TemporaryDirectory() as folder:
        attrs = {"kind": kind, "folder": folder}
        machine = type(f"ServiceMachine_{kind}", (ServiceMachine,), attrs)
        try:
            with start_blocking_portal("asyncio") as portal:
                probe = str(Path(folder) / "probe.db") if kind == "sqlite" else "mprobe"
                portal.call(_probe, kind, probe)
        except _Unreachable as exc:
            unavailable(exc.what, exc.exc)
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES[kind],
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )


async def _probe(kind: str, where: str) -> None:
    store = await _open(kind, where)
    await store.close()
    await drop(kind, where)
