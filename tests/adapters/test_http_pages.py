"""Approval pages: signed single-use links, GET changes nothing, POST decides, every refusal."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from flowcraft import FlowRuntime, FlowService, StoreCorruptionError, StoreError, create_flow
from flowcraft.http import FlowApp, approval_link
from flowcraft.stores import MemoryStore, RunPage, StoredRun
from tests.adapters._server import ADMIN, DECIDER, bearer, build_app, build_service, serve

SECRET = "link-secret-for-tests"


@pytest.fixture
def effects() -> list[str]:
    return []


@pytest.fixture
def service(effects: list[str]) -> FlowService:
    return build_service(effects=effects)


@pytest.fixture
def server(service: FlowService) -> Iterator[tuple[FlowApp, str]]:
    app = build_app(service, link_secret=SECRET)
    with serve(app) as url:
        app.base_url = url
        yield app, url


@pytest.fixture
async def client(server: tuple[FlowApp, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server[1], timeout=20) as c:
        yield c


async def start(client: httpx.AsyncClient, state: dict[str, Any] | None = None) -> str:
    body: dict[str, Any] = {"flow_id": "approval", "state": state}
    r = await client.post("/executions", json=body, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    run_id: str = r.json()["id"]
    return run_id


async def link_for(app: FlowApp, run_id: str, approver: str = "bob", ttl: float = 600) -> str:
    # approval_link reads the service from the server's event loop's objects: ask over HTTP
    # for nothing, build the link here (the memory store is plain data).
    return await approval_link(app, run_id, "manager", approver=approver, ttl=ttl)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


async def test_a_scanner_fetching_a_link_ten_times_changes_nothing(
    server: tuple[FlowApp, str], client: httpx.AsyncClient, effects: list[str]
) -> None:
    app, _ = server
    run_id = await start(client)
    link = await link_for(app, run_id)
    before = (await client.get(f"/executions/{run_id}/history", headers=bearer(ADMIN))).json()
    for _ in range(10):
        assert (await client.get(link)).status_code == 200
        assert (await client.head(link)).status_code == 200
    after = (await client.get(f"/executions/{run_id}/history", headers=bearer(ADMIN))).json()
    assert before == after
    got = (await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))).json()
    assert got["status"] == "awaiting"
    assert effects == []


async def test_post_decides_once_and_the_link_then_says_who_decided(
    server: tuple[FlowApp, str], client: httpx.AsyncClient, effects: list[str]
) -> None:
    app, url = server
    run_id = await start(client)
    link = await link_for(app, run_id)
    page = (await client.get(link)).text
    assert 'value="approved"' in page
    assert 'value="rejected"' in page
    assert "flowchart" in page  # the Mermaid diagram of the run
    form = {
        "csrf": csrf_of(page),
        "action": "approved",
        "field.approved": "true",
        "field.comment": "ok",
    }
    r = await client.post(link, data=form, headers={"Origin": url})
    assert r.status_code == 200, r.text
    assert "completed" in r.text
    again = await client.post(link, data=form, headers={"Origin": url})  # double submit
    assert again.status_code == 200
    assert "completed" in again.text
    assert effects == [f"{run_id}:pay"]
    later = await client.get(link)
    assert later.status_code == 409
    assert "already decided" in later.text
    assert "approved by bob" in later.text
    history = (await client.get(f"/executions/{run_id}/history", headers=bearer(ADMIN))).json()
    resume = [h for h in history["history"] if h["event"] == "resume"]
    assert [(h["by"], h["action"]) for h in resume] == [("bob", "approved")]
    other = await link_for(app, await start(client))
    out = await client.get(other)
    assert out.status_code == 200


async def test_refusals_forged_expired_cross_site_missing_token_moved_on(
    server: tuple[FlowApp, str], client: httpx.AsyncClient, effects: list[str]
) -> None:
    app, url = server
    run_id = await start(client)
    link = await link_for(app, run_id)
    _payload, mac = link.rsplit("/", 1)[1].split(".")
    forged = link.replace(mac, mac[:-2] + ("AA" if mac[-2:] != "AA" else "BB"))
    r = await client.get(forged)
    assert r.status_code == 403
    assert "not valid" in r.text
    expired = await link_for(app, run_id, ttl=-1)
    r = await client.get(expired)
    assert r.status_code == 410
    assert "expired" in r.text
    page = (await client.get(link)).text
    form = {"csrf": csrf_of(page), "action": "approved", "field.approved": "true"}
    r = await client.post(link, data=form, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    r = await client.post(link, data=form, headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    r = await client.post(link, data={**form, "csrf": "nope"})
    assert r.status_code == 403
    assert effects == []
    # The run moves on (held then released: the decision context is the same revision)...
    await client.post(
        f"/executions/{run_id}/pause", json={"reason": "audit <x>"}, headers=bearer(DECIDER)
    )
    r = await client.get(link)
    assert r.status_code == 423
    assert "audit &lt;x&gt;" in r.text
    await client.post(f"/executions/{run_id}/release", json={}, headers=bearer(DECIDER))
    assert (await client.get(link)).status_code == 200
    # ...another decision wins: the link says who decided.
    await client.post(
        f"/executions/{run_id}/resume",
        json={"output": {"approved": False}, "action": "rejected"},
        headers=bearer(DECIDER),
    )
    r = await client.post(link, data=form, headers={"Origin": url})
    assert r.status_code == 409
    assert "rejected by alice" in r.text
    assert effects == [f"{run_id}:refuse"]


async def test_hostile_state_and_descriptions_are_escaped(
    server: tuple[FlowApp, str], client: httpx.AsyncClient
) -> None:
    app, _ = server
    run_id = await start(client, state={"x": "<script>alert(1)</script>"})
    page = (await client.get(await link_for(app, run_id))).text
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Approve &lt;b&gt;the expense&lt;/b&gt;" in page  # the wait's description


async def test_the_inbox_lists_waits_with_links_for_the_principal(
    client: httpx.AsyncClient,
) -> None:
    run_id = await start(client)
    assert (await client.get("/inbox")).status_code == 401
    r = await client.get("/inbox", headers=bearer(DECIDER))
    assert r.status_code == 200
    assert run_id in r.text
    link = re.search(r'href="([^"]+)"', r.text)
    assert link is not None
    page = await client.get(link.group(1).replace("&amp;", "&"))
    assert page.status_code == 200
    assert "alice" in page.text


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"action": "maybe", "field.approved": "true"}, "'approved', 'rejected'"),
        ({"action": "approved", "output": '"not a decision"'}, "matching the wait's schema"),
        ({"action": "approved", "output": "[" * 5000 + "]" * 5000}, "nested too deeply"),
    ],
    ids=["unknown-action", "data-not-fitting-the-schema", "json-nested-too-deeply"],
)
async def test_a_refused_decision_answers_422_as_the_api_does_and_changes_nothing(
    server: tuple[FlowApp, str],
    client: httpx.AsyncClient,
    effects: list[str],
    form: dict[str, str],
    words: str,
) -> None:
    """Unknown action or data the wait refuses: the page says why with the API's 422."""
    app, url = server
    run_id = await start(client)
    link = await link_for(app, run_id)
    page = (await client.get(link)).text
    r = await client.post(link, data={"csrf": csrf_of(page), **form}, headers={"Origin": url})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("text/html")
    assert words in r.text.replace("&#x27;", "'")
    api = await client.post(
        f"/executions/{run_id}/resume",
        json={"action": "maybe", "output": {"approved": True}},
        headers=bearer(DECIDER),
    )
    assert api.status_code == 422  # the same mapping: unknown action is 422 on both doors
    got = (await client.get(f"/executions/{run_id}", headers=bearer(ADMIN))).json()
    assert (got["status"], got["revision"]) == ("awaiting", 1)
    assert effects == []
    assert (await client.get(link)).status_code == 200  # the link still works


