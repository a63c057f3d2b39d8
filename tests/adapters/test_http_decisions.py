"""Decisions over HTTP: idempotent replays, conflicts naming the winner, and every error status."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft.stores import MemoryStore
from tests.adapters._server import ADMIN, DECIDER, bearer, build_app, build_service, serve
from tests.service._support import Gate


@pytest.fixture
def effects() -> list[str]:
    return []


@pytest.fixture
def base_url(effects: list[str]) -> Iterator[str]:
    with serve(build_app(build_service(effects=effects), max_body=4096)) as url:
        yield url


@pytest.fixture
async def client(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=60)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as c:
        yield c


async def start(client: httpx.AsyncClient, flow: str = "approval") -> str:
    r = await client.post("/executions", json={"flow_id": flow}, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    run_id: str = r.json()["id"]
    return run_id


async def test_fifty_concurrent_identical_resumes_make_one_transition_and_49_replays(
    client: httpx.AsyncClient, effects: list[str]
) -> None:
    run_id = await start(client)
    body = {"output": {"approved": True}, "action": "approved"}
    headers = {**bearer(DECIDER), "Idempotency-Key": "decision-1"}
    responses: list[httpx.Response] = []

    async def send() -> None:
        r = await client.post(f"/executions/{run_id}/resume", json=body, headers=headers)
        responses.append(r)

    async with anyio.create_task_group() as tg:
        for _ in range(50):
            tg.start_soon(send)
    assert [r.status_code for r in responses] == [200] * 50
    assert len({r.content for r in responses}) == 1  # byte for byte
    replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    assert len(replays) == 49
    assert effects == [f"{run_id}:pay"]
    r = await client.get(f"/executions/{run_id}/history", headers=bearer(ADMIN))
    assert [h["event"] for h in r.json()["history"]].count("resume") == 1
    # ...and a later retry still replays the same bytes.
    late = await client.post(f"/executions/{run_id}/resume", json=body, headers=headers)
    assert late.content == responses[0].content
    assert late.headers["idempotent-replayed"] == "true"


async def test_two_different_decisions_give_one_200_and_one_409_naming_the_winner(
    client: httpx.AsyncClient, effects: list[str]
) -> None:
    run_id = await start(client)
    outcomes: dict[str, httpx.Response] = {}

    async def decide(action: str) -> None:
        outcomes[action] = await client.post(
            f"/executions/{run_id}/resume",
            json={"output": {"approved": action == "approved"}, "action": action},
            headers={**bearer(DECIDER), "Idempotency-Key": f"k-{action}"},
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(decide, "approved")
        tg.start_soon(decide, "rejected")
    codes = sorted(r.status_code for r in outcomes.values())
    assert codes == [200, 409]
    winner = next(a for a, r in outcomes.items() if r.status_code == 200)
    loser = next(r for r in outcomes.values() if r.status_code == 409)
    problem = loser.json()
    assert loser.headers["content-type"] == "application/problem+json"
    assert problem["type"] == "urn:flowcraft:problem:already-decided"
    assert problem["decided_action"] == winner
    assert problem["decided_by"] == "alice"
    assert problem["node_id"] == "manager"
    assert len(effects) == 1


async def test_unknown_action_is_422_listing_the_allowed_actions_and_changes_nothing(
    client: httpx.AsyncClient, effects: list[str]
) -> None:
    run_id = await start(client)
    r = await client.post(
        f"/executions/{run_id}/resume",
        json={"output": {"approved": True}, "action": "maybe"},
        headers=bearer(DECIDER),
    )
    assert r.status_code == 422
    assert r.json()["type"] == "urn:flowcraft:problem:unknown-action"
    assert r.json()["allowed_actions"] == ["approved", "rejected"]
    got = (await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))).json()
    assert got["status"] == "awaiting"
    assert got["awaiting"][0]["actions"] == ["approved", "rejected"]
    assert got["awaiting"][0]["schema"]["$ref"].endswith("/Decision")
    assert effects == []


async def test_output_not_matching_the_wait_schema_is_422(client: httpx.AsyncClient) -> None:
    run_id = await start(client)
    r = await client.post(
        f"/executions/{run_id}/resume",
        json={"output": {"approved": "yes please"}, "action": "approved"},
        headers=bearer(DECIDER),
    )
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:flowcraft:problem:resume-data"


async def test_stale_if_match_is_412_and_the_current_one_applies(
    client: httpx.AsyncClient, effects: list[str]
) -> None:
    run_id = await start(client)
    got = await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))
    tag = got.headers["etag"]
    body = {"output": {"approved": True}, "action": "approved"}
    stale = await client.post(
        f"/executions/{run_id}/resume", json=body, headers={**bearer(DECIDER), "If-Match": '"0"'}
    )
    assert stale.status_code == 412
    assert stale.json()["current_revision"] == int(tag.strip('"'))
    assert effects == []
    ok = await client.post(
        f"/executions/{run_id}/resume", json=body, headers={**bearer(DECIDER), "If-Match": tag}
    )
    assert ok.status_code == 200
    assert ok.headers["etag"] != tag


@pytest.mark.parametrize("racers", [2, 6])
async def test_racing_decisions_with_the_same_if_match_one_applies_the_others_get_412(
    racers: int,
) -> None:
    """Every request reads the run at the same revision before any claims it (the gate).

    With the check made before the decision instead of on the claimed row, the losers would
    pass it and get 409 (already decided) instead of 412.
    """
    seen: list[str] = []
    gate = Gate(MemoryStore())
    with serve(build_app(build_service(gate, effects=seen))) as url:  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            run_id = await start(client)
            got = await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))
            tag = got.headers["etag"]
            assert got.json()["stored_revision"] == int(tag.strip('"'))
            gate.arm(racers)
            responses: list[httpx.Response] = []

            async def decide(action: str) -> None:
                r = await client.post(
                    f"/executions/{run_id}/resume",
                    json={"output": {"approved": action == "approved"}, "action": action},
                    headers={**bearer(DECIDER), "If-Match": tag},
                )
                responses.append(r)

            async with anyio.create_task_group() as tg:
                for i in range(racers):
                    tg.start_soon(decide, "approved" if i % 2 == 0 else "rejected")
            codes = sorted(r.status_code for r in responses)
            assert codes == [200] + [412] * (racers - 1), [r.text for r in responses]
            for r in responses:
                if r.status_code == 412:
                    problem = r.json()
                    assert problem["type"] == "urn:flowcraft:problem:precondition-failed"
                    assert problem["current_revision"] != int(tag.strip('"'))
            ok = next(r for r in responses if r.status_code == 200)
            assert ok.headers["etag"] == f'"{ok.json()["stored_revision"]}"'
            after = await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))
            assert after.headers["etag"] == ok.headers["etag"]
            assert len(seen) == 1
            history = await client.get(f"/executions/{run_id}/history", headers=bearer(ADMIN))
            assert [h["event"] for h in history.json()["history"]].count("resume") == 1


async def test_status_codes_of_the_other_errors(client: httpx.AsyncClient) -> None:
    h = bearer(ADMIN)
    r = await client.get("/executions/nope", headers=h)
    assert (r.status_code, r.json()["type"]) == (404, "urn:flowcraft:problem:run-not-found")
    r = await client.post("/executions", json={"flow_id": "nope"}, headers=h)
    assert (r.status_code, r.json()["type"]) == (422, "urn:flowcraft:problem:unknown-flow")
    r = await client.post("/executions", json={"flow_id": "seed", "extra": 1}, headers=h)
    assert (r.status_code, r.json()["type"]) == (422, "urn:flowcraft:problem:invalid-body")
    r = await client.post("/executions", content=b"{not json", headers=h)
    assert r.status_code == 422
    big = {"flow_id": "seed", "state": {"x": "y" * 5000}}
    r = await client.post("/executions", json=big, headers=h)
    assert (r.status_code, r.json()["type"]) == (413, "urn:flowcraft:problem:body-too-large")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000  # no Content-Length: refused while streaming

    r = await client.post("/executions", content=chunks(), headers=h)
    assert r.status_code == 413
    run_id = await start(client)
    r = await client.post(f"/executions/{run_id}/cancel", json={"reason": "x"}, headers=h)
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    r = await client.post(
        f"/executions/{run_id}/resume", json={"action": "approved"}, headers=bearer(DECIDER)
    )
    assert (r.status_code, r.json()["type"]) == (409, "urn:flowcraft:problem:not-awaiting")
    r = await client.post("/executions", json={"flow_id": "seed", "run_id": run_id}, headers=h)
    assert (r.status_code, r.json()["type"]) == (409, "urn:flowcraft:problem:run-exists")
    r = await client.get("/nowhere", headers=h)
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


async def test_idempotent_start_creates_one_run_and_a_reused_key_is_refused(
    client: httpx.AsyncClient,
) -> None:
    headers = {**bearer(ADMIN), "Idempotency-Key": "start-1"}
    first = await client.post("/executions", json={"flow_id": "seed"}, headers=headers)
    again = await client.post("/executions", json={"flow_id": "seed"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.content == again.content
    assert again.headers["location"] == first.headers["location"]
    listed = (await client.get("/executions", headers=bearer(ADMIN))).json()
    assert listed["count"] == 1
    other = await client.post("/executions", json={"flow_id": "approval"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["type"] == "urn:flowcraft:problem:idempotency-key-reused"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
_bodies = st.one_of(
    _json,
    st.fixed_dictionaries(
        {},
        optional={
            "resume_data": _json,
            "output": _json,
            "action": st.none() | st.sampled_from(["approved", "rejected", "x"]),
            "node_id": st.none() | st.sampled_from(["manager", "submit", "pay", "n/x"]),
            "reason": st.none() | st.text(max_size=5),
        },
    ),
)


def test_fuzzed_bodies_on_a_real_awaiting_run_never_answer_a_server_error(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        r = client.post("/executions", json={"flow_id": "approval"}, headers=bearer(ADMIN))
        run_id = r.json()["id"]

        @given(
            verb=st.sampled_from(["resume", "pause", "release", "cancel"]),
            body=_bodies,
            key=st.none() | st.sampled_from(["a", "b", "k" * 300]),
            if_match=st.none() | st.sampled_from(['"1"', '"2"', "*", "junk"]),
        )
        @settings(
            max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(verb: str, body: Any, key: str | None, if_match: str | None) -> None:
            headers = bearer(ADMIN)
            if key is not None:
                headers["Idempotency-Key"] = key
            if if_match is not None:
                headers["If-Match"] = if_match
            r = client.post(f"/executions/{run_id}/{verb}", json=body, headers=headers)
            assert r.status_code < 500, r.text
            if r.status_code >= 400:
                assert r.headers["content-type"] == "application/problem+json"

        check()


async def test_a_body_nested_too_deeply_is_422_not_a_server_error(
    client: httpx.AsyncClient,
) -> None:
    """JSON nested past the decoder's depth is bad input (422), on a start and on a resume."""
    run_id = await start(client)
    deep = b"[" * 1500 + b"]" * 1500  # within max_body=4096
    r = await client.post(
        "/executions",
        content=b'{"flow_id":"approval","state":{"x":' + deep + b"}}",
        headers=bearer(ADMIN),
    )
    assert r.status_code == 422, r.text
    assert r.json()["type"] == "urn:flowcraft:problem:invalid-body"
    assert "nested too deeply" in r.json()["detail"]
    r = await client.post(
        f"/executions/{run_id}/resume",
        content=b'{"resume_data":{"x":' + deep + b"}}",
        headers=bearer(ADMIN),
    )
    assert r.status_code == 422, r.text
    assert "nested too deeply" in r.json()["detail"]
    r = await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))
    assert (r.json()["status"], r.json()["stored_revision"]) == ("awaiting", 1)


