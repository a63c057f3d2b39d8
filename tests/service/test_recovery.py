"""Recovery takes over only expired leases, never resurrects a finished run, never leaves one
running; SIGKILL mid-node and mid-write on every shared store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import msgspec
import pytest

from flowcraft import FlowRuntime
from flowcraft._service.parts import Intent, encode_intent
from flowcraft.stores import DurableScheduler, FlowService, RunStore
from flowcraft.testing import FakeClock
from tests.service._crasher import crashy
from tests.service._support import (
    POSTGRES_DSN,
    REDIS_URL,
    ROOT,
    SHARED,
    backend,
    effects,
    flows,
)

WAIT = 60.0  # seconds a process or server may take on a busy 2-core machine


@pytest.mark.parametrize("mode", ["node", "write"])
@pytest.mark.parametrize("kind", SHARED)
async def test_a_killed_worker_is_recovered_once(kind: str, mode: str, tmp_path: Path) -> None:
    """SIGKILL mid-node or mid-commit: the run completes exactly once after its lease lapses."""
    log = tmp_path / "effects.log"
    name = f"crasher-{uuid.uuid4().hex[:12]}"  # the dying process's server connections
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
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.service._crasher", kind, where, mode],
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
            # A statement the process sent before it died may still be executing on the
            # server (which commits it and only then notices the client is gone): read the
            # "crashed" state once the server has closed every connection of the dead process.
            await _connections_closed(kind, name)
            clock = FakeClock(datetime.now(UTC) + timedelta(minutes=10))  # past the lease
            service = FlowService(FlowRuntime(clock=clock), store, flows=[crashy()])
            crashed = await service.get("crash-1")
            recovered = await DurableScheduler(service).tick()
            assert recovered == (1 if crashed.status == "running" else 0)
            result = await service.result("crash-1")
            assert result.status == "completed"
            assert result.outputs["work"] == "worked on 1"
            events = [h.event for h in await service.history("crash-1")]
            assert events.count("completed") == 1
            assert await service.recover() == []
    finally:
        del os.environ["FLOWCRAFT_TEST_EFFECTS"]
    # Nodes since the last stored state run again after a crash (at-least-once), only then.
    counts = effects(log)
    again = crashed.status == "running"
    assert counts[("work", "crash-1")] == (2 if again else 1)
    assert counts[("then", "crash-1")] == (2 if again and mode == "write" else 1)


async def _connections_closed(kind: str, name: str) -> None:
    """Wait (up to ``WAIT``) until the server holds no connection named ``name``."""
    with anyio.fail_after(WAIT):
        while await _connections(kind, name):
            await anyio.sleep(0.05)


async def _connections(kind: str, name: str) -> int:
    if kind == "postgres":
        import psycopg

        async with await psycopg.AsyncConnection.connect(
            POSTGRES_DSN, autocommit=True, application_name="flowcraft-test-watch"
        ) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
            )
            row = await cur.fetchone()
            return int(row[0]) if row else 0
    if kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        try:
            return sum(c.get("name") == name for c in await client.client_list())
        finally:
            await client.aclose()
    return 0  # SQLite: the kernel released the dead process's locks with the process


async def test_recovery_leaves_live_leases_and_finished_runs_alone(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A running run with a live lease is not taken; a finished run is never claimed."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), lease_ttl=30)
    await service.start("approval", run_id="done")
    await service.resume("done", {"action": "approved"})
    await service.start("approval", run_id="live")
    stored = await store.get("live")
    running = msgspec.structs.replace(
        stored,
        status="running",
        revision=stored.revision + 1,
        owner="someone",
        lease_until=fake_clock.now() + timedelta(seconds=30),
        claim="someone-claim",
        intent=encode_intent(Intent(kind="resume", data={"action": "approved"}), "live"),
    )
    await store.save(running, stored.revision)
    other = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), owner="other")
    assert await other.recover() == []
    assert (await store.get("live")).status == "running"
    assert (await store.get("done")).status == "completed"
    fake_clock.advance(31)
    results = await other.recover()
    assert [r.status for r in results] == ["completed"]
    assert (await store.get("done")).revision == (await store.get("done")).revision


async def test_a_replay_refused_on_validation_restores_the_run(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A dead process's intent that no longer validates leaves the run awaiting, not running."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    stored = await store.get("r1")
    dead = msgspec.structs.replace(
        stored,
        status="running",
        revision=stored.revision + 1,
        owner="dead",
        lease_until=fake_clock.now(),
        claim="dead-claim",
        intent=encode_intent(Intent(kind="resume", data={"action": "maybe"}), "r1"),
    )
    await store.save(dead, stored.revision)
    fake_clock.advance(1)
    assert await service.recover() == []
    after = await store.get("r1")
    assert (after.status, after.awaiting, after.owner) == ("awaiting", ("approve",), None)
    final = await service.resume("r1", {"action": "approved"})
    assert final.status == "completed"


async def test_a_late_duplicate_in_step_mode_never_reopens_a_finished_run(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """After completion, the same key returns the result; another decision is refused."""
    service = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=flows(), durability="step"
    )
    await service.start("approval", run_id="r1")
    first = await service.resume("r1", {"action": "approved"}, idempotency_key="k")
    again = await service.resume("r1", {"action": "approved"}, idempotency_key="k")
    assert again.serialized_context == first.serialized_context
    from flowcraft import AlreadyDecidedError

    with pytest.raises(AlreadyDecidedError, match="'approved'"):
        await service.resume("r1", {"action": "rejected"}, by="bob")
    stored = await store.get("r1")
    assert (stored.status, stored.owner) == ("completed", None)
    assert await service.recover() == []


@pytest.mark.parametrize("verb", ["cancel", "pause"])
async def test_a_request_sent_to_a_dead_owner_is_honoured_by_recovery(
    store: RunStore, fake_clock: FakeClock, verb: str, tmp_path: Path
) -> None:
    """cancel/pause of a run whose process died (accepted while it looked running) is applied
    when the run is recovered; before, recovery ran it to completion and the request was lost."""
    log = tmp_path / "effects.log"
    os.environ["FLOWCRAFT_TEST_EFFECTS"] = str(log)
    try:
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        await service.start("approval", run_id="r1")
        stored = await store.get("r1")
        dead = msgspec.structs.replace(
            stored,
            status="running",
            revision=stored.revision + 1,
            owner="dead",
            lease_until=fake_clock.now() + timedelta(seconds=5),
            claim="dead-claim",
            intent=encode_intent(Intent(kind="resume", data={"action": "approved"}), "r1"),
        )
        await store.save(dead, stored.revision)
        if verb == "cancel":
            sent = await service.cancel("r1", reason="stop", by="ops")
        else:
            sent = await service.pause("r1", reason="look", by="ops")
        assert sent.status == "running"
        fake_clock.advance(10)
        await service.recover()
        after = await store.get("r1")
        assert after.status == ("cancelled" if verb == "cancel" else "awaiting")
        if verb == "pause":
            assert (after.paused_by, after.pause_reason) == ("ops", "look")
        assert effects(log)[("pay", "r1")] == 0
    finally:
        del os.environ["FLOWCRAFT_TEST_EFFECTS"]
