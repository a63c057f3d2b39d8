"""``flowcraft``: operate durable runs from a terminal (extra ``cli``).

``flowcraft --app myproj.workflows:service runs list --status awaiting`` finds the
``FlowService`` the way Celery's ``-A`` finds an app (``module:attr``, or a module holding
one), runs one service call and prints it as text or, with ``-o json``, as the msgspec types of
the HTTP API (``flowcraft.http.ExecutionView``, ``ExecutionList``, ``HistoryView``,
``flowcraft.stores.RunStats``)
so scripts decode the same bodies whichever door they use. Errors go to stderr with the
library's message and exit with a code per error class (``EXIT_CODES``).

Start-up is kept short: click, the stores' drivers, the HTTP app, uvicorn and the MCP SDK are
imported only by the command that needs them. The view helpers here (``execution_view``...)
need none of them and are shared with ``flowcraft.mcp``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NoReturn, TypeVar

import msgspec

import flowcraft
from flowcraft import Blueprint, FlowService, RunResult
from flowcraft.cli.views import (
    CleanupReport,
    DeleteReport,
    Unsupported,
    actions_of,
    execution_view,
    flow_of,
    outcome_view,
    schema_of,
)
from flowcraft.stores import StoredRun

if TYPE_CHECKING:
    import click

    from flowcraft.http import ExecutionView

__all__ = (
    "EXIT_CODES",
    "BulkReport",
    "CleanupReport",
    "ContextReport",
    "DeleteReport",
    "HistoryLine",
    "Unsupported",
    "load_app",
    "main",
)

T = TypeVar("T")

#: Exit codes, checked in order: the first class an error is an instance of decides.
OK, FAILED, USAGE, NOT_FOUND, CONFLICT, INTEGRITY, EXPIRED, HELD, UNSUPPORTED = range(9)
INTERRUPTED = 130
EXIT_CODES: tuple[tuple[str, int], ...] = (
    ("PauseExpiredError", EXPIRED),  # DESIGN §9, not in every version: looked up by name
    ("WaitExpiredError", EXPIRED),
    ("RunHeldError", HELD),
    ("RunNotFoundError", NOT_FOUND),
    ("UnknownFlowError", NOT_FOUND),
    ("UnknownNodeError", NOT_FOUND),
    ("NotAwaitingError", CONFLICT),
    ("NodeNotAwaitingError", CONFLICT),
    ("RevisionConflictError", CONFLICT),
    ("RunBusyError", CONFLICT),
    ("RunExistsError", CONFLICT),
    ("TimerNotDueError", CONFLICT),
    ("ContextError", INTEGRITY),
    ("StoreCorruptionError", INTEGRITY),
    ("UnknownActionError", USAGE),
    ("ResumeDataError", USAGE),
    ("AmbiguousResumeError", USAGE),
    ("InitialStateError", USAGE),
    ("BlueprintError", USAGE),
)


class UsageProblem(flowcraft.FlowcraftError):
    """The command line or its data cannot be used (bad --app, bad JSON...)."""


def exit_code(exc: BaseException) -> int:
    """The exit code of an error (``EXIT_CODES``; 1 for any other)."""
    if isinstance(exc, Unsupported):
        return UNSUPPORTED
    if isinstance(exc, UsageProblem):
        return USAGE
    for name, code in EXIT_CODES:
        kind = getattr(flowcraft, name, None)
        if isinstance(kind, type) and isinstance(exc, kind):
            return code
    return FAILED


# --- output types the HTTP API has no twin for -------------------------------------------------


class BulkReport(msgspec.Struct, frozen=True, kw_only=True):
    """A bulk ``--where`` command: the runs it matched and what happened."""

    operation: str
    where: dict[str, Any]
    dry_run: bool
    matched: list[str]
    result: Any = None


class HistoryLine(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One entry of a context's own history (``flowcraft.HistoryEntry`` with field names)."""

    event: str
    node_id: str
    at: datetime
    reason: str | None = None
    by: str | None = None
    action: str | None = None


