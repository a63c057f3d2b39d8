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
import json
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

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
)

from flowcraft import (
    AmbiguousResumeError,
    Flow,
    FlowRuntime,
    NodeContext,
    NodeNotAwaitingError,
    NodeResult,
    NotAwaitingError,
    ResumeDataError,
    ResumeError,
    RunControl,
    RunResult,
    TimerNotDueError,
    UnknownActionError,
    WaitExpiredError,
    create_flow,
)
from flowcraft.testing import FakeClock

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACTIONS = ("a", "b")
OUTPUTS: list[Any] = [None, 0, 7, "x", {"k": 1}, [1, "two"]]
PAUSED_BY = "model-control"
#: The ``RunControl`` of the call in progress, if it has one: a ``pauser`` task pauses it.
CONTROL: list[RunControl] = []


# --- flow specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeSpec:
    kind: str  # "task" | "wait" | "sleep"
    action: str | None = None  # a task's result action
    join: str = "all"
    fails: int = 0  # attempts that raise before one succeeds
    retries: int = 1  # max_retries
    fallback: tuple[int, int] | None = None  # (fails, retries) of the fallback task
    duration: int = 0  # a sleep's seconds
    loop: int = 0  # a task that loops on itself this many times (a bounded cycle)
    timeout: int | None = None  # a wait's timeout in seconds (it then routes along "timeout")
    gate: bool = False  # a task with pause_before=True
    pauser: bool = False  # a task that calls RunControl.pause() when it succeeds

    def __repr__(self) -> str:
        """Only what differs from the defaults, so failing examples stay short."""
        args = [repr(self.kind)]
        for f in fields(self)[1:]:
            if getattr(self, f.name) != f.default:
                args.append(f"{f.name}={getattr(self, f.name)!r}")
        return f"NodeSpec({', '.join(args)})"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # how hypothesis prints examples
        p.text(repr(self))


@dataclass(frozen=True)
class Spec:
    nodes: tuple[NodeSpec, ...]
    edges: tuple[tuple[int, int, str | None], ...]  # forward only: i < j

    def out(self, i: int) -> list[tuple[int, int, str | None]]:
        return [e for e in self.edges if e[0] == i]

    def inc(self, i: int) -> list[tuple[int, int, str | None]]:
        return [e for e in self.edges if e[1] == i]

    def const(self, i: int) -> bool:
        """An ``any`` join's input is whichever branch came first: its output ignores it."""
        return self.nodes[i].join == "any" and len(self.inc(i)) > 1


def name(i: int) -> str:
    return f"n{i}"


def fb_name(i: int) -> str:
    return f"f{i}"


def canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def task_output(node_id: str, value: Any, const: bool) -> str:
    return node_id if const else f"{node_id}<{canon(value)}>"


@st.composite
def node_specs(draw: st.DrawFn) -> NodeSpec:
    kind = draw(st.sampled_from(["task", "task", "task", "wait", "wait", "sleep"]))
    if kind == "wait":
        return NodeSpec("wait", timeout=draw(st.sampled_from([None, 30, 90])))
    if kind == "sleep":
        return NodeSpec("sleep", duration=draw(st.sampled_from([1, 30, 120])))
    loop = draw(st.sampled_from([0, 0, 0, 1, 2]))
    retries = draw(st.integers(1, 3))
    fails = 0 if loop else draw(st.sampled_from([0, 0, 0, 1, 2, 3]))
    fallback = None
    if fails >= retries and draw(st.booleans()):
        fallback = (draw(st.integers(0, 1)), draw(st.integers(1, 2)))
    return NodeSpec(
        "task",
        action=draw(st.sampled_from([None, *ACTIONS])),
        join=draw(st.sampled_from(["all", "any"])),
        fails=fails,
        retries=retries,
        fallback=fallback,
        loop=loop,
        gate=draw(st.sampled_from([False, False, True])),
        pauser=draw(st.booleans()),
    )


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    n = draw(st.integers(2, 6))
    nodes = tuple(draw(node_specs()) for _ in range(n))
    labels: dict[tuple[int, int], str | None] = {
        (i, j): draw(st.sampled_from([None, None, *ACTIONS]))
        for j in range(1, n)
        for i in range(j)
        if draw(st.booleans())
    }
    for i, node in enumerate(nodes):  # most waits with a timeout get a "timeout" edge
        if node.timeout and i < n - 1 and draw(st.sampled_from([True, True, True, False])):
            labels[(i, draw(st.integers(i + 1, n - 1)))] = "timeout"
    edges = tuple((i, j, label) for (i, j), label in sorted(labels.items()))
    # A self edge is an incoming edge: a looping node must also be reachable from a start node.
    targets = {j for _, j, _ in edges}
    nodes = tuple(
        node if node.loop == 0 or i in targets else replace(node, loop=0)
        for i, node in enumerate(nodes)
    )
    return Spec(nodes, edges)


