"""Wrong-shaped input to ``FlowService`` and the stores: a specific error, nothing stored.

A value of the wrong type written into a run (a reason, a name, an id) would be a record no
later read decodes; a number past what a store keeps, a driver's ``OverflowError``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from flowcraft import FlowRuntime, FlowService, InvalidDurationError, RevisionConflictError
from flowcraft.stores import HistoryRecord, RunStore
from flowcraft.testing import FakeClock
from tests.service._support import flows


def calls(service: FlowService) -> list[tuple[str, Any]]:
    """Each entry point given one argument of the wrong type (an int where text goes)."""
    return [
        ("run_id", lambda: service.start("approval", run_id=5)),  # type: ignore[arg-type]
        ("flow_id", lambda: service.start(7)),  # type: ignore[arg-type]
        ("node_id", lambda: service.resume("a", {"action": "approved"}, 5)),  # type: ignore[arg-type]
        ("by", lambda: service.resume("a", {"action": "approved"}, by=5)),  # type: ignore[arg-type]
        ("idempotency_key", lambda: service.resume(
            "a", {"action": "approved"}, idempotency_key=5  # type: ignore[arg-type]
        )),
        ("expected_revision", lambda: service.resume(
            "a", {"action": "approved"}, expected_revision="1"  # type: ignore[arg-type]
        )),
        ("reason", lambda: service.pause("a", reason=5)),  # type: ignore[arg-type]
        ("by", lambda: service.pause("a", by=5)),  # type: ignore[arg-type]
        ("request_id", lambda: service.pause("a", request_id=5)),  # type: ignore[arg-type]
        ("by", lambda: service.release("a", by=5)),  # type: ignore[arg-type]
        ("reason", lambda: service.cancel("a", reason=5)),  # type: ignore[arg-type]
        ("revision", lambda: service.rollback("a", "1")),  # type: ignore[arg-type]
        ("new_run_id", lambda: service.fork("a", 1, new_run_id=5)),  # type: ignore[arg-type]
        ("reason", lambda: service.pause_many(reason=5)),  # type: ignore[arg-type]
        ("by", lambda: service.release_many(by=5)),  # type: ignore[arg-type]
        ("by", lambda: service.cancel_many(by=5)),  # type: ignore[arg-type]
        ("run_id", lambda: service.delete(5)),  # type: ignore[arg-type]
    ]


async def test_an_argument_of_the_wrong_type_is_a_type_error_and_changes_nothing(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """An int where a reason, a name or an id goes raises ``TypeError`` naming the argument
    before anything is written: the run still decodes and is as it was (on PostgreSQL, Redis
    and SQLite such a value used to be written into the run, which no read decoded again)."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows(), keep_checkpoints=5)
    await service.start("approval", run_id="a")
    before = await store.get("a")
    history = await store.history("a")
    for name, call in calls(service):
        with pytest.raises(TypeError, match=f"^{name} must be"):
            await call()
    assert await store.get("a") == before
    assert await store.history("a") == history
    assert [r.run_id for r in await service.list()] == ["a"]
    done = await service.resume("a", {"action": "approved"}, by="ann")
    assert done.status == "completed"


@pytest.mark.parametrize("bad", [5, None, b"a", 1.5])
async def test_a_run_id_that_is_no_string_is_the_same_type_error_everywhere(
    store: RunStore, fake_clock: FakeClock, bad: object
) -> None:
    """``get(5)`` was a ``StoreError`` on PostgreSQL (``text = smallint``) and
    ``RunNotFoundError`` elsewhere: every read and write by id, of the service and of each
    store, raises the same ``TypeError`` naming ``run_id``, and nothing changes."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="a")
    before = await store.get("a")
    rid: Any = bad
    reads: list[Any] = [
        lambda: service.get(rid),
        lambda: service.result(rid),
        lambda: service.history(rid),
        lambda: service.checkpoints(rid),
        lambda: service.outcome(rid, "k"),
        lambda: service.settled(rid),
        lambda: service.execute(rid, 1, "d"),
        lambda: service.resume(rid, {"action": "approved"}),
        lambda: service.pause(rid),
        lambda: service.release(rid),
        lambda: service.cancel(rid),
        lambda: service.rollback(rid, 1),
        lambda: service.fork(rid, 1),
        lambda: service.delete(rid),
        lambda: store.get(rid),
        lambda: store.history(rid),
        lambda: store.checkpoints(rid),
        lambda: store.recall(rid, "k"),
        lambda: store.remember(rid, "k", b"x"),
        lambda: store.delete(rid, 1),
    ]
    if hasattr(store, "get_and_recall"):
        reads.append(lambda: store.get_and_recall(rid, "k"))
    for read in reads:
        with pytest.raises(TypeError, match=rf"^run_id must be a string, not {bad!r}"):
            await read()
    with pytest.raises(TypeError, match=r"^key must be a string"):
        await store.recall("a", 5)  # type: ignore[arg-type]
    assert await store.get("a") == before
    assert (await service.resume("a", {"action": "approved"})).status == "completed"


@pytest.mark.parametrize(
    ("field", "value"),
    [("pause_reason", 5), ("paused_by", b"ops"), ("claim_key", 1.5), ("flow_id", 7)],
)
async def test_a_store_refuses_a_run_whose_text_field_is_no_text(
    store: RunStore, field: str, value: object
) -> None:
    """Called directly, every store refuses to write a run a later read could not decode."""
    from tests.stores.test_stores import bump, run_record

    run = run_record("r1")
    with pytest.raises(TypeError, match=f"{field} must be a string or None"):
        await store.create(run_record("r1", **{field: value}))
    await store.create(run)
    with pytest.raises(TypeError, match=f"{field} must be a string or None"):
        await store.save(bump(run, **{field: value}), 1)
    record = HistoryRecord(at=datetime(2026, 1, 1, tzinfo=UTC), event="x", by=5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="by must be a string or None"):
        await store.save(bump(run), 1, history=[record])
    assert await store.get("r1") == run
    assert await store.history("r1") == []


async def test_cleanup_with_a_duration_past_the_first_year_is_an_invalid_duration(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """``cleanup(finished_before=1e20)`` (seconds) reaches before year 1: InvalidDurationError,
    not an ``OverflowError``; a naive datetime is a ValueError on every store; nothing deleted."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="a")
    await service.resume("a", {"action": "approved"})
    with pytest.raises(InvalidDurationError, match="finished_before"):
        await service.cleanup(finished_before=1e20)
    with pytest.raises(ValueError, match="timezone-aware"):
        await service.cleanup(finished_before=datetime(2999, 1, 1))
    assert (await service.get("a")).status == "completed"
    fake_clock.advance(10)
    assert await service.cleanup(finished_before=5) == 1


async def test_a_decision_with_a_stale_revision_beyond_2_53_is_refused(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """``resume(expected_revision=)`` is exact however large the stored revision: one below it
    (equal to it as a double) conflicts and the wait stays undecided."""
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="a")
    stored = await store.get("a")
    high = 2**60 + 1
    import msgspec

    await store.save(msgspec.structs.replace(stored, revision=high), stored.revision)
    with pytest.raises(RevisionConflictError):
        await service.resume("a", {"action": "approved"}, expected_revision=high - 1)
    assert (await store.get("a")).status == "awaiting"
    done = await service.resume("a", {"action": "approved"}, expected_revision=high)
    assert done.status == "completed"
