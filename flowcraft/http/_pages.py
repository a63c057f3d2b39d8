"""Approval pages: signed links a person opens in a browser to decide one wait.

A link is ``{base_url}/approvals/{token}``; the token is ``<payload>.<signature>``, both
base64url without padding. The payload is JSON ``{"r": run_id, "n": node_id, "v": revision,
"a": approver, "e": expiry (unix seconds), "j": nonce}``; the signature is HMAC-SHA256 over
``b"flowcraft.approval.v1." + payload`` with ``link_secret``, compared in constant time.

* ``GET`` (and ``HEAD``) renders the wait and changes nothing: a mail scanner may fetch a link
  any number of times.
* ``POST`` decides. It is CSRF-safe: the form carries a token derived from the link with the
  secret (``HMAC(secret, "csrf." + token)``) that a page on another origin cannot read, a
  ``Sec-Fetch-Site: cross-site`` or foreign ``Origin`` is refused, and there are no cookies
  (the link is the capability) so there is no ambient credential to ride on.
* A link is bound to run, node, revision (the run must still be where the approver saw it),
  approver (recorded as ``by``) and expiry, and works once: the decision is made with the
  idempotency key ``approval:<nonce>``, so a double submit answers the same outcome and any
  later use shows who decided.

Every refusal and failure has the status the JSON API gives the same case (``PROBLEM_TYPES``,
and ``AppCore.problem_for`` for the service's errors): 409 another decision won, 410 expired,
412 the run moved on since the link was made, 422 an unknown action or data the wait refuses,
423 held, 503 the store is unavailable. A page never answers with a traceback.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route

import flowcraft
from flowcraft import RunResult
from flowcraft.http._auth import CANCEL, Principal, identify
from flowcraft.http._base import AppCore
from flowcraft.http._problems import PROBLEM_TYPES, HTTPProblem
from flowcraft.stores import HistoryRecord, StoredRun
from flowcraft.views import actions_of, schema_of

__all__ = ["LinkClaims", "approval_link", "page_routes"]

_DOMAIN = b"flowcraft.approval.v1."
_Endpoint = Callable[[Request], Awaitable[Response]]


class LinkClaims(msgspec.Struct, frozen=True, kw_only=True):
    """What an approval link is bound to."""

    r: str
    n: str
    v: int
    a: str
    e: int
    j: str


_LINK = msgspec.json.Decoder(LinkClaims)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, claims: LinkClaims) -> str:
    """The token of a link."""
    payload = _b64(msgspec.json.encode(claims))
    mac = hmac.new(secret, _DOMAIN + payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(secret: bytes, token: str) -> LinkClaims | None:
    """The claims of a token whose signature verifies, else None."""
    payload, _, mac = token.partition(".")
    try:
        given = _unb64(mac)
        want = hmac.new(secret, _DOMAIN + payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(given, want):
            return None
        return _LINK.decode(_unb64(payload))
    except (ValueError, msgspec.DecodeError):
        return None


def csrf_token(secret: bytes, token: str) -> str:
    """The form token a POST for ``token`` must carry."""
    return _b64(hmac.new(secret, b"csrf." + token.encode(), hashlib.sha256).digest())


async def approval_link(
    app: AppCore,
    run_id: str,
    node_id: str,
    *,
    approver: str,
    ttl: float | timedelta = timedelta(days=3),
) -> str:
    """A signed link that lets ``approver`` decide ``node_id`` of ``run_id`` once, until ``ttl``.

    The link is bound to the run's current revision: if the run moves on before it is used,
    the page says so instead of applying a decision made on stale information.

    Raises:
        RuntimeError: the app has no ``link_secret`` or ``base_url``.
        RunNotFoundError, NodeNotAwaitingError: there is nothing to decide.
    """
    if app.link_secret is None or app.base_url is None:
        raise RuntimeError("approval links need create_app(..., link_secret=, base_url=)")
    result = await app.service.result(run_id)
    waiting = [a.node_id for a in result.awaiting]
    if node_id not in waiting:
        raise flowcraft.NodeNotAwaitingError(run_id, node_id, tuple(waiting))
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
    expiry = app.service.runtime.clock.now() + timedelta(seconds=seconds)
    claims = LinkClaims(
        r=run_id,
        n=node_id,
        v=result.revision,
        a=approver,
        e=int(expiry.timestamp()),
        j=secrets.token_urlsafe(12),
    )
    return f"{app.base_url}/approvals/{sign(app.link_secret, claims)}"


# --- rendering -------------------------------------------------------------------------------

_STYLE = """
body{font:16px/1.5 system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem} dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}
dt{color:#666} .actions button{margin-right:.5rem;padding:.5rem 1rem;font-size:1rem}
pre{background:#f6f6f6;padding:.8rem;overflow:auto} .notice{padding:1rem;background:#fff4d6}
label{display:block;margin:.4rem 0} table{border-collapse:collapse} td,th{padding:.2rem .6rem}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _page(title: str, body: str, status: int = 200, *, nonce: str | None = None) -> Response:
    script = ""
    script_src = "'none'"
    if nonce is not None:
        # The diagram: Mermaid from its CDN when reachable; the escaped source shows otherwise.
        script = (
            f'<script type="module" nonce="{nonce}">'
            'import m from "https://cdn.jsdelivr.net/npm/mermaid@11/dist/mermaid.esm.min.mjs";'
            "m.initialize({startOnLoad:true,securityLevel:'strict'});</script>"
        )
        script_src = f"'nonce-{nonce}' https://cdn.jsdelivr.net"
    doc = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main>{body}</main>{script}</body></html>"
    )
    headers = {
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",  # no-referrer would make Origin "null"
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'unsafe-inline'; script-src {script_src}; "
            "img-src data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
    }
    return HTMLResponse(doc, status, headers=headers)


def _notice(title: str, message: str, status: int) -> Response:
    return _page(title, f'<h1>{_e(title)}</h1><p class="notice">{_e(message)}</p>', status)


def _refusal(problem: str, title: str, message: str) -> Response:
    """A page refusing a link, with the status of the API's ``problem`` (``PROBLEM_TYPES``)."""
    return _notice(title, message, PROBLEM_TYPES[problem])


def _failure(found: HTTPProblem, title: str | None = None) -> Response:
    """The page of a problem: its status, and its detail unless it is the server's (5xx)."""
    if found.status >= 500:
        message = (
            "The server could not finish this request; nothing was decided. Try again in a "
            "moment (the link still works)."
        )
        return _notice(found.title, message, found.status)
    return _notice(title or found.title, found.detail or found.title, found.status)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _fields(schema: dict[str, Any] | None) -> str:
    """Form fields from a wait's JSON Schema (object properties); a JSON box otherwise."""
    if schema is not None and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = schema.get("$defs", {}).get(name, schema)
    props = (schema or {}).get("properties") if schema else None
    if not props:
        return (
            '<label>Data (JSON, optional)<br><textarea name="output" rows="3" cols="50">'
            "</textarea></label>"
        )
    required = set((schema or {}).get("required", ()))
    rows = []
    for name, spec in props.items():
        kind = spec.get("type")
        label = _e(spec.get("title") or name)
        field = f"field.{name}"
        req = " required" if name in required and kind != "boolean" else ""
        if kind == "boolean":
            control = f'<input type="checkbox" name="{_e(field)}" value="true">'
        elif kind in ("integer", "number"):
            step = "1" if kind == "integer" else "any"
            control = f'<input type="number" step="{step}" name="{_e(field)}"{req}>'
        else:
            control = f'<input type="text" name="{_e(field)}"{req}>'
        rows.append(f"<label>{control} {label}</label>")
    return "".join(rows)


def _output_from_form(form: dict[str, str], schema: dict[str, Any] | None) -> Any:
    """The decision's output from the submitted form (typed by the schema's properties)."""
    if "output" in form:
        text = form["output"].strip()
        return json.loads(text) if text else None
    if schema is not None and "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = schema.get("$defs", {}).get(name, schema)
    props: dict[str, Any] = (schema or {}).get("properties", {})
    out: dict[str, Any] = {}
    for name, spec in props.items():
        raw = form.get(f"field.{name}")
        kind = spec.get("type")
        if kind == "boolean":
            out[name] = raw == "true"
        elif raw is None or raw == "":
            continue
        elif kind == "integer":
            out[name] = int(raw)
        elif kind == "number":
            out[name] = float(raw)
        else:
            out[name] = raw
    return out


def _decisions(history: list[HistoryRecord]) -> str:
    rows = [
        f"<tr><td>{_e(_when(h.at))}</td><td>{_e(h.event)}</td><td>{_e(h.node_id or '')}</td>"
        f"<td>{_e(h.action or '')}</td><td>{_e(h.by or '')}</td></tr>"
        for h in history
        if h.event in ("vote", "resume", "timeout", "hold", "release", "cancel")
    ]
    if not rows:
        return "<p>No decisions yet.</p>"
    head = "<tr><th>when</th><th>what</th><th>node</th><th>action</th><th>by</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


# --- the routes ------------------------------------------------------------------------------


class Pages:
    """The approval page handlers of one app."""

    def __init__(self, app: AppCore) -> None:
        self.app = app

    @property
    def secret(self) -> bytes:
        assert self.app.link_secret is not None
        return self.app.link_secret

    async def check(
        self, token: str, for_post: bool
    ) -> tuple[LinkClaims, StoredRun, RunResult] | Response:
        """The link's claims and run if it may be used now, else the page saying why not."""
        app = self.app
        claims = verify(self.secret, token)
        if claims is None:
            return _refusal(
                "forbidden",
                "This link is not valid",
                "The link was altered or was not issued by this server. Ask for a new one.",
            )
        now = app.service.runtime.clock.now()
        if now.timestamp() > claims.e:
            expired = datetime.fromtimestamp(claims.e, UTC)
            return _refusal(
                "wait-expired",
                "This link has expired",
                f"The link expired at {_when(expired)}. Ask for a new one if a decision is "
                "still needed.",
            )
        try:
            stored = await app.service.get(claims.r)
        except flowcraft.RunNotFoundError:
            return _refusal(
                "run-not-found", "This run no longer exists", f"Run {claims.r} was deleted."
            )
        key = f"approval:{claims.j}"
        if for_post:
            first = await app.service.outcome(claims.r, key)
            if first is not None:
                return claims, stored, first
        result = app.service.result_of(stored) if stored.context else None
        waiting = [a.node_id for a in result.awaiting] if result is not None else []
        if claims.n not in waiting or stored.status in ("completed", "failed", "cancelled"):
            history = await app.service.history(claims.r)
            decided = next(
                (
                    h
                    for h in reversed(history)
                    if h.event in ("resume", "timeout") and h.node_id == claims.n
                ),
                None,
            )
            if decided is not None:
                return _refusal(
                    "already-decided",
                    "Already decided",
                    f"“{claims.n}” was already decided: {decided.action or 'submitted'} by "
                    f"{decided.by or 'an unnamed caller'} at {_when(decided.at)}. "
                    "This link cannot be used again.",
                )
            return _refusal(
                "not-awaiting",
                "Nothing to decide",
                f"Run {claims.r} is {stored.status} and no longer waits on “{claims.n}”.",
            )
        assert result is not None
        if stored.held:
            return _refusal(
                "run-held",
                "This run is on hold",
                f"{stored.paused_by or 'Someone'} put the run on hold at "
                f"{_when(stored.paused_at)} ({stored.pause_reason or 'no reason given'}). "
                "Try again after it is released.",
            )
        if result.revision != claims.v:
            # The link's revision is its If-Match: stale is 412, as in the API.
            return _refusal(
                "precondition-failed",
                "The run changed since this link was sent",
                "What you would decide on is no longer what the link showed. Ask for a new link.",
            )
        wait = next(a for a in result.awaiting if a.node_id == claims.n)
        if wait.requested_by is not None and wait.requested_by == claims.a:
            return _refusal(
                "forbidden",
                "You cannot approve your own request",
                f"{claims.a} requested this decision, so someone else has to make it.",
            )
        return claims, stored, result

    async def show(self, request: Request) -> Response:
        token = request.path_params["token"]
        checked = await self.check(token, for_post=False)
        if isinstance(checked, Response):
            return checked
        claims, stored, result = checked
        app = self.app
        bp, reg = app.service.flow(stored.flow_id)

        wait = next(a for a in result.awaiting if a.node_id == claims.n)
        actions = actions_of(bp, claims.n)
        schema = schema_of(bp, reg, claims.n)
        history = await app.service.history(claims.r)
        expiry = datetime.fromtimestamp(claims.e, UTC)
        buttons = (
            "".join(
                f'<button type="submit" name="action" value="{_e(a)}">{_e(a)}</button>'
                for a in actions
            )
            or '<button type="submit" name="action" value="">Submit</button>'
        )
        state = json.dumps(result.context, indent=2, default=str, sort_keys=True)
        nonce = secrets.token_urlsafe(12)
        body = f"""
<h1>{_e(wait.description or f"Decision needed: {claims.n}")}</h1>
<dl>
<dt>Flow</dt><dd>{_e(stored.flow_id)}</dd>
<dt>Run</dt><dd>{_e(claims.r)}</dd>
<dt>Waiting on</dt><dd>{_e(claims.n)}</dd>
<dt>Requested</dt><dd>{_e(_when(wait.since))} by {_e(wait.requested_by or "the flow")}</dd>
<dt>Decides</dt><dd>{_e(claims.a)}</dd>
<dt>Link expires</dt><dd>{_e(_when(expiry))}</dd>
<dt>Wait expires</dt><dd>{_e(_when(wait.expires_at))}</dd>
</dl>
<h2>Decide</h2>
<form method="post" action="{_e(request.url.path)}">
<input type="hidden" name="csrf" value="{_e(csrf_token(self.secret, token))}">
{_fields(schema)}
<p class="actions">{buttons}</p>
</form>
<h2>Decisions so far</h2>{_decisions(history)}
<h2>The run</h2><pre class="mermaid">{_e(bp.to_mermaid(result))}</pre>
<h2>State</h2><pre>{_e(state)}</pre>
"""
        return _page(f"Decide: {claims.n}", body, nonce=nonce)

    async def decide(self, request: Request) -> Response:
        token = request.path_params["token"]
        app = self.app
        if request.headers.get("sec-fetch-site") == "cross-site" or not self.same_origin(request):
            return _refusal("forbidden", "Refused", "This form can only be sent from its own page.")
        try:
            raw = await app.read_body(request)
        except HTTPProblem as exc:
            return _failure(exc, "Refused")
        form = dict(urllib.parse.parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        if not hmac.compare_digest(form.get("csrf", ""), csrf_token(self.secret, token)):
            return _refusal(
                "forbidden", "Refused", "The form token is missing or wrong. Reload the page."
            )
        checked = await self.check(token, for_post=True)
        if isinstance(checked, Response):
            return checked
        claims, stored, result = checked
        key = f"approval:{claims.j}"
        if result.revision == claims.v:  # not a replay: apply the decision

            bp, reg = app.service.flow(stored.flow_id)
            try:
                output = _output_from_form(form, schema_of(bp, reg, claims.n))
            except ValueError as exc:
                return _refusal("invalid-body", "The form is not valid", str(exc))
            except RecursionError:
                return _refusal(
                    "invalid-body",
                    "The form is not valid",
                    "The data's JSON is nested too deeply; send a flatter value.",
                )
            action = form.get("action") or None
            try:
                result = await app.service.resume(
                    claims.r,
                    {"output": output, "action": action},
                    claims.n,
                    by=claims.a,
                    idempotency_key=key,
                )
            except Exception as exc:  # the API's status for the same refusal
                return _failure(app.problem_for(request, exc), "The decision was not applied")
        status = _e(result.status)
        body = (
            f"<h1>Decision recorded</h1><p>Thank you, {_e(claims.a)}. "
            f'Run {_e(claims.r)} is now <strong id="status">{status}</strong>.</p>'
        )
        return _page("Decision recorded", body)

    def same_origin(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None:
            return True  # not a browser, or an old one: the form token still has to match
        allowed = {f"{request.url.scheme}://{request.url.netloc}"}
        if self.app.base_url:
            parts = urllib.parse.urlsplit(self.app.base_url)
            allowed.add(f"{parts.scheme}://{parts.netloc}")
        return origin in allowed

    async def inbox(self, request: Request) -> Response:
        app = self.app
        principal: Principal | None = await identify(app.auth, request)
        if principal is None:
            return _refusal("unauthorized", "Sign in", "This page needs credentials.")
        if not principal.may(CANCEL):
            return _refusal("forbidden", "Not allowed", f"{principal.name} may not decide runs.")
        page = await app.service.list(status="awaiting", reason="wait", limit=100)
        rows = []
        for stored in page.runs:
            if stored.held or not stored.context:
                continue
            result = app.service.result_of(stored)
            for wait in result.awaiting:
                if wait.reason != "wait" or wait.requested_by == principal.name:
                    continue
                link = await approval_link(
                    app, stored.run_id, wait.node_id, approver=principal.name, ttl=3600
                )
                rows.append(
                    f"<tr><td>{_e(stored.flow_id)}</td><td>{_e(stored.run_id)}</td>"
                    f"<td>{_e(wait.description or wait.node_id)}</td><td>{_e(_when(wait.since))}"
                    f'</td><td><a href="{_e(link)}">open</a></td></tr>'
                )
        table = (
            "<table><tr><th>flow</th><th>run</th><th>waiting for</th><th>since</th><th></th></tr>"
            + "".join(rows)
            + "</table>"
            if rows
            else "<p>Nothing waits for you.</p>"
        )
        return _page("Inbox", f"<h1>Waiting for {_e(principal.name)}</h1>{table}")


def page_routes(app: AppCore) -> list[BaseRoute]:
    """The approval page routes (only when the app has a ``link_secret``)."""
    if app.link_secret is None:
        return []
    pages = Pages(app)

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> _Endpoint:
        async def endpoint(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:  # a store failure, a corrupt record: the API's status
                return _failure(app.problem_for(request, exc))

        return endpoint

    return [
        Route("/approvals/{token}", guarded(pages.show), methods=["GET"], name="approval_page"),
        Route(
            "/approvals/{token}", guarded(pages.decide), methods=["POST"], name="approval_decide"
        ),
        Route("/inbox", guarded(pages.inbox), methods=["GET"], name="inbox"),
    ]

