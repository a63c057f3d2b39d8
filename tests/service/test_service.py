"""FlowService: durable start/resume/pause/cancel, exactly-once resumes, the durable scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from flowcraft import (
    FlowRuntime,
    NodeContext,
    NodeNotAwaitingError,
    NotAwaitingError,
    RevisionConflictError,
    RunNotFoundError,
    StoreError,
    UnknownActionError,
    WaitExpiredError,
    create_flow,
)
from flowcraft._service.service import UnknownFlowError
from flowcraft.stores import DurableScheduler, FlowService, MemoryStore, RunStore, SqliteStore
from flowcraft.testing import FakeClock

ROOT = Path(__file__).resolve().parents[2]
CALLS: list[str] = []


async def submit(node: NodeContext) -> str:
    CALLS.append("submit")
    return "submitted"


async def pay(node: NodeContext) -> str:
    CALLS.append("pay")
    await anyio.lowlevel.checkpoint()
    return f"paid ({node.input})"


async def refuse(node: NodeContext) -> str:
    CALLS.append("refuse")
    return "refused"


async def escalate(node: NodeContext) -> str:
    CALLS.append("escalate")
    return "escalated"


async def after(node: NodeContext) -> str:
    CALLS.append("after")
    return "woke"


def approval_flow() -> Any:
    return (
        create_flow("approval")
        .node("submit", submit, name="submit")
        .wait("approve", timeout=3600, on_timeout="timeout")
        .node("pay", pay, name="pay")
        .node("refuse", refuse, name="refuse")
        .node("escalate", escalate, name="escalate")
        .edge("submit", "approve")
        .edge("approve", "pay", action="approved")
        .edge("approve", "refuse", action="rejected")
        .edge("approve", "escalate", action="timeout")
    )


def timer_flow() -> Any:
    return (
        create_flow("reminder")
        .node("submit", submit, name="submit")
        .sleep("nap", duration=60)
        .node("after", after, name="after")
        .edge("submit", "nap")
        .edge("nap", "after")
    )


GATE: dict[str, anyio.Event] = {}


async def slow(node: NodeContext) -> str:
    """Blocks until the test opens the gate (signals it started first)."""
    CALLS.append("slow")
    GATE["started"].set()
    await GATE["open"].wait()
    return "slow done"


def pausable_flow() -> Any:
    return (
        create_flow("pausable")
        .node("slow", slow, name="slow")
        .node("next", after, name="next")
        .edge("slow", "next")
    )


def flows() -> list[Any]:
    return [approval_flow(), timer_flow(), pausable_flow()]


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    GATE.clear()
    GATE["started"] = anyio.Event()
    GATE["open"] = anyio.Event()


@pytest.fixture
def service(store: RunStore, fake_clock: FakeClock) -> FlowService:
    return FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())


# --- start / resume / list -------------------------------------------------------------------


async def test_start_stores_an_awaiting_run_that_lists_by_status_and_reason(
    service: FlowService,
) -> None:
    """A started run that reaches a wait is stored awaiting, with its due expiry indexed."""
    result = await service.start("approval", {"amount": 10}, run_id="r1")
    assert result.status == "awaiting"
    stored = await service.get("r1")
    assert (stored.status, stored.awaiting, stored.reasons) == ("awaiting", ("approve",), ("wait",))
    assert stored.expires_at == stored.due_at == datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert [r.run_id for r in (await service.list(status="awaiting")).runs] == ["r1"]
    assert [r.run_id for r in (await service.list(reason="wait")).runs] == ["r1"]
    assert (await service.list(reason="timer")).runs == ()
    assert (await service.result("r1")).context == {"amount": 10}


async def test_resume_by_run_id_completes_and_records_who_decided(service: FlowService) -> None:
    """resume(run_id, ...) loads, applies, and stores; history says who and what."""
    await service.start("approval", run_id="r1")
    result = await service.resume("r1", {"output": "ok", "action": "approved"}, by="ann")
    assert result.status == "completed"
    assert result.outputs["pay"] == "paid (ok)"
    assert (await service.get("r1")).status == "completed"
    events = [(h.event, h.node_id, h.by, h.action) for h in await service.history("r1")]
    assert events == [
        ("start", None, None, None),
        ("pause", "approve", None, None),
        ("resume", "approve", "ann", "approved"),
        ("completed", None, None, None),
    ]


async def test_start_of_an_unknown_flow_raises(service: FlowService) -> None:
    """Only flows given to the service can start, and nothing is stored."""
    with pytest.raises(UnknownFlowError, match="'nope' is not registered"):
        await service.start("nope", run_id="x")
    with pytest.raises(RunNotFoundError):
        await service.get("x")


async def test_flows_and_stored_runs_through_the_public_api(service: FlowService) -> None:
    """``flow``, ``flow_ids`` and ``result_of``: what adapters read instead of the internals."""
    assert service.flow_ids == ("approval", "pausable", "reminder")
    bp, registry = service.flow("approval")
    assert bp.id == "approval"
    assert bp == approval_flow().to_blueprint()
    assert set(registry) == set(approval_flow().registry)
    with pytest.raises(UnknownFlowError, match="'nope' is not registered"):
        service.flow("nope")
    await service.start("approval", {"amount": 10}, run_id="r1")
    stored = await service.get("r1")
    result = service.result_of(stored)
    assert result == await service.result("r1")
    assert (result.status, [a.node_id for a in result.awaiting]) == ("awaiting", ["approve"])
    starting = msgspec.structs.replace(stored, context=b"")
    with pytest.raises(StoreError, match="has not stored a context yet"):
        service.result_of(starting)
    with pytest.raises(UnknownFlowError):
        service.result_of(msgspec.structs.replace(stored, flow_id="gone"))


async def test_duplicate_webhook_delivery_is_applied_once(service: FlowService) -> None:
    """The same decision delivered twice with one idempotency key runs nothing the second time."""
    await service.start("approval", run_id="r1")
    first = await service.resume("r1", {"action": "approved"}, idempotency_key="hook-1")
    again = await service.resume("r1", {"action": "approved"}, idempotency_key="hook-1")
    assert CALLS.count("pay") == 1
    assert again.revision == first.revision
    assert again.outputs == first.outputs
    assert again.serialized_context == first.serialized_context
    assert [h.event for h in await service.history("r1")].count("resume") == 1


async def test_concurrent_duplicate_deliveries_return_the_first_result(
    service: FlowService,
) -> None:
    """Duplicates racing each other: one is applied, every caller gets its result."""
    await service.start("approval", run_id="r1")
    results: list[Any] = []

    async def deliver() -> None:
        results.append(await service.resume("r1", {"action": "approved"}, idempotency_key="k"))

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(deliver)
    assert len({r.serialized_context for r in results}) == 1
    stored = await service.get("r1")
    assert stored.revision == 3  # start; then the claim and the commit of the one resume
    assert [h.event for h in await service.history("r1")].count("resume") == 1


async def test_two_different_concurrent_resumes_have_exactly_one_winner(
    service: FlowService,
) -> None:
    """Approve and reject racing: one is stored, the other raises and leaves no trace."""
    await service.start("approval", run_id="r1")
    outcomes: dict[str, Any] = {}

    async def decide(action: str) -> None:
        try:
            outcomes[action] = await service.resume("r1", {"action": action}, by=action)
        except (RevisionConflictError, NotAwaitingError, NodeNotAwaitingError) as exc:
            outcomes[action] = exc  # NotAwaiting...: the winner was stored before we loaded

    async with anyio.create_task_group() as tg:
        tg.start_soon(decide, "approved")
        tg.start_soon(decide, "rejected")
    errors = [a for a, o in outcomes.items() if isinstance(o, Exception)]
    assert len(errors) == 1
    winner = "rejected" if errors == ["approved"] else "approved"
    final = await service.result("r1")
    assert final.status == "completed"
    assert ("pay" in final.outputs) == (winner == "approved")
    resumes = [h for h in await service.history("r1") if h.event == "resume"]
    assert [h.by for h in resumes] == [winner]
    with pytest.raises(NotAwaitingError):
        await service.resume("r1", {"action": errors[0]})


async def test_resume_of_a_node_already_resumed_raises_node_not_awaiting(
    service: FlowService,
) -> None:
    """Once the winner is stored, a late resume of that wait is refused."""
    await service.start("reminder", run_id="t1")
    with pytest.raises(NodeNotAwaitingError):
        await service.resume("t1", None, "submit")


RESUMER = """
import sys, anyio
from flowcraft import FlowRuntime, RevisionConflictError, NodeNotAwaitingError, NotAwaitingError
from flowcraft.stores import FlowService, SqliteStore
from tests.service.test_service import flows

