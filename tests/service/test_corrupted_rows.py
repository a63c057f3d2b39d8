"""Corrupted stored rows against recovery and the durable scheduler, on every store.

Each corrupted run gives a specific ``FlowcraftError`` naming it; none keeps the others from
firing or recovering, none makes a decision apply twice, none makes a caller spin.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from flowcraft import (
    FlowRuntime,
    RunBusyError,
    StoreCorruptionError,
    UnknownFlowError,
)
from flowcraft._service.parts import Intent, encode_intent
from flowcraft.stores import DurableScheduler, FlowService, RunStore, StoredRun
from flowcraft.stores._base import RUN_ENCODER, encode_run_row
from flowcraft.testing import FakeClock
from tests.service._support import (
    POSTGRES_DSN,
    REDIS_URL,
    SHARED,
    backend,
    effects,
    flows,
)


async def rewrite(store: RunStore, run_id: str, **change: Any) -> StoredRun:
    """Store ``run_id`` changed by ``change`` (well-typed values a bug or a hand could write)."""
    stored = await store.get(run_id)
    new = msgspec.structs.replace(stored, revision=stored.revision + 1, **change)
    await store.save(new, stored.revision)
    return new


@pytest.mark.parametrize("held", [False, True])
async def test_a_run_due_with_nothing_due_is_corrected_and_never_starves_the_others(
    store: RunStore, fake_clock: FakeClock, held: bool
) -> None:
    """Awaiting runs whose ``due_at`` says due but nothing is (a corrupted column) came first in
    every ``due`` page, every tick, forever: a page of them kept every other timer from firing.
    The scheduler now puts their ``due_at`` right, once, and fires the others."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    for i in range(3):
        await service.start("approval", run_id=f"stale-{i}")  # a wait without a timeout
        await rewrite(store, f"stale-{i}", due_at=fake_clock.now() - timedelta(days=1))
    if held:
        await service.pause("stale-0", reason="look")
        await rewrite(store, "stale-0", due_at=fake_clock.now() - timedelta(days=1))
    await service.start("reminder", run_id="good")
    fake_clock.advance(120)
    sched = DurableScheduler(service, batch=3)  # one page: the stale runs only, as before
    await sched.tick()
    await sched.tick()
    assert (await store.get("good")).status == "completed"
    for i in range(3):
        stale = await store.get(f"stale-{i}")
        assert (stale.status, stale.due_at, stale.awaiting) == ("awaiting", None, ("approve",))
    assert await store.due(fake_clock.now()) == []
    assert (await service.resume("stale-1", {"action": "approved"})).status == "completed"


