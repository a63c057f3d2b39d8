"""``flowcraft.http``: the HTTP front door of a ``FlowService`` (extra ``http``).

``create_app(service, auth=BearerAuth({...}))`` returns a Starlette (ASGI) application with the
routes of DESIGN §10: start, list, get, pause, resume, release, cancel, history, stats, health,
``/openapi.json``; errors are RFC 9457 problem documents. Serve it with uvicorn, or mount it in
any Starlette / FastAPI / Litestar application.
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "flowcraft.http needs the 'http' extra: pip install 'flowcraft[http]'"
    ) from exc

from flowcraft.http._app import FlowApp, create_app
from flowcraft.http._auth import Auth, BearerAuth, Principal
from flowcraft.http._pages import approval_link
from flowcraft.http._problems import PROBLEM_TYPES, type_uri
from flowcraft.http._types import (
    Health,
    PausedExecution,
    PausedList,
    Problem,
    ResumeBody,
    StartBody,
)
from flowcraft.http._webhooks import (
    Verifier,
    WebhookEvent,
    WebhookRoute,
    WebhookTarget,
    verify_signature,
)
from flowcraft.views import (
    AwaitingView,
    ExecutionList,
    ExecutionSummary,
    ExecutionView,
    HistoryView,
)

__all__ = (
    "PROBLEM_TYPES",
    "Auth",
    "AwaitingView",
    "BearerAuth",
    "ExecutionList",
    "ExecutionSummary",
    "ExecutionView",
    "FlowApp",
    "Health",
    "HistoryView",
    "PausedExecution",
    "PausedList",
    "Principal",
    "Problem",
    "ResumeBody",
    "StartBody",
    "Verifier",
    "WebhookEvent",
    "WebhookRoute",
    "WebhookTarget",
    "approval_link",
    "create_app",
    "type_uri",
    "verify_signature",
)