async def test_concurrent_starts_with_one_idempotency_key_all_answer_the_first_response(
    client: httpx.AsyncClient,
) -> None:
    """Twenty identical starts under one key at once: one run, and every answer is its 201."""
    headers = {**bearer(ADMIN), "Idempotency-Key": "start-race"}
    answers: list[httpx.Response] = []

    async def one() -> None:
        answers.append(await client.post("/executions", json={"flow_id": "seed"}, headers=headers))

    async with anyio.create_task_group() as tg:
        for _ in range(20):
            tg.start_soon(one)
    assert [r.status_code for r in answers] == [201] * 20, [r.text for r in answers]
    assert len({r.content for r in answers}) == 1
    listed = (await client.get("/executions", headers=bearer(ADMIN))).json()
    assert listed["count"] == 1


async def test_a_start_whose_state_cannot_be_stored_is_422_about_the_state(
    client: httpx.AsyncClient,
) -> None:
    """An integer msgspec cannot store: 422 naming the initial state, not "resume data"."""
    r = await client.post(
        "/executions", json={"flow_id": "seed", "state": {"n": 2**70}}, headers=bearer(ADMIN)
    )
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["type"] == "urn:flowcraft:problem:serialization"
    assert "initial state" in problem["detail"]
    assert "OverflowError" in problem["detail"]
    assert "resume" not in problem["detail"]
    listed = (await client.get("/executions", headers=bearer(ADMIN))).json()
    assert listed["count"] == 0


@pytest.mark.parametrize(
    "media", ["text/plain", "text/plain; charset=utf-8", "multipart/form-data; b=x", "text/xml"]
)
async def test_a_body_sent_as_text_or_multipart_is_415_and_changes_nothing(
    client: httpx.AsyncClient, media: str
) -> None:
    """What a page on another site can post as-is without a preflight is refused before it is
    read (with a cookie-reading ``auth`` it would act as the signed-in user); JSON types, a
    body without a type and ``curl -d``'s urlencoded one are read."""
    run_id = await start(client)
    decision = b'{"output":{"approved":true},"action":"approved"}'
    r = await client.post(
        f"/executions/{run_id}/resume",
        content=decision,
        headers={**bearer(ADMIN), "Content-Type": media},
    )
    assert r.status_code == 415, r.text
    assert r.json()["type"] == "urn:flowcraft:problem:unsupported-media-type"
    assert "application/json" in r.json()["detail"]
    r = await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))
    assert r.json()["status"] == "awaiting"
    r = await client.post(
        f"/executions/{run_id}/resume",
        content=decision,
        headers={**bearer(ADMIN), "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "completed"
