"""HTTP front door cost: resume requests/s through uvicorn (one worker) and the added latency.

    python -m benchmarks.http [--runs 2000] [--concurrency 32]

The server runs in its own process (``--serve``: uvicorn, one worker, MemoryStore) so the
client does not share its GIL. Runs are started untimed; then each run is resumed once:
(1) ``service.resume`` called directly in the server process (the floor), (2) one HTTP
request at a time (latency), (3) ``--concurrency`` requests in flight (throughput).
One JSON line per scenario: median and p99 µs per resume, resumes/s.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import anyio
import httpx

TOKEN = "bench"


def build_app() -> Any:
    from flowcraft import FlowRuntime, FlowService, NodeContext, create_flow
    from flowcraft.http import BearerAuth, create_app
    from flowcraft.stores import MemoryStore

    async def done(node: NodeContext) -> str:
        return "done"

    flow = create_flow("bench").wait("approve").node("done", done).edge("approve", "done")
    service = FlowService(FlowRuntime(), MemoryStore(), [flow])
    app = create_app(service, auth=BearerAuth({TOKEN: {"execution:read", "execution:start",
                                                       "execution:cancel"}}))

    async def floor(n: int) -> list[float]:
        ids = [(await service.start("bench")).run_id for _ in range(n)]
        times = []
        for run_id in ids:
            t0 = time.perf_counter()
            await service.resume(run_id, {"output": 1}, "approve", by="bench")
            times.append(time.perf_counter() - t0)
        return times

    app.state.floor = floor
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def floor_route(request: Request) -> JSONResponse:
        return JSONResponse(await floor(int(request.query_params["n"])))

    app.router.routes.append(Route("/_floor", floor_route, methods=["POST"]))
    return app


def serve(port: int) -> None:
    import uvicorn

    uvicorn.run(build_app(), host="127.0.0.1", port=port, log_level="warning",
                access_log=False, lifespan="off", workers=1)


def stats(name: str, times: list[float], wall: float | None = None) -> dict[str, Any]:
    times = sorted(times)
    out = {
        "scenario": name,
        "n": len(times),
        "median_us": round(statistics.median(times) * 1e6, 1),
        "p99_us": round(times[int(len(times) * 0.99) - 1] * 1e6, 1),
    }
    out["per_s"] = round(len(times) / (wall if wall is not None else sum(times)), 1)
    return out


async def client(base: str, runs: int, concurrency: int) -> list[dict[str, Any]]:
    h = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=h, limits=limits, timeout=60) as c:
        for _ in range(100):  # warm-up
            rid = (await c.post("/executions", json={"flow_id": "bench"})).json()["id"]
            await c.post(f"/executions/{rid}/resume", json={"output": 1})
        floor = (await c.post("/_floor", params={"n": runs})).json()

        async def fresh(n: int) -> list[str]:
            return [(await c.post("/executions", json={"flow_id": "bench"})).json()["id"]
                    for _ in range(n)]

        seq_ids = await fresh(runs)
        seq = []
        for rid in seq_ids:
            t0 = time.perf_counter()
            r = await c.post(f"/executions/{rid}/resume", json={"output": 1})
            seq.append(time.perf_counter() - t0)
            assert r.status_code == 200, r.text
        par_ids = await fresh(runs)
        par: list[float] = []

        async def worker(ids: list[str]) -> None:
            for rid in ids:
                t0 = time.perf_counter()
                r = await c.post(f"/executions/{rid}/resume", json={"output": 1})
                par.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text

        t0 = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(concurrency):
                tg.start_soon(worker, par_ids[i::concurrency])
        wall = time.perf_counter() - t0
    results = [
        stats("direct service.resume (floor)", floor),
        stats("HTTP resume, 1 in flight", seq),
        stats(f"HTTP resume, {concurrency} in flight", par, wall),
    ]
    added = results[1]["median_us"] - results[0]["median_us"]
    results.append({"scenario": "latency added by HTTP (median)", "added_us": round(added, 1)})
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", type=int)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.http", "--serve", str(port)])
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(base + "/openapi.json")
                break
            except httpx.TransportError:
                threading.Event().wait(0.05)  # until the server listens
        for line in anyio.run(client, base, args.runs, args.concurrency):
            print(json.dumps(line))
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
