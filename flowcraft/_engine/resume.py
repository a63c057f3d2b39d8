"""Resume internals of ``FlowRuntime``: checking a target, resuming in a batch or a subflow.

``FlowRuntime._resume_env`` chooses what a resume targets and keeps the common case (one wait,
then the straight line) to itself; it calls ``admit`` to check each target before anything
changes, and hands a path into a paused batch item or a subflow's wait to ``resume_batch`` or
``resume_child``, which apply it and run the parent on.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import msgspec

from flowcraft._engine.control import RunControl
from flowcraft._engine.execution import Execution
from flowcraft._engine.plan import Plan
from flowcraft._envelope.records import Envelope, HistoryEntry, WaitState
from flowcraft._errors import (
    ContextDecodeError,
    NodeNotAwaitingError,
    ResumeDataError,
    TimerNotDueError,
    UnknownActionError,
    WaitExpiredError,
)
from flowcraft._flow.parts import iter_known_actions
from flowcraft._values import ResumeData, RunResult, flat_waiting, pause_entry

if TYPE_CHECKING:
    from flowcraft._runtime import FlowRuntime

__all__ = ["admit", "resume_batch", "resume_child"]


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
            what = "a timer" if w.kind == "timer" else "a paused node"
            raise ResumeDataError(
                run_id,
                w.node_id,
                f"{what} takes no output or action; resume it with no data",
            )
        if w.kind == "timer" and w.wake_at is not None and now < w.wake_at:
            raise TimerNotDueError(run_id, w.node_id, w.wake_at, now)
    return output, action


async def resume_batch(
    rt: FlowRuntime,
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
    ex = Execution(rt, plan, env, control)
    del ex.waiting[parent.node_id]
    ex.history.append(msgspec.structs.replace(pause_entry(paused[item]), node_id=path))
    ex.history.append(HistoryEntry("resume", path, rt.clock.now(), None, by, None))
    rest = [w for w in parent.sub if w.node_id != item]
    results[int(item)] = output
    ex.batch_done(plan.nodes[parent.node_id], items, results, {}, rest)
    return await rt._execute(ex, nested)


async def resume_child(
    rt: FlowRuntime,
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
    child = rt.child_plan(node.subflow, plan)
    stored = parent.input if isinstance(parent.input, dict) else {}
    context = stored.get("context")
    if not isinstance(context, bytes):
        raise ContextDecodeError(f"run {env.run_id!r}: subflow {parent.node_id!r} lost its context")
    child_env = rt.load(child, context)  # digest, structure and typed state, like any load
    # The child validates first: a refused resume raises before the parent changes.
    try:
        result, new_env = await rt._resume_env(
            child, child_env, data, child_id, control=control, by=by, fired=fired, nested=True
        )
    except NodeNotAwaitingError:
        paths = tuple(path for path, _ in flat_waiting(env.waiting))
        raise NodeNotAwaitingError(env.run_id, f"{parent.node_id}/{child_id}", paths) from None
    ex = Execution(rt, plan, env, control)
    del ex.waiting[parent.node_id]
    now = rt.clock.now()
    path = f"{parent.node_id}/{child_id}"
    for sub_path, record in flat_waiting(parent.sub):
        if sub_path == child_id:
            ex.history.append(msgspec.structs.replace(pause_entry(record), node_id=path))
    ex.history.append(HistoryEntry("resume", path, now, None, by, action))
    ex.subflow_done(node, stored.get("input"), child, result, new_env)
    return await rt._execute(ex, nested)
