"""Model-checked engine: random flows driven by random resumes, compared with a reference.

A ``RuleBasedStateMachine`` generates a flow (a DAG of tasks, waits and sleeps; action-labelled
edges; ``all``/``any`` joins; tasks that fail some attempts, with retries and fallbacks; tasks
looping on themselves a bounded number of times through a back edge; waits with a timeout and a
``"timeout"`` edge; tasks gated by ``pause_before``), runs it on a ``FakeClock``, then applies
random steps: resume an awaiting wait with a valid or invalid action (or too late), advance the
clock (past a wait's expiry), resume or ``fire`` a timer or an expiring wait (due or not), open a
gate (with or without data), arm a ``RunControl`` that a node pauses from inside, or send a
malformed resume. After every step the runtime's status, outputs, awaiting set, state and
revision must equal those of ``Reference``, a direct transcription of DESIGN.md's execution
semantics:

* a node runs once every incoming edge has fired or died (``all``) or at the first firing
  (``any``), provided one fired; otherwise it is skipped and its out-edges die;
* after a node finishes with action ``A``, the edges labelled ``A`` fire, or if none, the
  unlabelled ones; every other out-edge dies;
* a task is attempted ``max_retries`` times, then its fallback runs in its place, else the run
  fails;
* a back edge (a task's self edge, taken with action ``again``) re-runs its target at once with
  the output as input, ignoring joins; the task's other exits stay undecided until it stops;
* waits, sleeps and gates make the run await; a refused resume changes nothing;
* a wait with a timeout expires at ``reached + timeout``: from then on ``fire`` completes it with
  output ``None`` and action ``"timeout"``, and a human decision raises ``WaitExpiredError``;
  firing before then (or firing a sleep before ``wake_at``) raises ``TimerNotDueError``, and
  firing a wait without a timeout is refused;
* a ``pause_before`` task awaits (reason ``"pause"``) each time it is about to run; resuming it
  with no data runs it, with an output or an action raises ``ResumeDataError``;
* a ``RunControl`` paused from inside a node makes the unstarted frontier await (reason
  ``"pause"``, ``requested_by`` set); ``resume(bp, ctx)`` with no data continues it, and the
  end result is the reference's, computed as if nothing had paused.

Each step resumes from the previous step's bytes in a fresh runtime (alternating msgpack/JSON),
as another process would.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from flowcraft import (
    AmbiguousResumeError,
    FlowRuntime,
    NodeNotAwaitingError,
    NotAwaitingError,
    ResumeDataError,
    ResumeError,
    RunControl,
    RunResult,
    TimerNotDueError,
    UnknownActionError,
    WaitExpiredError,
)
from flowcraft.testing import FakeClock
from tests.reference import Reference, Wait
from tests.strategies import ACTIONS, CONTROL, PAUSED_BY, NodeSpec, Spec, build, flow_specs, name

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OUTPUTS: list[Any] = [None, 0, 7, "x", {"k": 1}, [1, "two"]]
#: What the model draws: everything the reference knows.
MODEL = frozenset({"joins", "retries", "fallbacks", "loops", "timeouts", "gates", "pausers"})


# --- the state machine --------------------------------------------------------------------------


def call_with(call: Any, control: RunControl | None) -> RunResult:
    """Run ``call``; while it runs, ``pauser`` tasks pause ``control`` (if there is one)."""
    CONTROL[:] = [control] if control is not None else []
    try:
        return anyio.run(call)
    finally:
        CONTROL.clear()


class FlowMachine(RuleBasedStateMachine):
    """Drives one generated flow through random resumes, checking it against ``Reference``."""

    def __init__(self) -> None:
        super().__init__()
        self.spec: Spec | None = None
        self.steps = 0
        self.armed = False  # the next accepted run/resume/fire gets a RunControl

    # helpers ------------------------------------------------------------------------------------

    def runtime(self) -> FlowRuntime:
        self.steps += 1
        return FlowRuntime(
            registry=self.flow.registry,
            clock=self.clock,
            serializer="json" if self.steps % 2 else "msgpack",
        )

    def ctx(self) -> bytes | RunResult:
        """Alternate between the bytes and the result object, both must resume."""
        return self.result.serialized_context if self.steps % 3 else self.result

    def resume(
        self,
        data: Any,
        node_id: str | None,
        fire: bool = False,
        control: RunControl | None = None,
    ) -> RunResult:
        rt = self.runtime()
        if fire:
            assert node_id is not None
            call = partial(rt.fire, self.bp, self.ctx(), node_id, control=control)
        else:
            call = partial(rt.resume, self.bp, self.ctx(), data, node_id, control=control)
        return call_with(call, control)

    def refused(
        self,
        error: type[ResumeError] | tuple[type[ResumeError], ...],
        data: Any,
        node_id: str | None,
        fire: bool = False,
    ) -> None:
        """The resume raises ``error`` and changes nothing; the same context stays usable."""
        before = (
            self.result.serialized_context,
            copy.deepcopy(self.result.outputs),
            copy.deepcopy(self.result.context),
        )
        with pytest.raises(error):
            self.resume(data, node_id, fire)
        after = (self.result.serialized_context, self.result.outputs, self.result.context)
        assert after == before

    def step(
        self,
        nid: str,
        output: Any,
        action: str | None,
        data: Any,
        node_id: str | None,
        fire: bool = False,
    ) -> None:
        """An accepted resume (or fire) of ``nid``: the node completes with (output, action)."""
        control = RunControl() if self.armed else None
        self.armed = False
        self.result = self.resume(data, node_id, fire, control)
        self.ref.resume(nid, output, action, self.clock.now())
        self.continue_paused(control)

    def continue_paused(self, control: RunControl | None) -> None:
        """After a call under ``control``: check the paused frontier, then continue it."""
        if control is None:
            return
        got, ref = self.result, self.ref
        paused = {a.node_id for a in got.awaiting if a.requested_by == PAUSED_BY}
        if paused:
            assert got.status == "awaiting"
        for a in got.awaiting:
            if a.node_id in paused:  # the unstarted frontier, which the reference reached
                assert (a.reason, a.description) == ("pause", "model pause")
                assert a.node_id in ref.reached
            else:  # awaiting as it would have without the pause
                assert (a.reason, a.wake_at, a.expires_at) == ref.waiting[a.node_id][:3]
        for nid, output in got.outputs.items():
            assert ref.ran(nid, output), (nid, output)
        for _ in range(8 * len(ref.spec.nodes)):
            if not any(a.requested_by == PAUSED_BY for a in self.result.awaiting):
                return
            self.result = self.resume(None, None)  # no data: continue the paused nodes
            ref.revision += 1
        raise AssertionError(f"still paused: {self.result.awaiting}")

    def waits(self, reason: str) -> list[str]:
        return sorted(n for n, w in self.ref.waiting.items() if w.reason == reason)

    def expired(self, nid: str) -> bool:
        """``nid`` is a wait whose timeout has passed."""
        expires = self.ref.waiting[nid].expires_at
        return expires is not None and self.clock.now() >= expires

    @property
    def live(self) -> bool:
        return self.ref.status == "awaiting"

    # rules --------------------------------------------------------------------------------------

    @initialize(spec=flow_specs(features=MODEL), controlled=st.booleans())
    def start(self, spec: Spec, controlled: bool) -> None:
        self.spec = spec
        self.flow = build(spec)
        self.bp = self.flow.to_blueprint()
        self.clock = FakeClock(START)
        self.ref = Reference(spec)
        self.ref.settle(self.clock.now())
        self.ref.revision = 1
        rt = self.runtime()
        control = RunControl() if controlled else None
        run = partial(rt.run, self.bp, None, run_id="model-run", control=control)
        self.result = call_with(run, control)
        self.continue_paused(control)

    @precondition(lambda self: self.live and self.waits("wait"))
    @rule(
        pick=st.integers(0, 10),
        action=st.sampled_from([None, *ACTIONS, "zz"]),
        output=st.sampled_from(OUTPUTS),
        omit_node_id=st.booleans(),
    )
    def resume_wait(self, pick: int, action: str | None, output: Any, omit_node_id: bool) -> None:
        waits = self.waits("wait")
        nid = waits[pick % len(waits)]
        node_id = None if omit_node_id and len(self.ref.waiting) == 1 else nid
        data = {"output": output, "action": action}
        known = self.ref.action_ok(int(nid[1:]), action)
        if self.expired(nid):  # a late human decision (which error, if also unknown, is open)
            self.refused(WaitExpiredError if known else ResumeError, data, node_id)
            return
        if not known:
            self.refused(UnknownActionError, data, node_id)
            return
        self.step(nid, output, action, data, node_id)

    @rule(seconds=st.sampled_from([1, 29, 30, 90, 300]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.live and any(w.expires_at for w in self.ref.waiting.values()))
    @rule(pick=st.integers(0, 10), extra=st.sampled_from([0, 1, 45]))
    def pass_expiry(self, pick: int, extra: int) -> None:
        """Move the clock to (or past) a wait's expiry."""
        waits = sorted(n for n, w in self.ref.waiting.items() if w.expires_at)
        expires = self.ref.waiting[waits[pick % len(waits)]].expires_at
        assert expires is not None
        self.clock.advance(max(0.0, (expires - self.clock.now()).total_seconds()) + extra)

    @precondition(lambda self: self.live and any(map(self.expired, self.ref.waiting)))
    @rule(
        pick=st.integers(0, 10),
        action=st.sampled_from([None, *ACTIONS]),
        output=st.sampled_from(OUTPUTS),
    )
    def late_decision(self, pick: int, action: str | None, output: Any) -> None:
        """A human decision for an expired wait is refused, even with a known action."""
        late = sorted(filter(self.expired, self.ref.waiting))
        nid = late[pick % len(late)]
        if self.ref.action_ok(int(nid[1:]), action):
            self.refused(WaitExpiredError, {"output": output, "action": action}, nid)

    @precondition(lambda self: self.live and self.waits("timer"))
    @rule(pick=st.integers(0, 10))
    def resume_timer(self, pick: int) -> None:
        timers = self.waits("timer")
        nid = timers[pick % len(timers)]
        wake_at = self.ref.waiting[nid].wake_at
        assert wake_at is not None
        if self.clock.now() < wake_at:
            self.refused(TimerNotDueError, None, nid)
            return
        self.step(nid, None, None, None, nid)

    @precondition(lambda self: self.live and self.waits("timer") + self.waits("wait"))
    @rule(pick=st.integers(0, 10))
    def fire(self, pick: int) -> None:
        """What a scheduler does: fire a due timer, or time out an expired wait."""
        targets = self.waits("timer") + self.waits("wait")
        nid = targets[pick % len(targets)]
        w = self.ref.waiting[nid]
        due = w.wake_at or w.expires_at
        if due is None:  # a wait without a timeout: there is nothing to fire
            self.refused(ResumeError, None, nid, fire=True)
        elif self.clock.now() < due:
            self.refused(TimerNotDueError, None, nid, fire=True)
        elif w.reason == "timer":
            self.step(nid, None, None, None, nid, fire=True)
        else:  # a timeout carries no decision: output None, routed along "timeout"
            self.step(nid, None, "timeout", None, nid, fire=True)

    @precondition(lambda self: self.live and self.waits("pause"))
    @rule(
        pick=st.integers(0, 10),
        data=st.sampled_from([None, None, {"output": 1}, {"action": "a"}, {"output": None}]),
        omit_node_id=st.booleans(),
    )
    def open_gate(self, pick: int, data: Any, omit_node_id: bool) -> None:
        """A ``pause_before`` gate runs its node when resumed with no data."""
        gates = self.waits("pause")
        nid = gates[pick % len(gates)]
        node_id = None if omit_node_id and len(self.ref.waiting) == 1 else nid
        if data is not None:
            self.refused(ResumeDataError, data, node_id)
            return
        self.step(nid, None, None, None, node_id)

    @precondition(lambda self: self.live and not self.armed)
    @rule()
    def arm_pause(self) -> None:
        """The next accepted call runs with a ``RunControl`` that ``pauser`` tasks pause."""
        self.armed = True

    @rule(
        how=st.sampled_from(
            ["not-awaiting", "ghost", "not-a-mapping", "extra-key", "action-type", "ambiguous"]
        ),
        pick=st.integers(0, 10),
    )
    def bad_resume(self, how: str, pick: int) -> None:
        waiting = sorted(self.ref.waiting)
        if not self.live:
            self.refused(NotAwaitingError, None, waiting[0] if waiting else None)
            return
        target = waiting[pick % len(waiting)]
        if how == "not-awaiting":
            others = [name(i) for i in range(len(self.ref.spec.nodes)) if name(i) not in waiting]
            if others:
                self.refused(NodeNotAwaitingError, {"output": 1}, others[pick % len(others)])
        elif how == "ghost":
            self.refused(NodeNotAwaitingError, {"output": 1}, "ghost")
        elif how == "not-a-mapping":
            self.refused(ResumeDataError, "approved", target)
        elif how == "extra-key":
            self.refused(ResumeDataError, {"output": 1, "oops": True}, target)
        elif how == "action-type":
            self.refused(ResumeDataError, {"action": 5}, target)
        elif len(waiting) > 1:
            self.refused(AmbiguousResumeError, {"output": 1}, None)

    @precondition(lambda self: self.live and self.waits("timer"))
    @rule(pick=st.integers(0, 10))
    def resume_timer_with_data(self, pick: int) -> None:
        timers = self.waits("timer")
        self.refused(ResumeDataError, {"output": 1}, timers[pick % len(timers)])

    # the comparison -----------------------------------------------------------------------------

    @invariant()
    def matches_reference(self) -> None:
        if self.spec is None:
            return
        got, ref = self.result, self.ref
        if ref.status == "failed":
            # The engine halts at the first failure; what else ran depends on scheduling order.
            assert got.status == "failed"
            assert got.errors
            assert {e.node_id for e in got.errors} <= ref.failed
            for nid, output in got.outputs.items():
                assert ref.ran(nid, output), (nid, output)
            return
        assert got.status == ref.status, got.errors
        assert got.outputs == ref.outputs
        assert got.context == ref.state
        assert got.revision == ref.revision
        awaiting = {a.node_id: (a.reason, a.wake_at, a.expires_at) for a in got.awaiting}
        assert awaiting == {n: w[:3] for n, w in ref.waiting.items()}
        assert all(a.requested_by is None for a in got.awaiting)
        assert got.errors == ()


