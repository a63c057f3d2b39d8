"""``runs pause|release|cancel --where``: one command over every matching run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import click
import msgspec

from flowcraft import FlowService
from flowcraft.cli.app import require, run_with
from flowcraft.cli.env import Env, confirm
from flowcraft.cli.output import compact, emit, shown
from flowcraft.cli.parse import checked_run_id, parse_where
from flowcraft.cli.reports import BulkReport


def _progress(done: int, label: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{label}: {done}")
        sys.stderr.flush()


async def _matches(service: FlowService, where: Mapping[str, Any]) -> list[str]:
    """Every run id matching ``where``, page by page (progress on a terminal)."""
    found: list[str] = []
    cursor: str | None = None
    while True:
        page = await service.list(**where, limit=500, cursor=cursor)
        found.extend(r.run_id for r in page.runs)
        _progress(len(found), "matching runs")
        cursor = page.next_cursor
        if cursor is None:
            break
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    return found


def bulk(env: Env, op: str, where_text: str, dry_run: bool, yes: bool, **kw: Any) -> None:
    """Run ``FlowService.<op>_many`` over the runs ``--where`` matches, after confirming."""
    import anyio

    where = parse_where(where_text)

    async def call(service: FlowService) -> BulkReport:
        method = None if dry_run else require(service, f"{op}_many", f"runs {op} --where")
        matched = await _matches(service, where)
        if method is None or not matched:
            return BulkReport(operation=op, where=where, dry_run=dry_run, matched=matched)
        question = f"{op.capitalize()} {len(matched)} run(s) matching {shown(where_text)}?"
        await anyio.to_thread.run_sync(confirm, question, yes)
        result = await method(where, dry_run=False, **kw)
        try:
            outcome = msgspec.to_builtins(result)
        except TypeError:
            outcome = repr(result)
        return BulkReport(
            operation=op, where=where, dry_run=False, matched=matched, result=outcome
        )

    report = run_with(env.app, call)

    def lines() -> Iterator[str]:
        verb = "would " + op if report.dry_run else op
        yield f"{len(report.matched)} run(s) match {where_text!r}; {verb}:"
        yield from (f"  {run_id}" for run_id in report.matched)
        if report.result is not None:
            yield f"result: {compact(report.result)}"

    emit(env, report, lines)


def bulk_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """RUN_ID or ``--where``, ``--dry-run`` and ``--yes``."""
    fn = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(fn)
    fn = click.option("--dry-run", is_flag=True, help="List what --where matches.")(fn)
    fn = click.option("--where", metavar="KEY=VALUE,...",
                      help="Every run matching: status, flow, reason, expired.")(fn)
    return click.argument("run_id", required=False, callback=checked_run_id)(fn)


def one_or_many(run_id: str | None, where: str | None, dry_run: bool) -> None:
    """Refuse both or neither of RUN_ID and ``--where``, and ``--dry-run`` without it."""
    if (run_id is None) == (where is None):
        raise click.UsageError("give a RUN_ID or --where, not both and not neither")
    if dry_run and where is None:
        raise click.UsageError("--dry-run goes with --where")
