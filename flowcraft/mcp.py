"""``flowcraft.mcp``: a ``FlowService`` as MCP tools for agents (extra ``mcp``).

``create_server(service)`` returns an MCP server (the official ``mcp`` SDK's low-level
``Server``) with the seed's suspend/resume tools plus ``workflow_start``. Every tool's input
schema and output schema are generated from msgspec types (the outputs are the HTTP API's:
``flowcraft.http.ExecutionView``, ``ExecutionList``), arguments are validated against them
before anything changes, and a failure is an MCP tool error carrying the library's message
(any other exception is logged with its traceback and is a tool error saying only that).
Run ids and idempotency keys follow the rule of every door (``flowcraft.views.RunId``,
``IdempotencyKey``): an empty or 10,000-character id is a tool error naming the argument; so
is a ``reason`` longer than 1,000 characters or a ``by`` longer than 255 (``Reason``, ``Name``).

A human wait is never held open inside a tool call: ``workflow_suspend_status`` shows what a
run awaits (each wait's allowed actions and JSON schema) and returns at once; the agent decides
later with ``workflow_resume_suspended``, whose ``idempotency_key`` is required so a retried
call applies the decision once.

Run it over stdio with ``flowcraft --app module:service mcp``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

try:
    import mcp_types as types
    from mcp.server.lowlevel import Server
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError("flowcraft.mcp needs the 'mcp' extra: pip install 'flowcraft[mcp]'") from exc

import flowcraft
from flowcraft import FlowService
from flowcraft.cli.views import CleanupReport, DeleteReport, Unsupported
from flowcraft.views import (
    ExecutionList,
    ExecutionView,
    IdempotencyKey,
    Name,
    Reason,
    RunId,
    execution_view,
    idempotency_key_problem,
    list_view,
    outcome_view,
    run_id_problem,
)

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

log = logging.getLogger("flowcraft.mcp")

__all__ = (
    "CleanupInput",
    "DeleteInput",
    "ListInput",
    "ResumeInput",
    "StartInput",
    "StatusInput",
    "SuspendInput",
    "create_server",
    "serve_stdio",
)


class _Input(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tool arguments: unknown fields are refused (a typo never silently does nothing)."""