class ContextReport(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``context inspect``: what a stored context says, and whether its signature holds.

    Read with ``FlowRuntime.peek``: no app and no blueprint are needed. ``signed_by`` is the
    id of the key the signature held under (``None``: an unsigned context; a signed one is
    refused without keys, an unsigned one with them); ``verified`` is ``signed_by is not
    None``. ``keys_from`` says whose keys verified it: the ``--key`` options, or the app's
    runtime (``--app`` and no ``--key``).

    ``awaiting`` holds ``flowcraft.http.AwaitingView`` fields, plus ``approved_by`` (the
    approvals a quorum wait has so far) when there are any. ``checked``: a blueprint
    (``--blueprint FILE``, or the app's flow of the context's blueprint id) checked the
    context, gave each wait its ``actions`` and ``schema``, and its ``digest``. ``decoded`` is
    always true now (it was false when no blueprint was given); it stays for older readers.
    """

    verified: bool
    keys_from: Literal["key", "app", "none"] = "none"
    run_id: str
    blueprint_id: str
    digest: str | None = None
    decoded: bool = False
    status: str | None = None
    revision: int | None = None
    awaiting: list[dict[str, Any]] = []  # flowcraft.http.AwaitingView fields (+ approved_by)
    history: list[HistoryLine] = []
    state: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    errors: list[str] = []
    signed_by: str | None = None
    checked: bool = False


# --- the app -----------------------------------------------------------------------------------


def load_app(spec: str | None) -> FlowService:
    """Find the ``FlowService`` named by ``--app`` (Celery's ``-A`` rules).

    ``module:attr`` names it (a ``FlowService``, or a callable returning one); ``module``
    alone looks for ``service``, then ``app``, then the one ``FlowService`` in the module.
    The current directory is importable, as for Celery.
    """
    if not spec:
        raise UsageProblem(
            "no app: pass --app module:attr (or set FLOWCRAFT_APP) naming a FlowService"
        )
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageProblem(f"--app {spec!r}: cannot import {module_name!r}: {exc}") from exc
    if attr:
        try:
            found: object = getattr(module, attr)
        except AttributeError:
            raise UsageProblem(f"--app {spec!r}: {module_name!r} has no {attr!r}") from None
        if not isinstance(found, FlowService) and callable(found):
            found = found()
    else:
        found = getattr(module, "service", None) or getattr(module, "app", None)
        if not isinstance(found, FlowService):
            many = [v for v in vars(module).values() if isinstance(v, FlowService)]
            found = many[0] if len(many) == 1 else None
    if not isinstance(found, FlowService):
        raise UsageProblem(
            f"--app {spec!r} is not a FlowService (got {type(found).__name__}); "
            "name one as module:attr"
        )
    return found


# --- small parsers -----------------------------------------------------------------------------

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds of ``"90"``, ``"45s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``."""
    raw = text.strip().lower()
    for unit in sorted(_UNITS, key=len, reverse=True):
        if raw.endswith(unit) and raw[: -len(unit)].replace(".", "", 1).isdigit():
            return float(raw[: -len(unit)]) * _UNITS[unit]
    try:
        return float(raw)
    except ValueError:
        raise UsageProblem(f"invalid duration {text!r}: use e.g. 90, 45s, 30m, 12h, 7d") from None


def read_json(value: str | None, what: str) -> Any:
    """A JSON value given inline, as ``@file``, or ``-`` (standard input)."""
    if value is None:
        return None
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageProblem(f"{what}: cannot read {value[1:]!r}: {exc.strerror}") from exc
    else:
        text = value
    try:
        return msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise UsageProblem(f"{what} is not JSON ({exc}): {text[:80]!r}") from exc


_WHERE_KEYS = {"status": "status", "flow": "flow_id", "reason": "reason", "expired": "expired"}


def parse_where(text: str) -> dict[str, Any]:
    """``status=awaiting,flow=expense,reason=wait,expired=true`` as ``list()`` filters."""
    found: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in _WHERE_KEYS:
            raise UsageProblem(
                f"--where {text!r}: {part!r} is not KEY=VALUE with KEY one of "
                + ", ".join(_WHERE_KEYS)
            )
        name = _WHERE_KEYS[key.strip()]
        value = value.strip()
        if name == "expired":
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise UsageProblem(f"--where expired={value!r}: use true or false")
            found[name] = value.lower() in ("true", "yes", "1")
        else:
            found[name] = value
    if not found:
        raise UsageProblem("--where needs at least one KEY=VALUE")
    return found


def parse_keys(pairs: Sequence[str]) -> dict[str, str]:
    """``--key ID=SECRET`` pairs as ``signing_keys``."""
    keys: dict[str, str] = {}
    for pair in pairs:
        key_id, sep, secret = pair.partition("=")
        if not sep or not key_id or not secret:
            raise UsageProblem(f"--key {pair!r}: use ID=SECRET")
        keys[key_id] = secret
    return keys


# --- printing ----------------------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()


def _colour_on(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and bool(getattr(stream, "isatty", lambda: False)())


def _paint(text: str, colour: str, *, err: bool = False) -> str:
    if not _colour_on(sys.stderr if err else sys.stdout):
        return text
    codes = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "dim": 2, "bold": 1}
    return f"\x1b[{codes[colour]}m{text}\x1b[0m"


_STATUS_COLOUR = {
    "awaiting": "yellow",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}


def _when(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(rows: list[list[str]], header: list[str]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    yield "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


def _compact(value: Any) -> str:
    try:
        return _ENCODER.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def view_lines(view: ExecutionView, history: Sequence[Any] = ()) -> Iterator[str]:
    """The facts of a run an operator needs, one per line."""
    status = _paint(view.status, _STATUS_COLOUR.get(view.status, "bold"))
    yield f"run       {view.id}"
    yield f"flow      {view.flow_id}"
    yield f"status    {status}{'  (held)' if view.held else ''}"
    yield f"revision  {view.revision}"
    if view.created_at is not None:
        yield f"created   {_when(view.created_at)}   updated {_when(view.updated_at)}"
    if view.held:
        yield (
            f"held      by {view.paused_by or '-'} at {_when(view.paused_at)}: "
            f"{view.paused_reason or '(no reason)'}"
        )
    if view.pause_deadline is not None:
        yield f"expires   {_when(view.pause_deadline)}"
    for a in view.awaiting:
        yield f"awaiting  {a.node_id} ({a.reason}) since {_when(a.since)}"
        if a.description:
            yield f"          {a.description}"
        if a.actions:
            yield f"          actions: {', '.join(a.actions)}"
        if a.schema is not None:
            yield f"          schema: {_compact(a.schema)}"
        if a.wake_at is not None:
            yield f"          wakes at {_when(a.wake_at)}"
        if a.expires_at is not None:
            yield f"          expires at {_when(a.expires_at)}"
    for error in view.errors:
        yield _paint(f"error     {error}", "red")
    if view.outputs:
        yield f"outputs   {_compact(view.outputs)}"
    for h in history:
        yield "history   " + history_line(h)


def history_line(h: Any) -> str:
    """One history record (the store's or a context's) as text."""
    parts = [_when(h.at), h.event]
    if h.node_id:
        parts.append(h.node_id)
    if getattr(h, "action", None):
        parts.append(f"action={h.action}")
    if getattr(h, "by", None):
        parts.append(f"by={h.by}")
    if getattr(h, "reason", None):
        parts.append(f"reason={h.reason!r}")
    if getattr(h, "revision", None) is not None:
        parts.append(f"revision={h.revision}")
    return "  ".join(parts)


# --- running service calls ---------------------------------------------------------------------


def run_with(spec: str | None, call: Callable[[FlowService], Awaitable[T]]) -> T:
    """Resolve the app, run ``call(service)`` in an event loop, close the store."""
    import anyio

    service = load_app(spec)

    async def go() -> T:
        try:
            return await call(service)
        finally:
            await service.store.close()

    return anyio.run(go)


def require(service: FlowService, method: str, what: str) -> Callable[..., Awaitable[Any]]:
    """The service's ``method``, or ``Unsupported`` when this version has none."""
    found = getattr(service, method, None)
    if found is None:
        raise Unsupported(what, method)
    return found  # type: ignore[no-any-return]


def fail(message: str, code: int) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    sys.stderr.write(_paint("flowcraft: error: ", "red", err=True) + message + "\n")
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the ``flowcraft`` command (the console script and ``python -m flowcraft``)."""
    try:
        import click
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(
            "the flowcraft command needs the 'cli' extra: pip install 'flowcraft[cli]'"
        ) from exc
    command = build()
    try:
        command.main(list(argv) if argv is not None else None, "flowcraft", standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        fail("aborted", INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(USAGE if isinstance(exc, click.UsageError) else exc.exit_code) from None
    except KeyboardInterrupt:
        fail("interrupted", INTERRUPTED)
    except flowcraft.FlowcraftError as exc:
        fail(str(exc), exit_code(exc))
    except ValueError as exc:  # the service's argument checks (a bad cursor, a bad limit)
        fail(str(exc), USAGE)
    except OSError as exc:
        fail(str(exc), FAILED)
    raise SystemExit(OK)


# --- the command tree (click is imported here, not at module import) ---------------------------

_STATUSES = ("running", "awaiting", "completed", "failed", "cancelled")
_REASONS = ("wait", "timer", "pause")


class _Env(msgspec.Struct, kw_only=True):
    app: str | None
    output: str

    @property
    def json(self) -> bool:
        return self.output == "json"


def _emit(env: _Env, value: object, lines: Callable[[], Iterator[str]]) -> None:
    if env.json:
        sys.stdout.write(_ENCODER.encode(value).decode() + "\n")
    else:
        for line in lines():
            sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _confirm(question: str, yes: bool) -> None:
    import click

    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageProblem(f"{question} Refusing without --yes (standard input is not a terminal)")
    if not click.confirm(question, default=False, err=True):
        raise click.Abort


def _progress(done: int, label: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r{label}: {done}")
        sys.stderr.flush()


def _summary(run: StoredRun) -> Any:
    from flowcraft.http import ExecutionSummary

    return ExecutionSummary(
        id=run.run_id,
        flow_id=run.flow_id,
        status=run.status,
        created_at=run.created_at,
        updated_at=run.updated_at,
        awaiting=list(run.awaiting),
        held=run.held,
    )


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


def _bulk(env: _Env, op: str, where_text: str, dry_run: bool, yes: bool, **kw: Any) -> None:
    import anyio

    where = parse_where(where_text)

    async def call(service: FlowService) -> BulkReport:
        method = None if dry_run else require(service, f"{op}_many", f"runs {op} --where")
        matched = await _matches(service, where)
        if method is None or not matched:
            return BulkReport(operation=op, where=where, dry_run=dry_run, matched=matched)
        question = f"{op.capitalize()} {len(matched)} run(s) matching {where_text!r}?"
        await anyio.to_thread.run_sync(_confirm, question, yes)
        result = await method(where, dry_run=False, **kw)
        try:
            shown = msgspec.to_builtins(result)
        except TypeError:
            shown = repr(result)
        return BulkReport(operation=op, where=where, dry_run=False, matched=matched, result=shown)

    report = run_with(env.app, call)

    def lines() -> Iterator[str]:
        verb = "would " + op if report.dry_run else op
        yield f"{len(report.matched)} run(s) match {where_text!r}; {verb}:"
        yield from (f"  {run_id}" for run_id in report.matched)
        if report.result is not None:
            yield f"result: {_compact(report.result)}"

    _emit(env, report, lines)


def _read_blueprint(
    env: _Env, target: str
) -> tuple[Blueprint, Mapping[str, object] | None, FlowService | None]:
    """A blueprint from a JSON file (or ``-``), else a flow id of the app."""
    if target == "-" or target.endswith(".json") or os.path.isfile(target):
        try:
            raw = sys.stdin.buffer.read() if target == "-" else open(target, "rb").read()  # noqa: SIM115
        except OSError as exc:
            raise UsageProblem(f"cannot read blueprint {target!r}: {exc.strerror}") from exc
        return Blueprint.from_json(raw), None, None
    service = load_app(env.app)
    bp, reg = flow_of(service, target)
    return bp, reg, service


def _close(service: FlowService | None) -> None:
    if service is not None:
        import anyio

        anyio.run(service.store.close)


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
    env: _Env, data: bytes, keys: dict[str, str], blueprint_file: str | None
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
        _close(service)
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
    """One wait as ``flowcraft.http.AwaitingView`` fields (built without importing the app)."""
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
    """A time the report holds (a JSON string) as ``_when`` prints it."""
    return _when(datetime.fromisoformat(at)) if isinstance(at, str) else _when(at)


def _context_lines(r: ContextReport, last: int) -> Iterator[str]:
    digest = f" (digest {r.digest[:12]})" if r.digest else ""
    yield f"run        {r.run_id}"
    yield f"blueprint  {r.blueprint_id}{digest}"
    if r.signed_by is not None:
        whose = "" if r.keys_from == "key" else " of the app"
        yield "signature  " + _paint(f"verified (key {r.signed_by}{whose})", "green")
    else:
        yield "signature  none (an unsigned context; pass --key ID=SECRET to require one)"
    yield f"status     {_paint(r.status or '', _STATUS_COLOUR.get(r.status or '', 'bold'))}"
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
            yield f"           schema: {_compact(a['schema'])}"
        if a.get("wake_at"):
            yield f"           wakes at {_stamp(a['wake_at'])}"
        if a.get("expires_at"):
            yield f"           expires at {_stamp(a['expires_at'])}"
        if a.get("approved_by"):
            yield f"           approved by {', '.join(a['approved_by'])}"
    for error in r.errors:
        yield _paint(f"error      {error}", "red")
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


_HELP = """Operate flowcraft's durable runs: list, inspect, decide, hold, clean up.

\b
--app names the FlowService (like Celery's -A): module:attr, or a module
holding one; $FLOWCRAFT_APP works too. -o json prints the HTTP API's types.

\b
Examples:
  export FLOWCRAFT_APP=myproj.workflows:service
  flowcraft runs list --status awaiting --reason wait
  flowcraft runs show RUN
  flowcraft runs resume RUN manager-approval --action approved \\
      --output '{"approved": true}' --by alice --idempotency-key ticket-42
  flowcraft -o json runs stats | jq .by_status
  flowcraft context inspect ctx.bin --key k1=$SECRET

\b
Exit codes: 0 ok, 1 failed, 2 usage or invalid data, 3 not found,
4 conflict / not awaiting, 5 integrity or decode, 6 expired, 7 held,
8 not supported by this flowcraft version, 130 interrupted.
"""


def build() -> click.Group:
    """The ``flowcraft`` click command tree."""
    import click

    settings = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
    pass_env = click.make_pass_decorator(_Env)

    @click.group(help=_HELP, context_settings=settings)
    @click.option("--app", "-A", envvar="FLOWCRAFT_APP", metavar="MODULE[:ATTR]",
                  help="The FlowService to operate (or $FLOWCRAFT_APP).")
    @click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
                  show_default=True, help="Text for people, JSON for scripts.")
    @click.version_option(flowcraft.__version__, prog_name="flowcraft")
    @click.pass_context
    def cli(ctx: click.Context, app: str | None, output: str) -> None:
        ctx.obj = _Env(app=app, output=output)

    # --- runs ---------------------------------------------------------------------------------

    @cli.group()
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
    def runs_list(env: _Env, status: str | None, flow: str | None, reason: str | None,
                  expired: bool | None, limit: int, cursor: str | None, every: bool) -> None:
        """List stored runs, oldest first, a page at a time.

        \b
        Examples:
          flowcraft runs list --status awaiting --reason wait
          flowcraft runs list --flow expense-approval --expired --all
        """
        from flowcraft.http import ExecutionList

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
        items = [_summary(r) for r in stored]
        body = ExecutionList(executions=items, count=len(items), next_cursor=nxt)

        def lines() -> Iterator[str]:
            rows = [
                [r.run_id, r.flow_id, _paint(r.status, _STATUS_COLOUR.get(r.status, "bold")),
                 ",".join(r.awaiting) or "-", "held" if r.held else "-", _when(r.updated_at)]
                for r in stored
            ]
            yield from _table(rows, ["RUN", "FLOW", "STATUS", "AWAITING", "HOLD", "UPDATED"])
            yield f"({len(rows)} run{'s' if len(rows) != 1 else ''})"
            if nxt is not None:
                yield f"more: flowcraft runs list --cursor {nxt}"

        _emit(env, body, lines)

    @runs.command("show")
    @click.argument("run_id")
    @click.option("--history", "last", type=int, default=5, show_default=True,
                  help="How many of the last history lines to print.")
    @pass_env
    def runs_show(env: _Env, run_id: str, last: int) -> None:
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
        _emit(env, view, lambda: view_lines(view, tail))

    @runs.command("start")
    @click.argument("flow_id")
    @click.option("--state", help="Initial state: JSON, @file, or - for standard input.")
    @click.option("--run-id", help="The run's id (default: a random one).")
    @pass_env
    def runs_start(env: _Env, flow_id: str, state: str | None, run_id: str | None) -> None:
        """Start a run of a flow and run it until it finishes or awaits.

        \b
        Example:
          flowcraft runs start expense-approval --state '{"amount": 1500}'
        """
        initial = read_json(state, "--state")
        if initial is not None and not isinstance(initial, dict):
            raise UsageProblem("--state must be a JSON object")

        async def call(service: FlowService) -> ExecutionView:
            result = await service.start(flow_id, initial, run_id=run_id)
            return outcome_view(service, result)

        view = run_with(env.app, call)
        _emit(env, view, lambda: view_lines(view))

    @runs.command("resume")
    @click.argument("run_id")
    @click.argument("node_id", required=False)
    @click.option("--action", help="The decision: one of the wait's labelled edges.")
    @click.option("--output", "output", help="The wait's output: JSON, @file, or -.")
    @click.option("--by", help="Who decides (kept in the history).")
    @click.option("--idempotency-key", help="Deliver the same decision again safely.")
    @pass_env
    def runs_resume(env: _Env, run_id: str, node_id: str | None, action: str | None,
                    output: str | None, by: str | None, idempotency_key: str | None) -> None:
        """Decide a wait (or continue a paused run) and run until quiescent.

        NODE may be left out when exactly one node awaits.

        \b
        Example:
          flowcraft runs resume 3f2a9c manager-approval --action approved \\
              --output '{"approved": true}' --by alice --idempotency-key mail-8812
        """
        value = read_json(output, "--output")
        data = None if output is None and action is None else {"output": value, "action": action}

        async def call(service: FlowService) -> ExecutionView:
            result = await service.resume(run_id, data, node_id, by=by,
                                          idempotency_key=idempotency_key)
            return outcome_view(service, result)

        view = run_with(env.app, call)
        _emit(env, view, lambda: view_lines(view))

    def bulk_options(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")(fn)
        fn = click.option("--dry-run", is_flag=True, help="List what --where matches.")(fn)
        fn = click.option("--where", metavar="KEY=VALUE,...",
                          help="Every run matching: status, flow, reason, expired.")(fn)
        return click.argument("run_id", required=False)(fn)

    def one_or_many(run_id: str | None, where: str | None, dry_run: bool) -> None:
        if (run_id is None) == (where is None):
            raise click.UsageError("give a RUN_ID or --where, not both and not neither")
        if dry_run and where is None:
            raise click.UsageError("--dry-run goes with --where")

    async def stored_view(service: FlowService, stored: StoredRun) -> ExecutionView:
        return execution_view(service, stored)

    @runs.command("pause")
    @bulk_options
    @click.option("--reason", help="Why (shown to whoever looks at the run).")
    @click.option("--by", help="Who holds it.")
    @click.option("--expires-in", help="Pause deadline: 90, 30m, 12h, 7d.")
    @pass_env
    def runs_pause(env: _Env, run_id: str | None, where: str | None, dry_run: bool, yes: bool,
                   reason: str | None, by: str | None, expires_in: str | None) -> None:
        """Hold an awaiting run (timers and decisions wait), or pause a running one.

        \b
        Examples:
          flowcraft runs pause 3f2a9c --reason "maintenance window" --by ops
          flowcraft runs pause --where status=awaiting,flow=payout --dry-run
        """
        one_or_many(run_id, where, dry_run)
        seconds = parse_duration(expires_in) if expires_in is not None else None
        if where is not None:
            _bulk(env, "pause", where, dry_run, yes, reason=reason, by=by)
            return
        assert run_id is not None

        async def call(service: FlowService) -> ExecutionView:
            stored = await service.pause(run_id, reason=reason, by=by, expires_in=seconds)
            return await stored_view(service, stored)

        view = run_with(env.app, call)
        _emit(env, view, lambda: view_lines(view))

    @runs.command("release")
    @bulk_options
    @click.option("--by", help="Who releases it.")
    @pass_env
    def runs_release(env: _Env, run_id: str | None, where: str | None, dry_run: bool, yes: bool,
                     by: str | None) -> None:
        """End the hold of a held run; overdue timers fire at the next scheduler tick.

        \b
        Examples:
          flowcraft runs release 3f2a9c --by ops
          flowcraft runs release --where status=awaiting,flow=payout --yes
        """
        one_or_many(run_id, where, dry_run)
        if where is not None:
            _bulk(env, "release", where, dry_run, yes, by=by)
            return
        assert run_id is not None

        async def call(service: FlowService) -> ExecutionView:
            await service.release(run_id, by=by)
            return await stored_view(service, await service.get(run_id))

        view = run_with(env.app, call)
        _emit(env, view, lambda: view_lines(view))

    @runs.command("cancel")
    @bulk_options
    @click.option("--reason", help="Why.")
    @click.option("--by", help="Who cancels it.")
    @pass_env
    def runs_cancel(env: _Env, run_id: str | None, where: str | None, dry_run: bool, yes: bool,
                    reason: str | None, by: str | None) -> None:
        """Cancel a run; everything it did so far stays in its context.

        \b
        Examples:
          flowcraft runs cancel 3f2a9c --reason duplicate --by ops
          flowcraft runs cancel --where expired=true --dry-run
        """
        one_or_many(run_id, where, dry_run)
        if where is not None:
            _bulk(env, "cancel", where, dry_run, yes, reason=reason, by=by)
            return
        assert run_id is not None

        async def call(service: FlowService) -> ExecutionView:
            stored = await service.cancel(run_id, reason=reason, by=by)
            return await stored_view(service, await service.get(stored.run_id))

        view = run_with(env.app, call)
        _emit(env, view, lambda: view_lines(view))

    @runs.command("history")
    @click.argument("run_id")
    @pass_env
    def runs_history(env: _Env, run_id: str) -> None:
        """Print a run's audit trail: starts, pauses, decisions, holds, who and why."""
        from flowcraft.http import HistoryView

        records = run_with(env.app, lambda service: service.history(run_id))
        body = HistoryView(id=run_id, history=list(records))
        _emit(env, body, lambda: (history_line(h) for h in records))

    @runs.command("stats")
    @pass_env
    def runs_stats(env: _Env) -> None:
        """Count runs by status, by flow, awaiting by reason, and expired."""
        stats = run_with(env.app, lambda service: service.stats())

        def lines() -> Iterator[str]:
            yield f"total     {stats.total}"
            yield f"expired   {stats.expired}"
            for title, table in (("status", stats.by_status), ("flow", stats.by_flow),
                                 ("awaiting", stats.awaiting_by_reason)):
                for key, count in sorted(table.items()):
                    yield f"{title:<9} {key:<20} {count}"

        _emit(env, stats, lines)

    @runs.command("cleanup")
    @click.option("--older-than", required=True, help="Finished runs older than: 30d, 12h...")
    @click.option("--expired", is_flag=True, help="Also awaiting runs past their deadline.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @pass_env
    def runs_cleanup(env: _Env, older_than: str, expired: bool, yes: bool) -> None:
        """Delete finished runs (and their history) last updated before a cut-off.

        \b
        Example:
          flowcraft runs cleanup --older-than 30d --yes
        """
        import inspect

        import anyio

        seconds = parse_duration(older_than)

        async def call(service: FlowService) -> CleanupReport:
            params = inspect.signature(service.cleanup).parameters
            if expired and "expired" not in params:
                raise Unsupported("runs cleanup --expired", "cleanup(expired=...)")
            cut = service.runtime.clock.now() - timedelta(seconds=seconds)
            question = f"Delete finished runs last updated before {_when(cut)}?"
            await anyio.to_thread.run_sync(_confirm, question, yes)
            kw = {"expired": True} if expired else {}
            deleted = await service.cleanup(cut, **kw)
            return CleanupReport(deleted=deleted, finished_before=cut)

        report = run_with(env.app, call)
        _emit(env, report, lambda: iter([
            f"deleted {report.deleted} run(s) finished before {_when(report.finished_before)}"
        ]))

    @runs.command("delete")
    @click.argument("run_id")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
    @pass_env
    def runs_delete(env: _Env, run_id: str, yes: bool) -> None:
        """Delete one run and its records (needs FlowService.delete)."""
        import anyio

        async def call(service: FlowService) -> DeleteReport:
            delete = require(service, "delete", "runs delete")
            await anyio.to_thread.run_sync(_confirm, f"Delete run {run_id!r}?", yes)
            await delete(run_id)
            return DeleteReport(id=run_id)

        report = run_with(env.app, call)
        _emit(env, report, lambda: iter([f"deleted run {report.id}"]))

    @runs.command("rollback")
    @click.argument("run_id")
    @click.argument("revision", type=int)
    @click.option("--by", help="Who rolls it back.")
    @click.option("--reason", help="Why.")
    @pass_env
    def runs_rollback(env: _Env, run_id: str, revision: int, by: str | None,
                      reason: str | None) -> None:
        """Make an earlier checkpoint the run's state, as a new revision (needs rollback)."""
        async def call(service: FlowService) -> ExecutionView:
            rollback = require(service, "rollback", "runs rollback")
            await rollback(run_id, revision, by=by, reason=reason)
            return execution_view(service, await service.get(run_id))

        view = run_with(env.app, call)
        _emit(env, view, lambda: view_lines(view))

    # --- processes ----------------------------------------------------------------------------

    @cli.group()
    def scheduler() -> None:
        """The durable scheduler as a process."""

    @scheduler.command("run")
    @click.option("--interval", default="1s", show_default=True, help="Seconds between ticks.")
    @pass_env
    def scheduler_run(env: _Env, interval: str) -> None:
        """Fire due timers, expire waits and recover crashed runs until SIGTERM or Ctrl-C.

        Each result is printed as it happens (one JSON line each with -o json). Several
        schedulers may run at once: claims make each firing happen once.

        \b
        Example:
          flowcraft --app myproj.workflows:service scheduler run --interval 5s
        """
        import signal

        import anyio

        every = parse_duration(interval)

        def on_result(result: RunResult) -> None:
            if env.json:
                sys.stdout.write(_ENCODER.encode(outcome_view(service, result)).decode() + "\n")
            else:
                waits = ",".join(a.node_id for a in result.awaiting)
                sys.stdout.write(f"{_when(datetime.now(UTC))}  {result.run_id}  "
                                 f"{result.status}{'  ' + waits if waits else ''}\n")
            sys.stdout.flush()

        service = load_app(env.app)

        async def go() -> str:
            try:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async with service.scheduler(every, on_result=on_result) as sched:
                        sys.stderr.write(f"flowcraft scheduler: running every {every:g}s "
                                         "(SIGTERM or Ctrl-C stops it)\n")
                        sys.stderr.flush()
                        async for _ in signals:
                            break
                    return repr(sched)
            finally:
                await service.store.close()

        done = anyio.run(go)
        sys.stderr.write(f"flowcraft scheduler: stopped cleanly; {done}\n")

    @cli.command("serve")
    @click.option("--host", default="127.0.0.1", show_default=True)
    @click.option("--port", type=int, default=8000, show_default=True)
    @click.option("--token", "tokens", multiple=True, envvar="FLOWCRAFT_TOKEN",
                  help="A bearer token allowed everything (repeat; or $FLOWCRAFT_TOKEN).")
    @click.option("--base-url", help="The public URL (for approval links).")
    @click.option("--link-secret", envvar="FLOWCRAFT_LINK_SECRET", help="Enables approval pages.")
    @pass_env
    def serve(env: _Env, host: str, port: int, tokens: tuple[str, ...], base_url: str | None,
              link_secret: str | None) -> None:
        """Serve the HTTP API (flowcraft.http.create_app) under uvicorn.

        \b
        Example:
          FLOWCRAFT_TOKEN=s3cret flowcraft --app myproj.workflows:service serve --port 8080
        """
        import anyio

        try:
            import uvicorn

            from flowcraft.http import BearerAuth, create_app
        except ImportError as exc:
            raise ImportError(
                "flowcraft serve needs the 'cli' extra: pip install 'flowcraft[cli]'"
            ) from exc
        if not tokens:
            raise UsageProblem("serve needs --token TOKEN (or $FLOWCRAFT_TOKEN)")
        service = load_app(env.app)
        everything = {"execution:read", "execution:start", "execution:cancel"}
        app = create_app(service, auth=BearerAuth(dict.fromkeys(tokens, everything)),
                         base_url=base_url, link_secret=link_secret)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="info"))

        async def go() -> None:
            try:
                await server.serve()
            finally:
                await service.store.close()

        anyio.run(go)

    @cli.command("mcp")
    @pass_env
    def mcp(env: _Env) -> None:
        """Serve the MCP tools (flowcraft.mcp) over standard input and output.

        \b
        Example (an agent client's config):
          {"command": "flowcraft", "args": ["mcp"],
           "env": {"FLOWCRAFT_APP": "myproj.workflows:service"}}
        """
        import anyio

        from flowcraft.mcp import serve_stdio

        service = load_app(env.app)
        anyio.run(serve_stdio, service)

    # --- blueprints and contexts --------------------------------------------------------------

    @cli.group()
    def blueprint() -> None:
        """Show, lint and draw a flow of the app, or a blueprint JSON file."""

    @blueprint.command("show")
    @click.argument("target", metavar="FLOW_ID|FILE.json|-")
    @pass_env
    def blueprint_show(env: _Env, target: str) -> None:
        """Print a blueprint's nodes and edges (its TS-shaped JSON with -o json)."""
        bp, _, service = _read_blueprint(env, target)
        _close(service)
        if env.json:
            sys.stdout.write(bp.to_json() + "\n")
            return
        sys.stdout.write(f"blueprint {bp.id}  digest {bp.digest[:12]}\n")
        for n in bp.nodes:
            sys.stdout.write(f"  node {n.id}  uses={n.uses}\n")
        for e in bp.edges:
            extra = "".join(f" {k}={v!r}" for k, v in (("action", e.action),
                            ("condition", e.condition)) if v is not None)
            sys.stdout.write(f"  edge {e.source} -> {e.target}{extra}\n")

    @blueprint.command("lint")
    @click.argument("target", metavar="FLOW_ID|FILE.json|-")
    @pass_env
    def blueprint_lint(env: _Env, target: str) -> None:
        """Find problems a valid blueprint can still have; exit 1 on any error."""
        bp, reg, service = _read_blueprint(env, target)
        _close(service)
        issues = flowcraft.lint_blueprint(bp, reg)
        _emit(env, issues, lambda: iter([str(i) for i in issues] or [f"{bp.id}: no issues"]))
        if any(i.severity == "error" for i in issues):
            raise SystemExit(FAILED)

    @blueprint.command("mermaid")
    @click.argument("target", metavar="FLOW_ID|FILE.json|-")
    @click.option("--run", "run_id", help="Colour the nodes by this run's state (needs --app).")
    @click.option("--direction", default="TD", show_default=True)
    @pass_env
    def blueprint_mermaid(env: _Env, target: str, run_id: str | None, direction: str) -> None:
        """Draw a blueprint as a Mermaid flowchart."""
        bp, _, service = _read_blueprint(env, target)
        result = None
        if run_id is not None:  # run_with closes the app's store (the same service)
            result = run_with(env.app, lambda s: s.result(run_id))
        else:
            _close(service)
        sys.stdout.write(bp.to_mermaid(result, direction=direction) + "\n")

    @cli.group()
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
    def context_inspect(env: _Env, file: Any, keys: tuple[str, ...],
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
        _emit(env, report, lambda: _context_lines(report, last))

    @cli.command("completion")
    @click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
    def completion(shell: str) -> None:
        """Print the shell completion script.

        \b
        Example:
          eval "$(flowcraft completion bash)"
        """
        from click.shell_completion import get_completion_class

        kind = get_completion_class(shell)
        assert kind is not None
        sys.stdout.write(kind(cli, {}, "flowcraft", "_FLOWCRAFT_COMPLETE").source() + "\n")

    return cli
