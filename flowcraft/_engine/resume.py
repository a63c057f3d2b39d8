"""Resuming, in one place: parse the data, select the targets, admit each, apply.

``resume`` chooses what a resume targets; it calls ``admit`` to check each target before
anything changes, and hands a path into a paused batch item or a subflow's wait to
``resume_batch`` or ``resume_child``, which apply it and run the parent on. ``quick_resume`` is the
shortcut for the common approval (one plain wait, plain data, a straight line after it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from flowcraft._control import RunControl
from flowcraft._engine.config import Config
from flowcraft._engine.execution import Execution, execute
from flowcraft._engine.line import line_targets, resume_line
from flowcraft._engine.load import child_context, load, parse_data
from flowcraft._engine.plan import Plan, Quorum
from flowcraft._envelope.records import Envelope, HistoryEntry, Vote, WaitState
from flowcraft._errors import (
    AmbiguousResumeError,
    ApprovalRefusedError,
    ContextDecodeError,
    NodeNotAwaitingError,
    NotAwaitingError,
    ResumeDataError,
    TimerNotDueError,
    UnknownActionError,
    WaitExpiredError,
)
from flowcraft._flow.parts import iter_known_actions
from flowcraft._values import ResumeData, RunResult, flat_waiting, pause_entry

__all__ = ["admit", "quick_resume", "resume", "resume_batch", "resume_child"]


def admit(
    plan: Plan,
    w: WaitState,
    output: Any,
    action: str | None,
    has_output: bool,
    now: datetime,
    fired: bool,
    run_id: str,
) -> tuple[Any, str | None]:
    """Check one resume target (changing nothing); the output and action it resumes with."""
    node = plan.nodes[w.node_id]
    if fired and w.kind != "timer":
        # Firing is for deadlines: a due timer or an expired wait, nothing else.
        if w.kind != "wait" or w.expires_at is None:
            raise TimerNotDueError(run_id, w.node_id, None, now)
        if now < w.expires_at:
            raise TimerNotDueError(run_id, w.node_id, w.expires_at, now)
    if w.kind in ("wait", "node"):
        expired = w.kind == "wait" and w.expires_at is not None and now >= w.expires_at
        if fired and expired and action is None:
            action = node.on_timeout
        if expired and action != node.on_timeout and not fired:
            assert w.expires_at is not None
            raise WaitExpiredError(run_id, w.node_id, w.expires_at, node.on_timeout)
        if not fired and node.by_action and action not in node.by_action and not node.default:
            raise UnknownActionError(
                run_id,
                w.node_id,
                action,
                iter_known_actions(e.definition for e in node.out if e.definition is not None),
            )
        if expired and action == node.on_timeout:
            output = None  # a timeout carries no decision, whoever delivers it
        elif node.schema is not None and w.kind == "wait" and not fired:
            try:
                output = msgspec.convert(output, node.schema)
            except msgspec.ValidationError as exc:
                raise ResumeDataError(run_id, w.node_id, str(exc)) from exc
    else:
        if has_output or action is not None:
            what = {
                "timer": "a timer",
                "gate": "an approval gate (pause_before): resuming it runs the node, which "
                "then chooses its own output and action, so it",
            }.get(w.kind, "a paused node")
            raise ResumeDataError(
                run_id,
                w.node_id,
                f"{what} takes no output or action",
                f"Resume it with no data: resume(blueprint, context, node_id={w.node_id!r}).",
            )
        if w.kind == "timer" and w.wake_at is not None and now < w.wake_at:
            raise TimerNotDueError(run_id, w.node_id, w.wake_at, now)
    return output, action


async def resume_batch(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    parent: WaitState,
    item: str,
    output: Any,
    action: str | None,
    has_output: bool,
    *,
    control: RunControl | None,
    by: str | None,
    nested: bool,
) -> tuple[RunResult, Envelope]:
    """Give a paused batch item its output; the batch completes when no item is left."""
    path = f"{parent.node_id}/{item}"
    paused = {w.node_id: w for w in parent.sub}
    if item not in paused:
        paths = tuple(p for p, _ in flat_waiting(env.waiting))
        raise NodeNotAwaitingError(env.run_id, path, paths)
    if action is not None:
        raise ResumeDataError(
            env.run_id, path, "a batch item takes an output only; actions route whole nodes"
        )
    stored = parent.input if isinstance(parent.input, dict) else {}
    items, results = list(stored.get("items", ())), list(stored.get("results", ()))
    ex = Execution(cfg, plan, env, control)
    del ex.waiting[parent.node_id]
    ex.history.append(msgspec.structs.replace(pause_entry(paused[item]), node_id=path))
    ex.history.append(HistoryEntry("resume", path, cfg.clock.now(), None, by, None))
    rest = [w for w in parent.sub if w.node_id != item]
    results[int(item)] = output
    ex.batch_done(plan.nodes[parent.node_id], items, results, {}, rest)
    return await execute(ex, nested)


async def resume_child(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    parent: WaitState,
    child_id: str,
    data: ResumeData,
    action: str | None,
    *,
    control: RunControl | None,
    by: str | None,
    fired: bool,
    nested: bool,
) -> tuple[RunResult, Envelope]:
    """Resume a wait inside a subflow, then continue the parent with the child's outcome."""
    node = plan.nodes[parent.node_id]
    assert node.subflow is not None
    child = cfg.child_plan(node.subflow, plan)
    stored = parent.input if isinstance(parent.input, dict) else {}
    context = child_context(stored.get("context"))
    if context is None:
        raise ContextDecodeError(f"run {env.run_id!r}: subflow {parent.node_id!r} lost its context")
    # Digest, structure and typed state checked like any load; history bounded like any resume.
    child_env = load(cfg.codec, child, context, history_limit=cfg.history_limit)
    # The child validates first: a refused resume raises before the parent changes.
    try:
        result, new_env = await resume(
            cfg,
            child, child_env, data, child_id, control=control, by=by, fired=fired, nested=True
        )
    except NodeNotAwaitingError:
        paths = tuple(path for path, _ in flat_waiting(env.waiting))
        raise NodeNotAwaitingError(env.run_id, f"{parent.node_id}/{child_id}", paths) from None
    ex = Execution(cfg, plan, env, control)
    del ex.waiting[parent.node_id]
    now = cfg.clock.now()
    path = f"{parent.node_id}/{child_id}"
    for sub_path, record in flat_waiting(parent.sub):
        if sub_path == child_id:
            ex.history.append(msgspec.structs.replace(pause_entry(record), node_id=path))
    ex.history.append(HistoryEntry("resume", path, now, None, by, action))
    ex.subflow_done(node, stored.get("input"), child, result, new_env)
    return await execute(ex, nested)


