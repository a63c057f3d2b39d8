"""An expense approval over HTTP: a signed approval page for a person, a webhook for a machine.

    python examples/approval_webhook.py            # runs the whole story against a real server
    python examples/approval_webhook.py --serve    # keeps serving: open the printed link

Needs the ``http`` extra (``pip install 'flowcraft[http]'``) and httpx for the demo client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import socket
import sys
import threading
import time

import httpx
import msgspec
import uvicorn

from flowcraft import FlowRuntime, FlowService, NodeContext, create_flow
from flowcraft.http import BearerAuth, WebhookEvent, WebhookRoute, WebhookTarget, create_app
from flowcraft.stores import MemoryStore

WEBHOOK_SECRET = "whsec_demo"
TOKEN = "demo-token"


class Decision(msgspec.Struct):
    approved: bool
    comment: str = ""


async def submit(node: NodeContext) -> dict[str, object]:
    request = {"user": "Alice", "amount": 1500}
    node.context.set("request", request)
    return request


async def pay(node: NodeContext) -> str:
    return "paid"


async def refuse(node: NodeContext) -> str:
    return "refused"


flow = (
    create_flow("expense")
    .node("submit", submit)
    .wait("manager", description="Approve Alice's expense of 1500 EUR", schema=Decision)
    .node("pay", pay)
    .node("refuse", refuse)
    .edge("submit", "manager")
    .edge("manager", "pay", action="approved")
    .edge("manager", "refuse", action="rejected")
)


def from_payments(event: WebhookEvent) -> WebhookTarget | None:
    """A payment provider tells us a run was settled elsewhere."""
    data = event.json()
    if data.get("type") != "expense.settled":
        return None
    return WebhookTarget(run_id=data["run_id"], node_id="manager",
                         output={"approved": True, "comment": "settled"}, action="approved")


service = FlowService(FlowRuntime(), MemoryStore(), [flow])
auth = BearerAuth({TOKEN: {"execution:read", "execution:start", "execution:cancel"}})
hook = WebhookRoute("/hooks/payments", verifier="stripe", secret=WEBHOOK_SECRET,
                    route=from_payments)
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
BASE = f"http://127.0.0.1:{sock.getsockname()[1]}"
app = create_app(service, auth=auth, base_url=BASE, link_secret="change-me", webhooks=[hook])


def main() -> None:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)  # until uvicorn listens
    h = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=BASE, headers=h) as client:
        first = client.post("/executions", json={"flow_id": "expense"}).json()
        second = client.post("/executions", json={"flow_id": "expense"}).json()
        inbox = client.get("/inbox").text
        links = [m.replace("&amp;", "&") for m in re.findall(r'href="([^"]+)"', inbox)]
        link = next(u for u in links if first["id"] in client.get(u).text)
        print("approval page:", link)
        if "--serve" in sys.argv:
            print(f"serving on {BASE}; Ctrl-C to stop")
            thread.join()
            return

        # A person opens the page and clicks "approved" (what a browser's form post sends).
        page = httpx.get(link).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf is not None
        form = {"csrf": csrf.group(1), "action": "approved", "field.approved": "true",
                "field.comment": "ok"}
        done = httpx.post(link, data=form, headers={"Origin": BASE})
        assert "completed" in done.text, done.text
        print("first run, decided on its page:", client.get(f"/executions/{first['id']}").json()
              ["outputs"]["pay"])

        # The payment provider settles the second run through a signed webhook, twice.
        body = json.dumps({"id": "evt_1", "type": "expense.settled",
                           "run_id": second["id"]}).encode()
        for _ in range(2):
            ts = int(time.time())
            mac = hmac.new(WEBHOOK_SECRET.encode(), f"{ts}.".encode() + body, hashlib.sha256)
            r = httpx.post(f"{BASE}/hooks/payments", content=body,
                           headers={"Stripe-Signature": f"t={ts},v1={mac.hexdigest()}"})
            assert r.status_code == 200, r.text
        resumes = [e for e in client.get(f"/executions/{second['id']}/history").json()["history"]
                   if e["event"] == "resume"]
        assert [e["by"] for e in resumes] == ["webhook:stripe"]  # delivered twice, applied once
        print("second run, settled by webhook:", r.json()["status"])
    server.should_exit = True
    thread.join()
    print("approval webhook: OK")


if __name__ == "__main__":
    main()
