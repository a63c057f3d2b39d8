"""The one reference interpreter: DESIGN.md's execution semantics, computed directly.

``Reference`` follows a ``tests.strategies.Spec`` node by node in index order (edges go forward
only):

* a node runs once every incoming edge has fired or died (``all``) or at the first firing
  (``any``), provided one fired; otherwise it is skipped and its out-edges die;
* after a node finishes with action ``A``, the edges labelled ``A`` fire, or if none, the
  unlabelled ones; every other out-edge dies;
* a task is attempted ``max_retries`` times, then its fallback runs in its place, else the run
  fails;
* a back edge (a task's self edge, taken with action ``again``) re-runs its target at once with
  the output as input, ignoring joins; the task's other exits stay undecided until it stops;
* waits, sleeps and gates make the run await; a wait with a timeout expires at
  ``reached + timeout``.

It knows every feature of ``flow_specs`` but ``pauses`` and ``fallback_to``: flows with those are
checked against the engine with its fast paths off instead.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from tests.strategies import Spec, fb_name, name, task_output


class Wait(NamedTuple):
    reason: str  # "wait" | "timer" | "pause" (a gate)
    wake_at: datetime | None  # a sleep's
    expires_at: datetime | None  # a wait's with a timeout
    value: Any  # the node's input


class Reference:
    """DESIGN.md's semantics, computed node by node in index order (edges go forward only)."""

    def __init__(self, spec: Spec) -> None:
        unknown = [n for n in spec.nodes if n.pauses or n.fallback_to is not None]
        assert not unknown, f"the reference does not model n.pause() or fallback_to: {unknown}"
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
            if node.writes:
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
            if node.writes:
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

    def finish(self, decisions: dict[int, tuple[Any, str | None]], now: datetime) -> None:
        """Settle, then decide every wait as ``decisions`` says (in name order) until it ends."""
        self.settle(now)
        while self.status == "awaiting":
            nid = min(self.waiting)
            output, action = decisions.get(int(nid[1:]), (None, None))
            self.resume(nid, output, action, now)
