"""Maintenance window: hold every awaiting run, refuse decisions while held, then let them go.

A service holds many awaiting runs: deploys waiting for a change approval, and nightly reports
sleeping until 02:00 Paris time (a cron sleep). At 01:00 the database goes into maintenance:

1. ``pause_many(filter, dry_run=True)`` previews what a hold would touch, changing nothing;
2. ``pause_many(filter)`` holds them: a decision that arrives is refused with ``RunHeldError``
   and the 02:00 timers do not fire;
3. ``release_many(filter)`` ends the window. It never approves a wait: the deploys still wait
   for their decision; the overdue timers fire at the next scheduler tick and the runs go on.

Time is a ``FakeClock`` so the two-hour window takes no time; everything else is what a real
service does (the store is the embedded SQLite one, in a temporary directory).

Run it: ``python examples/maintenance_window.py``
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import anyio

from flowcraft import FlowRuntime, NodeContext, RunHeldError, create_flow
from flowcraft.stores import DurableScheduler, FlowService, SqliteStore
from flowcraft.testing import FakeClock

DEPLOYED: list[str] = []


async def deploy(node: NodeContext) -> str:
    service = node.context.get("service")
    DEPLOYED.append(service)
    return f"deployed {service}"


deploys = (
    create_flow("deploy")
    .node("plan", lambda node: f"plan for {node.context.get('service')}", name="plan")
    .wait("change-approval", description="An engineer approves the change")
    .node("deploy", deploy)
    .node("drop", lambda node: "dropped", name="drop")
    .edge("plan", "change-approval")
    .edge("change-approval", "deploy", action="approved")
    .edge("change-approval", "drop", action="rejected")
)

reports = (
    create_flow("nightly-report")
    .node("collect", lambda node: node.context.get("team"), name="collect")
    .sleep("at-two", cron="0 2 * * *", tz="Europe/Paris")
    .node("send", lambda node: f"report sent to {node.input}", name="send")
    .edge("collect", "at-two")
    .edge("at-two", "send")
)


async def main(workdir: Path) -> None:
    clock = FakeClock(datetime(2026, 1, 15, 23, 30, tzinfo=UTC))  # 00:30 in Paris
    service = FlowService(
        FlowRuntime(clock=clock), SqliteStore(workdir / "flowcraft.db"), flows=[deploys, reports]
    )
    scheduler = DurableScheduler(service)
    runs = [await service.start("deploy", {"service": s}) for s in ("api", "web", "worker")]
    for team in ("billing", "search"):
        await service.start("nightly-report", {"team": team})
    print(f"awaiting: {len(await service.list(status='awaiting'))} runs")

    # 01:00 Paris: the window opens. First a preview: what would be held?
    clock.advance(30 * 60)
    window = {"status": "awaiting"}
    preview = await service.pause_many(window, dry_run=True)
    print(f"dry run: would hold {len(preview.changed)} of {len(preview.matched)} matched runs")
    assert not [r for r in preview.matched if (await service.get(r)).held]  # nothing changed

    held = await service.pause_many(window, reason="database maintenance", by="ops")
    print(f"held {len(held.changed)} runs: {sorted(set(held.outcomes.values()))}")

    # A decision arrives during the window: refused, nothing applied.
    api = runs[0].run_id
    decision = {"output": {"by": "dana"}, "action": "approved"}
    try:
        await service.resume(api, decision, by="dana")
    except RunHeldError as exc:
        print("decision refused:", exc)
    else:
        raise AssertionError("a held run accepted a decision")

    # 02:00 Paris passes: the nightly timers are due, but held runs do not fire.
    clock.advance(90 * 60)  # 02:30 Paris
    assert await scheduler.tick() == 0
    print("02:30 Paris: 0 timers fired (held)")

    # 03:00: the window closes. Preview, then release; no wait is approved by it.
    clock.advance(30 * 60)
    assert len((await service.release_many(window, dry_run=True)).changed) == 5
    released = await service.release_many(window, by="ops")
    print(f"released {len(released.changed)} runs")
    assert DEPLOYED == []  # releasing approved nothing
    still = [(await service.get(r.run_id)).awaiting for r in runs]
    assert still == [("change-approval",)] * 3, still  # each deploy still waits for a decision

    fired = await scheduler.tick()
    print(f"scheduler tick: {fired} overdue timers fired")
    for run in await service.list(flow_id="nightly-report"):
        print(" ", (await service.result(run.run_id)).outputs["send"])

    # The refused decision is sent again, and the others come in.
    for run, action in zip(runs, ("approved", "approved", "rejected"), strict=True):
        done = await service.resume(run.run_id, {"output": {}, "action": action}, by="dana")
        print(f"  {run.context['service']}: {done.status}, {list(done.outputs)[-1]}")

    stats = await service.stats()
    print("stats:", stats.by_status)
    events = [h.event for h in await service.history(api)]
    print("history of the api deploy:", events)
    assert fired == 2
    assert DEPLOYED == ["api", "web"]
    assert stats.by_status == {"completed": 5}
    await service.store.close()
    print("maintenance window: OK")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, Path(tmp))
