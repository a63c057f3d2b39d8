"""Errors a route can meet that are not the caller's mistakes in the body: each has its type.

A real uvicorn server and a real HTTP client, as the other HTTP tests: a webhook route reading
a body that is not JSON, the service's own idempotency check, and the store's errors a route
(a webhook's, or any user code the app runs) can raise.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

import flowcraft
from flowcraft import FlowService
from flowcraft.http import PROBLEM_TYPES, WebhookEvent, WebhookRoute, WebhookTarget
from flowcraft.http._problems import problem_of
from flowcraft.testing import FakeClock
from tests.adapters._server import ADMIN, DECIDER, bearer, build_app, build_service, serve

SECRET = "whsec_test"
NOW = 1_700_000_000


def signed(body: bytes, ts: int = NOW) -> dict[str, str]:
    mac = hmac.new(SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={ts},v1={mac}"}


class Env:
    def __init__(self, service: FlowService, client: httpx.Client) -> None:
        self.service, self.client = service, client

    def start(self) -> str:
        r = self.client.post("/executions", json={"flow_id": "approval"}, headers=bearer(ADMIN))
        assert r.status_code == 201, r.text
        run_id: str = r.json()["id"]
        return run_id


@pytest.fixture
def env() -> Iterator[Env]:
    service = build_service(clock=FakeClock(datetime.fromtimestamp(NOW, UTC)))

    def read(event: WebhookEvent) -> WebhookTarget | None:
        data = event.json()
        return WebhookTarget(run_id=data["run_id"], node_id="manager", action="approved",
                             output={"approved": True})

    async def rollback(event: WebhookEvent) -> WebhookTarget | None:
        # Any user code a route runs may call the service and meet its errors.
        await service.rollback(event.json()["run_id"], 999)
        return None

    def busy(event: WebhookEvent) -> WebhookTarget | None:
        raise flowcraft.RunActiveError(event.json()["run_id"], "worker-1", "delete")

    hooks = [
        WebhookRoute("/hooks/read", verifier="stripe", secret=SECRET, route=read),
        WebhookRoute("/hooks/rollback", verifier="stripe", secret=SECRET, route=rollback),
        WebhookRoute("/hooks/busy", verifier="stripe", secret=SECRET, route=busy),
    ]
    with serve(build_app(service, webhooks=hooks)) as url, httpx.Client(
        base_url=url, timeout=20
    ) as client:
        yield Env(service, client)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b"token=abc&team_id=T1", "is not JSON"),
        (b"\xff\xfe{}", "is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
    ids=["form", "not-utf8", "deep"],
)
def test_a_webhook_body_its_route_cannot_read_as_json_is_a_422_naming_why(
    env: Env, body: bytes, said: str
) -> None:
    """``WebhookEvent.json()`` of a body that is not JSON (was: a raw error, a 500)."""
    run_id = env.start()
    r = env.client.post("/hooks/read", content=body, headers=signed(body))
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:flowcraft:problem:webhook-payload"
    assert said in problem["detail"]
    assert "stripe" in problem["detail"]
    assert r.headers["content-type"] == "application/problem+json"
    run = env.client.get(f"/executions/{run_id}", headers=bearer(ADMIN)).json()
    assert run["status"] == "awaiting"


def test_webhook_payload_error_is_a_flowcraft_value_error() -> None:
    event = WebhookEvent("github", "d-1", {}, b"not json")
    with pytest.raises(flowcraft.WebhookPayloadError) as caught:
        event.json()
    assert isinstance(caught.value, ValueError)
    assert caught.value.provider == "github"
    assert caught.value.delivery_id == "d-1"
    assert "is not JSON" in caught.value.detail


async def _decide_through_the_service(service: FlowService, run_id: str) -> None:
    await service.resume(run_id, {"output": {"approved": True}, "action": "approved"},
                         "manager", by="cli", idempotency_key="mail-1")


def test_a_key_the_service_saw_with_another_decision_is_idempotency_key_reused(
    env: Env,
) -> None:
    """A key first used through another door (was: 422 ``resume-data``)."""
    import anyio

    run_id = env.start()
    anyio.run(_decide_through_the_service, env.service, run_id)
    r = env.client.post(
        f"/executions/{run_id}/resume",
        json={"output": {"approved": False}, "action": "rejected", "node_id": "manager"},
        headers={**bearer(DECIDER), "Idempotency-Key": "mail-1"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:flowcraft:problem:idempotency-key-reused"
    assert r.json()["run_id"] == run_id


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [("/hooks/rollback", 404, "checkpoint-not-found"), ("/hooks/busy", 409, "run-active")],
)
def test_store_refusals_a_route_meets_are_not_an_outage(
    env: Env, path: str, status: int, kind: str
) -> None:
    """CheckpointNotFoundError and RunActiveError (were: 503 ``store-unavailable``)."""
    run_id = env.start()
    body = b'{"run_id": "' + run_id.encode() + b'"}'
    r = env.client.post(path, content=body, headers=signed(body))
    assert (r.status_code, r.json()["type"]) == (status, f"urn:flowcraft:problem:{kind}"), r.text
    assert r.json()["run_id"] == run_id


def test_each_refusal_class_has_its_own_problem_type() -> None:
    """No two of these classes share a type, and each type's status is the documented one."""
    cases: list[tuple[Exception, str]] = [
        (flowcraft.IdempotencyKeyReusedError("r", "k"), "idempotency-key-reused"),
        (flowcraft.ResumeDataError("r", "n", "bad"), "resume-data"),
        (flowcraft.CheckpointNotFoundError("r", 9, (1, 2)), "checkpoint-not-found"),
        (flowcraft.RunActiveError("r", "w", "delete"), "run-active"),
        (flowcraft.ApprovalRefusedError("r", "n", "bob", "why", "todo"), "approval-refused"),
        (flowcraft.WebhookPayloadError("stripe", "d", "is not JSON"), "webhook-payload"),
        (flowcraft.StoreError("down"), "store-unavailable"),
    ]
    for exc, name in cases:
        found = problem_of(exc)
        assert found is not None, exc
        assert found.name == name, (exc, found)
        assert found.status == PROBLEM_TYPES[name]
    assert PROBLEM_TYPES["checkpoint-not-found"] == 404
    assert PROBLEM_TYPES["run-active"] == 409
