"""A step checkpoint whose replay recovery cannot run (its flow changed under the run) is a
fault of the run, tried again with back-off, then the run fails: never a run left awaiting
nothing, never its finished nodes run again by undoing the decision."""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

import anyio
import pytest

from flowcraft import FlowcraftError, FlowRuntime, NodeContext, create_flow
from flowcraft.stores import FlowService, RunStore
from flowcraft.testing import FakeClock

GATES: dict[str, anyio.Event] = {}
RAN: Counter[tuple[str, str]] = Counter()


async def first(node: NodeContext) -> str:
    RAN[("first", node.run_id)] += 1
    return "one"


async def second(node: NodeContext) -> str:
    RAN[("second", node.run_id)] += 1
    gate = GATES.get(node.run_id)
    if gate is not None:
        await gate.wait()  # the first process "dies" here: it never gets further
    return "two"


async def third(node: NodeContext) -> str:
    return "three"


def steps(changed: bool = False) -> Any:
    """a → b → wait w; ``changed`` adds a node after b (a redeploy the run did not start on)."""
    flow = create_flow("steps").node("a", first, name="first").node("b", second, name="second")
    if changed:
        return (
            flow.node("c", third, name="third")
            .wait("w")
            .edge("a", "b")
            .edge("b", "c")
            .edge("c", "w")
        )
    return flow.wait("w").edge("a", "b").edge("b", "w")


async def stalled_after_a(store: RunStore, clock: FakeClock, tg: Any) -> str:
    """A run whose first process checkpointed node a and stalls in b (as if it died)."""
    run_id = f"s-{uuid.uuid4().hex[:8]}"
    GATES[run_id] = anyio.Event()
    own = FlowService(FlowRuntime(clock=clock), store, flows=[steps()], durability="step")

    async def doomed() -> None:
        with contextlib.suppress(FlowcraftError):  # taken over: its late commit is refused
            await own.start("steps", run_id=run_id)

    tg.start_soon(doomed)
    with anyio.fail_after(10):
        while True:
            await anyio.sleep(0.01)
            try:
                stored = await store.get(run_id)
            except FlowcraftError:
                continue
            if stored.status == "running" and stored.context:
                return run_id


@pytest.mark.parametrize("tries", [None, 1, 2])
async def test_a_refused_checkpoint_replay_backs_off_then_fails(
    store: RunStore, fake_clock: FakeClock, tries: int | None
) -> None:
    """Refused ``fault_attempts`` times (3 unless given), the run is stored failed."""
    async with anyio.create_task_group() as tg:
        run_id = await stalled_after_a(store, fake_clock, tg)
        try:
            await refused_three_times(store, fake_clock, run_id, tries)
        finally:
            GATES[run_id].set()


async def refused_three_times(
    store: RunStore, fake_clock: FakeClock, run_id: str, tries: int | None = None
) -> None:
    later = FakeClock(fake_clock.now() + timedelta(hours=1))
    other = FlowService(
        FlowRuntime(clock=later),
        store,
        flows=[steps(changed=True)],
        durability="step",
        lease_ttl=30,
        **({} if tries is None else {"fault_attempts": tries}),
    )
    attempts: list[tuple[str, int]] = []
    for _ in range(40):  # ten hours of recovery passes, a quarter hour apart
        with contextlib.suppress(FlowcraftError):
            await other.recover()
        now = await store.get(run_id)
        if now.fault_count > len(attempts):
            attempts.append((now.status, now.fault_count))
            if now.status == "running":
                assert now.awaiting == ()
                assert now.lease_until is not None
                assert now.lease_until > later.now()  # backed off: not retried at once
                [fault] = (await other.health()).faults  # health names the refused replay
                assert (fault.run_id, fault.kind) == (run_id, "checkpoint")
                assert fault.count == len(attempts)
                assert fault.retry_at == now.lease_until
        later.advance(900)
    last = tries or 3
    assert attempts == [*(("running", n) for n in range(1, last)), ("failed", last)]
    assert (await other.health()).faults == ()  # failed: it no longer faults
    final = await store.get(run_id)
    assert "BlueprintMismatchError" in (final.fault or "")
    faults = [h for h in await store.history(run_id) if h.event == "fault"]
    assert [h.data["attempt"] for h in faults if h.data] == list(range(1, last + 1))
    assert RAN[("first", run_id)] == 1  # never run again by undoing the start


async def test_a_refused_checkpoint_replay_goes_on_once_its_flow_is_back(
    store: RunStore, fake_clock: FakeClock
) -> None:
    async with anyio.create_task_group() as tg:
        run_id = await stalled_after_a(store, fake_clock, tg)
        try:
            await refused_then_back(store, fake_clock, run_id)
        finally:
            GATES[run_id].set()


async def refused_then_back(store: RunStore, fake_clock: FakeClock, run_id: str) -> None:
    later = FakeClock(fake_clock.now() + timedelta(hours=1))
    changed = FlowService(
        FlowRuntime(clock=later), store, flows=[steps(changed=True)], durability="step"
    )
    assert await changed.recover() == []  # refused: logged, a fault of the run
    assert (await store.get(run_id)).fault_count == 1
    later.advance(3600)
    GATES[run_id].set()  # the old process's late commit is refused (taken over)
    back = FlowService(FlowRuntime(clock=later), store, flows=[steps()], durability="step")
    await back.recover()
    now = await store.get(run_id)
    assert (now.status, now.awaiting) == ("awaiting", ("w",))
    assert RAN[("first", run_id)] == 1
    done = await back.resume(run_id, {"action": "ok"})
    assert done.status == "completed"
