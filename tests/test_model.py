"""Model-checked engine: random flows driven by random resumes, compared with a reference.

A ``RuleBasedStateMachine`` generates a flow (a DAG of tasks, waits and sleeps; action-labelled
edges; ``all``/``any`` joins; tasks that fail some attempts, with retries and fallbacks; tasks
looping on themselves a bounded number of times through a back edge), runs it
on a ``FakeClock``, then applies random steps: resume an awaiting wait with a valid or invalid
action, advance the clock, resume a timer (due or not), or send a malformed resume. After every
step the runtime's status, outputs, awaiting set, state and revision must equal those of
``Reference``, a direct transcription of DESIGN.md's execution semantics:

* a node runs once every incoming edge has fired or died (``all``) or at the first firing
  (``any``), provided one fired; otherwise it is skipped and its out-edges die;
* after a node finishes with action ``A``, the edges labelled ``A`` fire, or if none, the
  unlabelled ones; every other out-edge dies;
* a task is attempted ``max_retries`` times, then its fallback runs in its place, else the run
  fails;
* a back edge (a task's self edge, taken with action ``again``) re-runs its target at once with
  the output as input, ignoring joins; the task's other exits stay undecided until it stops;
* waits and sleeps make the run await; a refused resume changes nothing.

Each step resumes from the previous step's bytes in a fresh runtime (alternating msgpack/JSON),
as another process would.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, replace
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
    RunResult,
    TimerNotDueError,
    UnknownActionError,
    create_flow,
)
from flowcraft.testing import FakeClock

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ACTIONS = ("a", "b")
OUTPUTS: list[Any] = [None, 0, 7, "x", {"k": 1}, [1, "two"]]


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
        return NodeSpec("wait")
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
    )


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    n = draw(st.integers(2, 6))
    nodes = tuple(draw(node_specs()) for _ in range(n))
    edges = tuple(
        (i, j, draw(st.sampled_from([None, None, *ACTIONS])))
        for j in range(1, n)
        for i in range(j)
        if draw(st.booleans())
    )
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
            flow.wait(name(i))
        elif node.kind == "sleep":
            flow.sleep(name(i), duration=node.duration)
        else:
            params = {
                "action": node.action,
                "fails": node.fails,
                "const": spec.const(i),
                "loop": node.loop,
            }
            flow.node(
                name(i),
                task,
                params=params,
                max_retries=node.retries,
                join=node.join,  # type: ignore[arg-type]
                fallback=fb_name(i) if node.fallback else None,
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


class Reference:
    """DESIGN.md's semantics, computed node by node in index order (edges go forward only)."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.edges: dict[tuple[int, int], tuple[bool, Any]] = {}  # decided edges only
        self.done: set[int] = set()  # ran, skipped, or reached (wait/sleep)
        self.outputs: dict[str, Any] = {}
        self.state: dict[str, Any] = {}
        self.waiting: dict[str, tuple[str, datetime | None, Any]] = {}  # reason, wake_at, input
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
        node, nid = self.spec.nodes[i], name(i)
        if node.kind == "wait":
            self.waiting[nid] = ("wait", None, value)
        elif node.kind == "sleep":
            self.waiting[nid] = ("timer", now + timedelta(seconds=node.duration), value)
        elif node.fails < node.retries:
            if node.loop:  # each round's output is the next round's input, bypassing joins
                for _ in range(node.loop):
                    value = task_output(nid, value, self.spec.const(i))
                    self.rounds.setdefault(nid, []).append(value)
                self.state[f"{nid}#loop"] = node.loop + 1
            self.state[nid] = node.fails + 1
            self.route(i, task_output(nid, value, self.spec.const(i)), node.action)
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

    def resume(self, nid: str, output: Any, action: str | None, now: datetime) -> None:
        reason, _, value = self.waiting.pop(nid)
        i = int(nid[1:])
        if reason == "timer":
            self.route(i, value, None)
        else:
            self.route(i, output, action)
        self.settle(now)
        self.revision += 1


# --- the state machine --------------------------------------------------------------------------


class FlowMachine(RuleBasedStateMachine):
    """Drives one generated flow through random resumes, checking it against ``Reference``."""

    def __init__(self) -> None:
        super().__init__()
        self.spec: Spec | None = None
        self.steps = 0

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

    def resume(self, data: Any, node_id: str | None) -> RunResult:
        rt = self.runtime()
        return anyio.run(partial(rt.resume, self.bp, self.ctx(), data, node_id))

    def refused(self, error: type[ResumeError], data: Any, node_id: str | None) -> None:
        """The resume raises ``error`` and changes nothing; the same context stays usable."""
        before = (
            self.result.serialized_context,
            copy.deepcopy(self.result.outputs),
            copy.deepcopy(self.result.context),
        )
        with pytest.raises(error):
            self.resume(data, node_id)
        after = (self.result.serialized_context, self.result.outputs, self.result.context)
        assert after == before

    def waits(self, reason: str) -> list[str]:
        return sorted(n for n, w in self.ref.waiting.items() if w[0] == reason)

    @property
    def live(self) -> bool:
        return self.ref.status == "awaiting"

    # rules --------------------------------------------------------------------------------------

    @initialize(spec=specs())
    def start(self, spec: Spec) -> None:
        self.spec = spec
        self.flow = build(spec)
        self.bp = self.flow.to_blueprint()
        self.clock = FakeClock(START)
        self.ref = Reference(spec)
        self.ref.settle(self.clock.now())
        self.ref.revision = 1
        rt = self.runtime()
        self.result = anyio.run(partial(rt.run, self.bp, None, run_id="model-run"))

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
        if not self.ref.action_ok(int(nid[1:]), action):
            self.refused(UnknownActionError, data, node_id)
            return
        self.result = self.resume(data, node_id)
        self.ref.resume(nid, output, action, self.clock.now())

    @rule(seconds=st.sampled_from([1, 29, 30, 90, 300]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @precondition(lambda self: self.live and self.waits("timer"))
    @rule(pick=st.integers(0, 10))
    def resume_timer(self, pick: int) -> None:
        timers = self.waits("timer")
        nid = timers[pick % len(timers)]
        wake_at = self.ref.waiting[nid][1]
        assert wake_at is not None
        if self.clock.now() < wake_at:
            self.refused(TimerNotDueError, None, nid)
            return
        self.result = self.resume(None, nid)
        self.ref.resume(nid, None, None, self.clock.now())

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
            for nid, output in got.outputs.items():  # a loop may have stopped after any round
                assert output == ref.outputs.get(nid) or output in ref.rounds.get(nid, ())
            return
        assert got.status == ref.status, got.errors
        assert got.outputs == ref.outputs
        assert got.context == ref.state
        assert got.revision == ref.revision
        awaiting = {a.node_id: (a.reason, a.wake_at) for a in got.awaiting}
        assert awaiting == {n: w[:2] for n, w in ref.waiting.items()}
        assert got.errors == ()


FlowMachine.TestCase.settings = settings(
    settings.default,
    # Half of the loaded profile's examples: 30 under "ci", 1000 under "long".
    max_examples=max(10, settings.default.max_examples // 2),
    stateful_step_count=10,
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
