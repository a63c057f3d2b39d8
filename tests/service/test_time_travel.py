"""Checkpoint history and time travel (DESIGN §9): checkpoints, rollback, fork."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft import (
    AlreadyDecidedError,
    CheckpointNotFoundError,
    FlowRuntime,
    NotAwaitingError,
    RunActiveError,
    RunHeldError,
)
from flowcraft.stores import DurableScheduler, FlowService, MemoryStore, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import NAP, flows, model_flow


async def test_checkpoints_keep_each_stored_state_and_only_the_newest(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Every segment's result is a checkpoint; keep_checkpoints bounds how many are kept."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), keep_checkpoints=2)
    await service.start("two-waits", run_id="r1")
    first = await service.checkpoints("r1")
    assert [(c.status, c.awaiting) for c in first] == [("awaiting", ("a", "b"))]
    await service.resume("r1", {"action": "ok"}, node_id="a")
    await service.resume("r1", {"action": "ok"}, node_id="b")
    kept = await service.checkpoints("r1")
    assert [c.status for c in kept] == ["awaiting", "completed"]
    assert kept[-1] == await service.get("r1")
    assert kept[0].revision < kept[1].revision


async def test_rollback_makes_an_earlier_checkpoint_current_and_it_can_be_decided_again(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A completed run rolled back to its wait awaits again, with a new revision and history."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    waiting = (await service.checkpoints("r1"))[0]
    done = await service.resume("r1", {"action": "rejected"})
    assert done.outputs["refuse"] == "refused"
    before = await service.get("r1")
    back = await service.rollback("r1", waiting.revision, by="ops", reason="wrong call")
    assert back.status == "awaiting"
    now = await service.get("r1")
    assert now.revision == before.revision + 1
    assert now.context == waiting.context
    assert now.awaiting == ("approve",)
    last = (await service.history("r1"))[-1]
    assert (last.event, last.by, last.reason) == ("rollback", "ops", "wrong call")
    assert last.data == {"from_revision": before.revision, "to_revision": waiting.revision}
    again = await service.resume("r1", {"action": "approved"})
    assert again.outputs["pay"] == "paid"
    assert (await service.checkpoints("r1"))[-1].status == "completed"


async def test_rollback_of_a_held_run_keeps_the_hold_until_a_release(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A held run rolled back to an awaiting checkpoint stays held (only release ends a hold):
    who held it, why and its deadline are kept, its timers and decisions wait for the release."""
    service = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=flows(), max_pause=3600, on_expiry="keep"
    )
    await service.start("reminder", run_id="r1")  # sleeps 60 s
    first = (await service.checkpoints("r1"))[0]
    fake_clock.advance(60)
    await DurableScheduler(service).tick()
    assert (await service.get("r1")).status == "completed"
    back = await service.rollback("r1", first.revision, by="ops", reason="redo")
    assert back.status == "awaiting"
    held = await service.pause("r1", by="ann", reason="audit", request_id="q1", expires_in=600)
    deadline = held.pause_deadline
    fake_clock.advance(10)
    await service.rollback("r1", first.revision, by="ops", reason="again")
    now = await service.get("r1")
    assert now.held
    assert (now.paused_at, now.paused_by, now.pause_reason, now.pause_request_id) == (
        held.paused_at,
        "ann",
        "audit",
        "q1",
    )
    assert now.pause_deadline == deadline
    assert now.due_at == deadline  # the sleep waits for the release; only the hold is due
    fake_clock.advance(120)  # long past the rolled-back sleep's wake time
    assert await DurableScheduler(service).tick() == 0
    assert (await service.get("r1")).status == "awaiting"
    with pytest.raises(RunHeldError):
        await service.resume("r1", {"action": "ok"}, node_id="nap")
    events = [h.event for h in await service.history("r1")]
    assert events[-2:] == ["hold", "rollback"]  # no release was recorded: none happened
    await service.release("r1", by="ann")
    assert await DurableScheduler(service).tick() == 1  # the overdue sleep fires now
    assert (await service.get("r1")).status == "completed"


