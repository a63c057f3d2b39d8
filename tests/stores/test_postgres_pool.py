"""PostgresStore pools connections: concurrent calls run side by side, at most pool_size."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import FlowRuntime
from flowcraft.stores import FlowService, PostgresStore
from tests.service._support import POSTGRES_DSN, drop, flows, unavailable


async def _store(pool_size: int) -> PostgresStore:
    store = PostgresStore(POSTGRES_DSN, namespace=f"t{uuid.uuid4().hex[:12]}", pool_size=pool_size)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        await store.close()
        unavailable("postgres store", exc)
    return store


async def _setting(store: PostgresStore, durable: bool) -> tuple[int, str]:
    """The backend and its ``synchronous_commit`` of a call made with ``durable``."""

    async def op(conn: Any) -> tuple[int, str]:
        cur = await conn.execute("SELECT pg_backend_pid(), current_setting('synchronous_commit')")
        row = await cur.fetchone()
        return int(row[0]), str(row[1])

    return await store._run(op, durable=durable)


async def test_concurrent_calls_use_several_connections_up_to_pool_size() -> None:
    """Eight calls in flight at once are served by more than one and at most 3 backends."""
    store = await _store(3)
    pids: set[int] = set()

    async def one() -> None:
        async def op(conn: Any) -> None:
            cur = await conn.execute("SELECT pg_backend_pid(), pg_sleep(0.02)")
            pids.add((await cur.fetchone())[0])

        await store._run(op)

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
        assert 2 <= len(pids) <= 3
        assert len(store._free) <= 3
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_concurrent_decisions_on_a_pool_each_apply_once(tmp_path: Path) -> None:
    """16 runs started and resumed concurrently over a pool all complete, one commit each."""
    store = await _store(4)
    service = FlowService(FlowRuntime(), store, flows=flows())

    async def pair(i: int) -> None:
        await service.start("approval", run_id=f"r{i}")
        await service.resume(f"r{i}", {"action": "approved"}, idempotency_key="k")
        await service.resume(f"r{i}", {"action": "approved"}, idempotency_key="k")

    try:
        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(pair, i)
        for i in range(16):
            stored = await service.get(f"r{i}")
            assert (stored.status, stored.resume_count) == ("completed", 1)
    finally:
        await store.close()
        await drop("postgres", store.namespace)


def test_a_pool_size_below_one_is_refused() -> None:
    """pool_size=0 raises ValueError naming the value."""
    with pytest.raises(ValueError, match="pool_size must be at least 1, got 0"):
        PostgresStore(POSTGRES_DSN, pool_size=0)


async def test_concurrent_writes_share_a_transaction_and_a_bad_one_fails_alone() -> None:
    """Writes made in the same moment go out as one pipelined transaction; when one of them
    is refused by the server (here a priority beyond BIGINT), the others still land and only
    that one gets a StoreError."""
    from datetime import UTC, datetime

    from flowcraft import StoreError
    from flowcraft.stores import StoredRun

    store = await _store(4)
    now = datetime.now(UTC)

    def run(i: int, priority: int = 0) -> StoredRun:
        return StoredRun(
            run_id=f"r{i}",
            flow_id="f",
            status="awaiting",
            revision=0,
            created_at=now,
            updated_at=now,
            priority=priority,
        )

    outcomes: dict[int, str] = {}

    async def create(i: int) -> None:
        try:
            await store.create(run(i, 2**63 + 5 if i == 3 else 0), durable=i % 2 == 0)
            outcomes[i] = "ok"
        except StoreError:
            outcomes[i] = "error"

    try:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(create, i)
        assert outcomes == {i: "error" if i == 3 else "ok" for i in range(10)}
        for i in range(10):
            if i != 3:
                assert (await store.get(f"r{i}")).revision == 0
        # The batch path ran: conflicting saves from one moment have exactly one winner.
        wins: list[int] = []
        conflicts: list[tuple[int, int | None]] = []

        async def save(i: int) -> None:
            from flowcraft import RevisionConflictError

            newer = StoredRun(
                run_id="r0",
                flow_id="f",
                status="running",
                revision=1,
                created_at=now,
                updated_at=now,
                owner=f"w{i}",
            )
            try:
                await store.save(newer, 0)
                wins.append(i)
            except RevisionConflictError as exc:
                conflicts.append((exc.expected, exc.actual))

        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(save, i)
        assert len(wins) == 1
        assert conflicts == [(0, 1)] * 7
        assert (await store.get("r0")).owner == f"w{wins[0]}"
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_a_batch_chosen_as_a_deadlock_victim_still_lands_every_write() -> None:
    """Another connection locks the second run of a batch, then the first: the server breaks
    the deadlock by aborting one of the two. Whichever it picks, every write of the batch lands
    (a victim batch's writes run again alone), and no caller sees a StoreError."""
    from datetime import UTC, datetime

    import psycopg

    from flowcraft.stores import StoredRun

    store = await _store(2)
    now = datetime.now(UTC)
    runs = f"{store.namespace}_runs"

    def run(run_id: str, revision: int, owner: str | None = None) -> StoredRun:
        return StoredRun(
            run_id=run_id, flow_id="f", status="awaiting", revision=revision, created_at=now,
            updated_at=now, owner=owner,
        )

    outcomes: dict[str, str] = {}

    async def save(run_id: str) -> None:
        try:
            await store.save(run(run_id, 1, "me"), 0)
            outcomes[run_id] = "won"
        except Exception as exc:  # what must not happen
            outcomes[run_id] = f"{type(exc).__name__}: {exc}"

    try:
        await store.create(run("a", 0))
        await store.create(run("b", 0))
        other = await psycopg.AsyncConnection.connect(POSTGRES_DSN)
        victim = ""
        try:
            await other.execute(f"UPDATE {runs} SET revision = revision WHERE run_id = 'b'")
            async with anyio.create_task_group() as tg:
                tg.start_soon(save, "a")
                tg.start_soon(save, "b")
                await anyio.sleep(0.3)  # the batch holds "a" and waits for "b"
                try:
                    await other.execute(f"UPDATE {runs} SET revision = revision WHERE run_id = 'a'")
                    victim = "batch"
                except psycopg.errors.DeadlockDetected:
                    victim = "other"
                await other.rollback()
        finally:
            await other.close()
        assert victim in ("batch", "other")
        assert outcomes == {"a": "won", "b": "won"}, outcomes
        assert (await store.get("a")).owner == (await store.get("b")).owner == "me"
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_batches_that_deadlock_across_connections_still_give_each_run_one_winner() -> None:
    """Two stores (two sets of backends) each send a batch touching the same two runs in the
    opposite order: the server breaks the deadlock by aborting one transaction, whose writes
    then run alone (retried if chosen as a victim again). No caller sees a StoreError; each
    run has exactly one winner."""
    from datetime import UTC, datetime

    from flowcraft import RevisionConflictError
    from flowcraft.stores import StoredRun

    first = await _store(2)
    second = PostgresStore(POSTGRES_DSN, namespace=first.namespace, pool_size=2)
    now = datetime.now(UTC)

    def run(run_id: str, revision: int, owner: str | None = None) -> StoredRun:
        return StoredRun(
            run_id=run_id, flow_id="f", status="awaiting", revision=revision, created_at=now,
            updated_at=now, owner=owner,
        )

    outcomes: list[tuple[str, str, str]] = []

    async def save(store: PostgresStore, who: str, run_id: str) -> None:
        try:
            await store.save(run(run_id, 1, who), 0)
            outcomes.append((who, run_id, "won"))
        except RevisionConflictError:
            outcomes.append((who, run_id, "lost"))
        except Exception as exc:  # what must not happen
            outcomes.append((who, run_id, type(exc).__name__))

    try:
        for rounds in range(3):
            ids = (f"a{rounds}", f"b{rounds}")
            for run_id in ids:
                await first.create(run(run_id, 0))
            await second.get(ids[0])  # its pool is connected
            async with anyio.create_task_group() as tg:
                tg.start_soon(save, first, "one", ids[0])
                tg.start_soon(save, first, "one", ids[1])
                tg.start_soon(save, second, "two", ids[1])
                tg.start_soon(save, second, "two", ids[0])
        assert {o[2] for o in outcomes} <= {"won", "lost"}, outcomes
        for rounds in range(3):
            for run_id in (f"a{rounds}", f"b{rounds}"):
                mine = [o for o in outcomes if o[1] == run_id]
                assert sorted(o[2] for o in mine) == ["lost", "won"], mine
                winner = next(o[0] for o in mine if o[2] == "won")
                assert (await first.get(run_id)).owner == winner
    finally:
        await second.close()
        await first.close()
        await drop("postgres", first.namespace)


async def test_claims_and_commits_share_pool_size_connections() -> None:
    """Claims (``durable=False``: connections with ``synchronous_commit=off``) and synced
    writes each keep idle connections, but never more than ``pool_size`` together: the server's
    connection limit is shared by every process. An idle connection of the other kind is
    switched, not closed for a new one: the same 3 backends serve every round, each call with
    the commit setting it asked for."""
    import psycopg

    store = await _store(3)
    try:
        pids: set[int] = set()
        settings: list[tuple[bool, str]] = []

        async def backend(durable: bool) -> None:
            async def op(conn: Any) -> None:
                cur = await conn.execute(
                    "SELECT pg_backend_pid(), current_setting('synchronous_commit'), "
                    "pg_sleep(0.01)"
                )
                row = await cur.fetchone()
                pids.add(row[0])
                settings.append((durable, row[1]))

            await store._run(op, durable=durable)

        for revision in range(4):
            async with anyio.create_task_group() as tg:
                for _ in range(12):
                    tg.start_soon(backend, revision % 2 == 0)
            assert len(store._free) + len(store._free_lazy) <= 3
        assert len(pids) == 3  # no backend was closed and replaced
        assert sorted(set(settings)) == [(False, "off"), (True, "on")]
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),)
            )
            row = await cur.fetchone()
        assert row is not None
        assert row[0] <= 3
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_an_idle_connection_dropped_by_the_server_is_replaced_when_switched() -> None:
    """The only idle connection is a claim's, and the server has ended its backend: a synced
    call cannot switch it, so it is closed and a new connection serves the call (synced)."""
    import psycopg

    store = await _store(1)

    try:
        lazy_pid, lazy = await _setting(store, False)
        assert lazy == "off"
        assert not store._free
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute("SELECT pg_terminate_backend(%s)", (lazy_pid,))
        await anyio.sleep(0.1)
        pid, synced = await _setting(store, True)
        assert (pid != lazy_pid, synced) == (True, "on")
        assert len(store._free) == 1
        assert not store._free_lazy
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_concurrent_reads_of_decisions_are_one_statement_each_with_its_own_answer() -> None:
    """``get_and_recall`` calls made in the same moment (concurrent decisions) are read by one
    statement: each caller gets its own run and remembered result, a run asked for twice with
    two keys gets both answers, a missing run is a RunNotFoundError for its caller alone; when
    that one statement fails, every caller gets a StoreError."""
    from datetime import UTC, datetime

    import psycopg

    from flowcraft import RunNotFoundError, StoreError
    from flowcraft.stores import StoredRun

    store = await _store(4)
    now = datetime.now(UTC)
    statements: list[str] = []
    fetchall = store._fetchall

    async def counted(query: str, params: Any, **kwargs: Any) -> Any:
        statements.append(query)
        return await fetchall(query, params, **kwargs)

    store._fetchall = counted  # type: ignore[method-assign]  # counts, calls the real one
    asked = [("r0", "k"), ("r1", "k"), ("gone", "k"), ("r0", "other"), ("r2", "k")]
    answers: dict[int, object] = {}

    async def read(i: int) -> None:
        run_id, key = asked[i]
        try:
            stored, result = await store.get_and_recall(run_id, key)
            answers[i] = (stored.run_id, stored.revision, result)
        except Exception as exc:
            answers[i] = type(exc)

    try:
        for i in range(3):
            await store.create(
                StoredRun(
                    run_id=f"r{i}", flow_id="f", status="awaiting", revision=i,
                    created_at=now, updated_at=now,
                )
            )
        await store.remember("r0", "k", b"first")
        await store.remember("r2", "k", b"third")
        statements.clear()
        async with anyio.create_task_group() as tg:
            for i in range(len(asked)):
                tg.start_soon(read, i)
        assert answers == {
            0: ("r0", 0, b"first"),
            1: ("r1", 1, None),
            2: RunNotFoundError,
            3: ("r0", 0, None),
            4: ("r2", 2, b"third"),
        }
        assert statements == [store._sql.get_and_recall_many]
        # The one statement fails (its table is gone): every caller is told.
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as conn:
            await conn.execute(f"DROP TABLE {store.namespace}_idempotency")
        answers.clear()
        async with anyio.create_task_group() as tg:
            for i in range(len(asked)):
                tg.start_soon(read, i)
        assert answers == dict.fromkeys(range(len(asked)), StoreError)
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_a_connection_switched_back_to_synced_commits_keeps_the_servers_setting() -> None:
    """A synced call on a claim's idle connection gets the commit setting a new connection
    would have (here the session's ``remote_apply``, as a server, role or connection string
    may set it for synchronous replicas), not a hard-coded ``on`` that waits for less."""
    from psycopg.conninfo import make_conninfo

    dsn = make_conninfo(POSTGRES_DSN, options="-c synchronous_commit=remote_apply")
    store = PostgresStore(dsn, namespace=f"t{uuid.uuid4().hex[:12]}", pool_size=1)

    try:
        try:
            first = await _setting(store, True)
        except Exception as exc:
            unavailable("postgres store", exc)
        assert first[1] == "remote_apply"
        lazy = await _setting(store, False)
        assert lazy == (first[0], "off")  # the same backend, switched
        assert await _setting(store, True) == first  # switched back: the same backend and setting
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_a_read_the_server_or_driver_refuses_fails_alone_in_its_batch() -> None:
    """Reads made in the same moment share a statement, but one that cannot be sent (a NUL
    in its key, a lone surrogate in its run id) fails alone: the others get their runs."""
    from datetime import UTC, datetime

    from flowcraft import StoreError
    from flowcraft.stores import StoredRun

    store = await _store(2)
    now = datetime.now(UTC)
    asked = [("r0", "k"), ("r0", "bad\x00key"), ("r1", "k"), ("bad\ud800id", "k"), ("r1", "k")]
    answers: dict[int, object] = {}

    async def read(i: int) -> None:
        run_id, key = asked[i]
        try:
            stored, result = await store.get_and_recall(run_id, key)
            answers[i] = (stored.run_id, result)
        except Exception as exc:
            answers[i] = type(exc)

    try:
        for i in range(2):
            await store.create(
                StoredRun(
                    run_id=f"r{i}", flow_id="f", status="awaiting", revision=1,
                    created_at=now, updated_at=now,
                )
            )
        await store.remember("r1", "k", b"one")
        async with anyio.create_task_group() as tg:
            for i in range(len(asked)):
                tg.start_soon(read, i)
        assert answers[0] == ("r0", None)
        assert answers[2] == answers[4] == ("r1", b"one")
        assert answers[1] is StoreError
        assert answers[3] in (StoreError, UnicodeEncodeError)  # as a ``get`` of that id
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_a_cancelled_read_returns_at_once_and_its_batch_is_read_for_the_others() -> None:
    """A read is cancellable, as a ``get`` is, even while its batch is in flight (here held
    up by another session's lock on the runs table): a caller's timeout ends its wait at
    once. Readers whose batch was cut short by its leader's cancellation, and readers queued
    behind, are read in a later batch and each get their run once the lock is gone."""
    import time
    from datetime import UTC, datetime

    import psycopg

    from flowcraft.stores import StoredRun

    store = await _store(4)
    now = datetime.now(UTC)
    answers: dict[int, object] = {}
    waited: dict[int, float] = {}

    async def read(i: int, timeout: float | None) -> None:
        start = time.monotonic()
        with anyio.move_on_after(timeout if timeout is not None else 30):
            stored, _ = await store.get_and_recall("r", f"k{i}")
            answers[i] = stored.revision
        waited[i] = time.monotonic() - start

    try:
        await store.create(
            StoredRun(
                run_id="r", flow_id="f", status="awaiting", revision=7,
                created_at=now, updated_at=now,
            )
        )
        async with await psycopg.AsyncConnection.connect(POSTGRES_DSN) as locker:
            await locker.execute(f"LOCK TABLE {store.namespace}_runs IN ACCESS EXCLUSIVE MODE")
            async with anyio.create_task_group() as tg:
                tg.start_soon(read, 0, 0.3)  # leads the first batch, then gives up
                tg.start_soon(read, 1, None)  # in that batch
                await anyio.sleep(0.1)
                tg.start_soon(read, 2, 0.2)  # queued behind it, gives up
                tg.start_soon(read, 3, None)  # queued behind it
                await anyio.sleep(0.6)
                await locker.rollback()  # the lock is gone
        assert answers == {1: 7, 3: 7}
        assert waited[0] < 1.0
        assert waited[2] < 1.0
        assert (await store.get_and_recall("r", "k"))[0].revision == 7  # the group is idle
        assert not store._reads.busy
    finally:
        await store.close()
        await drop("postgres", store.namespace)


async def test_a_connection_whose_setup_fails_is_closed_at_once() -> None:
    """The schema cannot be made (a view holds the runs table's name): the call raises a
    StoreError naming the store, and the connection it opened is closed, not kept open by the
    error's traceback until it is collected."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from flowcraft import StoreError

    ns = f"t{uuid.uuid4().hex[:12]}"
    app = f"fc-{ns}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_DSN, autocommit=True) as admin:
        try:
            await admin.execute(f"CREATE VIEW {ns}_runs AS SELECT 1 AS run_id")
        except psycopg.OperationalError as exc:  # pragma: no cover - depends on the machine
            unavailable("postgres store", exc)
        store = PostgresStore(make_conninfo(POSTGRES_DSN, application_name=app), namespace=ns)
        try:
            with pytest.raises(StoreError, match=ns) as caught:
                await store.get("r1")
            assert caught.value is not None  # the error (and its traceback) still alive
            cur = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,)
            )
            row = await cur.fetchone()
            assert row is not None
            assert row[0] == 0
        finally:
            await store.close()
            await admin.execute(f"DROP VIEW IF EXISTS {ns}_runs")
            await drop("postgres", ns)
