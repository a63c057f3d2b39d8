"""Expiry is a rule (DESIGN §9): deadlines refuse decisions, the scheduler applies on_expiry."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import pytest

from flowcraft import (
    Delivery,
    FlowRuntime,
    NodeNotAwaitingError,
    PauseExpiredError,
    RunActiveError,
    RunNotFoundError,
    UnknownActionError,
    create_flow,
)
from flowcraft._service.parts import Claimed
from flowcraft.stores import DurableScheduler, FlowService, MemoryStore, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import Bus, flows, reminder, submit, woke


def make(store: RunStore, clock: FakeClock, **kw: object) -> tuple[FlowService, Bus]:
    bus = Bus()
    service = FlowService(FlowRuntime(clock=clock, event_bus=bus), store, flows=flows(), **kw)  # type: ignore[arg-type]
    return service, bus


@pytest.mark.parametrize("on_expiry", ["cancel", "keep"])
async def test_a_decision_after_max_pause_is_refused_and_the_scheduler_expires_the_run(
    store: RunStore, fake_clock: FakeClock, on_expiry: str
) -> None:
    """Past max_pause: PauseExpiredError, then on_expiry, workflow:expire and on_result once."""
    service, bus = make(store, fake_clock, max_pause=600, on_expiry=on_expiry)
    await service.start("approval", run_id="r1")
    fake_clock.advance(601)
    before = await service.get("r1")
    with pytest.raises(PauseExpiredError, match=r"run 'r1': its pause expired") as caught:
        await service.resume("r1", {"action": "approved"})
    assert caught.value.deadline == before.pause_deadline
    assert await service.get("r1") == before
    seen: list[str] = []
    sched = DurableScheduler(service, on_result=lambda r: seen.append(r.status))
    assert await sched.tick() == 1
    assert await sched.tick() == 0  # expired once
    stored = await service.get("r1")
    assert stored.status == ("cancelled" if on_expiry == "cancel" else "awaiting")
    assert seen == [stored.status]
    assert (sched.expired, sched.fired) == (1, 0)
    expire = [e for e in bus.events if e.type == "workflow:expire"]
    assert [(e.run_id, e.payload["reason"], e.payload["on_expiry"]) for e in expire] == [
        ("r1", "max_pause", on_expiry)
    ]
    assert (await service.history("r1"))[-1].event == "expire"
    if on_expiry == "keep":
        assert stored.expired_at == fake_clock.now()
        with pytest.raises(PauseExpiredError):
            await service.resume("r1", {"action": "approved"})
        assert [r.run_id for r in await service.list(expired=True)] == ["r1"]


async def test_a_hold_with_expires_in_expires_at_its_own_deadline(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """pause(expires_in=) is a TTL for that suspension, without any max_pause."""
    service, bus = make(store, fake_clock, on_expiry="cancel")
    await service.start("approval", run_id="r1")
    held = await service.pause("r1", reason="maintenance", by="ops", expires_in=60)
    assert held.pause_deadline == fake_clock.now() + timedelta(seconds=60)
    sched = DurableScheduler(service)
    fake_clock.advance(59)
    assert await sched.tick() == 0
    fake_clock.advance(2)
    assert await sched.tick() == 1
    assert (await service.get("r1")).status == "cancelled"
    assert [e.payload["reason"] for e in bus.events if e.type == "workflow:expire"] == [
        "expires_in"
    ]


async def test_a_timer_due_before_the_deadline_fires_first(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A sleep (60 s) shorter than max_pause fires; the run then finishes, nothing expires."""
    service, _ = make(store, fake_clock, max_pause=120, on_expiry="cancel")
    await service.start("reminder", run_id="t1")
    fake_clock.advance(600)
    sched = DurableScheduler(service)
    await sched.tick()
    assert (await service.get("t1")).status == "completed"
    assert (sched.fired, sched.expired) == (1, 0)