path, action = sys.argv[1:3]

async def main():
    service = FlowService(FlowRuntime(), SqliteStore(path), flows=flows())
    await service.get("r1")
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        result = await service.resume("r1", {"action": action}, by=action)
        print("won", result.revision, flush=True)
    except (RevisionConflictError, NodeNotAwaitingError, NotAwaitingError) as exc:
        print("lost", type(exc).__name__, flush=True)
    await service.store.close()

anyio.run(main)
"""


async def test_processes_racing_different_resumes_have_exactly_one_winner(
    tmp_path: Path,
) -> None:
    """Several processes resuming one wait differently: one wins, the others change nothing."""
    path = tmp_path / "race.db"
    store = SqliteStore(path)
    service = FlowService(FlowRuntime(), store, flows=flows())
    await service.start("approval", run_id="r1")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    actions = ["approved", "rejected", "approved", "rejected"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RESUMER, str(path), a],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )
        for a in actions
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    winners = [i for i, o in enumerate(outputs) if o[0] == "won"]
    assert len(winners) == 1, outputs
    final = await service.result("r1")
    assert ("pay" in final.outputs) == (actions[winners[0]] == "approved")
    assert final.revision == 2
    assert [h.by for h in await service.history("r1") if h.event == "resume"] == [
        actions[winners[0]]
    ]
    await store.close()


# --- durable scheduler -----------------------------------------------------------------------


async def test_scheduler_fires_a_due_timer_once_and_records_it(
    service: FlowService, fake_clock: FakeClock
) -> None:
    """A sleep fires when due (not before), once, and the firing is in the history."""
    await service.start("reminder", run_id="t1")
    sched = DurableScheduler(service)
    assert await sched.tick() == 0
    fake_clock.advance(60)
    assert await sched.tick() == 1
    assert await sched.tick() == 0
    assert (await service.get("t1")).status == "completed"
    assert CALLS.count("after") == 1
    fired = [h for h in await service.history("t1") if h.node_id == "nap" and h.event == "resume"]
    assert [(h.by, h.at) for h in fired] == [("scheduler", datetime(2026, 1, 1, 0, 1, tzinfo=UTC))]


async def test_scheduler_loop_fires_timers_as_the_clock_advances(fake_clock: FakeClock) -> None:
    """With the scheduler block open, advancing the fake clock is enough."""
    seen: list[str] = []
    service = FlowService(FlowRuntime(clock=fake_clock), MemoryStore(), flows=flows())
    async with service.scheduler(interval=10, on_result=lambda r: seen.append(r.status)):
        await service.start("reminder", run_id="t1")
        await anyio.wait_all_tasks_blocked()
        for _ in range(6):
            fake_clock.advance(10)
            await anyio.wait_all_tasks_blocked()
    assert seen == ["completed"]


async def test_overdue_timer_fires_once_after_a_restart(tmp_path: Path) -> None:
    """A timer stored by one service fires from a new process-like service after 'restart'."""
    path = tmp_path / "durable.db"
    first_clock = FakeClock()
    first = FlowService(FlowRuntime(clock=first_clock), SqliteStore(path), flows=flows())
    await first.start("reminder", run_id="t1")
    await first.store.close()
    later = FakeClock(datetime(2026, 1, 2, tzinfo=UTC))
    second = FlowService(FlowRuntime(clock=later), SqliteStore(path), flows=flows())
    sched = DurableScheduler(second)
    assert await sched.tick() == 1
    assert await sched.tick() == 0
    assert (await second.result("t1")).outputs["after"] == "woke"
    assert CALLS.count("after") == 1
    await second.store.close()


@pytest.mark.parametrize("interval", [0, 0.0, "0s", timedelta(0)])
async def test_a_scheduler_interval_of_zero_is_refused_not_a_busy_loop(interval: Any) -> None:
    """``scheduler(0)`` would tick without ever pausing: a ``ValueError`` naming
    ``interval``, before any scheduler starts."""
    service = FlowService(FlowRuntime(), MemoryStore(), flows=[])
    with pytest.raises(ValueError, match="interval must be a number of seconds, more than 0"):
        async with service.scheduler(interval):
            pytest.fail("a scheduler started")
    assert service._schedulers == []


async def test_two_schedulers_fire_each_timer_once(store: RunStore, fake_clock: FakeClock) -> None:
    """Schedulers of several services on one store: leases and CAS fire each timer once."""
    services = [
        FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), owner=f"s{i}")
        for i in range(3)
    ]
    for i in range(4):
        await services[0].start("reminder", run_id=f"t{i}")
    fake_clock.advance(120)
    a, b, c = (DurableScheduler(s) for s in services)
    a2 = DurableScheduler(services[0])  # two schedulers in one process, too
    async with anyio.create_task_group() as tg:
        for sched in (a, b, c, a2):
            tg.start_soon(sched.tick)
    assert a.fired + b.fired + c.fired + a2.fired == 4
    assert CALLS.count("after") == 4
    assert (await store.stats(fake_clock.now())).by_status == {"completed": 4}


async def test_wait_timeout_resumes_along_on_timeout_and_refuses_late_decisions(
    service: FlowService, fake_clock: FakeClock
) -> None:
    """An expired wait is timed out by the scheduler; a decision after expiry is refused."""
    await service.start("approval", run_id="r1")
    fake_clock.advance(3600)
    with pytest.raises(WaitExpiredError, match="expired"):
        await service.resume("r1", {"action": "approved"})
    assert (await service.get("r1")).revision == 1
    sched = DurableScheduler(service)
    assert await sched.tick() == 1
    result = await service.result("r1")
    assert result.outputs["escalate"] == "escalated"
    assert "pay" not in result.outputs
    assert [h.event for h in await service.history("r1")][-2:] == ["timeout", "completed"]
    with pytest.raises(NotAwaitingError):
        await service.resume("r1", {"action": "approved"})


# --- pause / cancel / expiry / retention -----------------------------------------------------


async def test_pause_of_a_running_run_stops_at_the_next_node_and_is_listable(
    service: FlowService,
) -> None:
    """A pause while a node runs: the node finishes, the run awaits with who/why stored."""
    results: list[Any] = []

    async def run() -> None:
        results.append(await service.start("pausable", run_id="p1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await GATE["started"].wait()
        running = await service.get("p1")
        assert running.status == "running"
        await service.pause("p1", reason="audit", by="ops", request_id="req-7")
        GATE["open"].set()
    assert results[0].status == "awaiting"
    stored = await service.get("p1")
    assert (stored.paused_by, stored.pause_reason, stored.pause_request_id) == (
        "ops", "audit", "req-7"
    )
    assert [r.run_id for r in (await service.list(reason="pause")).runs] == ["p1"]
    final = await service.resume("p1", by="ops")
    assert final.status == "completed"
    assert CALLS == ["slow", "after"]


async def test_pause_from_another_service_reaches_the_running_process(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A pause requested through the store is applied by the process executing the run."""
    runner = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), poll_interval=1)
    other = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    results: list[Any] = []

    async def run() -> None:
        results.append(await runner.start("pausable", run_id="p1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await GATE["started"].wait()
        await other.pause("p1", reason="maintenance", by="admin")
        while not runner._controls["p1"].pause_requested:
            fake_clock.advance(1)  # the runner polls for requests every poll_interval
            await anyio.sleep(0.01)
        GATE["open"].set()
    assert results[0].status == "awaiting"
    stored = await store.get("p1")
    assert (stored.paused_by, stored.pause_reason) == ("admin", "maintenance")
    assert "next" not in results[0].outputs


async def test_pausing_an_awaiting_run_holds_its_timers_until_released(
    service: FlowService, fake_clock: FakeClock
) -> None:
    """A held run's timer does not fire; resume(run_id) releases it."""
    await service.start("reminder", run_id="t1")
    held = await service.pause("t1", reason="investigating", by="ops")
    assert held.held
    fake_clock.advance(120)
    sched = DurableScheduler(service)
    assert await sched.tick() == 0
    released = await service.release("t1", by="ops")
    assert released.status == "awaiting"
    assert await sched.tick() == 1
    assert (await service.get("t1")).status == "completed"
    assert [h.event for h in await service.history("t1")][-4:] == [
        "hold", "release", "resume", "completed"
    ]


async def test_cancel_of_an_awaiting_run_keeps_its_context(service: FlowService) -> None:
    """Cancelling stores a cancelled context (work so far kept) and refuses later resumes."""
    await service.start("approval", run_id="r1")
    cancelled = await service.cancel("r1", reason="duplicate request", by="ann")
    assert cancelled.status == "cancelled"
    result = await service.result("r1")
    assert result.status == "cancelled"
    assert result.outputs["submit"] == "submitted"
    last = (await service.history("r1"))[-1]
    assert (last.event, last.by, last.reason) == ("cancel", "ann", "duplicate request")
    with pytest.raises(NotAwaitingError):
        await service.resume("r1", {"action": "approved"})
    with pytest.raises(NotAwaitingError):
        await service.cancel("r1")


async def test_cancel_of_a_running_run_stores_cancelled(service: FlowService) -> None:
    """A running run cancelled in its process ends cancelled, with what it did kept."""
    results: list[Any] = []

    async def run() -> None:
        results.append(await service.start("pausable", run_id="c1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await GATE["started"].wait()
        await service.cancel("c1", by="ops")
    assert results[0].status == "cancelled"
    assert (await service.get("c1")).status == "cancelled"


async def test_max_pause_lists_expired_runs_and_can_cancel_them(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Runs awaiting past max_pause are listed as expired; cancel_expired cancels them."""
    service = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=flows(),
        max_pause={"approval": 600}, cancel_expired=True,
    )
    await service.start("approval", run_id="r1")
    await service.start("reminder", run_id="t1")
    assert (await service.list(expired=True)).runs == ()
    fake_clock.advance(601)
    assert [r.run_id for r in (await service.list(expired=True)).runs] == ["r1"]
    assert (await service.stats()).expired == 1
    sched = DurableScheduler(service)
    await sched.tick()
    assert sched.expired == 1
    assert (await service.get("r1")).status == "cancelled"
    assert (await service.history("r1"))[-1].event == "expire"
    assert (await service.stats()).expired == 0


async def test_stats_and_cleanup(service: FlowService, fake_clock: FakeClock) -> None:
    """stats() counts runs; cleanup() removes finished runs older than the cut-off."""
    await service.start("approval", run_id="r1")
    await service.start("approval", run_id="r2")
    await service.start("reminder", run_id="t1")
    await service.resume("r2", {"action": "rejected"})
    stats = await service.stats()
    assert stats.by_status == {"awaiting": 2, "completed": 1}
    assert stats.by_flow == {"approval": 2, "reminder": 1}
    assert stats.awaiting_by_reason == {"wait": 1, "timer": 1}
    fake_clock.advance(timedelta(days=2))
    assert await service.cleanup(timedelta(days=1)) == 1
    with pytest.raises(RunNotFoundError):
        await service.get("r2")
    assert (await service.stats()).total == 2


# --- durability ------------------------------------------------------------------------------


async def test_refused_resume_in_step_mode_changes_nothing(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A resume the runtime refuses leaves the stored run awaiting, not running."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), durability="step")
    await service.start("approval", run_id="r1")
    with pytest.raises(UnknownActionError):
        await service.resume("r1", {"action": "maybe"})
    stored = await service.get("r1")
    assert stored.status == "awaiting"
    final = await service.resume("r1", {"action": "approved"})
    assert final.status == "completed"


CRASHER = """
import sys, anyio
from flowcraft import FlowRuntime, create_flow
from flowcraft.stores import FlowService, SqliteStore

async def hang(node):
    print("started", flush=True)
    await anyio.sleep_forever()

async def then(node):
    return "after"

flow = create_flow("crashy").node("work", hang, name="work").node("then", then, name="then")
flow = flow.edge("work", "then")

async def main():
    service = FlowService(FlowRuntime(), SqliteStore(sys.argv[1]), flows=[flow], lease_ttl=5)
    await service.start("crashy", {"n": 1}, run_id="crash-1")

anyio.run(main)
"""


async def recovered_work(node: NodeContext) -> str:
    return f"recovered with {node.context.get('n')}"


async def recovered_then(node: NodeContext) -> str:
    return "after"


async def test_a_run_whose_process_was_killed_is_recovered(tmp_path: Path) -> None:
    """SIGKILL mid-node: the next scheduler recovers the run from its checkpoint."""
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    flow = (
        create_flow("crashy")
        .node("work", recovered_work, name="work")
        .node("then", recovered_then, name="then")
        .edge("work", "then")
    )
    # Past the dead process's lease (it used the real clock).
    clock = FakeClock(datetime.now(UTC) + timedelta(minutes=10))
    store = SqliteStore(path)
    service = FlowService(FlowRuntime(clock=clock), store, flows=[flow])
    assert (await service.get("crash-1")).status == "running"
    sched = DurableScheduler(service)
    assert await sched.tick() == 1
    assert sched.recovered == 1
    result = await service.result("crash-1")
    assert result.status == "completed"
    assert result.outputs["work"] == "recovered with 1"
    assert [h.event for h in await service.history("crash-1")] == [
        "start", "recover", "completed"
    ]
    await store.close()


async def test_a_live_running_run_is_not_recovered(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A run another live service is executing (lease held) is left alone."""
    runner = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), owner="runner")
    other = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), owner="other")
    async with anyio.create_task_group() as tg:
        tg.start_soon(runner.start, "pausable", None)
        await GATE["started"].wait()
        assert await other.recover() == []
        GATE["open"].set()
    assert CALLS == ["slow", "after"]


# --- step durability: a checkpoint after every node ------------------------------------------


class CountingStore(MemoryStore):
    """A MemoryStore that records every save (status, revision, outputs so far)."""

    def __init__(self) -> None:
        super().__init__()
        self.saves: list[tuple[str, int, bytes]] = []

    async def save(self, run: Any, expected_revision: int, **kw: Any) -> None:
        await super().save(run, expected_revision, **kw)
        self.saves.append((run.status, run.revision, run.context))


def three_step_flow() -> Any:
    return (
        create_flow("three")
        .node("one", submit, name="one")
        .node("two", after, name="two")
        .node("three", refuse, name="three")
        .edge("one", "two")
        .edge("two", "three")
    )


@pytest.mark.parametrize("durability", ["pause", "step"])
async def test_step_durability_stores_a_checkpoint_after_every_node(
    durability: Any, fake_clock: FakeClock
) -> None:
    """Step mode writes the run after each node (the last one's is the final result)."""
    store = CountingStore()
    service = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=[three_step_flow()], durability=durability
    )
    result = await service.start("three", run_id="s1")
    assert result.status == "completed"
    assert CALLS == ["submit", "after", "refuse"]
    statuses = [(status, revision) for status, revision, _ in store.saves]
    if durability == "pause":
        assert statuses == [("completed", 1)]
        return
    assert statuses == [("running", 1), ("running", 2), ("completed", 3)]
    stored = await service.get("s1")
    done = [sorted(service._rebuild(stored, ctx).outputs) for _, _, ctx in store.saves[:2]]
    assert done == [["one"], ["one", "two"]]
    assert (stored.status, stored.revision) == ("completed", 3)
    assert [h.event for h in await service.history("s1")] == ["start", "completed"]