def task(n: NodeContext) -> NodeResult[str]:
    n.context.set(n.node_id, n.attempt)
    if n.attempt <= n.params["fails"]:
        raise RuntimeError(f"{n.node_id} fails attempt {n.attempt}")
    if n.params.get("pauser") and CONTROL:
        CONTROL[0].pause("model pause", by=PAUSED_BY)
    output = task_output(n.node_id, n.input, n.params["const"])
    if n.params.get("loop"):
        rounds = n.context.get(f"{n.node_id}#loop", 0) + 1
        n.context.set(f"{n.node_id}#loop", rounds)
        if rounds <= n.params["loop"]:
            return NodeResult(output=output, action="again")  # along the self edge
    return NodeResult(output=output, action=n.params["action"])


def build(spec: Spec) -> Flow:
    flow = create_flow("model")
    for i, node in enumerate(spec.nodes):
        if node.kind == "wait":
            flow.wait(name(i), timeout=node.timeout, on_timeout="timeout")
        elif node.kind == "sleep":
            flow.sleep(name(i), duration=node.duration)
        else:
            params = {
                "action": node.action,
                "fails": node.fails,
                "const": spec.const(i),
                "loop": node.loop,
                "pauser": node.pauser,
            }
            flow.node(
                name(i),
                task,
                params=params,
                max_retries=node.retries,
                join=node.join,  # type: ignore[arg-type]
                fallback=fb_name(i) if node.fallback else None,
                pause_before=node.gate,
                name="model.task",
            )
            if node.fallback:
                fb_fails, fb_retries = node.fallback
                fb_params = {"action": None, "fails": fb_fails, "const": spec.const(i)}
                flow.node(
                    fb_name(i), task, params=fb_params, max_retries=fb_retries, name="model.task"
                )
    for src, dst, action in spec.edges:
        flow.edge(name(src), name(dst), action=action)
    for i, node in enumerate(spec.nodes):
        if node.loop:
            flow.edge(name(i), name(i), action="again")  # closes a cycle: a back edge
    return flow


# --- the reference interpreter ------------------------------------------------------------------


class Wait(NamedTuple):
    reason: str  # "wait" | "timer" | "pause" (a gate)
    wake_at: datetime | None  # a sleep's
    expires_at: datetime | None  # a wait's with a timeout
    value: Any  # the node's input


