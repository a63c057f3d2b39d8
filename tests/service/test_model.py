"""A Hypothesis state machine of ``FlowService`` against a model (issue 12, point 7).

Two services ("processes", distinct owners) share one store and one ``FakeClock``. Rules start
runs, deliver decisions (same or different actions, with or without idempotency keys, one at a
time or several at once), hold and release, cancel, advance the clock and tick the durable
scheduler, simulate a crash (a claim left by a process that died: its lease has lapsed) and
recover. The model tracks, per run, where it waits, the decision that won, holds, the first
result of every idempotency key and how often each node ran. After every rule:

* each node after the wait ran exactly once per decided run, never for a losing decision;
* a held run refuses decisions (``RunHeldError``) and its timers do not fire;
* a duplicate with the same key returns the first result; another decision gets
  ``AlreadyDecidedError`` naming the winner;
* no run is ``running`` unless it is a simulated crash (a dead owner whose lease lapsed);
* revisions seen between rules only grow.

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
from typing import Any

import anyio
import msgspec
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from flowcraft import (
    AlreadyDecidedError,
    FlowRuntime,
    IdempotencyKeyReusedError,
    NotAwaitingError,
    RunHeldError,
    RunNotFoundError,
    WaitExpiredError,
)
from flowcraft._service.parts import Intent, encode_intent
from flowcraft.stores import DurableScheduler, FlowService, RunExistsError, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import KINDS, NAP, TIMEOUT, drop, model_flow, open_store, unavailable

RUNS = ("r0", "r1", "r2")
ACTIONS = ("approved", "rejected")
KEYS = (None, "k1", "k2")
DEAD = "dead-process"
AFTER = {"approved": "pay", "rejected": "refuse", "timeout": "lapse"}
EXAMPLES = {"memory": 150, "sqlite": 50, "redis": 25, "postgres": 25}


@dataclass
class Run:
    """What the model expects of one run."""

    phase: str  # "approve" | "nap" | "completed" | "cancelled"
    deadline: datetime  # when the approval wait times out
    nap_until: datetime | None = None
    held: bool = False
    winner: str | None = None  # the action that decided the approval wait
    keys: dict[str, tuple[str, bytes | None]] = field(default_factory=dict)  # → action, result
    crashed: tuple[str, str | None] | None = None  # a dead process's claim: (action, key)
    revision: int = 0
    napped: bool = False

    @property
    def finished(self) -> bool:
        return self.phase in ("completed", "cancelled")


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
        flow = model_flow(self.effects)
        self.services = [
            FlowService(FlowRuntime(clock=self.clock), self.store, flows=[flow], owner=f"p{i}")
            for i in range(2)
        ]
        self.runs: dict[str, Run] = {}

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

    def decide(self, run_id: str, run: Run, action: str, key: str | None, result: Any) -> None:
        run.winner = action
        run.phase = "nap" if action == "approved" else "completed"
        if action == "approved":
            run.nap_until = self.clock.now() + timedelta(seconds=NAP)
        if key is not None:
            run.keys[key] = (action, None if result is None else result.serialized_context)

    def settle_crash(self, run_id: str, run: Run, recovered: dict[str, Any]) -> None:
        """Recovery replays a dead process's decision (refused once the wait expired)."""
        if run.crashed is None:
            return
        action, key = run.crashed
        run.crashed = None
        if self.clock.now() >= run.deadline:
            return  # WaitExpiredError: the run is restored, awaiting
        self.decide(run_id, run, action, key, recovered.get(run_id))

    def fire_due(self, run: Run) -> int:
        """What a scheduler tick fires for this run now."""
        now = self.clock.now()
        if run.held or run.crashed is not None:
            return 0
        if run.phase == "approve" and now >= run.deadline:
            run.winner, run.phase = "timeout", "completed"
            return 1
        if run.phase == "nap" and run.nap_until is not None and now >= run.nap_until:
            run.phase, run.napped = "completed", True
            return 1
        return 0

    def expected_refusal(self, run_id: str, run: Run | None) -> type[Exception] | None:
        """The error a decision gets now, or None if it applies (after any key lookup)."""
        if run is None:
            return RunNotFoundError
        if run.phase == "cancelled":
            return NotAwaitingError
        if run.phase == "completed":
            return AlreadyDecidedError
        if run.held:
            return RunHeldError
        if run.winner is not None:
            return AlreadyDecidedError
        if self.clock.now() >= run.deadline:
            return WaitExpiredError
        return None

    def check_refusal(self, got: Any, expected: type[Exception], run: Run | None) -> None:
        assert isinstance(got, expected), f"expected {expected.__name__}, got {got!r}"
        if expected is AlreadyDecidedError:
            assert run is not None
            assert got.action == run.winner, (got, run.winner)
            assert got.node_id == "approve"

    # --- rules ---------------------------------------------------------------------------------

    @rule(i=st.sampled_from(RUNS), svc=st.integers(0, 1))
    def start(self, i: str, svc: int) -> None:
        got = self.outcome(self.services[svc].start, "model", run_id=i)
        if i in self.runs:
            assert isinstance(got, RunExistsError), got
            return
        assert not isinstance(got, Exception), got
        assert got.status == "awaiting"
        deadline = self.clock.now() + timedelta(seconds=TIMEOUT)
        self.runs[i] = Run(phase="approve", deadline=deadline)

    @rule(
        i=st.sampled_from(RUNS),
        svc=st.integers(0, 1),
        action=st.sampled_from(ACTIONS),
        key=st.sampled_from(KEYS),
    )
    def resume(self, i: str, svc: int, action: str, key: str | None) -> None:
        run = self.runs.get(i)
        got = self.outcome(
            self.services[svc].resume, i, {"action": action}, by=f"user{svc}", idempotency_key=key
        )
        if run is not None and run.crashed is not None:
            self.settle_crash(i, run, {})  # a decision waits for (recovers) the dead claim
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
        expected = self.expected_refusal(i, run)
        if expected is not None:
            self.check_refusal(got, expected, run)
            return
        assert run is not None
        assert not isinstance(got, Exception), got
        self.decide(i, run, action, key, got)

    @rule(
        i=st.sampled_from(RUNS),
        deliveries=st.lists(
            st.tuples(st.integers(0, 1), st.sampled_from(ACTIONS), st.sampled_from(KEYS)),
            min_size=2,
            max_size=4,
        ),
    )
    def resume_at_once(self, i: str, deliveries: list[tuple[int, str, str | None]]) -> None:
        """Several deliveries at the same moment: one wins, the rest agree with it."""
        run = self.runs.get(i)
        if run is None or run.crashed is not None or run.keys:
            return
        if self.expected_refusal(i, run) is not None:
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
        self.decide(i, run, action, key, first)
        for (_, a, k), g in pairs:
            if not isinstance(g, Exception):
                continue
            if k is not None and k == key:
                assert a != action, got
                assert isinstance(g, IdempotencyKeyReusedError), got
            else:
                self.check_refusal(g, AlreadyDecidedError, run)

    @rule(i=st.sampled_from(RUNS), svc=st.integers(0, 1), by=st.sampled_from([None, "ops"]))
    def hold(self, i: str, svc: int, by: str | None) -> None:
        run = self.runs.get(i)
        if run is not None and run.crashed is not None:
            return
        got = self.outcome(self.services[svc].pause, i, reason="audit", by=by)
        if run is None:
            assert isinstance(got, RunNotFoundError), got
        elif run.finished:
            assert isinstance(got, NotAwaitingError), got
        else:
            assert not isinstance(got, Exception), got
            assert got.held, got
            run.held = True

    @rule(i=st.sampled_from(RUNS), svc=st.integers(0, 1))
    def release(self, i: str, svc: int) -> None:
        run = self.runs.get(i)
        if run is not None and run.crashed is not None:
            return
        got = self.outcome(self.services[svc].release, i, by=f"user{svc}")
        if run is None:
            assert isinstance(got, RunNotFoundError), got
        elif run.finished:
            assert isinstance(got, NotAwaitingError), got
        else:
            assert not isinstance(got, Exception), got
            run.held = False

    @rule(i=st.sampled_from(RUNS), svc=st.integers(0, 1))
    def cancel(self, i: str, svc: int) -> None:
        run = self.runs.get(i)
        if run is not None and run.crashed is not None:
            return
        got = self.outcome(self.services[svc].cancel, i, reason="stop", by=f"user{svc}")
        if run is None:
            assert isinstance(got, RunNotFoundError), got
        elif run.finished:
            assert isinstance(got, NotAwaitingError), got
        else:
            assert not isinstance(got, Exception), got
            assert got.status == "cancelled"
            run.phase, run.held = "cancelled", False

    @rule(seconds=st.sampled_from([1.0, 29.0, 61.0, 150.0, 301.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(svc=st.integers(0, 1))
    def tick(self, svc: int) -> None:
        recovered: list[Any] = []
        sched = DurableScheduler(self.services[svc], on_result=recovered.append)
        count = self.call(sched.tick)
        expected = 0
        by_run = {r.run_id: r for r in recovered}
        for run_id, run in self.runs.items():
            if run.crashed is not None:
                replayed = self.clock.now() < run.deadline
                self.settle_crash(run_id, run, by_run)
                expected += replayed
            expected += self.fire_due(run)
        assert count == expected, (count, expected, self.runs)

    @rule(svc=st.integers(0, 1))
    def recover(self, svc: int) -> None:
        results = self.call(self.services[svc].recover)
        by_run = {r.run_id: r for r in results}
        for run_id, run in self.runs.items():
            self.settle_crash(run_id, run, by_run)
        assert set(by_run) <= set(self.runs)

    @rule(i=st.sampled_from(RUNS), action=st.sampled_from(ACTIONS), key=st.sampled_from(KEYS))
    def crash(self, i: str, action: str, key: str | None) -> None:
        """A process claimed a decision and died before running a node: its lease lapsed."""
        run = self.runs.get(i)
        if run is None or run.phase != "approve" or run.held or run.crashed is not None:
            return
        if key is not None and key in run.keys:
            return
        stored = self.call(self.store.get, i)
        dead = msgspec.structs.replace(
            stored,
            status="running",
            revision=stored.revision + 1,
            owner=DEAD,
            lease_until=self.clock.now(),
            claim=uuid.uuid4().hex,
            claim_key=key,
            intent=encode_intent(
                Intent(kind="resume", data={"action": action}, by=DEAD, key=key), i
            ),
        )
        self.call(self.store.save, dead, stored.revision)
        run.crashed = (action, key)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def stored_runs_match_the_model(self) -> None:
        for run_id, run in self.runs.items():
            stored = self.call(self.store.get, run_id)
            assert stored.revision >= run.revision, (stored, run)  # revisions only grow
            run.revision = stored.revision
            if run.crashed is not None:
                assert (stored.status, stored.owner) == ("running", DEAD), stored
                continue
            # Never running without a live lease: between rules nothing runs at all.
            assert stored.status != "running", stored
            status = {"approve": "awaiting", "nap": "awaiting"}.get(run.phase, run.phase)
            assert stored.status == status, (stored, run)
            assert stored.held == run.held, (stored, run)
            if run.phase in ("approve", "nap"):
                assert stored.awaiting == (run.phase,), (stored, run)
                if run.held:
                    assert stored.due_at is None, stored  # a held run's timers do not fire

    @invariant()
    def every_node_after_the_wait_ran_once_per_decision(self) -> None:
        for run_id, run in self.runs.items():
            assert self.effects[("submit", run_id)] == 1
            for action, node in AFTER.items():
                assert self.effects[(node, run_id)] == (run.winner == action), (
                    node,
                    run_id,
                    run,
                    self.effects,
                )
            assert self.effects[("done", run_id)] == run.napped, (run_id, run)


@pytest.mark.parametrize("kind", KINDS)
def test_the_service_behaves_like_its_model(kind: str) -> None:
    """Random sequences of starts, decisions, holds, crashes and ticks match the model."""
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
