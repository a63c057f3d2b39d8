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
    """Counts each node call and the most node calls running at once.

    A node sleeps ``delays[node_id]`` seconds (0.02 unless said): long enough for another
    firing's nodes to overlap it.
    """

    def __init__(self, **delays: float) -> None:
        self.delays = delays
        self.calls: Counter[tuple[str, str]] = Counter()
        self.started: list[tuple[str, str]] = []  # (node, run) in the order they began
        self.active = 0
        self.most = 0
        self.ran: dict[str, anyio.Event] = {}

    def ran_event(self, run_id: str) -> anyio.Event:
        return self.ran.setdefault(run_id, anyio.Event())

    async def node(self, ctx: NodeContext) -> str:
        self.calls[(ctx.node_id, ctx.run_id)] += 1
        self.started.append((ctx.node_id, ctx.run_id))
        self.active += 1
        self.most = max(self.most, self.active)
        try:
            await anyio.sleep(self.delays.get(ctx.node_id, 0.02))
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


def overlapping(store: RunStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a local store's firings give their place up while they commit, as PostgreSQL's and
    Redis's do (a local commit is no round trip, so they keep it by default)."""
    monkeypatch.setattr(store, "_remote", True, raising=False)


async def test_stores_over_the_network_overlap_commits_and_local_ones_do_not(
    store: RunStore,
) -> None:
    kind = type(store).__name__
    assert getattr(store, "_remote", False) == (kind in ("PostgresStore", "RedisStore"))


async def naps_due(
    store: RunStore, clock: FakeClock, meter: Meter, run_ids: list[str]
) -> FlowService:
    """A service with a "nap" run of each id (in that due order), all of them due now."""
    service = make(store, clock, meter)
    for run_id in run_ids:
        await service.start("nap", run_id=run_id)
        clock.advance(1)
    clock.advance(3600)
    return service


async def fire_all(sched: DurableScheduler) -> None:
    with anyio.fail_after(30):
        while await sched.tick():
            pass


async def test_the_next_firings_run_while_outcomes_commit(
    store: RunStore, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """concurrency=2: run c's nodes run while a's and b's outcomes wait to be written.

    The writes of a's and b's outcomes are held until c's node has run: were the places held
    through the commits, c could not start and the writes would give up.
    """
    overlapping(store, monkeypatch)
    meter = Meter()
    service = await naps_due(store, fake_clock, meter, list("abc"))
    save = store.save

    async def gated(run: StoredRun, expected_revision: int, **kw: Any) -> None:
        if run.run_id in "ab" and run.status == "completed":
            with anyio.fail_after(5):
                await meter.ran_event("c").wait()
        await save(run, expected_revision, **kw)

    monkeypatch.setattr(store, "save", gated)
    order: list[str] = []
    sched = DurableScheduler(service, on_result=lambda r: order.append(r.run_id), concurrency=2)
    await fire_all(sched)
    assert sched.faults == 0
    assert sorted(order) == ["a", "b", "c"]
    assert [(await service.get(r)).status for r in "abc"] == ["completed"] * 3
    assert meter.calls == Counter({("woke", r): 1 for r in "abc"})
    assert meter.most == 2


async def test_concurrency_1_fires_and_reports_strictly_in_due_order(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """concurrency=1 keeps a firing's place through its commit: run t's second due timer
    fires (and is heard) before run n, due after both, and no nodes overlap."""
    meter = Meter()
    service = make(store, fake_clock, meter)
    await service.start("twin", run_id="t")
    fake_clock.advance(1)
    await service.start("nap", run_id="n")
    fake_clock.advance(3600)
    order: list[str] = []
    sched = DurableScheduler(service, on_result=lambda r: order.append(r.run_id), concurrency=1)
    await fire_all(sched)
    assert order == ["t", "t", "n"]
    assert meter.started == [("w1", "t"), ("w2", "t"), ("woke", "n")]
    assert meter.most == 1


async def test_on_result_hears_at_most_concurrency_results_at_once(
    store: RunStore, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An async on_result is bounded like the nodes: concurrency=2, never three at once."""
    overlapping(store, monkeypatch)
    meter = Meter(woke=0.0)
    service = await naps_due(store, fake_clock, meter, [f"r{i}" for i in range(6)])
    hearing = [0, 0]  # now, most

    async def on_result(result: Any) -> None:
        hearing[0] += 1
        hearing[1] = max(hearing)
        await anyio.sleep(0.02)
        hearing[0] -= 1

    sched = DurableScheduler(service, on_result=on_result, concurrency=2)
    await fire_all(sched)
    assert sched.fired == 6
    assert hearing[1] == 2


async def test_nodes_of_at_most_concurrency_firings_run_at_once(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """concurrency=2 over six due runs: two firings' nodes overlap, never three."""
    meter = Meter()
    service = await naps_due(store, fake_clock, meter, [f"r{i}" for i in range(6)])
    sched = DurableScheduler(service, concurrency=2)
    await fire_all(sched)
    assert sched.fired == 6
    assert meter.most == 2
    assert meter.calls == Counter({("woke", f"r{i}"): 1 for i in range(6)})


async def test_a_firing_takes_a_place_again_before_more_of_its_run_fires(
    store: RunStore, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """concurrency=2: run t's first firing gives its place to n2 once its (quick) node ran;
    its second due timer fires only once it has a place again, never beside n1 and n2."""
    overlapping(store, monkeypatch)
    meter = Meter(w1=0.0, woke=0.05)
    service = make(store, fake_clock, meter)
    for run_id, flow in (("t", "twin"), ("n1", "nap"), ("n2", "nap")):
        await service.start(flow, run_id=run_id)
        fake_clock.advance(1)
    fake_clock.advance(3600)
    sched = DurableScheduler(service, concurrency=2)
    await fire_all(sched)
    assert meter.most == 2
    assert meter.calls == Counter(
        {("w1", "t"): 1, ("w2", "t"): 1, ("woke", "n1"): 1, ("woke", "n2"): 1}
    )
    assert [(await service.get(r)).status for r in ("t", "n1", "n2")] == ["completed"] * 3


async def test_a_page_is_claimed_in_parts_and_each_run_fires_once(
    store: RunStore, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """120 due runs in one page: claimed in parts (the next while one fires), each fired once."""
    overlapping(store, monkeypatch)
    meter = Meter()
    service = await naps_due(store, fake_clock, meter, [f"r{i:03}" for i in range(120)])
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
    overlapping(store, monkeypatch)
    meter = Meter()
    service = await naps_due(store, fake_clock, meter, [f"r{i:02}" for i in range(80)])
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