@pytest.mark.parametrize("path", ["claim_due", "fire_due", "executor"])
@pytest.mark.parametrize(("max_pause", "first"), [(60, "timer"), (59, "expiry")])
async def test_a_timer_due_at_the_pause_deadline_fires_and_one_due_after_it_expires(
    store: RunStore, fake_clock: FakeClock, path: str, max_pause: float, first: str
) -> None:
    """The rule for a run whose timer and pause deadline are both due, on each of the
    scheduler's paths (batched claims, ``fire_due``, handing to an executor): the pause
    deadline wins only when it passed before the timer was due; a timer due at the very
    instant of the deadline fires."""
    outbox = Outbox()
    service = FlowService(
        FlowRuntime(clock=fake_clock),
        store,
        flows=[reminder(seconds=60)],
        max_pause=max_pause,
        on_expiry="keep",
        executor=outbox if path == "executor" else None,
    )
    await service.start("reminder", run_id="t1")
    if path == "executor":  # a worker executes the start
        d = outbox.sent.pop()
        await service.execute(d.run_id, d.revision, d.delivery_id)
    stored = await service.get("t1")
    assert (stored.wake_at, stored.pause_deadline) == (
        fake_clock.now() + timedelta(seconds=60),
        fake_clock.now() + timedelta(seconds=max_pause),
    )
    fake_clock.advance(60)  # both due
    due = await store.due(fake_clock.now(), 10)
    assert [r.run_id for r in due] == ["t1"]
    if path == "claim_due":
        [plan] = await service.claim_due(due)
        if first == "timer":
            assert isinstance(plan, Claimed)  # claimed in the tick's batch, fired as a timer
            results, expired = await service.fire_claimed(plan)
        else:
            assert plan is True  # left to fire_due, which expires it
            results, expired = await service.fire_due("t1", due[0])
    elif path == "fire_due":
        results, expired = await service.fire_due("t1", due[0])
    else:
        sched = DurableScheduler(service)
        await sched.tick()
        results, expired = [], sched.expired
        fired = [(d.kind, d.node_id) for d in outbox.sent]
        assert fired == ([("fire", "nap")] if first == "timer" else [])
    after = await service.get("t1")
    events = [h.event for h in await service.history("t1")]
    if first == "timer":
        assert expired == 0
        assert after.expired_at is None
        assert "expire" not in events
        if path != "executor":
            assert [r.status for r in results] == ["completed"]
    else:
        assert expired == 1
        assert after.expired_at == fake_clock.now()
        assert (after.status, events[-1]) == ("awaiting", "expire")


