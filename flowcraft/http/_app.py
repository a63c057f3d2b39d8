"""``create_app``: the REST routes of DESIGN §10 over a ``FlowService``.

Every route follows the same path (``FlowApp._handle``): authenticate (401 without a
principal, 403 without the route's permission), read and validate the body against its msgspec
type (413, 422) before anything changes, call the service, encode a msgspec type. Errors of the
service become problem documents (``_problems``).
Idempotent replay and the shared helpers are in ``_base`` (``AppCore``).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

import flowcraft
from flowcraft import FlowService
from flowcraft.http._auth import CANCEL, READ, START, Auth, Principal
from flowcraft.http._base import (
    JSON,
    AppCore,
    Handler,
    check_run_id,
    decode_body,
    decode_query,
    encode,
    etag,
    json_response,
    parse_if_match,
    problem_response,
    stored_revision_of,
)
from flowcraft.http._openapi import openapi_document
from flowcraft.http._pages import page_routes
from flowcraft.http._problems import HTTPProblem
from flowcraft.http._types import (
    CancelBody,
    Health,
    ListQuery,
    PauseBody,
    PausedExecution,
    PausedList,
    PausedQuery,
    ReleaseBody,
    ResumeBody,
    StartBody,
)
from flowcraft.http._webhooks import WebhookRoute, webhook_routes
from flowcraft.stores import RunExistsError, StoredRun
from flowcraft.views import (
    HistoryView,
    execution_view,
    list_view,
    outcome_view,
    run_id_problem,
)

if TYPE_CHECKING:
    from flowcraft.http._webhooks import WebhookRoute

__all__ = ["FlowApp", "create_app"]

log = logging.getLogger("flowcraft.http")
_POLL = 0.02  # seconds between looks at a start another request with the same key is running
_SETTLED = 5.0  # seconds after a run settles within which its first start may still answer

class FlowApp(AppCore):
    """The ASGI application ``create_app`` returns: a Starlette app, mountable anywhere.

    Besides routing it offers ``approval_link`` (approval pages, when ``link_secret`` is set).
    """

    # --- routes -------------------------------------------------------------------------------

    async def start(self, request: Request, principal: Principal) -> Response:
        raw = await self.read_json(request)
        body = decode_body(raw, StartBody)
        problem = run_id_problem(body.run_id) if body.run_id is not None else None
        if problem is not None:
            raise HTTPProblem("invalid-body", problem)
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
            revision = await stored_revision_of(self.service, result)
            view = outcome_view(self.service, result, revision)
            headers = {**etag(revision), "Location": f"{location}/{result.run_id}"}
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
            now = clock.now()
            # The first start stores its response a moment after its segment settles: a run
            # still running, or settled just now, may be that start; an older one is not ours.
            settled_long_ago = stored.status != "running" and (
                now - stored.updated_at > timedelta(seconds=_SETTLED)
            )
            if settled_long_ago or now > deadline:
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
        return json_response(list_view(page.runs, page.next_cursor))

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
        view = execution_view(self.service, await self.service.get(run_id))
        return json_response(view, headers=etag(view.stored_revision))

    async def history(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        records = await self.service.history(run_id)
        return json_response(HistoryView(id=run_id, history=list(records)))

    async def pause(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_json(request)
        body = decode_body(raw, PauseBody)

        async def compute(key: str | None) -> Response:
            stored = await self.service.pause(
                run_id, reason=body.reason, by=principal.name, request_id=body.request_id or key
            )
            view = execution_view(self.service, stored)
            return json_response(view, headers=etag(view.stored_revision))

        return await self.once(request, principal, raw, run_id, compute)

    async def release(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_json(request)
        body = decode_body(raw, ReleaseBody)

        async def compute(key: str | None) -> Response:
            result = await self.service.release(
                run_id, by=principal.name, request_id=key, reason=body.reason
            )
            revision = await stored_revision_of(self.service, result)
            view = outcome_view(self.service, result, revision)
            return json_response(view, headers=etag(view.stored_revision))

        return await self.once(request, principal, raw, run_id, compute)

    async def cancel(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_json(request)
        body = decode_body(raw, CancelBody)

        async def compute(key: str | None) -> Response:
            stored = await self.service.cancel(run_id, reason=body.reason, by=principal.name)
            view = execution_view(self.service, stored)
            return json_response(view, headers=etag(view.stored_revision))

        return await self.once(request, principal, raw, run_id, compute)

    async def resume(self, request: Request, principal: Principal) -> Response:
        run_id = check_run_id(request.path_params["run_id"])
        raw = await self.read_json(request)
        body = decode_body(raw, ResumeBody)
        if body.resume_data is not None and body.output is not None:
            raise HTTPProblem("invalid-body", "send resume_data or output, not both")
        output = body.resume_data if body.resume_data is not None else body.output
        data: dict[str, Any] | None = None
        if output is not None or body.action is not None:
            data = {"output": output, "action": body.action}
        header = request.headers.get("if-match")
        # The stored revision (the ETag), or None for "*" and no header.
        expected = parse_if_match(header) if header is not None else None

        async def compute(key: str | None) -> Response:
            try:
                result = await self.service.resume(
                    run_id,
                    data,
                    body.node_id,
                    by=principal.name,
                    idempotency_key=key,
                    expected_revision=expected,
                )
            except flowcraft.RevisionConflictError as exc:
                if expected is None:
                    raise
                # Checked on the row the decision's claim is made on: nothing changed.
                raise HTTPProblem(
                    "precondition-failed",
                    f"run {run_id!r} is at revision {exc.actual}, not {expected}; load it again",
                    run_id=run_id,
                    current_revision=exc.actual,
                ) from exc
            revision = await stored_revision_of(self.service, result)
            view = outcome_view(self.service, result, revision)
            return json_response(view, headers=etag(view.stored_revision))

        return await self.once(request, principal, raw, run_id, compute)

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
        link_secret: Enables approval pages: the HMAC key signing approval links (not
            empty: ``ValueError``).
        webhooks: ``WebhookRoute``s to verify and dispatch.
        max_body: Largest request body accepted, in bytes (413 beyond).
    """
    if link_secret is not None and not link_secret:
        # HMAC with an empty key is a signature anyone can compute: every link forgeable.
        raise ValueError(
            "create_app: link_secret is empty, so anyone could sign approval links; pass a "
            "long random secret, or None to leave the approval pages out"
        )
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