def resume(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    data: ResumeData,
    node_id: str | None,
    *,
    control: RunControl | None = None,
    by: str | None = None,
    fired: bool = False,
    nested: bool = False,
) -> Awaitable[tuple[RunResult, Envelope]]:
    """Check a resume (raising before anything changes); return the awaitable that applies it.

    This is every resume's home: parse the data, select the targets (the one pause, a named node,
    every control-paused node, a batch item or a subflow's wait by path), ``admit`` each target,
    then apply: on the straight line when it can (``resume_line``), else on the engine.
    ``quick_resume`` is its shortcut for the common approval.
    """
    run_id = env.run_id
    waits = env.waiting
    if env.status != "awaiting" or not waits:
        raise NotAwaitingError(run_id, env.status, "resume")
    output, action, who, has_output = parse_data(data, run_id, node_id)
    who = by if by is not None else who
    first = waits[0]
    waiting: dict[str, WaitState] | None = None
    if (
        len(waits) == 1
        and (node_id is None or node_id == first.node_id)
        and first.kind not in ("subflow", "batch")
    ):
        targets = waits  # the common case: the one pause of the run, named or not
    else:
        waiting = {w.node_id: w for w in waits}
        picked = _select(
            cfg, plan, env, waiting, data, node_id, output, action, has_output,
            who, control, fired, nested,
        )  # fmt: skip
        if not isinstance(picked, list):
            return picked  # a batch item or a subflow's wait: resumed there
        targets = picked
    now = cfg.now()
    for w in targets:
        output, action = admit(plan, w, output, action, has_output, now, fired, run_id)
    quorum = plan.nodes[targets[0].node_id].quorum if len(targets) == 1 else None
    if quorum is not None and targets[0].kind == "wait" and not fired:  # deadlines take no vote
        votes = count_vote(quorum, targets[0], output, action, who, env.state, now, run_id)
        if votes is not None and len(votes) < quorum.required:
            return _vote(cfg, plan, env, targets[0], votes, who, action, now, control, nested)
        if votes is not None:  # the deciding approval: the wait's output is every approval
            output = [{"by": v.by, "at": v.at, "output": v.output} for v in votes]
    if (
        targets is waits
        and first.kind in ("wait", "timer")
        and control is None
        and not env.joins
        and not env.skipped
        and cfg.line
    ):
        if first.kind == "timer":
            output = first.input  # a sleep hands its input on
        line = line_targets(plan.nodes[first.node_id], action)
        if line is not None:  # the common case: the run goes on in a straight line
            event: Any = "timeout" if fired and first.kind == "wait" else "resume"
            return resume_line(cfg, plan, env, line, output, action, who, now, event, nested)

    # Everything checked: from here on the resume is applied.
    return _apply(
        cfg, plan, env, waiting, targets, output, action, who, now, control, fired, nested
    )