class FailingStore(MemoryStore):
    """A memory store whose reads raise ``failure`` while it is set."""

    failure: Exception | None = None

    async def get(self, run_id: str) -> StoredRun:
        if self.failure is not None:
            raise self.failure
        return await super().get(run_id)

    async def list(self, **filters: Any) -> RunPage:
        if self.failure is not None:
            raise self.failure
        return await super().list(**filters)


@pytest.mark.parametrize(
    ("failure", "status", "words"),
    [
        (StoreError("connection to the store was lost"), 503, "The store is unavailable"),
        (StoreCorruptionError("r1", "context", "bad bytes"), 422, "cannot be decoded"),
        (RuntimeError("a bug"), 500, "Internal error"),
    ],
    ids=["store-unavailable", "store-corruption", "unexpected"],
)
def test_a_store_failure_on_a_page_is_an_error_page_with_the_api_status(
    failure: Exception, status: int, words: str
) -> None:
    """GET, POST and the inbox answer the API's status with a page, never a raw 500."""
    store = FailingStore()
    service = build_service(store)
    app = build_app(service, link_secret=SECRET)
    with serve(app) as url, httpx.Client(base_url=url, timeout=20) as client:
        app.base_url = url
        started = client.post("/executions", json={"flow_id": "approval"}, headers=bearer(ADMIN))
        run_id = started.json()["id"]
        link = client.get("/inbox", headers=bearer(DECIDER)).text
        found = re.search(r'href="([^"]+)"', link)
        assert found is not None
        link = found.group(1).replace("&amp;", "&")
        page = client.get(link).text
        form = {"csrf": csrf_of(page), "action": "approved", "field.approved": "true"}
        store.failure = failure
        answers = [
            client.get(link),
            client.post(link, data=form, headers={"Origin": url}),
            client.get("/inbox", headers=bearer(DECIDER)),
        ]
        api = client.get(f"/executions/{run_id}", headers=bearer(ADMIN))
        store.failure = None
        after = client.get(f"/executions/{run_id}", headers=bearer(ADMIN)).json()
    assert api.status_code == status  # the API's answer to the same failure
    for r in answers:
        assert r.status_code == status, (r.request.method, r.request.url, r.text)
        assert r.headers["content-type"].startswith("text/html")
        assert words in r.text
        assert "Traceback" not in r.text
        assert "a bug" not in r.text  # a 500 shows no internals
    assert after["status"] == "awaiting"


