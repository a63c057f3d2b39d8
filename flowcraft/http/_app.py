"""``create_app``: the REST routes of DESIGN §10 over a ``FlowService``.

Every route follows the same path (``FlowApp._handle``): authenticate (401 without a
principal, 403 without the route's permission), read and validate the body against its msgspec
type (413, 422) before anything changes, call the service, encode a msgspec type. Errors of the
service become problem documents (``_problems``).

Idempotency (``Idempotency-Key`` on any POST): the decision itself is deduplicated by the
service (the key is passed as ``idempotency_key``, so of N concurrent identical resumes one
claims the run and the others receive its result). The *response* is made byte-for-byte
repeatable here: the first response under a key is stored beside the run with
``RunStore.remember`` (first writer wins) and every later request with that key answers the
stored status, headers and body, marked ``Idempotent-Replayed: true``. A key reused with a
different request (method, path, principal or body) is refused with 422.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

import flowcraft
from flowcraft import Blueprint, FlowService, RunResult
from flowcraft.http._auth import CANCEL, READ, START, Auth, Principal, identify
from flowcraft.http._problems import HTTPProblem, problem_of
from flowcraft.http._types import (
    AwaitingView,
    CancelBody,
    ExecutionList,
    ExecutionSummary,
    ExecutionView,
    Health,
    HistoryView,
    ListQuery,
    PauseBody,
    PausedExecution,
    PausedList,
    PausedQuery,
    Problem,
    ReleaseBody,
    Replay,
    ResumeBody,
    StartBody,
)
from flowcraft.stores import RunExistsError, StoredRun

if TYPE_CHECKING:
    from flowcraft.http._webhooks import WebhookRoute

__all__ = ["FlowApp", "create_app"]

log = logging.getLogger("flowcraft.http")
T = TypeVar("T")

JSON = "application/json"
PROBLEM = "application/problem+json"
_ENCODER = msgspec.json.Encoder()
_REPLAY = msgspec.msgpack.Decoder(Replay)
_RUN_ID = re.compile(r"^[A-Za-z0-9._:~-]{1,128}$")
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_REPLAY_PREFIX = "flowcraft.http:"
_POLL = 0.02  # seconds between looks at a start another request with the same key is running


def encode(value: object) -> bytes:
    """JSON bytes of a msgspec value."""
    return _ENCODER.encode(value)


def json_response(
    value: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response of a msgspec value."""
    return Response(encode(value), status, headers=dict(headers or {}), media_type=JSON)


def problem_response(problem: Problem, headers: Mapping[str, str] | None = None) -> Response:
    """An ``application/problem+json`` response."""
    body = encode(problem)
    return Response(body, problem.status, headers=dict(headers or {}), media_type=PROBLEM)


def flow_of(service: FlowService, flow_id: str) -> tuple[Blueprint, Mapping[str, object]]:
    """The blueprint and registry the service runs ``flow_id`` with.

    ``FlowService`` has no public accessor for its flow table yet; ``service.host.flow`` is the
    one place this adapter reaches past the public surface (see the HTTP section of CHANGELOG).
    """
    return service.host.flow(flow_id)


def actions_of(blueprint: Blueprint, node_id: str) -> list[str]:
    """The labelled actions of a node's outgoing edges, in declaration order."""
    seen: list[str] = []
    for edge in blueprint.edges:
        if edge.source == node_id and edge.action is not None and edge.action not in seen:
            seen.append(edge.action)
    return seen


def schema_of(
    blueprint: Blueprint, registry: Mapping[str, object], node_id: str
) -> dict[str, Any] | None:
    """The JSON Schema of a wait's ``schema=`` type, if it declares one."""
    node = next((n for n in blueprint.nodes if n.id == node_id), None)
    if node is None or not node.params:
        return None
    key = node.params.get("schema")
    kind = registry.get(key) if isinstance(key, str) else None
    if kind is None:
        return None
    try:
        schema: dict[str, Any] = msgspec.json.schema(kind)
    except (TypeError, ValueError):
        return None
    return schema


def awaiting_views(service: FlowService, result: RunResult) -> list[AwaitingView]:
    """The run's awaiting nodes with their allowed actions and schema."""
    if not result.awaiting:
        return []
    try:
        bp, reg = flow_of(service, result.blueprint_id)
    except flowcraft.UnknownFlowError:
        bp, reg = None, {}
    views = []
    for a in result.awaiting:
        actions = actions_of(bp, a.node_id) if bp is not None else []
        schema = schema_of(bp, reg, a.node_id) if bp is not None else None
        views.append(
            AwaitingView(
                node_id=a.node_id,
                reason=a.reason,
                since=a.since,
                description=a.description,
                requested_by=a.requested_by,
                wake_at=a.wake_at,
                expires_at=a.expires_at,
                actions=actions,
                schema=schema,
            )
        )
    return views


