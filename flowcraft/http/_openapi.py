"""``/openapi.json``: OpenAPI 3.1, generated from the same msgspec types the routes use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from flowcraft.http._base import AppCore
from flowcraft.http._problems import PROBLEM_TYPES
from flowcraft.http._types import (
    CancelBody,
    Health,
    ListQuery,
    PauseBody,
    PausedList,
    PausedQuery,
    Problem,
    ReleaseBody,
    ResumeBody,
    RunStats,
    StartBody,
)
from flowcraft.views import ExecutionList, ExecutionView, HistoryView

if TYPE_CHECKING:
    from starlette.requests import Request


__all__ = ["openapi_document"]

_REF = "#/components/schemas/{name}"

# (method, path, operationId, permission, request body, query type, response status, type)
_OPERATIONS: tuple[tuple[str, str, str, str, type | None, type | None, int, type], ...] = (
    (
        "post",
        "/executions",
        "startExecution",
        "execution:start",
        StartBody,
        None,
        201,
        ExecutionView,
    ),
    ("get", "/executions", "listExecutions", "execution:read", None, ListQuery, 200, ExecutionList),
    (
        "get",
        "/executions/paused",
        "listPausedExecutions",
        "execution:read",
        None,
        PausedQuery,
        200,
        PausedList,
    ),
    (
        "get",
        "/executions/{run_id}",
        "getExecution",
        "execution:read",
        None,
        None,
        200,
        ExecutionView,
    ),
    (
        "post",
        "/executions/{run_id}/pause",
        "pauseExecution",
        "execution:cancel",
        PauseBody,
        None,
        200,
        ExecutionView,
    ),
    (
        "post",
        "/executions/{run_id}/resume",
        "resumeExecution",
        "execution:cancel",
        ResumeBody,
        None,
        200,
        ExecutionView,
    ),
    (
        "post",
        "/executions/{run_id}/release",
        "releaseExecution",
        "execution:cancel",
        ReleaseBody,
        None,
        200,
        ExecutionView,
    ),
    (
        "post",
        "/executions/{run_id}/cancel",
        "cancelExecution",
        "execution:cancel",
        CancelBody,
        None,
        200,
        ExecutionView,
    ),
    (
        "get",
        "/executions/{run_id}/history",
        "getExecutionHistory",
        "execution:read",
        None,
        None,
        200,
        HistoryView,
    ),
    ("get", "/stats", "getStats", "execution:read", None, None, 200, RunStats),
    ("get", "/health", "getHealth", "execution:read", None, None, 200, Health),
)

_ERRORS_GET = (401, 403, 404, 422)
_ERRORS_POST = (401, 403, 404, 409, 410, 412, 413, 422, 423)


def _problem_ref() -> dict[str, Any]:
    return {
        "description": "A problem (RFC 9457); `type` is one of "
        + ", ".join(f"`urn:flowcraft:problem:{n}`" for n in PROBLEM_TYPES),
        "content": {"application/problem+json": {"schema": {"$ref": _REF.format(name="Problem")}}},
    }


def _query_parameters(kind: type) -> list[dict[str, Any]]:
    (schema,), components = msgspec.json.schema_components([kind], ref_template=_REF)
    name = schema["$ref"].rsplit("/", 1)[1]
    props = components[name]["properties"]
    return [{"name": p, "in": "query", "required": False, "schema": s} for p, s in props.items()]


def openapi_document(app: AppCore, request: Request) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app`` (served at ``/openapi.json``)."""
    kinds: list[type] = [Problem]
    for op in _OPERATIONS:
        if op[4] is not None:
            kinds.append(op[4])
        kinds.append(op[7])
    refs, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    ref_of = dict(zip(kinds, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, op_id, perm, body, query, status, out in _OPERATIONS:
        responses: dict[str, Any] = {
            str(status): {
                "description": "OK",
                "content": {"application/json": {"schema": ref_of[out]}},
            }
        }
        for code in _ERRORS_POST if method == "post" else _ERRORS_GET:
            responses[str(code)] = _problem_ref()
        operation: dict[str, Any] = {
            "operationId": op_id,
            "summary": (out.__doc__ or op_id).splitlines()[0],
            "security": [{"bearer": [perm]}],
            "x-permission": perm,
            "responses": responses,
        }
        params: list[dict[str, Any]] = []
        if "{run_id}" in path:
            params.append(
                {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
            )
        if query is not None:
            params.extend(_query_parameters(query))
        if method == "post":
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "Replays the first response to this key byte for byte.",
                }
            )
        if op_id == "resumeExecution":
            params.append(
                {
                    "name": "If-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": (
                        'The run\'s stored revision as its ETag, `"<stored_revision>"`; 412 '
                        "unless the run is still at it (checked atomically with the decision)."
                    ),
                }
            )
        if params:
            operation["parameters"] = params
        if body is not None:
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": ref_of[body]}},
            }
        paths.setdefault(path, {})[method] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "flowcraft", "version": "1", "description": "Durable flowcraft runs."},
        "servers": [{"url": app.base_url or str(request.base_url).rstrip("/")}],
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