def test_a_link_whose_run_moved_on_answers_412_like_a_stale_if_match() -> None:
    """The link's revision is its If-Match: once another wait is decided, the page is 412."""
    flow = (
        create_flow("two-waits")
        .node("submit", lambda n: "submitted")
        .wait("manager")
        .wait("finance")
        .node("pay", lambda n: "paid", join="all")
        .edge("submit", "manager")
        .edge("submit", "finance")
        .edge("manager", "pay")
        .edge("finance", "pay")
    )
    service = FlowService(FlowRuntime(), MemoryStore(), [flow])
    app = build_app(service, link_secret=SECRET)
    with serve(app) as url, httpx.Client(base_url=url, timeout=20) as client:
        app.base_url = url
        started = client.post("/executions", json={"flow_id": "two-waits"}, headers=bearer(ADMIN))
        run_id = started.json()["id"]
        inbox = client.get("/inbox", headers=bearer(DECIDER)).text
        links = [m.replace("&amp;", "&") for m in re.findall(r'href="([^"]+)"', inbox)]
        pages = {link: client.get(link).text for link in links}
        (manager,) = [link for link, page in pages.items() if "Decision needed: manager" in page]
        decided = client.post(
            f"/executions/{run_id}/resume", json={"node_id": "finance"}, headers=bearer(DECIDER)
        )
        assert decided.status_code == 200, decided.text
        shown = client.get(manager)
        form = {"csrf": csrf_of(pages[manager]), "action": ""}
        posted = client.post(manager, data=form, headers={"Origin": url})
        after = client.get(f"/executions/{run_id}", headers=bearer(ADMIN)).json()
    for r in (shown, posted):
        assert r.status_code == 412, r.text
        assert "changed since this link was sent" in r.text
    assert [a["node_id"] for a in after["awaiting"]] == ["manager"]


@pytest.mark.parametrize("secret", ["", b""])
def test_an_empty_link_secret_is_refused_because_anyone_could_sign_links(
    service: FlowService, secret: str | bytes
) -> None:
    """HMAC with an empty key is public: create_app refuses it instead of serving pages."""
    with pytest.raises(ValueError, match="link_secret is empty"):
        build_app(service, link_secret=secret)


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(
    not os.path.exists(CHROMIUM) and os.environ.get("FLOWCRAFT_REQUIRE_SERVICES") != "1",
    reason="Debian's chromium is not installed (.ci/run installs it)",
)
def test_a_person_decides_in_a_real_browser(service: FlowService, effects: list[str]) -> None:
    from playwright.sync_api import sync_playwright

    app = build_app(service, link_secret=SECRET)
    with serve(app) as url:
        app.base_url = url
        run_id = httpx.post(
            url + "/executions", json={"flow_id": "approval"}, headers=bearer(ADMIN)
        ).json()["id"]
        link = httpx.get(url + "/inbox", headers=bearer(DECIDER)).text
        found = re.search(r'href="([^"]+)"', link)
        assert found is not None
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.set_default_timeout(5000)
                page.goto(found.group(1).replace("&amp;", "&"))
                assert page.get_by_role("button", name="approved").is_visible()
                assert page.get_by_role("button", name="rejected").is_visible()
                page.get_by_label("approved").check()
                page.get_by_label("comment").fill("looks fine")
                page.get_by_role("button", name="approved").click()
                page.wait_for_selector("#status", timeout=5000)
                assert page.inner_text("#status") == "completed"
            finally:
                browser.close()
    assert effects == [f"{run_id}:pay"]
