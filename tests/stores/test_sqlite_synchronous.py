"""SqliteStore's durability setting: NORMAL by default, FULL (or EXTRA) on request."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flowcraft.stores import SqliteStore, StoredRun

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LEVELS = {"NORMAL": 1, "FULL": 2, "EXTRA": 3}  # PRAGMA synchronous reads back a number


@pytest.mark.parametrize("level", [None, "NORMAL", "FULL", "EXTRA"])
async def test_the_connection_runs_at_the_requested_synchronous_level(
    tmp_path: Path, level: str | None
) -> None:
    """The default is NORMAL; the option reaches the connection every write goes through."""
    store = (
        SqliteStore(tmp_path / "s.db")
        if level is None
        else SqliteStore(tmp_path / "s.db", synchronous=level)  # type: ignore[arg-type]
    )
    await store.create(
        StoredRun(
            run_id="r", flow_id="f", status="running", revision=0, created_at=T0, updated_at=T0
        )
    )
    conn = store._conn
    assert conn is not None
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == LEVELS[level or "NORMAL"]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.synchronous == (level or "NORMAL")
    assert (await store.get("r")).status == "running"
    await store.close()


def test_an_unknown_level_is_refused_before_the_file_is_touched(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous must be one of NORMAL, FULL, EXTRA"):
        SqliteStore(tmp_path / "s.db", synchronous="OFF")  # type: ignore[arg-type]
    assert not (tmp_path / "s.db").exists()
