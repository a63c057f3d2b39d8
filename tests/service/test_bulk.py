"""Bulk operations (DESIGN §9): pause_many/release_many/cancel_many over list's filters."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flowcraft import FlowRuntime
from flowcraft.stores import FlowService, MemoryStore, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import flows


async def test_a_maintenance_window_holds_then_releases_only_what_it_held(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """pause_many holds awaiting runs of a flow; release_many releases held ones, approves none."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    for i in range(3):
        await service.start("approval", run_id=f"a{i}")
    await service.start("reminder", run_id="t1")
    await service.start("approval", run_id="done")
    await service.resume("done", {"action": "approved"})
    dry = await service.pause_many({"flow_id": "approval"}, dry_run=True, by="ops")
    assert (dry.matched, dry.changed) == (("a0", "a1", "a2"), ("a0", "a1", "a2"))
    assert not any([(await service.get(f"a{i}")).held for i in range(3)])
    done = await service.pause_many({"flow_id": "approval"}, by="ops", reason="db upgrade")
    assert done.changed == ("a0", "a1", "a2")
    assert all([(await service.get(f"a{i}")).held for i in range(3)])
    again = await service.pause_many({"flow_id": "approval"}, by="ops")
    assert (again.changed, again.outcomes["a0"]) == ((), "already held")
    released = await service.release_many({}, by="ops")
    assert released.matched == ("a0", "a1", "a2", "t1")
    assert released.changed == ("a0", "a1", "a2")
    assert released.outcomes["t1"] == "not held"
    for i in range(3):
        stored = await service.get(f"a{i}")
        assert (stored.status, stored.held, stored.awaiting) == ("awaiting", False, ("approve",))
    cancelled = await service.cancel_many({"flow_id": "approval"}, by="ops")
    assert cancelled.changed == ("a0", "a1", "a2")
    assert cancelled.outcomes["done"] == "finished"
    with pytest.raises(ValueError, match="unknown filter keys"):
        await service.cancel_many({"flowid": "x"})


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    runs=st.lists(st.tuples(st.sampled_from(["approval", "reminder"]), st.booleans()), max_size=8),
    flow=st.sampled_from([None, "approval", "reminder"]),
    reason=st.sampled_from([None, "wait", "timer"]),
    op=st.sampled_from(["pause", "release", "cancel"]),
    dry=st.booleans(),
)
async def test_bulk_operations_match_a_model_of_the_filter(
    runs: list[tuple[str, bool]], flow: str | None, reason: str | None, op: str, dry: bool
) -> None:
    """Whatever the runs and the filter: matched and changed are what a model predicts."""
    service = FlowService(FlowRuntime(clock=FakeClock()), MemoryStore(), flows=flows())
    model: dict[str, tuple[str, bool]] = {}
    for i, (flow_id, held) in enumerate(runs):
        await service.start(flow_id, run_id=f"r{i}")
        if held:
            await service.pause(f"r{i}", by="x")
        model[f"r{i}"] = (flow_id, held)
    waits = {"approval": "wait", "reminder": "timer"}
    matched = tuple(
        r
        for r, (f, _) in model.items()
        if (flow is None or f == flow) and (reason is None or waits[f] == reason)
    )
    filt = {k: v for k, v in {"flow_id": flow, "reason": reason}.items() if v is not None}
    method = {"pause": service.pause_many, "release": service.release_many}.get(
        op, service.cancel_many
    )
    result = await method(filt, dry_run=dry)
    expect = {
        "pause": [r for r in matched if not model[r][1]],
        "release": [r for r in matched if model[r][1]],
        "cancel": list(matched),
    }[op]
    assert result.matched == matched
    assert result.changed == tuple(expect)
    for run_id, (_, held) in model.items():
        stored = await service.get(run_id)
        hit = run_id in expect and not dry
        if hit and op == "cancel":
            assert (stored.status, stored.held) == ("cancelled", False)
            continue
        assert stored.status == "awaiting"
        assert stored.held == ((held or (hit and op == "pause")) and not (hit and op == "release"))
