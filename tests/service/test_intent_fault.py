"""A running run whose stored intent recovery cannot read is a fault of the run: backed off,
listed by ``health()``, logged once per attempt, then stored failed saying why. Nothing of
the claimed segment runs, nothing runs twice, and the other runs go on."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import pytest

from flowcraft import FlowRuntime, IntentCorruptionError, StoreCorruptionError
from flowcraft._service.parts import Intent, encode_intent
from flowcraft.stores import DurableScheduler, FlowService, RunStore, StoredRun
from flowcraft.testing import FakeClock
from tests.service._support import effects, flows

#: Intents no claim of an awaiting ``approval`` run can have stored.
BAD = {
    "garbage": b"\xc1not an intent",
    "empty": b"",
    "nowhere": msgspec.msgpack.encode({"kind": "teleport", "to": "mars"}),
    "wrong-type": msgspec.msgpack.encode({"kind": "resume", "data": [1, 2]}),
    "misfit": encode_intent(Intent(kind="start", state={}), "bad"),  # the run has a context
}


async def dead_claim(store: RunStore, clock: FakeClock, run_id: str, intent: bytes) -> StoredRun:
    """Leave the awaiting run ``run_id`` claimed by a dead process under ``intent``."""
    stored = await store.get(run_id)
    dead = msgspec.structs.replace(
        stored,
        status="running",
        revision=stored.revision + 1,
        owner="dead",
        lease_until=clock.now(),
        claim="dead-claim",
        intent=intent,
    )
    await store.save(dead, stored.revision)
    return dead


@pytest.mark.parametrize("bad", sorted(BAD))
async def test_an_unreadable_intent_backs_off_shows_in_health_then_fails_the_run(
    store: RunStore,
    fake_clock: FakeClock,
    effects_log: Path,
    bad: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each attempt is a fault (history, ``health()`` kind ``"intent"``, one log line), the
    next one waits for the back-off; the third stores the run failed with an
    ``IntentCorruptionError`` naming it, the unread bytes kept; nothing of it ran, and the
    scheduler fires the other runs on every tick."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), lease_ttl=30)
    await service.start("approval", run_id="bad")
    await dead_claim(store, fake_clock, "bad", BAD[bad])
    fake_clock.advance(1)
    sched = DurableScheduler(service)
    caplog.set_level(logging.INFO, logger="flowcraft")
    attempts: list[str] = []
    for tick in range(60):  # an hour of ticks, a minute apart
        await service.start("reminder", run_id=f"good-{tick}")  # due a minute later
        caplog.clear()
        await sched.tick()
        lines = [r for r in caplog.records if "the intent of run bad " in r.getMessage()]
        now = await store.get("bad")
        if now.fault_count > len(attempts):
            attempts.append(now.status)
            assert len(lines) == 1  # logged once per attempt
            if now.status == "running":
                assert now.lease_until is not None
                assert now.lease_until > fake_clock.now()
                [fault] = (await service.health()).faults
                assert (fault.run_id, fault.kind, fault.count) == ("bad", "intent", len(attempts))
                assert fault.retry_at == now.lease_until
                assert "IntentCorruptionError" in fault.reason
        else:
            assert lines == []  # backed off: neither retried nor logged
        if tick:
            assert (await store.get(f"good-{tick - 1}")).status == "completed"
        fake_clock.advance(60)
    assert attempts == ["running", "running", "failed"]
    final = await store.get("bad")
    assert (final.owner, final.lease_until, final.awaiting) == (None, None, ())
    assert final.intent == BAD[bad]  # kept as it was: nothing silently lost
    assert "stored intent of run 'bad' could not be read" in (final.fault or "")
    assert "fork" in (final.fault or "")
    assert (await service.health()).faults == ()
    history = await store.history("bad")
    faults = [h for h in history if h.event == "fault"]
    assert [h.data for h in faults] == [{"intent": True, "attempt": n} for n in (1, 2, 3)]
    assert history[-1].event == "failed"
    assert "IntentCorruptionError" in (history[-1].reason or "")
    assert effects(effects_log)[("pay", "bad")] == 0
    assert effects(effects_log)[("submit", "bad")] == 1  # never started again


async def test_the_error_names_the_run_and_is_a_store_corruption(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """``recover`` records the fault; a worker taking the claim over (``execute``) gets the
    ``IntentCorruptionError`` (a ``StoreCorruptionError``) naming the run and what to do."""
    service = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=flows(), fault_attempts=2, lease_ttl=30
    )
    await service.start("approval", run_id="bad")
    dead = await dead_claim(store, fake_clock, "bad", BAD["garbage"])
    with pytest.raises(IntentCorruptionError, match=r"'bad'.*attempt 1 of 2.*back-off") as got:
        await service.execute("bad", dead.revision, "dead-claim")
    assert isinstance(got.value, StoreCorruptionError)
    assert (got.value.run_id, got.value.attempt, got.value.failed) == ("bad", 1, False)
    assert await service.recover() == []  # backed off
    fake_clock.advance(31)
    assert await service.recover() == []
    final = await store.get("bad")
    assert final.status == "failed"
    assert "attempt 2 of 2" in (final.fault or "")


async def test_an_intent_read_again_is_replayed_once(
    store: RunStore, fake_clock: FakeClock, effects_log: Path
) -> None:
    """An intent that reads again (a release that knows it, a restored record) is replayed
    by the next attempt, once, and the run goes on as if it had never faulted."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), lease_ttl=30)
    await service.start("approval", run_id="r1")
    await dead_claim(store, fake_clock, "r1", BAD["garbage"])
    fake_clock.advance(1)
    assert await service.recover() == []
    faulted = await store.get("r1")
    assert faulted.fault_count == 1
    good = encode_intent(Intent(kind="resume", data={"action": "approved"}), "r1")
    restored = msgspec.structs.replace(
        faulted,
        revision=faulted.revision + 1,
        intent=encode_intent(Intent(kind="unreadable", raw=good, refusals=1), "r1"),
    )
    await store.save(restored, faulted.revision)
    fake_clock.advance(31)
    [result] = await service.recover()
    assert result.status == "completed"
    after = await store.get("r1")
    assert (after.status, after.fault) == ("completed", None)
    assert effects(effects_log)[("pay", "r1")] == 1
    assert await service.recover() == []
    assert effects(effects_log)[("pay", "r1")] == 1
