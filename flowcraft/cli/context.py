"""``flowcraft context inspect``: verify and read a stored context offline."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import click
import msgspec

import flowcraft
from flowcraft import Blueprint
from flowcraft.cli.app import close_store, load_app
from flowcraft.cli.env import Env, pass_env
from flowcraft.cli.output import STATUS_COLOUR, compact, emit, history_line, paint, when
from flowcraft.cli.parse import parse_keys
from flowcraft.cli.reports import ContextReport, HistoryLine
from flowcraft.views import actions_of, flow_of, schema_of

_BUILT_IN = frozenset({"wait", "sleep", "subflow", "batch-scatter", "batch-gather",
                       "loop-controller"})


async def _never_run(node: object) -> None:
    raise RuntimeError("context inspect never runs a node")


def _stand_ins(bp: Blueprint) -> dict[str, object]:
    """A registry for a blueprint read from JSON: inspecting decodes, it never calls a node."""
    found: dict[str, object] = {n.uses: _never_run for n in bp.nodes if n.uses not in _BUILT_IN}
    for n in bp.nodes:
        key = n.params.get("schema") if n.params else None
        if isinstance(key, str):
            found[key] = Any  # a wait's schema type: any output decodes
    return found


def _inspect_context(
    env: Env, data: bytes, keys: dict[str, str], blueprint_file: str | None
) -> ContextReport:
    """Verify and decode a context (``FlowRuntime.peek``: no blueprint needed).

    A blueprint, when there is one (``--blueprint FILE``, or the app's flow of the context's
    blueprint id), then checks the context (``FlowRuntime.inspect``) and gives each wait its
    allowed actions and schema. An app that does not know the flow adds nothing.
    """
    service = load_app(env.app) if env.app and blueprint_file is None else None
    bp: Blueprint | None = None
    registry: Mapping[str, object] = {}
    try:
        runtime = flowcraft.FlowRuntime(signing_keys=keys or None)
        if service is not None and not keys:
            runtime = service.runtime  # the app's own signing keys verify it
        result = runtime.peek(data)
        if blueprint_file is not None:
            bp = Blueprint.from_json(open(blueprint_file, "rb").read())  # noqa: SIM115
            registry = _stand_ins(bp)
        elif service is not None:
            try:
                bp, registry = flow_of(service, result.blueprint_id)
            except flowcraft.UnknownFlowError:
                bp = None
        if bp is not None:
            result = runtime.inspect(bp, data, registry=registry)
    finally:
        close_store(service)
    return ContextReport(
        verified=result.signed_by is not None,
        keys_from="key" if keys else "app" if service is not None else "none",
        signed_by=result.signed_by,
        run_id=result.run_id,
        blueprint_id=result.blueprint_id,
        digest=bp.digest if bp is not None else None,
        checked=bp is not None,
        decoded=True,
        status=result.status,
        revision=result.revision,
        awaiting=[_awaiting_fields(a, bp, registry) for a in result.awaiting],
        history=[
            HistoryLine(event=h.event, node_id=h.node_id, at=h.at, reason=h.reason, by=h.by,
                        action=h.action)
            for h in result.history
        ],
        state=result.context,
        outputs=result.outputs,
        errors=[f"{e.node_id}: {e.type}: {e.message}" for e in result.errors],
    )


def _awaiting_fields(
    a: flowcraft.Awaiting, bp: Blueprint | None, registry: Mapping[str, object]
) -> dict[str, Any]:
    """One wait as ``flowcraft.views.AwaitingView`` fields (built without importing the app)."""
    fields: dict[str, Any] = msgspec.to_builtins({
        "node_id": a.node_id,
        "reason": a.reason,
        "since": a.since,
        "description": a.description,
        "requested_by": a.requested_by,
        "wake_at": a.wake_at,
        "expires_at": a.expires_at,
        "actions": actions_of(bp, a.node_id) if bp is not None else [],
        "schema": schema_of(bp, registry, a.node_id) if bp is not None else None,
    })
    if a.approved_by:
        fields["approved_by"] = list(a.approved_by)
    return fields


def _stamp(at: Any) -> str:
    """A time the report holds (a JSON string) as ``when`` prints it."""
    return when(datetime.fromisoformat(at)) if isinstance(at, str) else when(at)


def _context_lines(r: ContextReport, last: int) -> Iterator[str]:
    digest = f" (digest {r.digest[:12]})" if r.digest else ""
    yield f"run        {r.run_id}"
    yield f"blueprint  {r.blueprint_id}{digest}"
    if r.signed_by is not None:
        whose = "" if r.keys_from == "key" else " of the app"
        yield "signature  " + paint(f"verified (key {r.signed_by}{whose})", "green")
    else:
        yield "signature  none (an unsigned context; pass --key ID=SECRET to require one)"
    yield f"status     {paint(r.status or '', STATUS_COLOUR.get(r.status or '', 'bold'))}"
    yield f"revision   {r.revision}"
    for a in r.awaiting:
        yield f"awaiting   {a['node_id']} ({a['reason']}) since {_stamp(a['since'])}"
        if a.get("description"):
            yield f"           {a['description']}"
        if a.get("requested_by"):
            yield f"           requested by {a['requested_by']}"
        if a.get("actions"):
            yield f"           actions: {', '.join(a['actions'])}"
        if a.get("schema") is not None:
            yield f"           schema: {compact(a['schema'])}"
        if a.get("wake_at"):
            yield f"           wakes at {_stamp(a['wake_at'])}"
        if a.get("expires_at"):
            yield f"           expires at {_stamp(a['expires_at'])}"
        if a.get("approved_by"):
            yield f"           approved by {', '.join(a['approved_by'])}"
    for error in r.errors:
        yield paint(f"error      {error}", "red")
    shown = r.history[-last:] if last > 0 else []
    if len(r.history) > len(shown):
        yield f"history    ({len(r.history) - len(shown)} earlier; --history N shows more)"
    for h in shown:
        yield "history    " + history_line(h)
    if not r.checked:
        yield (
            "checked    no flow: --blueprint FILE.json (or --app) adds each wait's actions "
            "and schema"
        )


@click.group()
def context() -> None:
    """Read stored contexts offline."""


@context.command("inspect")
@click.argument("file", type=click.File("rb"))
@click.option("--key", "keys", multiple=True, metavar="ID=SECRET",
              help="A signing key; the signature must verify (repeat for several).")
@click.option("--blueprint", "blueprint_file", type=click.Path(exists=True, dir_okay=False),
              help="The flow's blueprint JSON: checks the context against it and adds "
                   "each wait's actions and schema.")
@click.option("--history", "last", type=int, default=10, show_default=True,
              help="How many of the last history lines to print (-o json prints all).")
@pass_env
def context_inspect(env: Env, file: Any, keys: tuple[str, ...],
                    blueprint_file: str | None, last: int) -> None:
    """Verify a context's signature and print its run, revision, awaiting and history.

    Needs no app and no blueprint: give --key for a signed context. --blueprint (or
    --app, whose flow of the context's blueprint id is used, and whose keys verify it
    when no --key is given) also checks it and lists each wait's actions and schema.

    \b
    Examples:
      flowcraft context inspect ctx.bin --key k1=$SECRET
      flowcraft context inspect ctx.bin --key k1=$SECRET --blueprint expense.json
      psql -Atc "select ..." | xxd -r -p | flowcraft context inspect - --key k1=$SECRET
    """
    report = _inspect_context(env, file.read(), parse_keys(keys), blueprint_file)
    emit(env, report, lambda: _context_lines(report, last))