async def test_cleanup_expired_removes_expired_suspensions_and_delete_removes_one_run(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """cleanup(expired=True) deletes awaiting runs past their deadline; delete() one run."""
    service, _ = make(store, fake_clock, max_pause={"approval": 600})
    for i in range(3):
        await service.start("approval", run_id=f"e{i}")
    await service.start("reminder", run_id="t1")
    fake_clock.advance(601)
    await service.start("approval", run_id="fresh")
    assert await service.cleanup(expired=True) == 3
    assert sorted(r.run_id for r in await service.list()) == ["fresh", "t1"]
    await service.delete("t1")
    with pytest.raises(RunNotFoundError):
        await service.get("t1")
    assert await service.history("fresh")
    with pytest.raises(RunNotFoundError):
        await service.delete("t1")


async def test_delete_refuses_a_running_run_unless_forced(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A run under a live lease is refused with RunActiveError and stays; force deletes it."""
    import msgspec

    service, _ = make(store, fake_clock)
    await service.start("approval", run_id="r1")
    stored = await service.get("r1")
    running = msgspec.structs.replace(
        stored,
        status="running",
        revision=stored.revision + 1,
        owner="other",
        lease_until=fake_clock.now() + timedelta(seconds=30),
    )
    await store.save(running, stored.revision)
    with pytest.raises(RunActiveError, match=r"running in other; delete was refused"):
        await service.delete("r1")
    assert await service.get("r1") == running
    await service.delete("r1", force=True)
    with pytest.raises(RunNotFoundError):
        await service.get("r1")


async def test_resume_count_and_last_resumed_at_count_decisions(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """resume_count/last_resumed_at count applied decisions; a refused one leaves them."""
    service, _ = make(store, fake_clock)
    await service.start("two-waits", run_id="r1")
    assert (await service.get("r1")).resume_count == 0
    fake_clock.advance(5)
    await service.resume("r1", {"action": "ok"}, node_id="a")
    stored = await service.get("r1")
    assert (stored.resume_count, stored.last_resumed_at) == (1, fake_clock.now())
    with pytest.raises(NodeNotAwaitingError):
        await service.resume("r1", {"action": "ok"}, node_id="nope")
    assert (await service.get("r1")).resume_count == 1
    await service.resume("r1", {"action": "ok"}, node_id="b")
    assert (await service.get("r1")).resume_count == 2


def twice() -> Any:
    """submit → wait "first" (ok) → wait "second" (approved) → done."""
    return (
        create_flow("twice")
        .node("submit", submit, name="submit")
        .wait("first")
        .wait("second")
        .node("done", woke, name="done")
        .edge("submit", "first")
        .edge("first", "second", action="ok")
        .edge("second", "done", action="approved")
    )


class Outbox:
    """An executor that keeps what it is handed (a broker nobody reads)."""

    def __init__(self) -> None:
        self.sent: list[Delivery] = []

    async def submit(self, delivery: Delivery) -> None:
        self.sent.append(delivery)


@pytest.mark.parametrize("where", ["caller", "worker", "recovery"])
async def test_a_decision_refused_after_its_claim_counts_nowhere(
    store: RunStore, fake_clock: FakeClock, where: str
) -> None:
    """Refused in the claiming call, on the worker it was handed to, or by the recovery of a
    claim whose process died: resume_count and last_resumed_at are left as they were."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[twice()], lease_ttl=30)
    await service.start("twice", run_id="r1")
    fake_clock.advance(5)
    await service.resume("r1", {"action": "ok"}, node_id="first")
    before = await service.get("r1")
    assert (before.resume_count, before.last_resumed_at) == (1, fake_clock.now())
    fake_clock.advance(5)
    if where == "caller":
        with pytest.raises(UnknownActionError, match="'maybe'"):
            await service.resume("r1", {"action": "maybe"})
    else:
        outbox = Outbox()
        client = FlowService(
            FlowRuntime(clock=fake_clock), store, flows=[twice()], lease_ttl=30, executor=outbox
        )
        assert (await client.resume("r1", {"action": "maybe"})).status == "running"
        claimed = await service.get("r1")
        assert claimed.resume_count == 2  # counted while it is being applied
        d = outbox.sent.pop()
        if where == "worker":
            with pytest.raises(UnknownActionError, match="'maybe'"):
                await service.execute(d.run_id, d.revision, d.delivery_id)
        else:  # the claiming process died: its lease lapses, recovery replays the claim
            fake_clock.advance(31)
            assert await service.recover() == []
    after = await service.get("r1")
    assert (after.status, after.awaiting) == ("awaiting", ("second",))
    assert (after.resume_count, after.last_resumed_at) == (1, before.last_resumed_at)
    fake_clock.advance(5)
    await service.resume("r1", {"action": "approved"})
    done = await service.get("r1")
    assert (done.status, done.resume_count, done.last_resumed_at) == (
        "completed",
        2,
        fake_clock.now(),
    )


async def test_service_transitions_are_logged_with_run_and_flow_ids(
    store: RunStore, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The "flowcraft" logger hears start, claim, commit, hold, release, resume, expire."""
    service, _ = make(store, fake_clock, max_pause=600)
    with caplog.at_level(logging.DEBUG, logger="flowcraft"):
        await service.start("approval", run_id="r1")
        await service.pause("r1", by="ops")
        await service.release("r1", by="ops")
        await service.resume("r1", {"action": "approved"})
        await service.start("approval", run_id="r2")
        fake_clock.advance(601)
        await DurableScheduler(service).tick()
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("flowcraft"))
    for word in (
        "start run r1",
        "claim run r1",
        "commit run r1",
        "hold run r1",
        "release run r1",
        "resume run r1",
        "expire run r2",
    ):
        assert word in text
    assert "(flow approval)" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="flowcraft"):
        await service.start("approval", run_id="r3")
    assert not [r for r in caplog.records if r.name.startswith("flowcraft")]


def test_max_pause_takes_duration_strings_and_refuses_bad_ones_at_once() -> None:
    """max_pause reads like the builder's durations ("7d", "1h30m"); a typo fails at once."""
    from flowcraft import InvalidDurationError

    runtime = FlowRuntime()
    limits = {"expense": "1h30m", "*": "7d"}
    service = FlowService(runtime, MemoryStore(), flows=[], max_pause=limits)
    assert service.host.pause_limit("expense") == timedelta(minutes=90)
    assert service.host.pause_limit("other") == timedelta(days=7)
    with pytest.raises(InvalidDurationError, match="max_pause"):
        FlowService(runtime, MemoryStore(), flows=[], max_pause="7x")