class StartInput(_Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Start a run of a registered flow."""

    flow_id: str
    state: dict[str, Any] | None = None
    run_id: RunId | None = None


class SuspendInput(_Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Hold an awaiting run (its timers and decisions wait), or pause a running one."""

    run_id: RunId
    reason: Reason | None = None
    by: Name | None = None
    expires_in_seconds: float | None = None


class ResumeInput(_Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Decide a wait: ``action`` is one of the wait's actions, ``output`` fits its schema.

    ``idempotency_key`` is required: a retried call with the same key returns the first
    result and applies nothing twice.
    """

    run_id: RunId
    idempotency_key: IdempotencyKey
    node_id: str | None = None
    action: str | None = None
    output: Any = None
    by: Name | None = None


class ListInput(_Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """List awaiting runs, oldest first; pass ``next_cursor`` back as ``cursor``."""

    flow_id: str | None = None
    reason: Literal["wait", "timer", "pause"] | None = None
    expired: bool | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=500)] = 50  # the HTTP API's bounds
    cursor: str | None = None


class StatusInput(_Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The run to describe."""

    run_id: RunId


class CleanupInput(_Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Delete finished runs older than ``older_than_seconds``."""

    # Not negative (a cut-off in the future would delete every finished run), at most 1000 years.
    older_than_seconds: Annotated[float, msgspec.Meta(ge=0, le=1000 * 365.25 * 86400)]


class DeleteInput(_Input, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The run to delete, with everything stored about it."""

    run_id: RunId


@dataclass(frozen=True)
class _Tool:
    name: str
    description: str
    input: type[_Input]
    output: type[msgspec.Struct]
    call: Callable[[FlowService, Any], Awaitable[msgspec.Struct]]
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False


def _object_schema(kind: type[Any]) -> dict[str, Any]:
    """A type's JSON Schema with the object at the top (MCP wants ``type: object`` there)."""
    (_,), parts = msgspec.json.schema_components([kind], ref_template="#/$defs/{name}")
    top: dict[str, Any] = dict(parts.pop(kind.__name__))
    if parts:
        top["$defs"] = parts
    return top


async def _start(service: FlowService, a: StartInput) -> ExecutionView:
    return outcome_view(service, await service.start(a.flow_id, a.state, run_id=a.run_id))


async def _suspend(service: FlowService, a: SuspendInput) -> ExecutionView:
    stored = await service.pause(
        a.run_id, reason=a.reason, by=a.by, expires_in=a.expires_in_seconds
    )
    return execution_view(service, await service.get(stored.run_id))


async def _resume(service: FlowService, a: ResumeInput) -> ExecutionView:
    data = None
    if a.action is not None or a.output is not None:
        data = {"output": a.output, "action": a.action}
    result = await service.resume(
        a.run_id, data, a.node_id, by=a.by, idempotency_key=a.idempotency_key
    )
    return outcome_view(service, result)


async def _list(service: FlowService, a: ListInput) -> ExecutionList:
    page = await service.list(
        status="awaiting",
        flow_id=a.flow_id,
        reason=a.reason,
        expired=a.expired,
        limit=a.limit,
        cursor=a.cursor,
    )
    return list_view(page.runs, page.next_cursor)


async def _status(service: FlowService, a: StatusInput) -> ExecutionView:
    return execution_view(service, await service.get(a.run_id))


async def _cleanup(service: FlowService, a: CleanupInput) -> CleanupReport:
    cut = service.runtime.clock.now() - timedelta(seconds=a.older_than_seconds)
    return CleanupReport(deleted=await service.cleanup(cut), finished_before=cut)


async def _delete(service: FlowService, a: DeleteInput) -> DeleteReport:
    delete = getattr(service, "delete", None)
    if delete is None:
        raise Unsupported("workflow_delete_suspended", "delete")
    result = delete(a.run_id)
    if inspect.isawaitable(result):
        await result
    return DeleteReport(id=a.run_id)


TOOLS: tuple[_Tool, ...] = (
    _Tool(
        "workflow_start",
        "Start a run of a flow; it runs until it finishes or waits (for a person, a "
        "webhook or a timer). Returns the run with what it awaits.",
        StartInput,
        ExecutionView,
        _start,
    ),
    _Tool(
        "workflow_suspend",
        "Suspend (hold) a run: its timers stop and decisions are refused until it is "
        "released. Records who and why.",
        SuspendInput,
        ExecutionView,
        _suspend,
        idempotent=True,
    ),
    _Tool(
        "workflow_resume_suspended",
        "Decide what a waiting run awaits: give the wait's node_id, one of its allowed "
        "actions (see workflow_suspend_status) and an output fitting its schema. "
        "idempotency_key is required: a retry with the same key applies nothing twice.",
        ResumeInput,
        ExecutionView,
        _resume,
        idempotent=True,
    ),
    _Tool(
        "workflow_list_suspended",
        "List runs that are waiting (for a decision, a timer, or held), oldest first.",
        ListInput,
        ExecutionList,
        _list,
        read_only=True,
        idempotent=True,
    ),
    _Tool(
        "workflow_suspend_status",
        "Describe a run: status, hold, and each node it awaits with the allowed actions, "
        "the JSON schema of the expected output, and its expiry. Returns at once.",
        StatusInput,
        ExecutionView,
        _status,
        read_only=True,
        idempotent=True,
    ),
    _Tool(
        "workflow_cleanup_suspended",
        "Delete finished runs (completed, failed, cancelled) older than a number of seconds.",
        CleanupInput,
        CleanupReport,
        _cleanup,
        destructive=True,
        idempotent=True,
    ),
    _Tool(
        "workflow_delete_suspended",
        "Delete one run and everything stored about it.",
        DeleteInput,
        DeleteReport,
        _delete,
        destructive=True,
        idempotent=True,
    ),
)


def _id_problem(args: _Input) -> str | None:
    """What the ids' types let through and the doors' rule does not (a trailing newline)."""
    run_id: str | None = getattr(args, "run_id", None)
    key: str | None = getattr(args, "idempotency_key", None)
    if run_id is not None and (problem := run_id_problem(run_id)) is not None:
        return problem
    return idempotency_key_problem(key) if key is not None else None


def _error(message: str) -> types.CallToolResult:
    text = types.TextContent(type="text", text=message)
    return types.CallToolResult(content=[text], is_error=True)


def create_server(
    service: FlowService, *, name: str = "flowcraft", destructive: bool = True
) -> Server[Any]:
    """An MCP server exposing ``service`` as the workflow tools.

    Args:
        service: The durable service runs live in.
        name: The server's name in the MCP handshake.
        destructive: Offer the tools that delete (``workflow_cleanup_suspended``,
            ``workflow_delete_suspended``). ``workflow_delete_suspended`` is offered only
            when the service has ``delete``.
    """
    offered = {
        t.name: t
        for t in TOOLS
        if (destructive or not t.destructive)
        and (t.name != "workflow_delete_suspended" or hasattr(service, "delete"))
    }
    listing = types.ListToolsResult(
        tools=[
            types.Tool(
                name=t.name,
                description=t.description,
                input_schema=_object_schema(t.input),
                output_schema=_object_schema(t.output),
                annotations=types.ToolAnnotations(
                    read_only_hint=t.read_only,
                    destructive_hint=t.destructive,
                    idempotent_hint=t.idempotent,
                    open_world_hint=False,
                ),
            )
            for t in offered.values()
        ]
    )

    async def list_tools(
        ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        return listing

    async def call_tool(
        ctx: ServerRequestContext[Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        tool = offered.get(params.name)
        if tool is None:
            return _error(f"unknown tool {params.name!r}; the tools are: {', '.join(offered)}")
        try:
            args = msgspec.convert(params.arguments or {}, tool.input)
        except msgspec.ValidationError as exc:
            return _error(f"{tool.name}: invalid arguments: {exc}")
        problem = _id_problem(args)
        if problem is not None:
            return _error(f"{tool.name}: invalid arguments: {problem}")
        try:
            value = await tool.call(service, args)
            body = msgspec.to_builtins(value)
            text = msgspec.json.encode(value).decode()
        except (flowcraft.FlowcraftError, ValueError) as exc:
            return _error(str(exc))
        except Exception:
            # A bug or an outage below the service (a driver's own error): the agent gets a
            # tool error it can report, never the exception's text (paths, DSNs, data).
            log.exception("flowcraft.mcp: tool %s failed", tool.name)
            return _error(f"{tool.name} failed with an unexpected error; see the server log")
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)], structured_content=body
        )

    return Server(
        name,
        version=flowcraft.__version__,
        instructions=(
            "Durable workflows that wait for people, webhooks and timers. Find waiting runs "
            "with workflow_list_suspended, read what a run awaits with workflow_suspend_status, "
            "decide with workflow_resume_suspended (one idempotency_key per decision)."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


async def serve_stdio(service: FlowService) -> None:
    """Serve ``create_server(service)`` over standard input/output until the client leaves."""
    from mcp.server.stdio import stdio_server

    server = create_server(service)
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await service.store.close()
