"""``flowcraft runs``: list, inspect and decide stored runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import click

from flowcraft import FlowService
from flowcraft.cli.app import require, run_with
from flowcraft.cli.bulk import bulk, bulk_options, one_or_many
from flowcraft.cli.env import Env, confirm, pass_env
from flowcraft.cli.exits import UsageProblem
from flowcraft.cli.output import (
    STATUS_COLOUR,
    emit,
    history_line,
    paint,
    shown,
    table_lines,
    view_lines,
    when,
)
from flowcraft.cli.parse import check_texts, checked_run_id, parse_duration, read_json
from flowcraft.cli.views import CleanupReport, DeleteReport, Unsupported
from flowcraft.stores import StoredRun
from flowcraft.views import (
    ExecutionView,
    HistoryView,
    execution_view,
    idempotency_key_problem,
    list_view,
    outcome_view,
    run_id_problem,
)

_STATUSES = ("running", "awaiting", "completed", "failed", "cancelled")
_REASONS = ("wait", "timer", "pause")


async def stored_view(service: FlowService, stored: StoredRun) -> ExecutionView:
    """``execution_view`` awaited: the view a pause or release answers."""
    return execution_view(service, stored)


@click.group()
def runs() -> None:
    """List, inspect and decide stored runs."""


@runs.command("list")
@click.option("--status", type=click.Choice(_STATUSES))
@click.option("--flow", help="Only runs of this flow id.")
@click.option("--reason", type=click.Choice(_REASONS), help="Awaiting for this reason.")
@click.option("--expired/--not-expired", default=None, help="Past their max_pause.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", help="The next_cursor a previous page printed.")
@click.option("--all", "every", is_flag=True, help="Follow the cursor to the last page.")
@pass_env
def runs_list(env: Env, status: str | None, flow: str | None, reason: str | None,
              expired: bool | None, limit: int, cursor: str | None, every: bool) -> None:
    """List stored runs, oldest first, a page at a time.

    \b
    Examples:
      flowcraft runs list --status awaiting --reason wait
      flowcraft runs list --flow expense-approval --expired --all
    """
    async def call(service: FlowService) -> tuple[list[StoredRun], str | None]:
        found: list[StoredRun] = []
        at = cursor
        while True:
            page = await service.list(status=status, flow_id=flow, reason=reason,
                                      expired=expired, limit=limit, cursor=at)
            found.extend(page.runs)
            at = page.next_cursor
            if not every or at is None:
                return found, at

    stored, nxt = run_with(env.app, call)
    body = list_view(stored, nxt)

    def lines() -> Iterator[str]:
        rows = [
            [r.run_id, r.flow_id, paint(r.status, STATUS_COLOUR.get(r.status, "bold")),
             ",".join(r.awaiting) or "-", "held" if r.held else "-", when(r.updated_at)]
            for r in stored
        ]
        yield from table_lines(rows, ["RUN", "FLOW", "STATUS", "AWAITING", "HOLD", "UPDATED"])
        yield f"({len(rows)} run{'s' if len(rows) != 1 else ''})"
        if nxt is not None:
            yield f"more: flowcraft runs list --cursor {nxt}"

    emit(env, body, lines)


@runs.command("show")
@click.argument("run_id", callback=checked_run_id)
@click.option("--history", "last", type=int, default=5, show_default=True,
              help="How many of the last history lines to print.")
@pass_env
def runs_show(env: Env, run_id: str, last: int) -> None:
    """Show a run: status, holds, awaiting nodes (actions, schema, expiry), history.

    \b
    Example:
      flowcraft runs show 3f2a9c
    """
    async def call(service: FlowService) -> tuple[ExecutionView, list[Any]]:
        stored = await service.get(run_id)
        history = await service.history(run_id)
        return execution_view(service, stored), history

    view, history = run_with(env.app, call)
    tail = history[-last:] if last > 0 else []
    emit(env, view, lambda: view_lines(view, tail))


@runs.command("start")
@click.argument("flow_id")
@click.option("--state", help="Initial state: JSON, @file, or - for standard input.")
@click.option("--run-id", help="The run's id: 1 to 128 of A-Z a-z 0-9 . _ : ~ - "
              "(default: a random one).")
@pass_env
def runs_start(env: Env, flow_id: str, state: str | None, run_id: str | None) -> None:
    """Start a run of a flow and run it until it finishes or awaits.

    \b
    Example:
      flowcraft runs start expense-approval --state '{"amount": 1500}'
    """
    problem = run_id_problem(run_id, "--run-id") if run_id is not None else None
    if problem is not None:
        raise UsageProblem(problem)
    initial = read_json(state, "--state")
    if initial is not None and not isinstance(initial, dict):
        raise UsageProblem("--state must be a JSON object")

    async def call(service: FlowService) -> ExecutionView:
        result = await service.start(flow_id, initial, run_id=run_id)
        return outcome_view(service, result)

    view = run_with(env.app, call)
    emit(env, view, lambda: view_lines(view))


@runs.command("resume")
@click.argument("run_id", callback=checked_run_id)
@click.argument("node_id", required=False)
@click.option("--action", help="The decision: one of the wait's labelled edges.")
@click.option("--output", "output", help="The wait's output: JSON, @file, or -.")
@click.option("--by", help="Who decides (kept in the history).")
@click.option("--idempotency-key", help="Deliver the same decision again safely "
              "(1 to 255 visible ASCII characters).")
@pass_env
def runs_resume(env: Env, run_id: str, node_id: str | None, action: str | None,
                output: str | None, by: str | None, idempotency_key: str | None) -> None:
    """Decide a wait (or continue a paused run) and run until quiescent.

    NODE may be left out when exactly one node awaits.

    \b
    Example:
      flowcraft runs resume 3f2a9c manager-approval --action approved \\
          --output '{"approved": true}' --by alice --idempotency-key mail-8812
    """
    check_texts(by=by)
    if idempotency_key is not None:
        problem = idempotency_key_problem(idempotency_key, "--idempotency-key")
        if problem is not None:
            raise UsageProblem(problem)
    value = read_json(output, "--output")
    data = None if output is None and action is None else {"output": value, "action": action}

    async def call(service: FlowService) -> ExecutionView:
        result = await service.resume(run_id, data, node_id, by=by,
                                      idempotency_key=idempotency_key)
        return outcome_view(service, result)

    view = run_with(env.app, call)
    emit(env, view, lambda: view_lines(view))


@runs.command("pause")
@bulk_options
@click.option("--reason", help="Why (shown to whoever looks at the run).")
@click.option("--by", help="Who holds it.")
@click.option("--expires-in", help="Pause deadline: 90, 30m, 12h, 7d.")
@pass_env
def runs_pause(env: Env, run_id: str | None, where: str | None, dry_run: bool, yes: bool,
               reason: str | None, by: str | None, expires_in: str | None) -> None:
    """Hold an awaiting run (timers and decisions wait), or pause a running one.

    \b
    Examples:
      flowcraft runs pause 3f2a9c --reason "maintenance window" --by ops
      flowcraft runs pause --where status=awaiting,flow=payout --dry-run
    """
    one_or_many(run_id, where, dry_run)
    check_texts(reason=reason, by=by)
    seconds = parse_duration(expires_in, "--expires-in") if expires_in is not None else None
    if where is not None:
        bulk(env, "pause", where, dry_run, yes, reason=reason, by=by)
        return
    assert run_id is not None

    async def call(service: FlowService) -> ExecutionView:
        stored = await service.pause(run_id, reason=reason, by=by, expires_in=seconds)
        return await stored_view(service, stored)

    view = run_with(env.app, call)
    emit(env, view, lambda: view_lines(view))


@runs.command("release")
@bulk_options
@click.option("--reason", help="Why (kept in the history; else the hold's reason).")
@click.option("--by", help="Who releases it.")
@pass_env
def runs_release(env: Env, run_id: str | None, where: str | None, dry_run: bool, yes: bool,
                 reason: str | None, by: str | None) -> None:
    """End the hold of a held run; overdue timers fire at the next scheduler tick.

    \b
    Examples:
      flowcraft runs release 3f2a9c --reason "window over" --by ops
      flowcraft runs release --where status=awaiting,flow=payout --yes
    """
    one_or_many(run_id, where, dry_run)
    check_texts(reason=reason, by=by)
    if where is not None:
        bulk(env, "release", where, dry_run, yes, reason=reason, by=by)
        return
    assert run_id is not None

    async def call(service: FlowService) -> ExecutionView:
        await service.release(run_id, by=by, reason=reason)
        return await stored_view(service, await service.get(run_id))

    view = run_with(env.app, call)
    emit(env, view, lambda: view_lines(view))


@runs.command("cancel")
@bulk_options
@click.option("--reason", help="Why.")
@click.option("--by", help="Who cancels it.")
@pass_env
def runs_cancel(env: Env, run_id: str | None, where: str | None, dry_run: bool, yes: bool,
                reason: str | None, by: str | None) -> None:
    """Cancel a run; everything it did so far stays in its context.

    \b
    Examples:
      flowcraft runs cancel 3f2a9c --reason duplicate --by ops
      flowcraft runs cancel --where expired=true --dry-run
    """
    one_or_many(run_id, where, dry_run)
    check_texts(reason=reason, by=by)
    if where is not None:
        bulk(env, "cancel", where, dry_run, yes, reason=reason, by=by)
        return
    assert run_id is not None

    async def call(service: FlowService) -> ExecutionView:
        stored = await service.cancel(run_id, reason=reason, by=by)
        return await stored_view(service, await service.get(stored.run_id))

    view = run_with(env.app, call)
    emit(env, view, lambda: view_lines(view))


@runs.command("history")
@click.argument("run_id", callback=checked_run_id)
@pass_env
def runs_history(env: Env, run_id: str) -> None:
    """Print a run's audit trail: starts, pauses, decisions, holds, who and why."""
    records = run_with(env.app, lambda service: service.history(run_id))
    body = HistoryView(id=run_id, history=list(records))
    emit(env, body, lambda: (history_line(h) for h in records))


