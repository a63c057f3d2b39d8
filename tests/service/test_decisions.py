"""Late and repeated decisions: the error names the decision that won, on every store."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest

from flowcraft import AlreadyDecidedError, FlowRuntime, IdempotencyKeyReusedError
from flowcraft.stores import DurableScheduler, FlowService, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import model_flow


@pytest.mark.parametrize("fired", [False, True])
async def test_a_late_decision_names_the_wait_decision_not_a_later_timer(
    store: RunStore, fake_clock: FakeClock, fired: bool
) -> None:
    """approve → sleep: a decision after the approval (timer pending or fired) names it."""
    effects: Counter[tuple[str, str]] = Counter()
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[model_flow(effects)])
    await service.start("model", run_id="r1")
    await service.resume("r1", {"action": "approved"}, by="alice")
    if fired:
        fake_clock.advance(61)
        assert await DurableScheduler(service).tick() == 1
    before = await service.get("r1")
    for action in ("approved", "rejected"):
        with pytest.raises(AlreadyDecidedError, match="'approved' by alice") as caught:
            await service.resume("r1", {"action": action}, by="bob")
        assert (caught.value.node_id, caught.value.action) == ("approve", "approved")
    assert await service.get("r1") == before
    assert effects[("pay", "r1")] == 1
    assert effects[("refuse", "r1")] == 0


async def test_a_key_reused_for_another_decision_is_refused_and_changes_nothing(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Same key, other action: IdempotencyKeyReusedError; same data in another order: the
    first result."""
    effects: Counter[tuple[str, str]] = Counter()
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[model_flow(effects)])
    await service.start("model", run_id="r1")
    first = await service.resume(
        "r1", {"action": "approved", "output": {"a": 1, "b": 2}}, idempotency_key="k"
    )
    before = await service.get("r1")
    with pytest.raises(IdempotencyKeyReusedError, match="'k' was first used") as caught:
        await service.resume("r1", {"action": "rejected"}, idempotency_key="k")
    assert (caught.value.run_id, caught.value.key) == ("r1", "k")
    again = await service.resume(
        "r1", {"output": {"b": 2, "a": 1}, "action": "approved"}, by="x", idempotency_key="k"
    )
    assert again.serialized_context == first.serialized_context
    assert await service.get("r1") == before
    assert (effects[("pay", "r1")], effects[("refuse", "r1")]) == (1, 0)


async def test_concurrent_deliveries_reusing_a_key_for_another_decision_are_refused(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Two decisions under one key at once: one applies, the other is refused, never told
    it won."""
    effects: Counter[tuple[str, str]] = Counter()
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[model_flow(effects)])
    await service.start("model", run_id="r1")
    out: dict[str, object] = {}

    async def deliver(action: str) -> None:
        try:
            out[action] = await service.resume("r1", {"action": action}, idempotency_key="k")
        except IdempotencyKeyReusedError as exc:
            out[action] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(deliver, "approved")
        tg.start_soon(deliver, "rejected")
    refused = [a for a, v in out.items() if isinstance(v, IdempotencyKeyReusedError)]
    assert len(refused) == 1
    won = "rejected" if refused == ["approved"] else "approved"
    assert effects[("pay" if won == "approved" else "refuse", "r1")] == 1
    assert effects[("refuse" if won == "approved" else "pay", "r1")] == 0


async def test_a_key_remembered_before_digests_still_returns_its_result(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A bare context stored under a key (older records) is returned as the first result."""
    effects: Counter[tuple[str, str]] = Counter()
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=[model_flow(effects)])
    started = await service.start("model", run_id="r1")
    await store.remember("r1", "old", started.serialized_context)
    got = await service.resume("r1", {"action": "rejected"}, idempotency_key="old")
    assert got.serialized_context == started.serialized_context
    assert effects[("refuse", "r1")] == 0