async def test_step_durability_resume_checkpoints_and_keeps_the_audit(
    fake_clock: FakeClock,
) -> None:
    """A resume in step mode checkpoints too; the final CAS follows the moved revision."""
    store = CountingStore()
    service = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=flows(), durability="step"
    )
    await service.start("approval", run_id="r1")
    before = len(store.saves)
    result = await service.resume("r1", {"action": "approved"}, by="ann", idempotency_key="k")
    assert result.status == "completed"
    # the intent, then the result: "pay" was the only node run, and the checkpoint after a
    # run's last node is the final result itself
    assert [s for s, _, _ in store.saves[before:]] == ["running", "completed"]
    again = await service.resume("r1", {"action": "approved"}, idempotency_key="k")
    assert again.serialized_context == result.serialized_context
    assert CALLS.count("pay") == 1
    events = [(h.event, h.node_id, h.by) for h in await service.history("r1")]
    assert events == [
        ("start", None, None),
        ("pause", "approve", None),
        ("resume", "approve", "ann"),
        ("completed", None, None),
    ]


async def test_a_checkpoint_that_loses_the_run_stops_it(fake_clock: FakeClock) -> None:
    """Someone else wrote the run meanwhile: the checkpoint conflicts and the run stops."""
    store = MemoryStore()

    async def usurp(node: NodeContext) -> str:
        stored = await store.get("s1")  # another process takes the run over
        await store.save(
            msgspec.structs.replace(stored, revision=stored.revision + 1, claim="usurper"),
            stored.revision,
        )
        return await submit(node)

    flow = (
        create_flow("three")
        .node("one", usurp, name="one")
        .node("two", after, name="two")
        .node("three", refuse, name="three")
        .edge("one", "two")
        .edge("two", "three")
    )
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[flow], durability="step")
    with pytest.raises(RevisionConflictError):
        await service.start("three", run_id="s1")
    assert CALLS == ["submit"]  # "two" never ran here
    stored = await store.get("s1")
    assert (stored.status, stored.revision) == ("running", 1)  # only the usurper's write


