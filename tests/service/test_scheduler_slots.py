"""The durable scheduler's ``concurrency`` bounds the firings whose nodes run, not commits.

A timer firing gives its place up once its nodes have run: the next firing's nodes run while
its outcome is committed (so the store can write many outcomes at once), and it takes a place
again before anything else due for the run fires.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime, NodeContext, StoreError, create_flow
from flowcraft.stores import DurableScheduler, FlowService, RunStore, StoredRun
from flowcraft.testing import FakeClock


class Meter:
    """Counts each node call and the most node calls running at once."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str]] = Counter()
        self.active = 0
        self.most = 0
        self.ran: dict[str, anyio.Event] = {}

    def ran_event(self, run_id: str) -> anyio.Event:
        return self.ran.setdefault(run_id, anyio.Event())

    async def node(self, ctx: NodeContext) -> str:
        self.calls[(ctx.node_id, ctx.run_id)] += 1
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await anyio.sleep(0.02)  # long enough for another firing's nodes to overlap
        finally:
            self.active -= 1
        self.ran_event(ctx.run_id).set()
        return ctx.node_id


def make(store: RunStore, clock: FakeClock, meter: Meter) -> FlowService:
    nap = create_flow("nap").sleep("nap", duration=60).node("woke", meter.node).edge("nap", "woke")
    twin = (
        create_flow("twin")
        .sleep("s1", duration=60)
        .sleep("s2", duration=60)
        .node("w1", meter.node)
        .node("w2", meter.node)
        .edge("s1", "w1")
        .edge("s2", "w2")
    )
    return FlowService(FlowRuntime(clock=clock), store, flows=[nap, twin])


async def fire_all(sched: DurableScheduler) -> None:
    with anyio.fail_after(30):
        while await sched.tick():
            pass


async def test_the_next_firing_runs_while_an_outcome_commits(
    store: RunStore, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """concurrency=1: run b's nodes run while run a's outcome waits to be written.

    The write of a's outcome is held until b's node has run: were the place held through the
    commit, b could not start and the write would give up (and a would not complete).
    """
    meter = Meter()
    service = make(store, fake_clock, meter)
    await service.start("nap", run_id="a")
    fake_clock.advance(1)
    await service.start("nap", run_id="b")
    fake_clock.advance(3600)
    save = store.save

    async def gated(run: StoredRun, expected_revision: int, **kw: Any) -> None:
        if run.run_id == "a" and run.status == "completed":
            with anyio.fail_after(5):
                await meter.ran_event("b").wait()
        await save(run, expected_revision, **kw)

    monkeypatch.setattr(store, "save", gated)
    order: list[str] = []
    sched = DurableScheduler(service, on_result=lambda r: order.append(r.run_id), concurrency=1)
    await fire_all(sched)
    assert sched.faults == 0
    assert sorted(order) == ["a", "b"]
    assert [(await service.get(r)).status for r in "ab"] == ["completed", "completed"]
    assert meter.calls == Counter({("woke", "a"): 1, ("woke", "b"): 1})
    assert meter.most == 1


async def test_nodes_of_at_most_concurrency_firings_run_at_once(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """concurrency=2 over six due runs: two firings' nodes overlap, never three."""
    meter = Meter()
    service = make(store, fake_clock, meter)
    for i in range(6):
        await service.start("nap", run_id=f"r{i}")
    fake_clock.advance(3600)
    sched = DurableScheduler(service, concurrency=2)
    await fire_all(sched)
    assert sched.fired == 6
    assert meter.most == 2
    assert meter.calls == Counter({("woke", f"r{i}"): 1 for i in range(6)})


async def test_a_firing_takes_a_place_again_before_more_of_its_run_fires(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """concurrency=1: a run with two due timers fires the second only once it has a place.

    Its first firing gave the place up to commit; run n, due next, takes it. The second
    timer's node must not run beside n's.
    """
    meter = Meter()
    service = make(store, fake_clock, meter)
    await service.start("twin", run_id="t")
    fake_clock.advance(1)
    await service.start("nap", run_id="n")
    fake_clock.advance(3600)
    sched = DurableScheduler(service, concurrency=1)
    await fire_all(sched)
    assert meter.most == 1
    assert meter.calls == Counter({("w1", "t"): 1, ("w2", "t"): 1, ("woke", "n"): 1})
    assert [(await service.get(r)).status for r in "tn"] == ["completed", "completed"]


async def test_a_page_is_claimed_in_parts_and_each_run_fires_once(
    store: RunStore, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 due runs in one page: claimed in parts (the next while one fires), each fired once."""
    meter = Meter()
    service = make(store, fake_clock, meter)
    for i in range(120):
        await service.start("nap", run_id=f"r{i:03}")
    fake_clock.advance(3600)
    claim_due = service.claim_due
    sizes: list[int] = []

    async def counted(runs: list[StoredRun]) -> Any:
        sizes.append(len(runs))
        return await claim_due(runs)

    monkeypatch.setattr(service, "claim_due", counted)
    sched = DurableScheduler(service, batch=200, concurrency=8)
    assert await sched.tick() == 120
    assert sizes == [50, 50, 20]
    assert meter.calls == Counter({("woke", f"r{i:03}"): 1 for i in range(120)})
    assert not service.host.busy


async def test_a_failed_claim_of_a_later_part_is_raised_after_the_started_runs_fire(
    store: RunStore, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second part's claim fails: the first part fires, the tick raises the store's
    error, and the next tick fires the rest, once each."""
    meter = Meter()
    service = make(store, fake_clock, meter)
    for i in range(80):
        await service.start("nap", run_id=f"r{i:02}")
    fake_clock.advance(3600)
    claim_due = service.claim_due
    calls = [0]

    async def failing(runs: list[StoredRun]) -> Any:
        calls[0] += 1
        if calls[0] == 2:
            raise StoreError("the store went away")
        return await claim_due(runs)

    monkeypatch.setattr(service, "claim_due", failing)
    sched = DurableScheduler(service, batch=200)
    with pytest.raises(StoreError, match="went away"):
        await sched.tick()
    assert sched.fired == 50
    assert not service.host.busy  # the runs not started are free for the next tick
    statuses = Counter([(await service.get(f"r{i:02}")).status for i in range(80)])
    assert statuses == Counter({"completed": 50, "awaiting": 30})
    await fire_all(sched)
    assert sched.fired == 80
    assert meter.calls == Counter({("woke", f"r{i:02}"): 1 for i in range(80)})