def _select(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    waiting: dict[str, WaitState],
    data: ResumeData,
    node_id: str | None,
    output: Any,
    action: str | None,
    has_output: bool,
    who: str | None,
    control: RunControl | None,
    fired: bool,
    nested: bool,
) -> list[WaitState] | Awaitable[tuple[RunResult, Envelope]]:
    """The waits a resume targets, or the awaitable of a resume inside a batch or a subflow."""
    waits = env.waiting
    paths = _paths(waits, waiting)
    if node_id is None and len(paths) == 1:
        node_id = paths[0] if "/" in paths[0] else None
    parent, rest = _nested(waiting, node_id)
    if parent is not None and parent.kind == "batch":
        return resume_batch(
            cfg, plan, env, parent, rest, output, action, has_output,
            control=control, by=who, nested=nested,
        )  # fmt: skip
    if parent is not None:
        return resume_child(
            cfg, plan, env, parent, rest, data, action,
            control=control, by=who, fired=fired, nested=nested,
        )  # fmt: skip
    return _targets(waits, waiting, paths, node_id, data is None, env.run_id)


def _paths(waits: list[WaitState], waiting: dict[str, WaitState]) -> list[str]:
    """Every awaiting path: node ids, and ``"node/child"`` for waits inside batches and subflows."""
    if any(w.sub for w in waits):
        return [path for path, _ in flat_waiting(waits)]
    return list(waiting)


def _nested(
    waiting: dict[str, WaitState], node_id: str | None
) -> tuple[WaitState | None, str]:
    """The batch or subflow record a ``"node/child"`` path points into, and the rest of the path."""
    if node_id is None or node_id in waiting or "/" not in node_id:
        return None, ""
    head, rest = node_id.split("/", 1)
    parent = waiting.get(head)
    if parent is None or parent.kind not in ("batch", "subflow"):
        return None, ""
    return parent, rest


def _targets(
    waits: list[WaitState],
    waiting: dict[str, WaitState],
    paths: list[str],
    node_id: str | None,
    no_data: bool,
    run_id: str,
) -> list[WaitState]:
    """The waits a resume names (or, unnamed, the only one, or every control-paused node)."""
    if node_id is not None:
        target = waiting.get(node_id)
        if target is None or target.kind in ("subflow", "batch"):
            raise NodeNotAwaitingError(run_id, node_id, tuple(paths))
        return [target]
    if len(paths) == 1 and waits[0].kind not in ("subflow", "batch"):
        return list(waiting.values())
    controls = [w for w in waits if w.kind == "control"] if no_data else []
    if controls:
        return controls  # continue a paused run: every control-paused node at once
    raise AmbiguousResumeError(run_id, tuple(paths))


def _apply(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    waiting: dict[str, WaitState] | None,
    targets: list[WaitState],
    output: Any,
    action: str | None,
    who: str | None,
    now: datetime,
    control: RunControl | None,
    fired: bool,
    nested: bool,
) -> Awaitable[tuple[RunResult, Envelope]]:
    """End the targets' pauses on the engine (the general twin of ``resume_line``), run on."""
    ex = Execution(cfg, plan, env, control, waiting)
    if cfg.event_bus is not None:
        ex.event("workflow:resume", None, {"node_ids": [w.node_id for w in targets]})
    for w in targets:
        del ex.waiting[w.node_id]
        event: Any = "timeout" if fired and w.kind == "wait" else "resume"
        ex.history.append(pause_entry(w))
        ex.history.append(HistoryEntry(event, w.node_id, now, None, who, action))
        if w.kind in ("wait", "node"):
            ex.complete(plan.nodes[w.node_id], output, action)
        elif w.kind == "timer":
            ex.complete(plan.nodes[w.node_id], w.input, None)
        else:  # a gate opens; a node paused by RunControl meets its gate again, if it has one
            ex.ready.append((w.node_id, w.input, w.kind == "gate"))
    return execute(ex, nested)