async def test_a_decision_for_a_run_no_process_here_can_recover_waits_instead_of_spinning(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A decision for a running run whose lease lapsed and whose recovery fails here (its flow
    unknown to this process) retried the recovery in a tight loop until ``busy_timeout``; it
    now waits as for a live lease and raises ``RunBusyError`` (at once with
    ``busy_timeout=0``, which means "do not wait")."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), busy_timeout=0)
    await service.start("approval", run_id="r1")
    good = encode_intent(Intent(kind="resume", data={"action": "approved"}), "r1")
    await rewrite(
        store, "r1", status="running", flow_id="elsewhere", owner="dead", intent=good,
        lease_until=fake_clock.now(), claim="dead-claim",
    )
    fake_clock.advance(1)
    with anyio.fail_after(10):
        with pytest.raises(RunBusyError, match="'r1'"):
            await service.resume("r1", {"action": "approved"})
        with pytest.raises(UnknownFlowError):
            await service.result("r1")
    assert (await store.get("r1")).status == "running"


async def test_a_running_run_under_corrupted_fields_is_recovered_once_or_left_alone(
    store: RunStore, fake_clock: FakeClock, effects_log: Path
) -> None:
    """Running runs whose owner, lease or timestamps are off (empty owner, no lease, a lease in
    year 1, timestamps in years 1 and 9999) are recovered once each; one whose lease reaches
    year 9999 is left to its owner; a garbage context refuses the replay and leaves the run
    awaiting. Every decision is applied at most once; the reminder fires meanwhile."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), lease_ttl=30)
    now = fake_clock.now()
    year1, year9999 = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
    cases: dict[str, dict[str, Any]] = {
        "no-owner": {"owner": None},
        "empty-owner": {"owner": ""},
        "no-lease": {"lease_until": None},
        "lease-year1": {"lease_until": year1},
        "created-year1": {"created_at": year1},
        "updated-9999": {"updated_at": year9999},
        "lease-9999": {"lease_until": year9999},
        "garbage-context": {"context": b"\xc1garbage"},
    }
    for run_id, change in cases.items():
        await service.start("approval", run_id=run_id)
        intent = encode_intent(Intent(kind="resume", data={"action": "approved"}), run_id)
        base = {"status": "running", "owner": "dead", "lease_until": now, "claim": "dead"}
        await rewrite(store, run_id, **{**base, "intent": intent, **change})
    await service.start("reminder", run_id="good")
    fake_clock.advance(120)
    sched = DurableScheduler(service)
    for _ in range(3):
        await sched.tick()
        fake_clock.advance(60)
    assert (await store.get("good")).status == "completed"
    ran = effects(effects_log)
    for run_id in cases:
        stored = await store.get(run_id)
        if run_id == "lease-9999":
            assert stored.status == "running"
        elif run_id == "garbage-context":
            assert (stored.status, stored.awaiting) == ("awaiting", ("approve",))
        else:
            assert stored.status == "completed", run_id
        assert ran[("pay", run_id)] == (stored.status == "completed")


def _spliced(kind: str, run: StoredRun) -> bytes:
    """The body ``kind`` stores for ``run``, however wrongly typed its fields are."""
    return RUN_ENCODER.encode(run) if kind == "redis" else encode_run_row(run)


async def _write_body(kind: str, where: str, run_id: str, body: bytes) -> None:
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(where)
        conn.execute("UPDATE flowcraft_runs SET body = ? WHERE run_id = ?", (body, run_id))
        conn.commit()
        conn.close()
    elif kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        await client.hset(f"{where}:run:{run_id}", "body", body)
        await client.aclose()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as pg:
            await pg.execute(f"UPDATE {where}_runs SET body = %s WHERE run_id = %s", (body, run_id))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("intent", 5),
        ("owner", 5),
        ("lease_until", "tomorrow"),
        ("claim", ["x"]),
        ("fault_count", "many"),
        ("context", {"not": "bytes"}),
    ],
)
@pytest.mark.parametrize("kind", SHARED)
async def test_a_running_row_with_a_field_of_the_wrong_type_is_a_corruption_and_spares_the_others(
    kind: str, field: str, value: object, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """A running run's stored body whose intent, owner, lease, claim, fault count or context
    has the wrong type is a ``StoreCorruptionError`` naming the run; recovery and the
    scheduler skip it and recover and fire the other runs."""
    async with backend(kind, tmp_path) as (store, where):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), lease_ttl=30)
        now = fake_clock.now()
        for run_id in ("bad", "dead"):
            await service.start("approval", run_id=run_id)
            intent = encode_intent(Intent(kind="resume", data={"action": "approved"}), run_id)
            running = await rewrite(
                store, run_id, status="running", owner="x", lease_until=now, claim="c",
                intent=intent,
            )
        await service.start("reminder", run_id="good")
        bad = msgspec.structs.replace(await store.get("bad"), **{field: value})
        await _write_body(kind, where, "bad", _spliced(kind, bad))
        with pytest.raises(StoreCorruptionError, match="'bad'"):
            await service.get("bad")
        fake_clock.advance(120)
        sched = DurableScheduler(service)
        await sched.tick()
        assert (await store.get("good")).status == "completed"
        assert (await store.get("dead")).status == "completed"
        assert running.run_id == "dead"
        health = await service.health()
        assert health.store_reachable
        with pytest.raises(StoreCorruptionError, match="'bad'"):
            await service.resume("bad", {"action": "approved"})