class Reference:
    """DESIGN.md's semantics, computed node by node in index order (edges go forward only)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.edges: dict[tuple[int, int], tuple[bool, Any]] = {}  # decided edges only
        self.done: set[int] = set()  # ran, skipped, or reached (wait/sleep/gate)
        self.reached: set[str] = set()  # nodes that ran or were reached
        self.outputs: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.waiting: dict[str, Wait] = {}
        self.failed: set[str] = set()
        self.rounds: dict[str, list[str]] = {}  # a looping task's output after every round
        self.revision = 0

    @property
    def status(self) -> str:
        if self.failed:
            return "failed"
        return "awaiting" if self.waiting else "completed"

    def settle(self, now: datetime) -> None:
        progress = True
        while progress:
            progress = False
            for i in range(len(self.spec.nodes)):
                if i not in self.done and self._try(i, now):
                    self.done.add(i)
                    progress = True

    def _try(self, i: int, now: datetime) -> bool:
        inc = self.spec.inc(i)
        if not inc:
            self._execute(i, None, now)
            return True
        decided = [self.edges[(s, d)] for s, d, _ in inc if (s, d) in self.edges]
        fired = {
            name(s): self.edges[(s, d)][1] for s, d, _ in inc if self.edges.get((s, d), (0,))[0]
        }
        if self.spec.const(i) and fired:
            self._execute(i, "first arrival", now)
            return True
        if len(decided) < len(inc):
            return False
        if not fired:
            for s, d, _ in self.spec.out(i):
                self.edges[(s, d)] = (False, None)
            return True
        self._execute(i, next(iter(fired.values())) if len(inc) == 1 else fired, now)
        return True

    def _execute(self, i: int, value: Any, now: datetime) -> None:
        """The node is reached with input ``value``: await, or run it."""
        node, nid = self.spec.nodes[i], name(i)
        self.reached.add(nid)
        if node.kind == "wait":
            expires = None if node.timeout is None else now + timedelta(seconds=node.timeout)
            self.waiting[nid] = Wait("wait", None, expires, value)
        elif node.kind == "sleep":
            self.waiting[nid] = Wait("timer", now + timedelta(seconds=node.duration), None, value)
        elif node.gate:
            self.waiting[nid] = Wait("pause", None, None, value)
        else:
            self.run(i, value, now)

    def run(self, i: int, value: Any, now: datetime) -> None:
        """Run a task (past its gate): retries, then its fallback; a loop round re-reaches it."""
        node, nid = self.spec.nodes[i], name(i)
        if node.fails < node.retries:
            self.state[nid] = node.fails + 1
            output = task_output(nid, value, self.spec.const(i))
            if node.loop:
                rounds = self.state[f"{nid}#loop"] = self.state.get(f"{nid}#loop", 0) + 1
                if rounds <= node.loop:  # the back edge: reached again with the output as input
                    self.outputs[nid] = output
                    self.rounds.setdefault(nid, []).append(output)
                    self._execute(i, output, now)
                    return
            self.route(i, output, node.action)
        else:
            self.state[nid] = node.retries
            if node.fallback is None:
                self.failed.add(nid)
                return
            fb_fails, fb_retries = node.fallback
            fb = fb_name(i)
            if fb_fails < fb_retries:
                self.state[fb] = fb_fails + 1
                self.outputs[fb] = task_output(fb, value, self.spec.const(i))
                self.route(i, self.outputs[fb], None)
            else:
                self.state[fb] = fb_retries
                self.failed.add(fb)

    def route(self, i: int, output: Any, action: str | None) -> None:
        self.outputs[name(i)] = output
        out = self.spec.out(i)
        taken = [e for e in out if action is not None and e[2] == action]
        if not taken:
            taken = [e for e in out if e[2] is None]
        for e in out:
            self.edges[(e[0], e[1])] = (True, output) if e in taken else (False, None)

    def action_ok(self, i: int, action: str | None) -> bool:
        labels = {e[2] for e in self.spec.out(i) if e[2] is not None}
        default = any(e[2] is None for e in self.spec.out(i))
        return not labels or action in labels or default

    def ran(self, nid: str, output: Any) -> bool:
        """``output`` is one the reference gave ``nid`` (a loop may have stopped at any round)."""
        if nid in self.outputs and output == self.outputs[nid]:
            return True
        return output in self.rounds.get(nid, ())

    def resume(self, nid: str, output: Any, action: str | None, now: datetime) -> None:
        """A wait completes with (output, action); a timer with its input; a gate runs."""
        w = self.waiting.pop(nid)
        i = int(nid[1:])
        if w.reason == "timer":
            self.route(i, w.value, None)
        elif w.reason == "pause":
            self.run(i, w.value, now)
        else:
            self.route(i, output, action)
        self.settle(now)
        self.revision += 1


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

    @initialize(spec=specs(), controlled=st.booleans())
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


FlowMachine.TestCase.settings = settings(
    settings.default,
    # Twice the loaded profile's examples, at most 2000: 120 under "ci", 2000 under "long".
    max_examples=min(2 * settings.default.max_examples, 2000),
    stateful_step_count=15,
    deadline=None,
)
TestFlowMachine = FlowMachine.TestCase


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