def quick_resume(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    data: ResumeData,
    node_id: str | None,
    by: str | None,
) -> Awaitable[tuple[RunResult, Envelope]] | None:
    """The awaitable of a resume that a few lookups prove valid, or ``None``: check it fully.

    The shortcut of ``resume`` (its general twin). Valid at a glance: the run awaits one plain
    ``wait`` (no deadline passed, no schema), the data is ``{"output": ..., "action": ...}``,
    and the action leads on in a straight line (``PlanNode.quick``). Anything else, including
    every mistake, takes ``resume``, which raises the specific error.
    """
    waits = env.waiting
    if env.status != "awaiting" or len(waits) != 1 or env.joins or env.skipped:
        return None
    w = waits[0]
    if w.kind != "wait" or (node_id is not None and node_id != w.node_id):
        return None
    quick = plan.nodes[w.node_id].quick
    if quick is None:
        return None
    output, action, who, _ = parse_data(data, env.run_id, node_id)
    route = quick.get(action)
    now = cfg.now()
    if route is None or (w.expires_at is not None and now >= w.expires_at):
        return None
    targets, skipped = route
    who = by if by is not None else who
    return resume_line(cfg, plan, env, targets, output, action, who, now, "resume", False, skipped)


def count_vote(
    quorum: Quorum,
    w: WaitState,
    output: Any,
    action: str | None,
    by: str | None,
    state: Mapping[str, Any],
    now: datetime,
    run_id: str,
) -> list[Vote] | None:
    """Check one vote on a quorum wait (changing nothing).

    Returns the approvals with this one added, or ``None`` when the vote is a rejection (any
    other action), which decides the wait at once.
    """
    node_id = w.node_id
    if by is None:
        raise ApprovalRefusedError(
            run_id, node_id, by, "a quorum wait counts approvers", "Resume with by=<approver id>."
        )
    if quorum.approvers is not None and by not in quorum.approvers:
        allowed = ", ".join(map(repr, sorted(quorum.approvers)))
        raise ApprovalRefusedError(
            run_id, node_id, by, f"not one of its approvers ({allowed})", "Ask an approver."
        )
    if quorum.check is not None and not quorum.check(by, state):
        raise ApprovalRefusedError(
            run_id, node_id, by, "the approvers check refused this approver", "Ask an approver."
        )
    if action is None:
        raise ApprovalRefusedError(
            run_id,
            node_id,
            by,
            "a vote needs an action",
            f"Resume with action {quorum.approve!r} to approve, or the action that rejects.",
        )
    if action != quorum.approve:
        return None
    if quorum.forbid_initiator:
        initiator = state.get(quorum.initiator_key)
        if initiator is None:
            raise ApprovalRefusedError(
                run_id,
                node_id,
                by,
                f"the run names no initiator (state key {quorum.initiator_key!r})",
                f"Start runs of this flow with state[{quorum.initiator_key!r}] set.",
            )
        if initiator == by:
            raise ApprovalRefusedError(
                run_id, node_id, by, "the initiator may not approve their own request",
                "Another approver must decide.",
            )  # fmt: skip
    if quorum.distinct and any(v.by == by for v in w.votes):
        raise ApprovalRefusedError(
            run_id, node_id, by, "this approver already approved", "Another approver must decide."
        )
    return [*w.votes, Vote(by, now, output)]


def _vote(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    w: WaitState,
    votes: list[Vote],
    by: str | None,
    action: str | None,
    now: datetime,
    control: RunControl | None,
    nested: bool,
) -> Awaitable[tuple[RunResult, Envelope]]:
    """Count an approval that does not complete the quorum: the wait stays, with one more vote."""
    ex = Execution(cfg, plan, env, control)
    if cfg.event_bus is not None:
        ex.event("workflow:resume", None, {"node_ids": [w.node_id], "vote": by})
    ex.waiting[w.node_id] = msgspec.structs.replace(w, votes=votes)
    ex.history.append(HistoryEntry("vote", w.node_id, now, None, by, action))
    return execute(ex, nested)
