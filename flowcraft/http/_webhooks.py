"""Incoming webhooks: verify the provider's signature, dedupe the delivery, resume the run.

``WebhookRoute(path, verifier=..., secret=..., route=fn)``. The verifiers follow each
provider's documented scheme (all HMAC-SHA256, compared in constant time):

* ``"standard"`` (Standard Webhooks / Svix): ``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature: v1,<base64> ...`` over ``"{id}.{timestamp}.{body}"``; a secret
  ``whsec_<base64>`` is the base64 key. Delivery id: ``webhook-id``.
* ``"stripe"``: ``Stripe-Signature: t=<ts>,v1=<hex>[,v1=...]`` over ``"{t}.{body}"``.
  Delivery id: the event's ``id``.
* ``"github"``: ``X-Hub-Signature-256: sha256=<hex>`` over the body (GitHub signs no time).
  Delivery id: ``X-GitHub-Delivery``.
* ``"slack"``: ``X-Slack-Signature: v0=<hex>`` over ``"v0:{ts}:{body}"`` with
  ``X-Slack-Request-Timestamp``. Delivery id: the event's ``event_id`` (else the body's digest).

Timestamps must be within ``tolerance`` seconds of the *runtime's clock* (so tests drive it
with ``FakeClock``). ``route(event)`` returns a ``WebhookTarget`` (which run and wait to
resume, with what) or None to ignore the delivery. The resume is made with the idempotency
key ``webhook:<provider>:<delivery id>`` and the response stored beside the run, so a
redelivery answers 200 with the first outcome and runs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from flowcraft import WebhookPayloadError
from flowcraft.http._base import AppCore, json_response
from flowcraft.http._problems import HTTPProblem
from flowcraft.views import outcome_view

__all__ = [
    "Verifier",
    "WebhookEvent",
    "WebhookRoute",
    "WebhookTarget",
    "verify_signature",
    "webhook_routes",
]

Verifier: TypeAlias = Literal["standard", "stripe", "github", "slack"]


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """A verified delivery, as ``route`` receives it."""

    provider: str
    delivery_id: str
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            flowcraft.WebhookPayloadError: the body is not JSON (or not UTF-8), or is nested
                too deeply to read; the app answers the delivery with 422 ``webhook-payload``.
        """
        try:
            return json.loads(self.body)
        except RecursionError:
            raise WebhookPayloadError(
                self.provider, self.delivery_id, "is JSON nested too deeply to read"
            ) from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            detail = f"is not JSON ({type(exc).__name__}: {str(exc)[:200]})"
            raise WebhookPayloadError(self.provider, self.delivery_id, detail) from None


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What a delivery resumes: a run, optionally the wait, and the decision."""

    run_id: str
    node_id: str | None = None
    output: Any = None
    action: str | None = None


Router: TypeAlias = Callable[
    [WebhookEvent], "WebhookTarget | Awaitable[WebhookTarget | None] | None"
]


@dataclass(frozen=True)
class WebhookRoute:
    """One webhook endpoint: where it listens, how it verifies, which run it resumes."""

    path: str
    verifier: Verifier
    secret: str | bytes
    route: Router
    tolerance: float = 300.0
    name: str = field(default="")

    def __post_init__(self) -> None:
        if self.verifier not in ("standard", "stripe", "github", "slack"):
            raise ValueError(f"unknown webhook verifier {self.verifier!r}")
        if not self.path.startswith("/"):
            raise ValueError(f"webhook path must start with '/', got {self.path!r}")


class SignatureError(Exception):
    """A delivery whose signature or timestamp does not verify."""


def _key(secret: str | bytes, verifier: str) -> bytes:
    if isinstance(secret, bytes):
        return secret
    if verifier == "standard" and secret.startswith("whsec_"):
        return base64.b64decode(secret.removeprefix("whsec_"))
    return secret.encode()


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


_TIMESTAMP = re.compile(r"-?[0-9]{1,15}")


def _fresh(timestamp: str, now: datetime, tolerance: float) -> None:
    # Unix seconds as ASCII digits: int() would take " 1_7e9 "-like text, and a 400-digit
    # number that overflows the float subtraction below (a raw 500 before any signature check).
    if not _TIMESTAMP.fullmatch(timestamp):
        shown = timestamp if len(timestamp) <= 20 else timestamp[:20] + "..."
        raise SignatureError(f"timestamp {shown!r} is not an integer of unix seconds")
    at = int(timestamp)
    if abs(now.timestamp() - at) > tolerance:
        raise SignatureError(f"timestamp {at} is more than {tolerance:g}s from now")


def _any_equal(want: bytes, candidates: Sequence[bytes]) -> bool:
    ok = False
    for c in candidates:  # compare every candidate: no early exit
        ok |= hmac.compare_digest(want, c)
    return ok


def _unhex(text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return b""


def verify_signature(
    verifier: str,
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: datetime,
    tolerance: float = 300.0,
) -> str:
    """Verify a delivery; return its delivery id. ``SignatureError`` says what failed.

    ``headers`` must be case-insensitive (Starlette's are).
    """
    key = _key(secret, verifier)
    if verifier == "standard":
        msg_id, ts = headers.get("webhook-id"), headers.get("webhook-timestamp")
        sig = headers.get("webhook-signature")
        if not (msg_id and ts and sig):
            raise SignatureError("webhook-id, webhook-timestamp and webhook-signature are needed")
        _fresh(ts, now, tolerance)
        want = _mac(key, f"{msg_id}.{ts}.".encode() + body)
        given = []
        for part in sig.split():
            version, _, value = part.partition(",")
            if version == "v1":
                try:
                    given.append(base64.b64decode(value, validate=True))
                except ValueError:
                    continue
        if not _any_equal(want, given):
            raise SignatureError("no webhook-signature v1 entry matches")
        return msg_id
    if verifier == "stripe":
        header = headers.get("stripe-signature", "")
        pairs = [p.partition("=") for p in header.split(",")]
        ts = next((v for k, _, v in pairs if k.strip() == "t"), None)
        v1 = [_unhex(v) for k, _, v in pairs if k.strip() == "v1"]
        if ts is None or not v1:
            raise SignatureError("Stripe-Signature needs t= and v1=")
        _fresh(ts, now, tolerance)
        if not _any_equal(_mac(key, ts.encode() + b"." + body), v1):
            raise SignatureError("no Stripe-Signature v1 entry matches")
        event_id = _field(body, "id")
        return event_id or hashlib.sha256(body).hexdigest()
    if verifier == "github":
        sig = headers.get("x-hub-signature-256", "")
        if not sig.startswith("sha256="):
            raise SignatureError("X-Hub-Signature-256: sha256=<hex> is needed")
        if not hmac.compare_digest(_mac(key, body), _unhex(sig.removeprefix("sha256="))):
            raise SignatureError("X-Hub-Signature-256 does not match")
        return headers.get("x-github-delivery") or hashlib.sha256(body).hexdigest()
    if verifier == "slack":
        sig, ts = headers.get("x-slack-signature", ""), headers.get("x-slack-request-timestamp")
        if not sig.startswith("v0=") or ts is None:
            raise SignatureError("X-Slack-Signature: v0=<hex> and X-Slack-Request-Timestamp")
        _fresh(ts, now, tolerance)
        want = _mac(key, f"v0:{ts}:".encode() + body)
        if not hmac.compare_digest(want, _unhex(sig.removeprefix("v0="))):
            raise SignatureError("X-Slack-Signature does not match")
        return _field(body, "event_id") or hashlib.sha256(body).hexdigest()
    raise ValueError(f"unknown webhook verifier {verifier!r}")


def _field(body: bytes, name: str) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to read
        return None
    value = data.get(name) if isinstance(data, dict) else None
    return value if isinstance(value, str) and value else None


def _endpoint(app: AppCore, hook: WebhookRoute) -> Callable[[Request], Awaitable[Response]]:

    async def endpoint(request: Request) -> Response:
        try:
            body = await app.read_body(request)
            now = app.service.runtime.clock.now()
            try:
                delivery = verify_signature(
                    hook.verifier, hook.secret, request.headers, body, now, hook.tolerance
                )
            except SignatureError as exc:
                raise HTTPProblem("invalid-signature", str(exc)) from exc
            event = WebhookEvent(hook.verifier, delivery, request.headers, body)
            got = hook.route(event)
            target = await got if inspect.isawaitable(got) else got
            if target is None:
                return Response(status_code=204)
            key = f"webhook:{hook.verifier}:{delivery}"
            fp = hashlib.sha256(f"webhook\0{hook.path}".encode() + body).hexdigest()
            first = await app.recall(target.run_id, key, fp)
            if first is not None:
                return first
            data = {"output": target.output, "action": target.action}
            result = await app.service.resume(
                target.run_id,
                data,
                target.node_id,
                by=f"webhook:{hook.verifier}",
                idempotency_key=key,
            )
            response = json_response(outcome_view(app.service, result))
            return await app.remember(target.run_id, key, fp, response)
        except Exception as exc:
            return app.error_response(request, exc)

    return endpoint


def webhook_routes(app: AppCore, webhooks: Sequence[WebhookRoute]) -> list[BaseRoute]:
    """The routes of the app's webhooks."""
    return [
        Route(h.path, _endpoint(app, h), methods=["POST"], name=h.name or f"webhook:{h.path}")
        for h in webhooks
    ]
