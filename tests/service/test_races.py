"""Concurrent decisions across real processes (and tasks, for the memory store).

Each case counts side effects: the node after a wait must run once per run, however many
processes deliver, and every caller gets an answer that says what happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import AlreadyDecidedError, FlowRuntime
from flowcraft.stores import FlowService, RunStore
from tests.service._support import KINDS, ROOT, backend, effects, flows

RUNS = 6
PROCS = 4


def plans(case: str) -> list[list[dict[str, Any]]]:
    """What each process delivers, per case."""
    runs = [f"{case}-{i}" for i in range(RUNS)]
    if case == "same-decision":
        return [[{"run": r, "action": "approved", "by": f"p{p}"} for r in runs]
                for p in range(PROCS)]
    if case == "same-key":
        return [[{"run": r, "action": "approved", "key": f"k-{r}", "by": f"p{p}"} for r in runs]
                for p in range(PROCS)]
    if case == "different-decisions":
        return [[{"run": r, "action": "approved" if p % 2 else "rejected", "by": f"p{p}"}
                 for r in runs] for p in range(PROCS)]
    # different waits of one run: one process per wait
    return [[{"run": r, "node": node, "by": node} for r in runs] for node in ("a", "b")]


def flow_of(case: str) -> str:
    return "two-waits" if case == "different-waits" else "approval"


async def deliver_in_processes(
    kind: str, where: str, case: str, env: dict[str, str]
) -> list[dict[str, Any]]:
    procs = []
    for plan in plans(case):
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.service._worker", kind, where],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(plan) + "\n")
        proc.stdin.flush()
        procs.append(proc)
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()  # reaped, pipes closed: nothing leaks into the next test
    assert all(p.returncode == 0 for p in procs)
    return [json.loads(line) for out in outs for line in out.splitlines() if line.strip()]


async def deliver_in_tasks(store: RunStore, case: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    services = [
        FlowService(FlowRuntime(), store, flows=flows(), owner=f"p{i}", poll_interval=0.05)
        for i in range(PROCS)
    ]

    async def one(service: FlowService, d: dict[str, Any]) -> None:
        data = {"action": d["action"]} if d.get("action") else None
        row: dict[str, Any] = {"run": d["run"], "by": d.get("by")}
        try:
            result = await service.resume(
                d["run"], data, d.get("node"), by=d.get("by"), idempotency_key=d.get("key")
            )
            row.update(ok=True, ctx=hash(result.serialized_context))
        except AlreadyDecidedError as exc:
            row.update(ok=False, error="AlreadyDecidedError", action=exc.action, winner=exc.by)
        rows.append(row)

    async with anyio.create_task_group() as tg:
        for i, plan in enumerate(plans(case)):
            for d in plan:
                tg.start_soon(one, services[i % PROCS], d)
    return rows


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "case", ["same-decision", "same-key", "different-decisions", "different-waits"]
)
async def test_concurrent_deliveries_run_the_node_after_the_wait_once(
    kind: str, case: str, tmp_path: Path
) -> None:
    """N deliveries at once: one execution per decision, every caller told what happened."""
    log = tmp_path / "effects.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWCRAFT_TEST_EFFECTS": str(log)}
    os.environ["FLOWCRAFT_TEST_EFFECTS"] = str(log)
    try:
        async with backend(kind, tmp_path) as (store, where):
            service = FlowService(FlowRuntime(), store, flows=flows())
            for i in range(RUNS):
                await service.start(flow_of(case), run_id=f"{case}-{i}")
            if kind == "memory":
                rows = await deliver_in_tasks(store, case)
            else:
                rows = await deliver_in_processes(kind, where, case, env)
            finals = {f"{case}-{i}": await service.result(f"{case}-{i}") for i in range(RUNS)}
            histories = {r: await service.history(r) for r in finals}
    finally:
        del os.environ["FLOWCRAFT_TEST_EFFECTS"]
    counts = effects(log)
    assert sum(len(p) for p in plans(case)) == len(rows)
    for run_id, final in finals.items():
        mine = [r for r in rows if r["run"] == run_id]
        assert final.status == "completed", (run_id, mine)
        assert counts[("submit", run_id)] == 1
        if case == "different-waits":
            assert counts[("after_a", run_id)] == 1
            assert counts[("after_b", run_id)] == 1
            assert all(r["ok"] for r in mine), mine
            continue
        ran = counts[("pay", run_id)] + counts[("refuse", run_id)]
        assert ran == 1, (run_id, counts)
        winner_action = "approved" if counts[("pay", run_id)] else "rejected"
        resumes = [h for h in histories[run_id] if h.event == "resume"]
        assert [h.action for h in resumes] == [winner_action]
        if case == "same-key":
            assert all(r["ok"] for r in mine), mine
            assert len({r["ctx"] for r in mine}) == 1
            continue
        winners = [r for r in mine if r["ok"]]
        assert len(winners) == 1, mine
        for loser in (r for r in mine if not r["ok"]):
            assert loser["error"] == "AlreadyDecidedError", loser
            assert (loser["action"], loser["winner"]) == (winner_action, winners[0]["by"])
