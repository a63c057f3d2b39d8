"""``resume(..., expected_revision=)``: a decision conditional on the stored revision, atomically.

The check is made on the row the claim's compare-and-set is made on, so a decision can never
land on a run that moved on between the check and the claim (what HTTP ``If-Match`` needs).
"""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from flowcraft import AlreadyDecidedError, FlowRuntime, RevisionConflictError, RunResult
from flowcraft.stores import FlowService, RunStore
from tests.service._support import Gate, effects, flows


@pytest.fixture
def counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects.log"
    monkeypatch.setenv("FLOWCRAFT_TEST_EFFECTS", str(path))
    return path


APPROVE = {"action": "approved"}


async def test_a_stale_expected_revision_changes_nothing(store: RunStore, counted: Path) -> None:
    service = FlowService(FlowRuntime(), store, flows=flows())
    await service.start("approval", run_id="r1")
    before = await service.get("r1")
    history = await service.history("r1")
    with pytest.raises(RevisionConflictError) as caught:
        await service.resume("r1", APPROVE, expected_revision=before.revision - 1)
    assert (caught.value.expected, caught.value.actual) == (before.revision - 1, before.revision)
    assert await service.get("r1") == before
    assert await service.history("r1") == history
    assert effects(counted)[("pay", "r1")] == 0
    done = await service.resume("r1", APPROVE, expected_revision=before.revision)
    assert done.status == "completed"
    assert effects(counted)[("pay", "r1")] == 1


async def test_the_expected_revision_is_the_stored_one_and_holds_move_it(
    store: RunStore, counted: Path
) -> None:
    """Every write moves the stored revision (here a hold and its release), the context's not."""
    service = FlowService(FlowRuntime(), store, flows=flows())
    await service.start("approval", run_id="r1")
    seen = await service.get("r1")
    await service.pause("r1", reason="audit")
    released = await service.release("r1")
    assert released.revision == (await service.result("r1")).revision  # the state's: unchanged
    now = (await service.get("r1")).revision
    assert now > seen.revision
    with pytest.raises(RevisionConflictError):
        await service.resume("r1", APPROVE, expected_revision=seen.revision)
    assert (await service.get("r1")).revision == now
    assert (await service.resume("r1", APPROVE, expected_revision=now)).status == "completed"


async def test_an_idempotent_replay_ignores_the_expected_revision(
    store: RunStore, counted: Path
) -> None:
    service = FlowService(FlowRuntime(), store, flows=flows())
    await service.start("approval", run_id="r1")
    rev = (await service.get("r1")).revision
    first = await service.resume("r1", APPROVE, idempotency_key="k", expected_revision=rev)
    again = await service.resume("r1", APPROVE, idempotency_key="k", expected_revision=rev)
    assert again.serialized_context == first.serialized_context
    assert effects(counted)[("pay", "r1")] == 1


@pytest.mark.parametrize("racers", [2, 4])
async def test_racers_with_the_same_expected_revision_one_applies(
    store: RunStore, counted: Path, racers: int
) -> None:
    """Every racer reads the same revision first; one claim wins, the others get the conflict.

    Checked before the claim but outside it, the losers would pass the check and then be
    refused by the decision itself (``AlreadyDecidedError``), or apply a second decision.
    """
    gate = Gate(store, racers)
    services = [
        FlowService(FlowRuntime(), gate, flows=flows(), owner=f"p{i}", poll_interval=0.05)  # type: ignore[arg-type]
        for i in range(racers)
    ]
    setup = FlowService(FlowRuntime(), store, flows=flows())
    await setup.start("approval", run_id="r1")
    rev = (await setup.get("r1")).revision
    outcomes: list[RunResult | BaseException] = []

    async def decide(service: FlowService, action: str) -> None:
        try:
            outcomes.append(
                await service.resume("r1", {"action": action}, expected_revision=rev)
            )
        except (RevisionConflictError, AlreadyDecidedError) as exc:
            outcomes.append(exc)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i, service in enumerate(services):
                tg.start_soon(decide, service, "approved" if i % 2 == 0 else "rejected")
    applied = [o for o in outcomes if isinstance(o, RunResult)]
    refused = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(applied) == 1
    assert applied[0].status == "completed"
    assert len(refused) == racers - 1
    assert all(type(e) is RevisionConflictError and e.expected == rev for e in refused)
    ran = effects(counted)
    assert ran[("pay", "r1")] + ran[("refuse", "r1")] == 1
    resumes = [h for h in await setup.history("r1") if h.event == "resume"]
    assert len(resumes) == 1
