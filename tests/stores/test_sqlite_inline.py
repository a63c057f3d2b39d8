"""SqliteStore runs point reads and single-run writes on the event loop when nothing waits.

When they would wait (another connection holds the write lock, our own batch is in flight)
they take the worker-thread path instead: the loop is never blocked on a lock, and the
outcome is the same either way.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import anyio
import pytest

from flowcraft import RevisionConflictError
from flowcraft.stores import SqliteStore, StoredRun

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def run(run_id: str, revision: int = 0, status: str = "awaiting") -> StoredRun:
    return StoredRun(
        run_id=run_id, flow_id="f", status=status, revision=revision, created_at=T0, updated_at=T0
    )


@pytest.mark.parametrize("synchronous", ["NORMAL", "FULL"])
@pytest.mark.parametrize("durable", [True, False])
async def test_a_write_waits_for_another_connections_lock_off_the_loop(
    tmp_path: Path, synchronous: str, durable: bool
) -> None:
    """While another connection holds the write lock, a write waits for it (on a thread), the
    loop keeps running, reads see the last commit, and the write lands once it is released."""
    path = tmp_path / "i.db"
    store = SqliteStore(path, synchronous=synchronous)  # type: ignore[arg-type]
    await store.create(run("a"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    done = anyio.Event()
    ticks = 0

    async def write() -> None:
        await store.save(run("a", 1, "running"), 0, durable=durable)
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        for _ in range(20):
            await anyio.sleep(0.01)
            ticks += 1
        assert not done.is_set()
        assert (await store.get("a")).revision == 0  # a read does not wait for the lock
        other.execute("COMMIT")
        with anyio.fail_after(10):
            await done.wait()
    assert ticks == 20
    assert (await store.get("a")).status == "running"
    other.close()
    await store.close()


async def test_inline_and_batched_writes_of_one_process_stay_compare_and_sets(
    tmp_path: Path,
) -> None:
    """Writes arriving while a batch is in flight queue behind it; each run has one winner."""
    store = SqliteStore(tmp_path / "m.db", synchronous="FULL")
    for i in range(20):
        await store.create(run(f"r{i}"))
    wins: list[str] = []

    async def write(i: int, durable: bool) -> None:
        try:
            await store.save(run(f"r{i % 20}", 1, "running"), 0, durable=durable)
            wins.append(f"r{i % 20}")
        except RevisionConflictError:
            pass

    async with anyio.create_task_group() as tg:
        for i in range(80):
            tg.start_soon(write, i, i % 2 == 0)
    assert sorted(wins) == sorted(f"r{i}" for i in range(20))
    assert all([(await store.get(f"r{i}")).revision == 1 for i in range(20)])
    await store.close()


async def test_many_inline_commits_keep_the_log_checkpointed(tmp_path: Path) -> None:
    """The loop connection never checkpoints itself; the store has the worker do it, so the
    write-ahead log does not grow without bound."""
    path = tmp_path / "w.db"
    store = SqliteStore(path)
    await store.create(run("a"))
    for rev in range(2000):
        await store.save(run("a", rev + 1), rev)
    wal = path.with_name(path.name + "-wal")
    pages = wal.stat().st_size // 4096
    assert pages < 3000, f"WAL of {pages} pages after 2,000 commits"
    assert (await store.get("a")).revision == 2000
    await store.close()
