"""The straight line: runs and resumes that call plain nodes one after another, engine-free.

Most calls on a human-in-the-loop flow run a few plain nodes in a row and stop at a wait or at
the end. For those this module does the engine's work with no ``Execution``, no ready queue and
no coroutine per node. At the first thing it does not handle (a label to route, a fan-out, a
join, a node that fails, pauses or returns a ``NodeResult``, the step limit) it hands the run,
exactly as it stands, to the engine, which takes it from there.

A shortcut (``Config.fast``): ``run_line``'s general twin is ``execute(begin(...))``, and
``resume_line``'s is ``resume._apply``. The test suite runs with and without it, and a property
test checks that both write the same contexts on random flows.
"""

from __future__ import annotations

import inspect
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from flowcraft._engine.calls import NEVER_AWAITABLE, RESULT_TYPES
from flowcraft._engine.config import Config
from flowcraft._engine.execution import Execution, execute, finish
from flowcraft._engine.plan import pause_record
from flowcraft._envelope.records import Envelope, HistoryEntry
from flowcraft._node import Context, NodeContext, PauseRequested
from flowcraft._values import NodeResult, RunResult, pause_entry, ts_result

if TYPE_CHECKING:
    from flowcraft._engine.plan import Plan, PlanNode

__all__ = ["line_targets", "resume_line", "run_line"]


async def run_line(
    cfg: Config, plan: Plan, env: Envelope, node_id: str, value: Any, nested: bool
) -> tuple[RunResult, Envelope]:
    """Run from ``node_id`` (nothing else ready or waiting) until a pause or the end."""
    nodes = plan.nodes
    outputs = env.outputs
    ctx = Context(env.state)
    deps = cfg.dependencies
    run_id = env.run_id
    limit = cfg.max_steps
    steps = 0
    while True:
        node = nodes[node_id]
        if not node.line or steps >= limit:
            if node.builtin_pause and steps < limit:
                env.waiting = [pause_record(node, value, cfg.now())]
                env.status = "awaiting"
                break
            ex = _engine(cfg, plan, env, steps)
            ex.ready.append((node_id, value, False))
            return await execute(ex, nested)
        steps += 1
        fn = node.call
        assert fn is not None  # a line node is a plain task
        try:
            result = fn(NodeContext(ctx, value, node.params, deps, node_id, run_id, 1))
            if node.is_async or (
                type(result) not in NEVER_AWAITABLE and inspect.isawaitable(result)
            ):
                result = await result
        except PauseRequested as pause:
            ex = _engine(cfg, plan, env, steps)
            ex.suspend(node_id, "node", value, note=pause.reason)
            return await execute(ex, nested)
        except Exception as exc:
            ex = _engine(cfg, plan, env, steps)
            await ex.fail(node, value, exc, 1)
            return await execute(ex, nested)
        if type(result) in RESULT_TYPES:  # a NodeResult, or a dict that may stand for one
            if type(result) is dict:
                result = ts_result(result) or result
            if type(result) is NodeResult:
                ex = _engine(cfg, plan, env, steps)
                ex.complete(node, result.output, result.action)
                return await execute(ex, nested)
        outputs[node_id] = result
        if not node.direct:
            env.status = "completed"
            break
        node_id = node.direct[0]
        value = result
    env.revision += 1
    return finish(cfg, plan, env, {}, nested)


def line_targets(node: PlanNode, action: str | None) -> tuple[str, ...] | None:
    """Where a resumed wait's output goes when that is a straight line: no node or one node.

    ``None`` when the engine must route it (conditions, several targets, paths that die).
    """
    routes = node.routes
    if routes is None:
        return None
    route = routes.get(action) if action is not None else None
    targets, dead = route if route is not None else routes[None]
    if dead or len(targets) > 1:
        return None
    return targets


async def resume_line(
    cfg: Config,
    plan: Plan,
    env: Envelope,
    targets: tuple[str, ...],
    output: Any,
    action: str | None,
    by: str | None,
    now: datetime,
    event: Literal["resume", "timeout"],
    nested: bool,
    skipped: list[str] | None = None,
) -> tuple[RunResult, Envelope]:
    """End the run's one pause with ``output`` and go on to ``targets``.

    ``skipped``: the nodes the pause's other exits kill (the run had none skipped before). The
    caller checked everything; nothing changed before this runs.
    """
    w = env.waiting[0]
    env.waiting = []
    if skipped:
        env.skipped = list(skipped)
    history = env.history
    history.append(pause_entry(w))
    history.append(HistoryEntry(event, w.node_id, now, None, by, action))
    env.outputs[w.node_id] = output
    if targets:
        return await run_line(cfg, plan, env, targets[0], output, nested)
    env.status = "completed"
    env.revision += 1
    return finish(cfg, plan, env, {}, nested)


def _engine(cfg: Config, plan: Plan, env: Envelope, steps: int) -> Execution:
    """Hand the run to the engine as it stands: nothing is waiting, nothing else is ready."""
    ex = Execution(cfg, plan, env, None, {})
    ex.steps = steps
    return ex
