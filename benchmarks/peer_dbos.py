"""DBOS version of the durable approval flow (imported only when ``dbos`` is installed).

A workflow runs a ``submit`` step, waits with ``DBOS.recv_async("approve")`` and, once
``DBOS.send_async`` delivers the decision, runs a ``pay`` step. DBOS is one global instance per
process: :func:`open_dbos` launches it on one database, :meth:`DbosImpl.close` destroys it (the
workflow registry stays, so the next backend reuses the same functions).
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
from dbos import DBOS, SetWorkflowID

_reached: dict[str, anyio.Event] = {}


def version() -> str:
    from importlib.metadata import version as v

    return v("dbos")


@DBOS.step()
async def _submit() -> str:
    return "submitted"


@DBOS.step()
async def _pay(decision: dict[str, Any]) -> str:
    return "paid" if decision["action"] == "approved" else "refused"


@DBOS.workflow()
async def approval() -> str:
    await _submit()
    # The submit step's outcome is committed: the run is durable and about to wait.
    ev = _reached.pop(DBOS.workflow_id or "", None)
    if ev is not None:
        ev.set()
    decision = await DBOS.recv_async("approve", timeout_seconds=3600)
    return await _pay(decision)


@DBOS.workflow()
async def nap(wake_at: float) -> str:
    # A durable sleep (its deadline is recorded); every run is due at the same wall-clock time.
    await DBOS.sleep_async(max(0.0, wake_at - time.time()))
    return await _submit()


class DbosImpl:
    """Start → wait (``recv``) → ``send`` → completed, on DBOS's system database."""

    def __init__(
        self,
        backend: str,
        url: str,
        schema: str | None,
        sqlite_path: Path | None,
        *,
        wal: bool = True,
    ):
        self.name = "dbos" if wal or backend != "sqlite" else "dbos-journal"
        self.wal = wal
        self.backend = backend
        self.url = url
        self.schema = schema
        self.sqlite_path = sqlite_path
        self.handles: dict[str, Any] = {}

    async def start(self, run_id: str) -> None:
        ev = anyio.Event()
        _reached[run_id] = ev
        with SetWorkflowID(run_id):
            self.handles[run_id] = await DBOS.start_workflow_async(approval)
        await ev.wait()

    async def resume(self, run_id: str) -> None:
        decision = {"output": {"approved": True}, "action": "approved"}
        await DBOS.send_async(run_id, decision, "approve")
        result = await self.handles.pop(run_id).get_result()
        if result != "paid":
            raise RuntimeError(f"dbos approval ended with {result!r}")

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"api": "start_workflow_async / recv_async / send_async"}
        if self.sqlite_path is not None:
            conn = sqlite3.connect(self.sqlite_path)
            try:
                out["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
            finally:
                conn.close()
            out["synchronous"] = "FULL (SQLite default; DBOS sets no pragma)"
            out["notification_polling_s"] = 0.001
            out["note"] = (
                "file pre-set to WAL (DBOS leaves the rollback journal)"
                if self.wal
                else "the file as DBOS makes it (rollback journal)"
            ) + "; SQLite has no LISTEN/NOTIFY, so recv polls: 1 ms here (DBOS default 1 s)"
        else:
            out["wakeup"] = "LISTEN/NOTIFY"
        return out

    async def list50(self) -> Any:
        return await DBOS.list_workflows_async(
            status="PENDING", limit=50, load_input=False, load_output=False
        )

    def tables(self) -> list[str]:
        return ["workflow_status"]

    async def timers(self, n: int, per_start_s: float) -> dict[str, Any]:
        """N workflows asleep until one shared deadline; µs per timer from deadline to done."""
        margin = n * per_start_s * 4 + 2.0  # starts slow down as sleeping workflows pile up
        wake_at = time.time() + margin
        handles = []
        for i in range(n):
            with SetWorkflowID(f"nap-{uuid.uuid4().hex[:8]}-{i}"):
                handles.append(await DBOS.start_workflow_async(nap, wake_at))
        started = time.time()
        async with anyio.create_task_group() as tg:
            for h in handles:
                tg.start_soon(h.get_result)
        done = time.time()
        origin = max(wake_at, started)
        if started > wake_at:  # some fired while others were still starting: not comparable
            return {
                "n": n,
                "skipped": f"starts overran the shared deadline by "
                f"{started - wake_at:.1f} s; rerun with fewer timers",
            }
        return {
            "n": n,
            "fire_s": round(done - origin, 3),
            "us_per_timer": round((done - origin) / n * 1e6, 1),
            "late_start": started > wake_at,
            "note": "in-process DBOS.sleep_async with a recorded deadline, all due at once",
        }

    async def close(self) -> None:
        DBOS.destroy(destroy_registry=False)


def open_dbos(backend: str, url: str, tmp: Path, *, wal: bool = True) -> DbosImpl:
    """Launch DBOS on SQLite (a WAL file in ``tmp``) or PostgreSQL (a fresh schema).

    ``wal=False`` leaves the SQLite file as DBOS makes it (the rollback journal: same
    durability at ``FULL``, more syncs per commit).
    """
    schema = None
    sqlite_path = None
    config: dict[str, Any] = {
        "name": "flowcraft-bench",
        "log_level": "ERROR",
        "notification_listener_polling_interval_sec": 0.001,
    }
    if backend == "sqlite":
        sqlite_path = tmp / "dbos.db"
        if wal:
            conn = sqlite3.connect(sqlite_path)
            conn.execute("PRAGMA journal_mode=WAL")  # persistent in the file: DBOS then uses WAL
            conn.close()
        config["system_database_url"] = f"sqlite:///{sqlite_path}"
    else:
        schema = f"dbos_bench_{uuid.uuid4().hex[:8]}"
        config["system_database_url"] = url
        config["dbos_system_schema"] = schema
    DBOS(config=config)  # type: ignore[arg-type]
    DBOS.launch()
    return DbosImpl(backend, url, schema, sqlite_path, wal=wal)
