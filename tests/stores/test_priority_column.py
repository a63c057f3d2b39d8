"""A SQLite file made before priorities existed gains the column when opened."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from flowcraft.stores import SqliteStore, StoredRun


async def test_an_older_sqlite_file_gains_the_priority_column_and_keeps_its_runs(
    tmp_path: Path,
) -> None:
    """Runs stored before the column existed read back with priority 0 and stay due."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        """CREATE TABLE flowcraft_runs (
        run_id TEXT PRIMARY KEY, flow_id TEXT NOT NULL, status TEXT NOT NULL,
        revision INTEGER NOT NULL, reasons TEXT NOT NULL, due_at INTEGER,
        pause_deadline INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
        body BLOB NOT NULL)"""
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    run = StoredRun(
        run_id="r",
        flow_id="f",
        status="awaiting",
        revision=0,
        created_at=t0,
        updated_at=t0,
        due_at=t0,
    )
    await store.create(run)
    assert [r.run_id for r in await store.due(t0)] == ["r"]
    await store.close()
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(flowcraft_runs)")]
    assert columns[-3:] == ["priority", "awaiting_since", "kept"]


async def test_an_older_sqlite_file_gains_awaiting_since_from_its_awaiting_runs(
    tmp_path: Path,
) -> None:
    """Awaiting runs stored before the column existed count from their last write."""
    path = tmp_path / "old.db"
    store = SqliteStore(path)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    run = StoredRun(
        run_id="r", flow_id="f", status="awaiting", revision=0, created_at=t0, updated_at=t0
    )
    await store.create(run)
    await store.close()
    conn = sqlite3.connect(path)  # make the file look older: no awaiting_since column
    conn.execute("DROP INDEX flowcraft_runs_awaiting")
    conn.execute("ALTER TABLE flowcraft_runs DROP COLUMN awaiting_since")
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    stats = await store.stats(t0)
    await store.close()
    assert stats.awaiting_by_flow == {"f": 1}
    assert stats.awaiting_since_by_flow == {"f": t0}
