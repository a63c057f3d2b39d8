"""Late and repeated decisions: the error names the decision that won, on every store."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flowcraft import AlreadyDecidedError, FlowRuntime
from flowcraft.stores import DurableScheduler, FlowService, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import KINDS, backend, model_flow


@pytest.fixture(params=KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    async with backend(request.param, tmp_path) as (made, _):
        yield made


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
