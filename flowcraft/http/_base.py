"""The ground floor of the HTTP app: shared helpers and ``AppCore`` (settings, auth, replay).

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
from collections.abc import Awaitable, Callable, Mapping
from typing import TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

import flowcraft
from flowcraft import FlowService, RunResult
from flowcraft.http._auth import Auth, Principal, identify
from flowcraft.http._problems import HTTPProblem, problem_of
from flowcraft.http._types import Problem, Replay
from flowcraft.views import idempotency_key_problem, run_id_problem

__all__ = [
    "JSON",
    "AppCore",
    "Handler",
    "check_run_id",
    "decode_body",
    "decode_query",
    "encode",
    "etag",
    "parse_if_match",
    "json_response",
    "problem_response",
    "stored_revision_of",
]

log = logging.getLogger("flowcraft.http")
T = TypeVar("T")

JSON = "application/json"
PROBLEM = "application/problem+json"
_ENCODER = msgspec.json.Encoder()
_REPLAY = msgspec.msgpack.Decoder(Replay)
_REPLAY_PREFIX = "flowcraft.http:"
_ETAG = re.compile(r'"([0-9]{1,20})"')
_MAX_REVISION = (1 << 63) - 1  # stores keep revisions as 64-bit integers


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


async def stored_revision_of(service: FlowService, result: RunResult) -> int | None:
    """The stored revision (the ``ETag``) of the state ``result`` describes, if still stored.

    ``start``/``resume``/``release`` answer a ``RunResult``, which carries the revision of
    the run's state, not the store's. The stored row is read once more: if it still holds
    ``result``'s context, its revision is this answer's ``ETag``; otherwise the run already
    moved on and the answer gets no ``ETag`` (a client reloads the run before an ``If-Match``).
    """
    try:
        stored = await service.get(result.run_id)
    except flowcraft.RunNotFoundError:
        return None
    if stored.context != result.serialized_context:
        return None
    return stored.revision


def etag(stored_revision: int | None) -> dict[str, str]:
    """The ``ETag`` header of a **stored** revision (``StoredRun.revision``); none if unknown.

    ``If-Match`` names the same number: ``FlowService.resume(expected_revision=)`` compares it
    with the stored revision, atomically with the decision's claim.
    """
    return {} if stored_revision is None else {"ETag": f'"{stored_revision}"'}


def parse_if_match(value: str) -> int | None:
    """The revision an ``If-Match`` header names (None for ``*``); 412 on anything else.

    Only ASCII digits (``str.isdigit`` takes ``"²"``, which ``int`` refuses), and no more than
    a stored revision can have (a 64-bit integer; ``int`` refuses 4,300 digits and more).
    """
    value = value.strip()
    if value == "*":
        return None
    tag = value.removeprefix("W/").strip()
    found = _ETAG.fullmatch(tag)
    if found is None:
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise HTTPProblem(
            "precondition-failed", f"If-Match must be '\"<revision>\"', got {shown!r}"
        )
    revision = int(found.group(1))
    if revision > _MAX_REVISION:
        raise HTTPProblem(
            "precondition-failed",
            "If-Match names a revision beyond any run's; send the ETag the run was read with",
        )
    return revision


def decode_body(raw: bytes, kind: type[T]) -> T:
    """Validate a JSON body against its type (an empty body is ``{}``); 422 otherwise."""
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise HTTPProblem("invalid-body", str(exc), errors=[str(exc)]) from exc
    except msgspec.DecodeError as exc:
        raise HTTPProblem("invalid-body", f"the body is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise HTTPProblem(
            "invalid-body", "the body's JSON is nested too deeply; send a flatter value"
        ) from exc


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
    """Refuse path ids no run can have (404) before they reach a store (``RunId``'s rule)."""
    problem = run_id_problem(run_id, "the path's run id")
    if problem is not None:
        raise HTTPProblem("run-not-found", f"no run has this id: {problem}", run_id=None)
    return run_id


Handler = Callable[[Request, Principal], Awaitable[Response]]


#: Media types an API body is read as JSON under (besides ``+json`` ones and none at all).
_JSON_READ = frozenset(["application/json", "application/x-www-form-urlencoded"])


class AppCore(Starlette):
    """What every part of the app shares: its settings, body limits, auth, problems, replay.

    ``FlowApp`` (the routes) extends it; pages, webhooks and the OpenAPI document take it.
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

    async def read_json(self, request: Request) -> bytes:
        """``read_body`` of an API call: a body sent as another media type is refused (415).

        ``application/json`` and ``+json`` types are read as JSON, and so are a body without a
        type and ``application/x-www-form-urlencoded`` (what ``curl -d`` sends, as in the
        seed's examples; a browser form percent-encodes its body, so it never reads as JSON).
        ``text/plain`` and ``multipart/form-data`` are what a page on another site can post
        as-is without a preflight: with an ``auth`` that reads a cookie, such a post would act
        as the signed-in user.
        """
        kind = request.headers.get("content-type")
        if kind is not None:
            media = kind.split(";", 1)[0].strip().lower()
            if media and media not in _JSON_READ and not media.endswith("+json"):
                raise HTTPProblem(
                    "unsupported-media-type",
                    f"the body was sent as {media!r}; send it as application/json",
                )
        return await self.read_body(request)

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

    def problem_for(self, request: Request, exc: Exception) -> HTTPProblem:
        """The problem an exception raised while handling ``request`` answers with.

        The one mapping every door of the app uses (API routes, approval pages, webhooks):
        the service's errors by ``problem_of``; anything else is logged and is a 500.
        """
        found = problem_of(exc)
        if found is None:
            log.exception("flowcraft.http: %s %s failed", request.method, request.url.path)
            found = HTTPProblem("internal", "an unexpected error; see the server log")
        return found

    def error_response(self, request: Request, exc: Exception) -> Response:
        """The problem response for an exception raised while handling ``request``."""
        found = self.problem_for(request, exc)
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
        problem = idempotency_key_problem(key, "Idempotency-Key")
        if problem is not None:
            raise HTTPProblem("invalid-body", problem)
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