async def test_pause_from_another_service_reaches_a_checkpointing_run(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Checkpoints move the stored revision; a pause request sent meanwhile still arrives."""
    flow = (
        create_flow("pausable2")
        .node("submit", submit, name="submit")
        .node("slow", slow, name="slow")
        .node("next", after, name="next")
        .edge("submit", "slow")
        .edge("slow", "next")
    )
    runner = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=[flow], poll_interval=1, durability="step"
    )
    other = FlowService(FlowRuntime(clock=fake_clock), store, flows=[flow])
    results: list[Any] = []

    async def run() -> None:
        results.append(await runner.start("pausable2", run_id="p1"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await GATE["started"].wait()
        assert (await store.get("p1")).revision == 1  # checkpoint after "submit"
        await other.pause("p1", reason="maintenance", by="admin")
        while not runner._controls["p1"].pause_requested:
            fake_clock.advance(1)
            await anyio.sleep(0.01)
        GATE["open"].set()
    assert results[0].status == "awaiting"
    stored = await store.get("p1")
    assert (stored.status, stored.paused_by, stored.pause_reason) == (
        "awaiting", "admin", "maintenance"
    )
    assert "next" not in results[0].outputs
    final = await runner.resume("p1", by="admin")
    assert final.status == "completed"
    assert CALLS == ["submit", "slow", "after"]


STEP_CRASHER = """
import sys, anyio
from pathlib import Path
from flowcraft import FlowRuntime, create_flow
from flowcraft.stores import FlowService, SqliteStore

db, log = sys.argv[1], Path(sys.argv[2])

def note(line):
    with log.open("a") as f:
        f.write(line + "\\n")

async def one(node):
    note("one")
    return "one done"

async def two(node):
    note("two started")
    print("two", flush=True)
    await anyio.sleep_forever()

async def three(node):
    note("three")
    return "three done"

flow = create_flow("steps").node("one", one, name="one").node("two", two, name="two")
flow = flow.node("three", three, name="three").edge("one", "two").edge("two", "three")

async def main():
    service = FlowService(
        FlowRuntime(), SqliteStore(db), flows=[flow], lease_ttl=5, durability="step"
    )
    await service.start("steps", {"n": 1}, run_id="step-1")

anyio.run(main)
"""

SIDE_EFFECTS: list[Path] = []


def _note(line: str) -> None:
    with SIDE_EFFECTS[0].open("a") as f:
        f.write(line + "\n")


async def step_one(node: NodeContext) -> str:
    _note("one")
    return "one done"


async def step_two(node: NodeContext) -> str:
    _note("two")
    return f"two after {node.input}"


async def step_three(node: NodeContext) -> str:
    _note("three")
    return "three done"


async def test_a_killed_step_run_is_recovered_from_its_last_checkpoint(tmp_path: Path) -> None:
    """SIGKILL during node 2: recovery continues at node 2; node 1 does not run again."""
    db, log = tmp_path / "steps.db", tmp_path / "effects.log"
    SIDE_EFFECTS[:] = [log]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", STEP_CRASHER, str(db), str(log)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "two"  # node 1's checkpoint is stored by now
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    assert log.read_text().splitlines() == ["one", "two started"]
    flow = (
        create_flow("steps")
        .node("one", step_one, name="one")
        .node("two", step_two, name="two")
        .node("three", step_three, name="three")
        .edge("one", "two")
        .edge("two", "three")
    )
    clock = FakeClock(datetime.now(UTC) + timedelta(minutes=10))  # past the dead one's lease
    store = SqliteStore(db)
    service = FlowService(FlowRuntime(clock=clock), store, flows=[flow], durability="step")
    crashed = await service.get("step-1")
    assert (crashed.status, crashed.revision) == ("running", 1)
    assert (await service.result("step-1")).outputs == {"one": "one done"}
    recovered = await service.recover()
    assert [r.status for r in recovered] == ["completed"]
    result = await service.result("step-1")
    assert result.status == "completed"
    assert result.outputs == {
        "one": "one done", "two": "two after one done", "three": "three done"
    }
    assert result.context == {"n": 1}
    assert log.read_text().splitlines() == ["one", "two started", "two", "three"]
    assert [h.event for h in await service.history("step-1")] == [
        "start", "recover", "completed"
    ]
    assert await service.recover() == []
    await store.close()
