"""The REST API through a real uvicorn server and an HTTP client: the seed's scenario and more."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import msgspec
import pytest

from flowcraft import Approvals, FlowRuntime, FlowService, create_flow
from flowcraft.http import ExecutionView
from flowcraft.stores import MemoryStore
from tests.adapters._server import (
    ADMIN,
    DECIDER,
    NOBODY,
    READER,
    STARTER,
    bearer,
    build_app,
    build_service,
    serve,
)


@pytest.fixture
def effects() -> list[str]:
    return []


@pytest.fixture
def base_url(effects: list[str]) -> Iterator[str]:
    with serve(build_app(build_service(effects=effects))) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as c:
        yield c


async def start(client: httpx.AsyncClient, flow: str = "seed", **extra: Any) -> dict[str, Any]:
    r = await client.post("/executions", json={"flow_id": flow, **extra}, headers=bearer(STARTER))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_seed_scenario_start_list_pause_resume_history(
    client: httpx.AsyncClient, effects: list[str]
) -> None:
    """start → paused list → pause (hold) → release → resume with resume_data → history."""
    run = await start(client, state={"tenant": "acme"})
    run_id = run["id"]
    assert run["status"] == "awaiting"
    assert [a["node_id"] for a in run["awaiting"]] == ["require-approval"]

    r = await client.get("/executions/paused", params={"limit": 20}, headers=bearer(READER))
    assert r.status_code == 200
    listed = r.json()
    assert listed["count"] == 1
    item = listed["executions"][0]
    assert item["id"] == run_id
    assert item["paused_reason"] == "Requires manager approval"
    assert item["resume_count"] == 0

    r = await client.post(
        f"/executions/{run_id}/pause", json={"reason": "Manual review"}, headers=bearer(DECIDER)
    )
    assert r.status_code == 200, r.text
    assert r.json()["held"] is True
    assert r.json()["paused_reason"] == "Manual review"

    # Held: a decision is refused with 423 naming who holds it, and nothing runs.
    r = await client.post(
        f"/executions/{run_id}/resume",
        json={"resume_data": {"approved": True}},
        headers=bearer(DECIDER),
    )
    assert r.status_code == 423
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"] == "urn:flowcraft:problem:run-held"
    assert r.json()["held_by"] == "alice"
    assert effects == []

    r = await client.post(
        f"/executions/{run_id}/release", json={"reason": "checked"}, headers=bearer(DECIDER)
    )
    assert r.status_code == 200, r.text

    # The seed's curl: no content type, body {"resume_data": {...}}.
    r = await client.post(
        f"/executions/{run_id}/resume",
        content=b'{"resume_data": {"approved": true}}',
        headers={**bearer(DECIDER), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed"
    assert done["outputs"]["process"] == "paid"
    assert effects == [f"{run_id}:process"]

    r = await client.get(f"/executions/{run_id}/history", headers=bearer(READER))
    assert r.status_code == 200
    events = [(h["event"], h.get("by")) for h in r.json()["history"]]
    assert ("hold", "alice") in events
    assert ("release", "alice") in events
    reasons = [h.get("reason") for h in r.json()["history"] if h["event"] == "release"]
    assert reasons == ["checked"]  # the body's reason, recorded
    assert ("resume", "alice") in events

    r = await client.get(f"/executions/{run_id}", headers=bearer(READER))
    assert r.json()["status"] == "completed"
    r = await client.get("/executions", params={"status": "completed"}, headers=bearer(READER))
    assert [e["id"] for e in r.json()["executions"]] == [run_id]
    r = await client.get("/stats", headers=bearer(READER))
    assert r.json()["by_status"] == {"completed": 1}
    r = await client.get("/health", headers=bearer(READER))
    assert r.json() == {"status": "ok", "detail": None}


ROUTES: list[tuple[str, str, str]] = [
    ("POST", "/executions", "execution:start"),
    ("GET", "/executions", "execution:read"),
    ("GET", "/executions/paused", "execution:read"),
    ("GET", "/executions/{id}", "execution:read"),
    ("POST", "/executions/{id}/pause", "execution:cancel"),
    ("POST", "/executions/{id}/resume", "execution:cancel"),
    ("POST", "/executions/{id}/release", "execution:cancel"),
    ("POST", "/executions/{id}/cancel", "execution:cancel"),
    ("GET", "/executions/{id}/history", "execution:read"),
    ("GET", "/stats", "execution:read"),
    ("GET", "/health", "execution:read"),
]
HOLDS = {
    READER: {"execution:read"},
    STARTER: {"execution:start", "execution:read"},
    DECIDER: {"execution:cancel", "execution:read"},
    NOBODY: set(),
}


async def test_every_route_answers_401_without_credentials_and_403_without_permission(
    client: httpx.AsyncClient, effects: list[str]
) -> None:
    run_id = (await start(client))["id"]
    for method, path, permission in ROUTES:
        url = path.replace("{id}", run_id)
        body = {"flow_id": "seed"} if path == "/executions" else {}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
            r = await client.request(
                method, url, json=body if method == "POST" else None, headers=headers
            )
            assert r.status_code == 401, (method, url, headers)
            assert r.headers["www-authenticate"] == "Bearer"
            assert r.json()["type"] == "urn:flowcraft:problem:unauthorized"
        for token, perms in HOLDS.items():
            if permission in perms:
                continue
            r = await client.request(
                method, url, json=body if method == "POST" else None, headers=bearer(token)
            )
            assert r.status_code == 403, (method, url, token)
            assert r.json()["type"] == "urn:flowcraft:problem:forbidden"
    assert effects == []
    r = await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))
    assert r.json()["status"] == "awaiting"


async def test_a_quorum_wait_shows_who_approved_it_so_far() -> None:
    """``AwaitingView.approved_by``: the votes a quorum wait has, in order, on every read."""
    flow = (
        create_flow("quorum")
        .wait("approve", approvals=Approvals(required=2))
        .node("pay", lambda n: "paid")
        .edge("approve", "pay", action="approve")
    )
    service = FlowService(FlowRuntime(), MemoryStore(), [flow])
    with serve(build_app(service)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            started = await client.post(
                "/executions", json={"flow_id": "quorum"}, headers=bearer(ADMIN)
            )
            assert started.status_code == 201, started.text
            run_id = started.json()["id"]
            assert started.json()["awaiting"][0]["approved_by"] == []
            vote = {"action": "approve", "output": "ok"}
            one = await client.post(
                f"/executions/{run_id}/resume", json=vote, headers=bearer(DECIDER)
            )
            assert one.status_code == 200, one.text
            assert one.json()["awaiting"][0]["approved_by"] == ["alice"]
            shown = await client.get(f"/executions/{run_id}", headers=bearer(READER))
            view = msgspec.json.decode(shown.content, type=ExecutionView)
            assert [a.approved_by for a in view.awaiting] == [["alice"]]
            two = await client.post(
                f"/executions/{run_id}/resume", json=vote, headers=bearer(ADMIN)
            )
            assert two.status_code == 200, two.text
            assert two.json()["status"] == "completed"
            assert two.json()["awaiting"] == []


def test_a_number_out_of_range_is_a_422_and_a_usage_exit_not_a_store_outage() -> None:
    """``OutOfRangeError`` is a ``StoreError`` raised for the caller's number: the API answers
    422 ``invalid-body`` and the CLI exits with the usage code, not 503 / a generic failure."""
    from flowcraft import OutOfRangeError
    from flowcraft.cli.exits import USAGE, exit_code
    from flowcraft.http._problems import problem_of

    exc = OutOfRangeError("priority", 2**64, run_id="r1")
    problem = problem_of(exc)
    assert problem is not None
    assert problem.name == "invalid-body"
    assert exit_code(exc) == USAGE


@pytest.mark.parametrize(
    "run_id", ["", "x" * 129, "a b", "run\n"], ids=["empty", "129", "space", "newline"]
)
async def test_a_start_with_a_run_id_outside_the_doors_rule_is_422_and_starts_nothing(
    client: httpx.AsyncClient, run_id: str
) -> None:
    """The run id rule every door shares (``flowcraft.views.RunId``): 422 naming it."""
    r = await client.post(
        "/executions", json={"flow_id": "seed", "run_id": run_id}, headers=bearer(STARTER)
    )
    assert (r.status_code, r.json()["type"]) == (422, "urn:flowcraft:problem:invalid-body")
    assert "run_id" in r.json()["detail"]
    listed = await client.get("/executions", headers=bearer(READER))
    assert listed.json()["count"] == 0


async def test_a_path_run_id_outside_the_rule_is_404_before_the_store(
    client: httpx.AsyncClient,
) -> None:
    """A path id no run can have (a newline, 129 characters) is a 404, as an unknown run."""
    for path in ("/executions/run%0A", "/executions/" + "x" * 129, "/executions/a%20b/history"):
        r = await client.get(path, headers=bearer(READER))
        assert (r.status_code, r.json()["type"]) == (404, "urn:flowcraft:problem:run-not-found")


@pytest.mark.parametrize(
    "if_match",
    [b'"' + b"9" * 5000 + b'"', b'"\xb2"', b'"' + b"9" * 20 + b'"', b'W/"1 "'],
    ids=["5000-digits", "superscript-two", "beyond-64-bits", "space-inside"],
)
async def test_an_if_match_no_revision_can_have_is_412_not_500(
    client: httpx.AsyncClient, effects: list[str], if_match: bytes
) -> None:
    """Digits int() refuses (4,300 and more, "²") or beyond 64 bits: 412, nothing decided."""
    run_id = (await start(client))["id"]
    r = await client.post(
        f"/executions/{run_id}/resume",
        json={"resume_data": {"approved": True}},
        headers=[(b"Authorization", f"Bearer {DECIDER}".encode()), (b"If-Match", if_match)],
    )
    assert r.status_code == 412, r.text
    assert r.json()["type"] == "urn:flowcraft:problem:precondition-failed"
    assert len(r.json()["detail"]) < 200
    got = (await client.get(f"/executions/{run_id}", headers=bearer(READER))).json()
    assert got["status"] == "awaiting"
    assert effects == []


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("pause", {"reason": "r" * 1001}, "reason"),
        ("pause", {"request_id": "q" * 256}, "request_id"),
        ("cancel", {"reason": "r" * 1001}, "reason"),
        ("release", {"reason": "r" * 1001}, "reason"),
    ],
    ids=["pause-reason", "pause-request-id", "cancel-reason", "release-reason"],
)
async def test_a_reason_or_request_id_beyond_the_doors_rule_is_422_naming_it(
    client: httpx.AsyncClient, route: str, body: dict[str, str], field: str
) -> None:
    """reason at most 1,000 characters, request_id at most 255 (were: only the body's size)."""
    run_id = (await start(client))["id"]
    r = await client.post(f"/executions/{run_id}/{route}", json=body, headers=bearer(DECIDER))
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:flowcraft:problem:invalid-body"
    assert f"$.{field}" in r.json()["detail"]
    shown = (await client.get(f"/executions/{run_id}", headers=bearer(READER))).json()
    assert (shown["status"], shown["held"]) == ("awaiting", False)
    history = (await client.get(f"/executions/{run_id}/history", headers=bearer(READER))).json()
    assert not {"hold", "cancel"} & {h["event"] for h in history["history"]}
    at_limit = {k: v[: 1000 if k == "reason" else 255] for k, v in body.items()}
    ok = await client.post(f"/executions/{run_id}/{route}", json=at_limit, headers=bearer(DECIDER))
    assert ok.status_code == 200, ok.text