@runs.command("stats")
@pass_env
def runs_stats(env: Env) -> None:
    """Count runs by status, by flow, awaiting by reason, and expired."""
    stats = run_with(env.app, lambda service: service.stats())

    def lines() -> Iterator[str]:
        yield f"total     {stats.total}"
        yield f"expired   {stats.expired}"
        for title, table in (("status", stats.by_status), ("flow", stats.by_flow),
                             ("awaiting", stats.awaiting_by_reason)):
            for key, count in sorted(table.items()):
                yield f"{title:<9} {key:<20} {count}"

    emit(env, stats, lines)


@runs.command("cleanup")
@click.option("--older-than", required=True, help="Finished runs older than: 30d, 12h...")
@click.option("--expired", is_flag=True, help="Also awaiting runs past their deadline.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_env
def runs_cleanup(env: Env, older_than: str, expired: bool, yes: bool) -> None:
    """Delete finished runs (and their history) last updated before a cut-off.

    \b
    Example:
      flowcraft runs cleanup --older-than 30d --yes
    """
    import inspect

    import anyio

    seconds = parse_duration(older_than, "--older-than")

    async def call(service: FlowService) -> CleanupReport:
        params = inspect.signature(service.cleanup).parameters
        if expired and "expired" not in params:
            raise Unsupported("runs cleanup --expired", "cleanup(expired=...)")
        cut = service.runtime.clock.now() - timedelta(seconds=seconds)
        question = f"Delete finished runs last updated before {when(cut)}?"
        await anyio.to_thread.run_sync(confirm, question, yes)
        kw = {"expired": True} if expired else {}
        deleted = await service.cleanup(cut, **kw)
        return CleanupReport(deleted=deleted, finished_before=cut)

    report = run_with(env.app, call)
    emit(env, report, lambda: iter([
        f"deleted {report.deleted} run(s) finished before {when(report.finished_before)}"
    ]))


@runs.command("delete")
@click.argument("run_id", callback=checked_run_id)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_env
def runs_delete(env: Env, run_id: str, yes: bool) -> None:
    """Delete one run and its records (needs FlowService.delete)."""
    import anyio

    async def call(service: FlowService) -> DeleteReport:
        delete = require(service, "delete", "runs delete")
        await anyio.to_thread.run_sync(confirm, f"Delete run {shown(run_id)}?", yes)
        await delete(run_id)
        return DeleteReport(id=run_id)

    report = run_with(env.app, call)
    emit(env, report, lambda: iter([f"deleted run {report.id}"]))


@runs.command("rollback")
@click.argument("run_id", callback=checked_run_id)
@click.argument("revision", type=int)
@click.option("--by", help="Who rolls it back.")
@click.option("--reason", help="Why.")
@pass_env
def runs_rollback(env: Env, run_id: str, revision: int, by: str | None,
                  reason: str | None) -> None:
    """Make an earlier checkpoint the run's state, as a new revision (needs rollback)."""
    check_texts(reason=reason, by=by)
    async def call(service: FlowService) -> ExecutionView:
        rollback = require(service, "rollback", "runs rollback")
        await rollback(run_id, revision, by=by, reason=reason)
        return execution_view(service, await service.get(run_id))

    view = run_with(env.app, call)
    emit(env, view, lambda: view_lines(view))
