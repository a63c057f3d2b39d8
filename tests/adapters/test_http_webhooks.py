"""Webhook verifiers against the providers' documented vectors; deliveries resume runs once."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from starlette.datastructures import Headers

from flowcraft.http import WebhookEvent, WebhookRoute, WebhookTarget, verify_signature
from flowcraft.http._webhooks import SignatureError
from flowcraft.testing import FakeClock
from tests.adapters._server import ADMIN, bearer, build_app, build_service, serve

# GitHub: docs.github.com "Validating webhook deliveries", the worked example.
GITHUB = (
    "It's a Secret to Everybody",
    b"Hello, World!",
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
)
# Slack: "Verifying requests from Slack", the worked example.
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
    b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
    b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
    b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
    b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
)
SLACK_SIG = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
# Standard Webhooks: the specification's test vector.
STANDARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STANDARD_ID, STANDARD_TS = "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330"
STANDARD_BODY = b'{"test": 2432232314}'
STANDARD_SIG = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def at(ts: str) -> datetime:
    return datetime.fromtimestamp(int(ts), UTC)


def test_github_documented_vector() -> None:
    secret, body, sig = GITHUB
    h = Headers({"X-Hub-Signature-256": sig, "X-GitHub-Delivery": "d-1"})
    assert verify_signature("github", secret, h, body, datetime.now(UTC)) == "d-1"
    with pytest.raises(SignatureError):
        verify_signature("github", secret, h, body + b" ", datetime.now(UTC))


def test_slack_documented_vector_and_timestamp_tolerance() -> None:
    h = Headers({"X-Slack-Signature": SLACK_SIG, "X-Slack-Request-Timestamp": SLACK_TS})
    verify_signature("slack", SLACK_SECRET, h, SLACK_BODY, at(SLACK_TS))
    late = datetime.fromtimestamp(int(SLACK_TS) + 301, UTC)
    with pytest.raises(SignatureError, match="more than 300s"):
        verify_signature("slack", SLACK_SECRET, h, SLACK_BODY, late)
    with pytest.raises(SignatureError):
        verify_signature("slack", "other", h, SLACK_BODY, at(SLACK_TS))


def test_standard_webhooks_spec_vector_with_several_signatures() -> None:
    h = Headers(
        {
            "webhook-id": STANDARD_ID,
            "webhook-timestamp": STANDARD_TS,
            "webhook-signature": f"v1,Zm9v {STANDARD_SIG}",
        }
    )
    got = verify_signature("standard", STANDARD_SECRET, h, STANDARD_BODY, at(STANDARD_TS))
    assert got == STANDARD_ID
    with pytest.raises(SignatureError):
        verify_signature("standard", STANDARD_SECRET, h, b'{"test": 1}', at(STANDARD_TS))


def stripe_header(secret: str, ts: int, body: bytes) -> str:
    # Stripe's documented scheme: HMAC-SHA256(secret, f"{t}.{payload}") hex, header t=...,v1=...
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac},v0=deadbeef"


def test_stripe_documented_scheme_and_tolerance() -> None:
    body = b'{"id": "evt_1", "object": "event"}'
    h = Headers({"Stripe-Signature": stripe_header("whsec_test", 1700000000, body)})
    assert verify_signature("stripe", "whsec_test", h, body, at("1700000100")) == "evt_1"
    with pytest.raises(SignatureError):
        verify_signature("stripe", "whsec_test", h, body, at("1700000400"))
    with pytest.raises(SignatureError):
        verify_signature("stripe", "whsec_other", h, body, at("1700000000"))


@pytest.fixture
def effects() -> list[str]:
    return []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(at(SLACK_TS))


@pytest.fixture
def base_url(effects: list[str], clock: FakeClock) -> Iterator[str]:
    service = build_service(effects=effects, clock=clock)

    def route(event: WebhookEvent) -> WebhookTarget | None:
        data = event.json()
        if data.get("type") != "payment":
            return None
        return WebhookTarget(
            run_id=data["run_id"],
            node_id="manager",
            output={"approved": data["paid"]},
            action="approved" if data["paid"] else "rejected",
        )

    hook = WebhookRoute("/hooks/stripe", verifier="stripe", secret="whsec_test", route=route)
    with serve(build_app(service, webhooks=[hook])) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as c:
        yield c


async def test_a_delivery_resumes_its_run_once_and_a_redelivery_answers_the_first_outcome(
    client: httpx.AsyncClient, effects: list[str], clock: FakeClock
) -> None:
    r = await client.post("/executions", json={"flow_id": "approval"}, headers=bearer(ADMIN))
    run_id = r.json()["id"]
    body = json.dumps({"id": "evt_9", "type": "payment", "run_id": run_id, "paid": True}).encode()
    now = int(clock.now().timestamp())
    first = await client.post(
        "/hooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_header("whsec_test", now, body)},
    )
    assert first.status_code == 200, first.text
    assert first.json()["status"] == "completed"
    clock.advance(60)  # Stripe retries re-sign with a new timestamp
    again = await client.post(
        "/hooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_header("whsec_test", now + 60, body)},
    )
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert effects == [f"{run_id}:pay"]
    history = (await client.get(f"/executions/{run_id}/history", headers=bearer(ADMIN))).json()
    assert [h.get("by") for h in history["history"] if h["event"] == "resume"] == ["webhook:stripe"]
    forged = await client.post(
        "/hooks/stripe", content=body, headers={"Stripe-Signature": f"t={now},v1=00"}
    )
    assert forged.status_code == 401
    assert forged.json()["type"] == "urn:flowcraft:problem:invalid-signature"
    stale = await client.post(
        "/hooks/stripe",
        content=body,
        headers={"Stripe-Signature": stripe_header("whsec_test", now - 3600, body)},
    )
    assert stale.status_code == 401
    other = json.dumps({"id": "evt_10", "type": "ping"}).encode()
    ignored = await client.post(
        "/hooks/stripe",
        content=other,
        headers={"Stripe-Signature": stripe_header("whsec_test", now + 60, other)},
    )
    assert ignored.status_code == 204


def test_hostile_timestamps_and_deep_json_are_answered_not_500() -> None:
    """A 400-digit timestamp (was: OverflowError) is 401; deep signed JSON (RecursionError) 204."""

    def route(event: WebhookEvent) -> WebhookTarget | None:
        return None

    hooks = [
        WebhookRoute("/hooks/standard", verifier="standard", secret=STANDARD_SECRET, route=route),
        WebhookRoute("/hooks/slack", verifier="slack", secret=SLACK_SECRET, route=route),
        WebhookRoute("/hooks/stripe", verifier="stripe", secret="whsec_test", route=route),
    ]
    clock = FakeClock(at(SLACK_TS))
    huge = "9" * 400
    app = build_app(build_service(clock=clock), webhooks=hooks)
    with serve(app) as url, httpx.Client(base_url=url, timeout=20) as client:
        standard = client.post(
            "/hooks/standard",
            content=STANDARD_BODY,
            headers={
                "webhook-id": STANDARD_ID,
                "webhook-timestamp": huge,
                "webhook-signature": STANDARD_SIG,
            },
        )
        slack = client.post(
            "/hooks/slack",
            content=SLACK_BODY,
            headers={"X-Slack-Signature": SLACK_SIG, "X-Slack-Request-Timestamp": huge},
        )
        deep = b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        now = int(clock.now().timestamp())
        stripe = client.post(
            "/hooks/stripe",
            content=deep,
            headers={"Stripe-Signature": stripe_header("whsec_test", now, deep)},
        )
    for r in (standard, slack):
        assert r.status_code == 401, r.text
        assert r.json()["type"] == "urn:flowcraft:problem:invalid-signature"
        assert "unix seconds" in r.json()["detail"]
    assert stripe.status_code == 204, stripe.text