async def test_rollback_of_a_held_run_to_a_finished_checkpoint_records_the_release(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A held run rolled back to a finished checkpoint cannot stay held: the history says the
    hold ended (a ``release`` after the ``rollback``, by whoever rolled it back)."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    waiting = (await service.checkpoints("r1"))[0]
    await service.resume("r1", {"action": "approved"})
    done = (await service.checkpoints("r1"))[-1]
    await service.rollback("r1", waiting.revision)
    await service.pause("r1", by="ann", reason="audit")
    back = await service.rollback("r1", done.revision, by="ops", reason="it was fine")
    assert back.status == "completed"
    now = await service.get("r1")
    assert (now.status, now.held) == ("completed", False)
    history = await service.history("r1")
    assert [(h.event, h.by) for h in history[-3:]] == [
        ("hold", "ann"),
        ("rollback", "ops"),
        ("release", "ops"),
    ]
    assert history[-1].reason == "audit"


async def test_rollback_refuses_unknown_revisions_and_running_runs(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """An unkept revision raises CheckpointNotFoundError, a running run RunActiveError."""
    import msgspec

    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    before = await service.get("r1")
    with pytest.raises(CheckpointNotFoundError, match=r"no checkpoint at revision 999"):
        await service.rollback("r1", 999)
    assert await service.get("r1") == before
    running = msgspec.structs.replace(
        before, status="running", revision=before.revision + 1, owner="p2"
    )
    await store.save(running, before.revision)
    with pytest.raises(RunActiveError, match="rollback was refused"):
        await service.rollback("r1", before.revision)
    assert await service.get("r1") == running


async def test_fork_starts_a_new_run_from_a_checkpoint_and_leaves_the_original(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A fork has its own id inside its context, the checkpoint's state, and a fork record."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    point = (await service.checkpoints("r1"))[0]
    await service.resume("r1", {"action": "rejected"})
    original = await service.get("r1")
    forked = await service.fork("r1", point.revision, new_run_id="r2", by="ops")
    assert (forked.run_id, forked.status) == ("r2", "awaiting")
    assert (await service.get("r2")).awaiting == ("approve",)
    final = await service.resume("r2", {"action": "approved"})
    assert final.run_id == "r2"
    assert final.outputs["pay"] == "paid"
    assert await service.get("r1") == original
    first = (await service.history("r2"))[0]
    assert first.event == "fork"
    assert first.data == {"from_run": "r1", "from_revision": point.revision}


async def test_a_decision_for_a_fork_whose_sleep_fired_is_not_pinned_on_the_sleep(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Forked at its sleep, the fork's history has no pause of it: it still counts as a timer.

    Found by the model machine (tests/service/test_model.py): the decision was refused with
    ``AlreadyDecidedError`` naming the sleep, decided "by scheduler" with no action.
    """
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[model_flow(Counter())])
    await service.start("model", run_id="r1")
    await service.resume("r1", {"action": "approved"})  # now asleep in "nap"
    napping = (await service.checkpoints("r1"))[-1]
    assert napping.awaiting == ("nap",)
    await service.fork("r1", napping.revision, new_run_id="r2")
    fake_clock.advance(NAP)
    assert await DurableScheduler(service).tick() == 2  # both naps end
    with pytest.raises(NotAwaitingError) as late:
        await service.resume("r2", {"action": "approved"})
    assert type(late.value) is NotAwaitingError  # no decision of r2's own to name
    with pytest.raises(AlreadyDecidedError) as decided:
        await service.resume("r1", {"action": "rejected"})
    assert (decided.value.node_id, decided.value.action) == ("approve", "approved")


async def test_keep_checkpoints_zero_keeps_none(fake_clock: FakeClock) -> None:
    """keep_checkpoints=0 turns the history off."""
    service = FlowService(
        FlowRuntime(clock=fake_clock), MemoryStore(), flows=flows(), keep_checkpoints=0
    )
    await service.start("approval", run_id="r1")
    assert await service.checkpoints("r1") == []


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(["decide", "rollback", "fork"]), st.integers(0, 50)), max_size=12
    )
)
async def test_rollback_and_fork_sequences_match_a_model(steps: list[tuple[str, int]]) -> None:
    """Any sequence of decisions, rollbacks and forks: each run's state is its model's."""
    clock = FakeClock()
    service = FlowService(
        FlowRuntime(clock=clock), MemoryStore(), flows=flows(), keep_checkpoints=3
    )
    await service.start("two-waits", run_id="r0")
    # model: run -> (current decided set, kept checkpoints as (revision, decided set))
    model: dict[str, tuple[frozenset[str], list[tuple[int, frozenset[str]]]]] = {
        "r0": (frozenset(), [((await service.get("r0")).revision, frozenset())])
    }
    forks = 0
    for op, pick in steps:
        run_id = sorted(model)[pick % len(model)]
        decided, kept = model[run_id]
        if op == "decide":
            left = sorted({"a", "b"} - decided)
            if not left:
                continue
            await service.resume(run_id, {"action": "ok"}, node_id=left[0])
            decided = decided | {left[0]}
            kept = [*kept, ((await service.get(run_id)).revision, decided)][-3:]
            model[run_id] = (decided, kept)
        elif op == "rollback":
            revision, state = kept[pick % len(kept)]
            await service.rollback(run_id, revision)
            kept = [*kept, ((await service.get(run_id)).revision, state)][-3:]
            model[run_id] = (state, kept)
        else:
            revision, state = kept[pick % len(kept)]
            forks += 1
            new = f"f{forks}"
            await service.fork(run_id, revision, new_run_id=new)
            model[new] = (state, [((await service.get(new)).revision, state)])
        for rid, (state, points) in model.items():
            stored = await service.get(rid)
            assert set(stored.awaiting) == {"a", "b"} - state
            assert stored.status == ("completed" if state == {"a", "b"} else "awaiting")
            assert [c.revision for c in await service.checkpoints(rid)] == [p[0] for p in points]