def test_flow_machine_matches_the_reference() -> None:
    """Random flows, driven by random resumes from bytes, stay equal to the reference."""
    run_state_machine_as_test(
        FlowMachine,
        settings=settings(
            settings.default,
            # Twice the loaded profile's examples, at most 2000: 120 under "ci", 2000 under "long".
            max_examples=min(2 * settings.default.max_examples, 2000),
            stateful_step_count=15,
            deadline=None,
        ),
    )


def test_reference_agrees_with_a_hand_checked_flow() -> None:
    """Sanity check of the reference itself on an if/else that re-joins."""
    spec = Spec(
        (
            NodeSpec("task", action="a"),
            NodeSpec("task"),
            NodeSpec("task"),
            NodeSpec("task"),
        ),
        ((0, 1, "a"), (0, 2, "b"), (1, 3, None), (2, 3, None)),
    )
    ref = Reference(spec)
    ref.settle(START)
    assert ref.status == "completed"
    assert ref.outputs == {
        "n0": "n0<null>",
        "n1": 'n1<"n0<null>">',
        "n3": 'n3<{"n1": "n1<\\"n0<null>\\">"}>',
    }


def test_reference_times_out_and_gates_every_round() -> None:
    """Sanity check of the reference's timeouts and gates (a gated loop meets its gate twice)."""
    spec = Spec(
        (NodeSpec("wait", timeout=30), NodeSpec("task", loop=1, gate=True), NodeSpec("task")),
        ((0, 1, None), (0, 2, "timeout")),
    )
    ref = Reference(spec)
    ref.settle(START)
    assert ref.waiting == {"n0": Wait("wait", None, START + timedelta(seconds=30), None)}
    ref.resume("n0", None, "timeout", START + timedelta(seconds=30))
    assert (ref.status, ref.outputs) == ("completed", {"n0": None, "n2": "n2<null>"})

    ref = Reference(spec)
    ref.settle(START)
    ref.resume("n0", 5, None, START)
    assert ref.waiting == {"n1": Wait("pause", None, None, 5)}
    ref.resume("n1", None, None, START)
    assert ref.waiting == {"n1": Wait("pause", None, None, "n1<5>")}
    ref.resume("n1", None, None, START)
    assert (ref.status, ref.outputs) == ("completed", {"n0": 5, "n1": 'n1<"n1<5>">'})
