"""A decision whose claim was written lazily (``durable=False``) and whose process is SIGKILLed
before the outcome: recovery completes it exactly once, on every shared store, and the same
decision sent again returns that outcome without running anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from flowcraft import AlreadyDecidedError, FlowRuntime
from flowcraft.stores import DurableScheduler, FlowService
from flowcraft.testing import FakeClock
from tests.service._resume_crasher import gate
from tests.service._support import REDIS_URL, ROOT, SHARED, backend, effects
from tests.service.test_recovery import WAIT, _connections_closed


@pytest.mark.parametrize("mode", ["claimed", "node", "write"])
@pytest.mark.parametrize("kind", SHARED)
async def test_a_decision_killed_after_its_lazy_claim_is_applied_once(
    kind: str, mode: str, tmp_path: Path
) -> None:
    log = tmp_path / "effects.log"
    name = f"crasher-{uuid.uuid4().hex[:12]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOWCRAFT_TEST_EFFECTS": str(log),
        "FLOWCRAFT_TEST_CRASH": mode,
        "PGAPPNAME": name,
        "FLOWCRAFT_TEST_REDIS": f"{REDIS_URL}{'&' if '?' in REDIS_URL else '?'}client_name={name}",
    }
    os.environ["FLOWCRAFT_TEST_EFFECTS"] = str(log)
    try:
        async with backend(kind, tmp_path) as (store, where):
            first = FlowService(FlowRuntime(), store, flows=[gate()])
            assert first.host.lazy_claims
            await first.start("gate", run_id="gate-1")
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.service._resume_crasher", kind, where, mode],
                stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
            )
            try:
                assert proc.stdout is not None
                line = await anyio.to_thread.run_sync(proc.stdout.readline)
                assert line.strip() in ("started", "dying")
                if mode == "node":
                    proc.send_signal(signal.SIGKILL)
                assert await anyio.to_thread.run_sync(lambda: proc.wait(timeout=WAIT)) == (
                    -signal.SIGKILL
                )
            finally:
                if proc.poll() is None:
                    proc.kill()
                if proc.stdout is not None:
                    proc.stdout.close()
            await _connections_closed(kind, name)
            crashed = await store.get("gate-1")
            if mode != "write":
                assert crashed.status == "running"  # the lazy claim was not lost
            clock = FakeClock(datetime.now(UTC) + timedelta(minutes=10))  # past the lease
            service = FlowService(FlowRuntime(clock=clock), store, flows=[gate()])
            recovered = await DurableScheduler(service).tick()
            assert recovered == (1 if crashed.status == "running" else 0)
            result = await service.result("gate-1")
            assert result.status == "completed"
            assert result.outputs["notify"] == "notified"
            assert await service.recover() == []
            # The decision again, under its key: its outcome, nothing runs.
            again = await service.resume("gate-1", {"action": "approved"}, idempotency_key="k")
            assert again.status == "completed"
            assert (await service.outcome("gate-1", "k")) is not None
            with pytest.raises(AlreadyDecidedError):
                await service.resume("gate-1", {"action": "approved"}, "approve")
            events = [h.event for h in await service.history("gate-1")]
            assert events.count("completed") == 1
            assert sum(1 for h in await service.history("gate-1") if h.event == "resume") == 1
    finally:
        del os.environ["FLOWCRAFT_TEST_EFFECTS"]
    counts = effects(log)
    again_ran = crashed.status == "running"
    assert counts[("submit", "gate-1")] == 1
    ran_before = mode != "claimed"  # pay ran in the killed process
    assert counts[("pay", "gate-1")] == (int(ran_before) + int(again_ran))
    assert counts[("notify", "gate-1")] == (1 if not again_ran else int(mode == "write") + 1)