def outcome_view(service: FlowService, result: RunResult) -> ExecutionView:
    """What a start/resume/release answers: a function of the ``RunResult`` alone."""
    return ExecutionView(
        id=result.run_id,
        flow_id=result.blueprint_id,
        status=result.status,
        revision=result.revision,
        awaiting=awaiting_views(service, result),
        state=result.context,
        outputs=result.outputs,
        errors=[f"{e.node_id}: {e.type}: {e.message}" for e in result.errors],
    )


def stored_result(service: FlowService, stored: StoredRun) -> RunResult | None:
    """The run's last stored state as a ``RunResult`` (None while it starts)."""
    if not stored.context:
        return None
    return service.host.rebuild(stored, stored.context)


def run_view(service: FlowService, stored: StoredRun) -> ExecutionView:
    """``GET /executions/{id}``: the stored run, its state and what it awaits."""
    result = stored_result(service, stored)
    base = outcome_view(service, result) if result is not None else None
    return ExecutionView(
        id=stored.run_id,
        flow_id=stored.flow_id,
        status=stored.status,
        revision=result.revision if result is not None else 0,
        created_at=stored.created_at,
        updated_at=stored.updated_at,
        held=stored.held,
        paused_at=stored.paused_at,
        paused_by=stored.paused_by,
        paused_reason=stored.pause_reason,
        pause_deadline=stored.pause_deadline,
        awaiting=base.awaiting if base is not None else [],
        state=base.state if base is not None else None,
        outputs=base.outputs if base is not None else None,
        errors=base.errors if base is not None else [],
    )


def etag(revision: int) -> dict[str, str]:
    """The ``ETag`` header of a revision."""
    return {"ETag": f'"{revision}"'}


def parse_if_match(value: str) -> int | None:
    """The revision an ``If-Match`` header names (None for ``*``); 412 on anything else."""
    value = value.strip()
    if value == "*":
        return None
    tag = value.removeprefix("W/").strip()
    if len(tag) >= 2 and tag[0] == tag[-1] == '"' and tag[1:-1].isdigit():
        return int(tag[1:-1])
    raise HTTPProblem("precondition-failed", f"If-Match must be '\"<revision>\"', got {value!r}")


def decode_body(raw: bytes, kind: type[T]) -> T:
    """Validate a JSON body against its type (an empty body is ``{}``); 422 otherwise."""
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise HTTPProblem("invalid-body", str(exc), errors=[str(exc)]) from exc
    except msgspec.DecodeError as exc:
        raise HTTPProblem("invalid-body", f"the body is not JSON: {exc}") from exc


