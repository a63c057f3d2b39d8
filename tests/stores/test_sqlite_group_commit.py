"""SqliteStore group commit: concurrent writes share a transaction, each keeps its own outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import anyio
import msgspec
import pytest

from flowcraft import RevisionConflictError
from flowcraft.stores import RunExistsError, SqliteStore, StoredRun

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def run(run_id: str, revision: int = 0, owner: str | None = None) -> StoredRun:
    return StoredRun(
        run_id=run_id,
        flow_id="f",
        status="awaiting",
        revision=revision,
        created_at=T0,
        updated_at=T0,
        owner=owner,
    )


async def test_concurrent_compare_and_sets_each_win_or_conflict_alone(tmp_path: Path) -> None:
    """Of five writers racing on each run, exactly one wins; losers change nothing."""
    store = SqliteStore(tmp_path / "g.db")
    for i in range(10):
        await store.create(run(f"r{i}"))
    wins: dict[str, list[str]] = {}
    conflicts = 0

    async def write(run_id: str, who: str) -> None:
        nonlocal conflicts
        try:
            await store.save(run(run_id, 1, owner=who), 0, idempotency=(who, b"x"))
        except RevisionConflictError:
            conflicts += 1
        else:
            wins.setdefault(run_id, []).append(who)

    async def duplicate() -> None:
        with pytest.raises(RunExistsError):
            await store.create(run("r0"))

    async with anyio.create_task_group() as tg:
        for i in range(10):
            for w in range(5):
                tg.start_soon(write, f"r{i}", f"w{w}")
        tg.start_soon(duplicate)
    assert conflicts == 40
    for i in range(10):
        (winner,) = wins[f"r{i}"]
        stored = await store.get(f"r{i}")
        assert (stored.revision, stored.owner) == (1, winner)
        assert await store.recall(f"r{i}", winner) == b"x"
        losers = {f"w{w}" for w in range(5)} - {winner}
        assert all([await store.recall(f"r{i}", w) is None for w in losers])
    await store.close()


async def test_a_cancelled_writer_still_has_its_queued_write_applied_or_not_at_all(
    tmp_path: Path,
) -> None:
    """Cancelling callers mid-flight never leaves a half-applied write nor stalls the queue."""
    store = SqliteStore(tmp_path / "c.db")
    await store.create(run("a"))
    with anyio.move_on_after(0):
        await store.save(msgspec.structs.replace(run("a", 1)), 0)
    stored = await store.get("a")
    assert stored.revision in (0, 1)
    await store.save(run("a", stored.revision + 1), stored.revision)  # the queue still moves
    assert (await store.get("a")).revision == stored.revision + 1
    await store.close()
