"""Faults are contained: corrupted rows, dropped connections, oversized contexts, bad payloads,
lost replies, and timers that cannot fire."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest

from flowcraft import (
    ContextTooLargeError,
    FlowRuntime,
    NodeContext,
    ResumeDataError,
    StoreCorruptionError,
    StoreError,
    create_flow,
)
from flowcraft.stores import DurableScheduler, FlowService, MemoryStore, RunStore, StoredRun
from flowcraft.testing import FakeClock
from tests.service._support import (
    POSTGRES_DSN,
    REDIS_URL,
    SHARED,
    backend,
    flows,
    reminder,
)


async def corrupt(kind: str, where: str, run_id: str) -> None:
    """Overwrite a stored run's body with bytes that are not a run."""
    garbage = b"\xc1not a run"
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(where)
        conn.execute("UPDATE flowcraft_runs SET body = ? WHERE run_id = ?", (garbage, run_id))
        conn.commit()
        conn.close()
    elif kind == "redis":
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        await client.hset(f"{where}:run:{run_id}", "body", garbage)
        await client.aclose()
    else:
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute(
                f"UPDATE {where}_runs SET body = %s WHERE run_id = %s", (garbage, run_id)
            )


@pytest.mark.parametrize("kind", SHARED)
async def test_a_corrupted_row_names_its_run_and_spares_the_others(
    kind: str, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """get raises StoreCorruptionError; list, due, stats and the scheduler go on."""
    async with backend(kind, tmp_path) as (store, where):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        for run_id in ("bad", "good"):
            await service.start("reminder", run_id=run_id)
        await corrupt(kind, where if kind != "sqlite" else str(tmp_path / "runs.db"), "bad")
        with pytest.raises(StoreCorruptionError, match="'bad'") as caught:
            await service.get("bad")
        assert isinstance(caught.value.__cause__, msgspec.DecodeError)
        assert [r.run_id for r in (await service.list()).runs] == ["good"]
        assert (await service.stats()).total >= 1  # SQL counts from columns, Redis decodes
        fake_clock.advance(120)
        assert [r.run_id for r in await store.due(fake_clock.now())] == ["good"]
        sched = DurableScheduler(service)
        assert await sched.tick() == 1
        assert (await service.get("good")).status == "completed"


async def test_a_killed_redis_connection_is_a_store_error_and_the_service_goes_on(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """CLIENT KILL: the call fails as StoreError (driver error as cause) or is retried; the
    next call works. An unreachable server is a StoreError too."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    async with backend("redis", tmp_path) as (store, _):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        await service.start("approval", run_id="r1")
        # Kill this store's own connection only: other suites may share the server.
        own = await store._redis().client_id()  # type: ignore[attr-defined]
        admin = Redis.from_url(REDIS_URL)
        await admin.execute_command("CLIENT", "KILL", "ID", own)
        await admin.aclose()
        causes: list[BaseException | None] = []
        try:
            await service.get("r1")  # redis-py may reconnect and retry by itself
        except StoreError as exc:
            causes.append(exc.__cause__)
        assert all(isinstance(c, RedisError | OSError) for c in causes)
        result = await service.resume("r1", {"action": "approved"})
        assert result.status == "completed"
    from flowcraft.stores import RedisStore

    dead = RedisStore("redis://127.0.0.1:1/0", namespace="dead")
    with pytest.raises(StoreError, match="redis store") as caught:
        await dead.get("r1")
    assert caught.value.__cause__ is not None
    await dead.close()


async def test_a_terminated_postgres_backend_is_a_store_error_and_the_store_reconnects(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """pg_terminate_backend: the next call raises StoreError (psycopg error as cause); the
    call after it reconnects."""
    import psycopg

    async with backend("postgres", tmp_path) as (store, _):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        await service.start("approval", run_id="r1")
        pids = [c.info.backend_pid for c in store._free]  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            for pid in pids:  # every pooled connection
                await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match="postgres store") as caught:
            await service.get("r1")
        assert isinstance(caught.value.__cause__, psycopg.Error)
        result = await service.resume("r1", {"action": "approved"})
        assert result.status == "completed"


async def big(node: NodeContext) -> str:
    return "x" * 50_000


def big_flow() -> Any:
    return (
        create_flow("big")
        .node("submit", big, name="small-submit")
        .wait("approve")
        .node("huge", big, name="huge")
        .edge("approve", "huge")
    )


async def small(node: NodeContext) -> str:
    return "ok"


def sized_flow() -> Any:
    return (
        create_flow("sized")
        .node("submit", small, name="small")
        .wait("approve")
        .node("huge", big, name="huge")
        .edge("submit", "approve")
        .edge("approve", "huge")
    )


async def test_an_oversized_context_is_refused_at_encode_time_and_nothing_is_stored(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """A segment whose context exceeds max_context_bytes raises; the run is as it was."""
    runtime = FlowRuntime(clock=fake_clock, max_context_bytes=10_000)
    assert runtime.max_context_bytes == 10_000  # the service's limit is the runtime's
    service = FlowService(runtime, store, flows=[sized_flow()])
    await service.start("sized", run_id="s1")
    before = await service.get("s1")
    with pytest.raises(ContextTooLargeError, match="max_context_bytes=10000"):
        await service.resume("s1", {"output": 1})
    assert await service.get("s1") == before
    assert (await service.result("s1")).status == "awaiting"


def test_max_context_bytes_is_a_read_only_property_of_the_runtime() -> None:
    """``FlowRuntime.max_context_bytes`` reports the limit and cannot be reassigned."""
    assert FlowRuntime().max_context_bytes == 16 * 1024 * 1024
    runtime = FlowRuntime(max_context_bytes=1234)
    assert runtime.max_context_bytes == 1234
    with pytest.raises(AttributeError):
        runtime.max_context_bytes = 1  # type: ignore[misc]
    assert runtime.max_context_bytes == 1234


@pytest.mark.parametrize("durability", ["pause", "step"])
@pytest.mark.parametrize(
    "data", [[1, 2], {"output": object()}, {"output": 2**80}, "approved"]
)
async def test_every_bad_payload_is_a_resume_error_and_changes_nothing(
    durability: Any, data: Any, fake_clock: FakeClock
) -> None:
    """Payloads msgspec cannot store or the runtime cannot take raise ResumeDataError."""
    service = FlowService(
        FlowRuntime(clock=fake_clock), MemoryStore(), flows=flows(), durability=durability
    )
    await service.start("approval", run_id="r1")
    before = await service.get("r1")
    with pytest.raises(ResumeDataError):
        await service.resume("r1", data)
    assert await service.get("r1") == before


class LostReplies(MemoryStore):
    """Applies a save, then fails as if the reply was lost (once per armed call)."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = 0

    async def save(self, run: StoredRun, expected_revision: int, **kw: Any) -> None:
        await super().save(run, expected_revision, **kw)
        if self.armed:
            self.armed -= 1
            raise StoreError("connection dropped before the reply")


async def test_a_write_whose_reply_was_lost_is_recognised_as_its_own(
    fake_clock: FakeClock,
) -> None:
    """The claim and the commit landed but their replies were lost: the resume still works."""
    store = LostReplies()
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("approval", run_id="r1")
    store.armed = 2
    result = await service.resume("r1", {"action": "approved"}, idempotency_key="k")
    assert result.status == "completed"
    again = await service.resume("r1", {"action": "approved"}, idempotency_key="k")
    assert again.serialized_context == result.serialized_context


async def test_a_timer_that_cannot_fire_is_isolated_and_the_others_fire_once(
    store: RunStore, fake_clock: FakeClock
) -> None:
    """Old-deployment timers (changed blueprint) back off with a recorded reason; a new
    timer behind them fires, once."""
    old = FlowService(FlowRuntime(clock=fake_clock), store, flows=[reminder()])
    for i in range(12):
        await old.start("reminder", run_id=f"old-{i}")
    fake_clock.advance(30)
    changed = create_flow("reminder").node("other", small, name="other")
    service = FlowService(
        FlowRuntime(clock=fake_clock), store, flows=[changed, reminder("fresh", 1)]
    )
    await service.start("fresh", run_id="new")
    fake_clock.advance(60)
    sched = DurableScheduler(service, batch=5)
    for _ in range(5):
        await sched.tick()
        fake_clock.advance(1)
    assert (await service.get("new")).status == "completed"
    assert sched.fired == 1
    stuck = await service.get("old-0")
    assert stuck.status == "awaiting"
    assert stuck.fault is not None
    assert "BlueprintMismatchError" in stuck.fault
    assert stuck.fault_count >= 2  # backed off, retried, backed off further
    listed = {r.run_id: r.fault for r in (await service.list(status="awaiting")).runs}
    assert all(listed[f"old-{i}"] for i in range(12))


class Outage(MemoryStore):
    """A store that is down while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def due(self, now: Any, limit: int = 100) -> Any:
        if self.down:
            raise StoreError("store unreachable")
        return await super().due(now, limit)

    async def list(self, **kw: Any) -> Any:
        if self.down:
            raise StoreError("store unreachable")
        return await super().list(**kw)


async def test_the_scheduler_loop_rides_out_a_store_outage(fake_clock: FakeClock) -> None:
    """Ticks fail while the store is down; the loop keeps going and fires once it is back."""
    import anyio

    store = Outage()
    seen: list[str] = []
    service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
    await service.start("reminder", run_id="t1")
    store.down = True
    async with service.scheduler(interval=10, on_result=lambda r: seen.append(r.run_id)):
        for _ in range(10):
            fake_clock.advance(10)
            await anyio.wait_all_tasks_blocked()
        assert seen == []
        store.down = False
        for _ in range(2):
            fake_clock.advance(10)
            await anyio.wait_all_tasks_blocked()
    assert seen == ["t1"]


def test_no_internal_store_key_holds_a_nul_byte() -> None:
    """PostgreSQL text cannot hold NUL: the service's control keys are printable."""
    from flowcraft._service.parts import control_key

    assert "\0" not in control_key("abc")
    assert os.sep  # keeps the import of os used on every platform


@pytest.mark.parametrize("bad", ["r2", "r3"])
@pytest.mark.parametrize("kind", SHARED)
async def test_paging_goes_on_past_a_corrupted_row(
    kind: str, bad: str, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """A corrupted row inside a page or as its look-ahead row never ends the paging early."""
    async with backend(kind, tmp_path) as (store, where):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        ids = ["r1", "r2", "r3", "r4", "r5"]
        for run_id in ids:
            await service.start("approval", run_id=run_id)
            fake_clock.advance(1)
        await corrupt(kind, where if kind != "sqlite" else str(tmp_path / "runs.db"), bad)
        seen: list[str] = []
        cursor: str | None = None
        for _ in range(len(ids) + 1):
            page = await service.list(limit=2, cursor=cursor)
            assert len(page.runs) <= 2
            seen.extend(r.run_id for r in page.runs)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == [i for i in ids if i != bad]


@pytest.mark.parametrize("column", ["status", "body"])
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_sql_row_with_a_bad_column_or_body_field_is_a_corruption(
    kind: str, column: str, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """A status column no run can have, or a lean body whose field has the wrong type, is a
    ``StoreCorruptionError`` naming the run: never a run built from it, never a raw error."""
    async with backend(kind, tmp_path) as (store, where):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        for run_id in ("bad", "good"):
            await service.start("approval", run_id=run_id)
        # A lean body (0xc1) whose first field, the context bytes, is an int.
        value: Any = "paused" if column == "status" else b"\xc1\x91\x07"
        if kind == "sqlite":
            import sqlite3

            conn = sqlite3.connect(str(tmp_path / "runs.db"))
            conn.execute(f"UPDATE flowcraft_runs SET {column} = ? WHERE run_id = 'bad'", (value,))
            conn.commit()
            conn.close()
        else:
            import psycopg

            async with await psycopg.AsyncConnection.connect(
                POSTGRES_DSN, autocommit=True
            ) as pg:
                await pg.execute(
                    f"UPDATE {where}_runs SET {column} = %s WHERE run_id = 'bad'", (value,)
                )
        expected = "paused" if column == "status" else "Expected `bytes`"
        with pytest.raises(StoreCorruptionError, match=f"'bad'.*{expected}"):
            await service.get("bad")
        assert [r.run_id for r in (await service.list()).runs] == ["good"]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("body", "text, not bytes"),  # SQLite keeps a TEXT value in a BLOB column
        ("body", -1),
        ("created_at", 1e30),  # a REAL no 64-bit integer holds stays a REAL
        ("updated_at", float("inf")),
    ],
)
async def test_a_sqlite_column_of_the_wrong_type_is_a_corruption_and_spares_the_others(
    column: str, value: object, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """SQLite keeps whatever type was written into a column: a row whose body is not bytes, or
    whose timestamp is a float no timestamp fits, is a ``StoreCorruptionError`` naming the
    run (never a raw ``TypeError``/``OverflowError``); lists and the scheduler skip it."""
    async with backend("sqlite", tmp_path) as (store, where):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        await service.start("approval", run_id="bad")
        await service.start("reminder", run_id="good")
        import sqlite3

        conn = sqlite3.connect(where)
        conn.execute(f"UPDATE flowcraft_runs SET {column} = ? WHERE run_id = 'bad'", (value,))
        conn.commit()
        conn.close()
        with pytest.raises(StoreCorruptionError, match="'bad'"):
            await service.get("bad")
        assert [r.run_id for r in await service.list()] == ["good"]
        fake_clock.advance(timedelta(days=2))
        assert [r.run_id for r in await store.due(fake_clock.now())] == ["good"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_lean_body_counting_65535_fields_is_a_corruption(
    kind: str, tmp_path: Path, fake_clock: FakeClock
) -> None:
    """A lean body whose array header counts more fields than a 16-bit count holds once the
    two timestamps are spliced in is a ``StoreCorruptionError``, not a raw ``OverflowError``."""
    async with backend(kind, tmp_path) as (store, where):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        for run_id in ("bad", "good"):
            await service.start("approval", run_id=run_id)
        value = b"\xc1\xdc\xff\xff\xc4\x00"
        if kind == "sqlite":
            import sqlite3

            conn = sqlite3.connect(where)
            conn.execute("UPDATE flowcraft_runs SET body = ? WHERE run_id = 'bad'", (value,))
            conn.commit()
            conn.close()
        else:
            import psycopg

            async with await psycopg.AsyncConnection.connect(
                POSTGRES_DSN, autocommit=True
            ) as pg:
                query = f"UPDATE {where}_runs SET body = %s WHERE run_id = 'bad'"
                await pg.execute(query, (value,))
        with pytest.raises(StoreCorruptionError, match="'bad'"):
            await service.get("bad")
        assert [r.run_id for r in await service.list()] == ["good"]


async def test_a_sqlite_text_column_that_is_not_utf8_is_a_corruption_and_spares_the_others(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """SQLite keeps bytes that are not UTF-8 in a TEXT column, and sqlite3 then fails the
    whole query reading it: such a row is a ``StoreCorruptionError`` naming the run (never a
    raw ``AttributeError``), lists skip it and the scheduler fires the other due runs."""
    async with backend("sqlite", tmp_path) as (store, where):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        for run_id in ("bad", "good"):
            await service.start("reminder", run_id=run_id)
        import sqlite3

        conn = sqlite3.connect(where)
        bad = "UPDATE flowcraft_runs SET flow_id = CAST(x'ff' AS TEXT) WHERE run_id = 'bad'"
        conn.execute(bad)
        conn.commit()
        conn.close()
        with pytest.raises(StoreCorruptionError, match="'bad'"):
            await service.get("bad")
        assert [r.run_id for r in await service.list()] == ["good"]
        fake_clock.advance(timedelta(hours=1))
        assert await DurableScheduler(service).tick() == 1
        assert (await service.result("good")).status == "completed"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_an_unreadable_pause_request_neither_stops_the_lease_nor_recovery(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Garbage stored as the running segment's pause/cancel request is logged and ignored:
    the watcher keeps renewing the lease (no other process takes the run over), the node
    runs once, and a recovery reading the same garbage goes on."""
    import uuid

    import anyio

    from flowcraft._service.parts import control_key

    ran: list[str] = []

    async def slow(node: NodeContext) -> str:
        ran.append(node.run_id)
        await anyio.sleep(1.0)  # several lease lifetimes
        return "done"

    flow = create_flow("slow").wait("go").node("work", slow, name="work").edge("go", "work")
    async with backend(kind, tmp_path) as (store, _):
        own = FlowService(FlowRuntime(), store, flows=[flow], lease_ttl=0.3, poll_interval=0.05)
        other = FlowService(FlowRuntime(), store, flows=[flow], lease_ttl=0.3)
        run_id = f"u-{uuid.uuid4().hex[:8]}"
        await own.start("slow", run_id=run_id)
        taken: list[Any] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(own.resume, run_id, {"action": "go"})
            await anyio.sleep(0.1)
            claim = (await store.get(run_id)).claim
            await store.remember(run_id, control_key(claim or ""), b"\xc1 not a request")
            for _ in range(12):
                await anyio.sleep(0.1)
                taken.extend(await other.recover())
        assert taken == []
        assert (await store.get(run_id)).status == "completed"
        assert ran == [run_id]
        assert "does not decode was ignored" in caplog.text


async def test_a_sqlite_file_that_cannot_be_opened_is_a_store_error(tmp_path: Path) -> None:
    """Opening the file is part of the first call: its failure is a ``StoreError`` naming the
    file (the driver's error as cause), on reads and writes alike."""
    import sqlite3

    from flowcraft.stores import SqliteStore

    store = SqliteStore(tmp_path / "missing-dir" / "runs.db")
    service = FlowService(FlowRuntime(), store, flows=flows())
    for call in (lambda: service.get("r1"), lambda: service.start("approval", run_id="r1")):
        with pytest.raises(StoreError, match=r"missing-dir.*unable to open") as caught:
            await call()
        assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    await store.close()


async def test_a_sqlite_checkpoint_with_a_revision_that_is_no_number_is_a_corruption(
    tmp_path: Path, fake_clock: FakeClock
) -> None:
    """SQLite keeps any value in any column: a checkpoint whose revision is text is a
    ``StoreCorruptionError`` naming the run, not a raw ``ValueError``."""
    import sqlite3

    async with backend("sqlite", tmp_path) as (store, _):
        service = FlowService(FlowRuntime(clock=fake_clock), store, flows=flows())
        await service.start("approval", run_id="r1")
        await service.resume("r1", {"action": "approved"})
        conn = sqlite3.connect(str(tmp_path / "runs.db"))
        conn.execute("UPDATE flowcraft_checkpoints SET revision = 'x' WHERE run_id = 'r1'")
        conn.commit()
        conn.close()
        with pytest.raises(StoreCorruptionError, match=r"'r1'.*checkpoint"):
            await service.checkpoints("r1")