def decode_query(request: Request, kind: type[T]) -> T:
    """Validate query parameters against their type; 422 otherwise."""
    params: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name in params:
            raise HTTPProblem("invalid-body", f"query parameter {name!r} is given twice")
        params[name] = value
    try:
        return msgspec.convert(params, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise HTTPProblem("invalid-body", str(exc), errors=[str(exc)]) from exc


def check_run_id(run_id: str) -> str:
    """Refuse path ids no run can have (404) before they reach a store."""
    if not _RUN_ID.match(run_id):
        raise HTTPProblem("run-not-found", f"no run has the id {run_id!r}", run_id=None)
    return run_id


Handler = Callable[[Request, Principal], Awaitable[Response]]


class FlowApp(Starlette):
    """The ASGI application ``create_app`` returns: a Starlette app, mountable anywhere.

    Besides routing it offers ``approval_link`` (approval pages, when ``link_secret`` is set).
    """

    service: FlowService
    auth: Auth
    base_url: str | None
    link_secret: bytes | None
    max_body: int

    async def read_body(self, request: Request) -> bytes:
        """The request body, refusing more than ``max_body`` bytes (413) without reading it all."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise HTTPProblem("body-too-large", f"the body exceeds {self.max_body} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise HTTPProblem("body-too-large", f"the body exceeds {self.max_body} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def guarded(self, request: Request, permission: str, handler: Handler) -> Response:
        """Authenticate, authorize, run ``handler``, and turn errors into problems."""
        try:
            principal = await identify(self.auth, request)
            if principal is None:
                raise HTTPProblem("unauthorized", "send Authorization: Bearer <token>")
            if not principal.may(permission):
                raise HTTPProblem(
                    "forbidden", f"{principal.name!r} lacks the permission {permission!r}"
                )
            return await handler(request, principal)
        except Exception as exc:
            return self.error_response(request, exc)

    def error_response(self, request: Request, exc: Exception) -> Response:
        """The problem response for an exception raised while handling ``request``."""
        found = problem_of(exc)
        if found is None:
            log.exception("flowcraft.http: %s %s failed", request.method, request.url.path)
            found = HTTPProblem("internal", "an unexpected error; see the server log")
        headers = {"WWW-Authenticate": "Bearer"} if found.name == "unauthorized" else None
        return problem_response(found.problem(request.url.path), headers)

    # --- idempotent replay --------------------------------------------------------------------

    @staticmethod
    def fingerprint(request: Request, principal: Principal, body: bytes) -> str:
        """What makes two requests with one ``Idempotency-Key`` the same request."""
        h = hashlib.sha256()
        for part in (request.method, request.url.path, principal.name):
            h.update(part.encode() + b"\0")
        h.update(body)
        return h.hexdigest()

    @staticmethod
    def idempotency_key(request: Request) -> str | None:
        """The request's ``Idempotency-Key`` (422 when malformed)."""
        key = request.headers.get("idempotency-key")
        if key is None:
            return None
        if not _KEY.match(key):
            raise HTTPProblem("invalid-body", "Idempotency-Key: 1-255 visible ASCII characters")
        return key

    async def recall(self, run_id: str, key: str, fingerprint: str) -> Response | None:
        """The stored first response under ``key``, if there is one (422 if it differs)."""
        raw = await self.service.store.recall(run_id, _REPLAY_PREFIX + key)
        if raw is None:
            return None
        first = _REPLAY.decode(raw)
        if first.fingerprint != fingerprint:
            raise HTTPProblem(
                "idempotency-key-reused",
                f"Idempotency-Key {key!r} was first used for a different request; use a new key",
            )
        headers = {**dict(first.headers), "Idempotent-Replayed": "true"}
        media = PROBLEM if first.status >= 400 else JSON
        return Response(first.body, first.status, headers=headers, media_type=media)

    async def remember(
        self, run_id: str, key: str, fingerprint: str, response: Response
    ) -> Response:
        """Store ``response`` as the first under ``key``; if another was first, answer that."""
        kept = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in response.raw_headers
            if k.lower() in (b"etag", b"location")
        ]
        record = Replay(
            fingerprint=fingerprint,
            status=response.status_code,
            body=bytes(response.body),
            headers=kept,
        )
        stored = msgspec.msgpack.encode(record)
        if await self.service.store.remember(run_id, _REPLAY_PREFIX + key, stored):
            return response
        first = await self.recall(run_id, key, fingerprint)
        return first if first is not None else response

    async def once(
        self,
        request: Request,
        principal: Principal,
        body: bytes,
        run_id: str,
        compute: Callable[[str | None], Awaitable[Response]],
    ) -> Response:
        """Run ``compute(key)`` once per ``Idempotency-Key``; replay its 2xx response after."""
        key = self.idempotency_key(request)
        if key is None:
            return await compute(None)
        fp = self.fingerprint(request, principal, body)
        first = await self.recall(run_id, key, fp)
        if first is not None:
            return first
        response = await compute(key)
        if 200 <= response.status_code < 300:
            return await self.remember(run_id, key, fp, response)
        return response

    # --- routes -------------------------------------------------------------------------------

    async def start(self, request: Request, principal: Principal) -> Response:
        raw = await self.read_body(request)
        body = decode_body(raw, StartBody)
        if body.run_id is not None and not _RUN_ID.match(body.run_id):
            raise HTTPProblem("invalid-body", "run_id: 1-128 of A-Z a-z 0-9 . _ : ~ -")
        key = self.idempotency_key(request)
        run_id = body.run_id
        if key is not None and run_id is None:
            # The same key from the same principal names the same run, so a retried start
            # finds the first one instead of starting a second.
            seed = f"{principal.name}\0{key}".encode()
            run_id = "run-" + hashlib.sha256(seed).hexdigest()[:32]
        location = str(request.url).split("?", 1)[0].rstrip("/")

        async def compute(key: str | None) -> Response:
            try:
                result = await self.service.start(body.flow_id, body.state, run_id=run_id)
            except flowcraft.UnknownFlowError as exc:
                raise HTTPProblem("unknown-flow", str(exc)) from exc
            except flowcraft.SerializationError as exc:
                raise HTTPProblem("serialization", str(exc)) from exc
            except RunExistsError:
                if key is None or run_id is None:
                    raise
                return await self.await_first_start(request, principal, raw, run_id, key)
            view = outcome_view(self.service, result)
            headers = {**etag(result.revision), "Location": f"{location}/{result.run_id}"}
            return json_response(view, 201, headers)

        if run_id is None:
            return await compute(None)
        return await self.once(request, principal, raw, run_id, compute)

    async def await_first_start(
        self, request: Request, principal: Principal, raw: bytes, run_id: str, key: str
    ) -> Response:
        """A start under a key whose run exists: wait for the first start's response."""
        fp = self.fingerprint(request, principal, raw)
        clock = self.service.runtime.clock
        deadline = clock.now() + timedelta(seconds=self.service.busy_timeout)
        while True:
            first = await self.recall(run_id, key, fp)
            if first is not None:
                return first
            stored = await self.service.get(run_id)
            if stored.status != "running" or clock.now() > deadline:
                # The run exists but no response under this key: not ours (409).
                raise HTTPProblem("run-exists", f"run {run_id!r} already exists", run_id=run_id)
            await clock.sleep(_POLL)

    async def list_runs(self, request: Request, principal: Principal) -> Response:
        q = decode_query(request, ListQuery)
        try:
            page = await self.service.list(
                status=q.status, flow_id=q.flow, reason=q.reason, limit=q.limit, cursor=q.cursor
            )
        except ValueError as exc:
            raise HTTPProblem("invalid-body", str(exc)) from exc
        items = [
            ExecutionSummary(
                id=r.run_id,
                flow_id=r.flow_id,
                status=r.status,
                created_at=r.created_at,
                updated_at=r.updated_at,
                awaiting=list(r.awaiting),
                held=r.held,
            )
            for r in page.runs
        ]
        return json_response(
            ExecutionList(executions=items, count=len(items), next_cursor=page.next_cursor)
        )

    async def list_paused(self, request: Request, principal: Principal) -> Response:
        q = decode_query(request, PausedQuery)
        page = await self.service.list(status="awaiting", limit=q.limit)
        items = [await self.paused_item(r) for r in page.runs]
        return json_response(PausedList(executions=items, count=len(items)))

    async def paused_item(self, run: StoredRun) -> PausedExecution:
        count: int | None = getattr(run, "resume_count", None)
        last = getattr(run, "last_resumed_at", None)
        if count is None:
            # Stores without the resume counters (DESIGN §9): count from the history.
            past = await self.service.store.history(run.run_id)
            resumes = [h for h in past if h.event == "resume"]
            count, last = len(resumes), (resumes[-1].at if resumes else None)
        return PausedExecution(
            id=run.run_id,
            flow_id=run.flow_id,
            status=run.status,
            paused_at=run.paused_at,
            paused_reason=run.pause_reason,
            awaiting=list(run.awaiting),
            resume_count=count,
            last_resumed_at=last,
        )

    async def get_run(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        view = run_view(self.service, await self.service.get(run_id))
        return json_response(view, headers=etag(view.revision))

    async def history(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        records = await self.service.history(run_id)
        return json_response(HistoryView(id=run_id, history=list(records)))

    async def pause(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_body(request)
        body = decode_body(raw, PauseBody)

        async def compute(key: str | None) -> Response:
            stored = await self.service.pause(
                run_id, reason=body.reason, by=principal.name, request_id=body.request_id or key
            )
            view = run_view(self.service, stored)
            return json_response(view, headers=etag(view.revision))

        return await self.once(request, principal, raw, run_id, compute)

    async def release(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_body(request)
        decode_body(raw, ReleaseBody)

        async def compute(key: str | None) -> Response:
            result = await self.service.release(run_id, by=principal.name, request_id=key)
            view = outcome_view(self.service, result)
            return json_response(view, headers=etag(view.revision))

        return await self.once(request, principal, raw, run_id, compute)

    async def cancel(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_body(request)
        body = decode_body(raw, CancelBody)

        async def compute(key: str | None) -> Response:
            stored = await self.service.cancel(run_id, reason=body.reason, by=principal.name)
            view = run_view(self.service, stored)
            return json_response(view, headers=etag(view.revision))

        return await self.once(request, principal, raw, run_id, compute)

    async def resume(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_body(request)
        body = decode_body(raw, ResumeBody)
        if body.resume_data is not None and body.output is not None:
            raise HTTPProblem("invalid-body", "send resume_data or output, not both")
        output = body.resume_data if body.resume_data is not None else body.output
        data: dict[str, Any] | None = None
        if output is not None or body.action is not None:
            data = {"output": output, "action": body.action}
        expected = request.headers.get("if-match")

        async def compute(key: str | None) -> Response:
            if expected is not None:
                await self.check_revision(run_id, parse_if_match(expected))
            result = await self.service.resume(
                run_id, data, body.node_id, by=principal.name, idempotency_key=key
            )
            view = outcome_view(self.service, result)
            return json_response(view, headers=etag(view.revision))

        return await self.once(request, principal, raw, run_id, compute)

    async def check_revision(self, run_id: str, expected: int | None) -> None:
        """412 unless the run's current revision is ``expected``.

        The service has no compare-and-set on a decision's revision, so this check and the
        decision are two steps; the service's own claim still makes the decision apply once.
        """
        stored = await self.service.get(run_id)
        result = stored_result(self.service, stored)
        current = result.revision if result is not None else 0
        if expected is not None and current != expected:
            raise HTTPProblem(
                "precondition-failed",
                f"run {run_id!r} is at revision {current}, not {expected}; load it again",
                run_id=run_id,
                current_revision=current,
            )

    async def stats(self, request: Request, principal: Principal) -> Response:
        return json_response(await self.service.stats())

    async def health(self, request: Request, principal: Principal) -> Response:
        check = getattr(self.service, "health", None)
        try:
            if check is not None:
                await check()
            else:
                await self.service.stats()
        except flowcraft.FlowcraftError as exc:
            return json_response(Health(status="unavailable", detail=str(exc)), 503)
        return json_response(Health(status="ok"))

    async def openapi(self, request: Request) -> Response:
        from flowcraft.http._openapi import openapi_document

        doc = openapi_document(self, request)
        return Response(encode(doc), media_type=JSON)


#: (method, path, permission, handler name, summary)
ROUTES: tuple[tuple[str, str, str, str], ...] = (
    ("POST", "/executions", START, "start"),
    ("GET", "/executions", READ, "list_runs"),
    ("GET", "/executions/paused", READ, "list_paused"),
    ("GET", "/executions/{run_id}", READ, "get_run"),
    ("POST", "/executions/{run_id}/pause", CANCEL, "pause"),
    ("POST", "/executions/{run_id}/resume", CANCEL, "resume"),
    ("POST", "/executions/{run_id}/release", CANCEL, "release"),
    ("POST", "/executions/{run_id}/cancel", CANCEL, "cancel"),
    ("GET", "/executions/{run_id}/history", READ, "history"),
    ("GET", "/stats", READ, "stats"),
    ("GET", "/health", READ, "health"),
)


def _endpoint(app: FlowApp, permission: str, name: str) -> Callable[[Request], Awaitable[Response]]:
    handler: Handler = getattr(app, name)

    async def endpoint(request: Request) -> Response:
        return await app.guarded(request, permission, handler)

    endpoint.__name__ = name
    return endpoint


def create_app(
    service: FlowService,
    *,
    auth: Auth,
    base_url: str | None = None,
    link_secret: str | bytes | None = None,
    webhooks: Sequence[WebhookRoute] = (),
    max_body: int = 1 << 20,
) -> FlowApp:
    """The HTTP API of DESIGN §10 over ``service``, as a mountable Starlette application.

    Args:
        service: The durable service runs live in.
        auth: ``BearerAuth({...})`` or any callable ``(request) -> Principal | None`` (sync
            or async). Its principal's name is recorded as ``by``.
        base_url: The public URL the app is reachable at (approval links are built from it).
        link_secret: Enables approval pages: the HMAC key signing approval links.
        webhooks: ``WebhookRoute``s to verify and dispatch.
        max_body: Largest request body accepted, in bytes (413 beyond).
    """
    from flowcraft.http._pages import page_routes
    from flowcraft.http._webhooks import webhook_routes

    app = FlowApp()
    app.service = service
    app.auth = auth
    app.base_url = base_url.rstrip("/") if base_url else None
    app.link_secret = link_secret.encode() if isinstance(link_secret, str) else link_secret
    app.max_body = max_body
    routes: list[BaseRoute] = [
        Route(path, _endpoint(app, perm, name), methods=[method], name=name)
        for method, path, perm, name in ROUTES
    ]
    routes.append(Route("/openapi.json", app.openapi, methods=["GET"], name="openapi"))
    routes.extend(page_routes(app))
    routes.extend(webhook_routes(app, webhooks))
    app.router.routes.extend(routes)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        name = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "invalid-body")
        return problem_response(HTTPProblem(name, str(exc.detail)).problem(request.url.path))

    app.add_exception_handler(HTTPException, http_error)
    return app
