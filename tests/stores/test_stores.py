"""The RunStore contract, run against every store (Redis and PostgreSQL are real servers)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import OutOfRangeError, RevisionConflictError, RunNotFoundError
from flowcraft.stores import (
    HistoryRecord,
    MemoryStore,
    PostgresStore,
    RedisStore,
    RunExistsError,
    RunStore,
    SqliteStore,
    StoredRun,
)
from tests.service._support import POSTGRES_DSN, REDIS_URL, drop, unavailable

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


async def redis_store(namespace: str) -> RedisStore:
    store = RedisStore(REDIS_URL, namespace=namespace)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        await store.close()
        unavailable(f"Redis at {REDIS_URL}", exc)
    return store


async def postgres_store(namespace: str) -> PostgresStore:
    store = PostgresStore(POSTGRES_DSN, namespace=namespace)
    try:
        await store.recall("probe", "probe")
    except Exception as exc:
        await store.close()
        unavailable(f"PostgreSQL at {POSTGRES_DSN}", exc)
    return store


STORES = ["memory", "sqlite", "redis", "postgres"]


@pytest.fixture(params=STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunStore]:
    kind: str = request.param
    namespace = f"t_{uuid.uuid4().hex[:12]}"
    made: RunStore
    if kind == "memory":
        made = MemoryStore()
    elif kind == "sqlite":
        made = SqliteStore(tmp_path / "runs.db", namespace=namespace)
    elif kind == "redis":
        made = await redis_store(namespace)
    else:
        made = await postgres_store(namespace)
    request.node.store_spec = (kind, namespace, str(tmp_path / "runs.db"))
    try:
        yield made
    finally:
        await made.close()
        await drop(kind, namespace)


def run_record(run_id: str = "r1", **kw: Any) -> StoredRun:
    fields: dict[str, Any] = {
        "run_id": run_id,
        "flow_id": "approval",
        "status": "awaiting",
        "revision": 1,
        "created_at": T0,
        "updated_at": T0,
        "context": b"ctx-" + run_id.encode(),
        "awaiting": ("approve",),
        "reasons": ("wait",),
    }
    fields.update(kw)
    return StoredRun(**fields)


def bump(run: StoredRun, **kw: Any) -> StoredRun:
    """The next revision of ``run``."""
    fields = {f: getattr(run, f) for f in run.__struct_fields__}
    fields.update(revision=run.revision + 1, updated_at=run.updated_at + timedelta(seconds=1))
    fields.update(kw)
    return StoredRun(**fields)


# --- create / get / save ---------------------------------------------------------------------


async def test_create_then_get_returns_the_same_run(store: RunStore) -> None:
    """A created run reads back field for field, bytes intact."""
    run = run_record(
        wake_at=T0 + timedelta(minutes=5),
        due_at=T0 + timedelta(minutes=5),
        paused_by="ops",
        pause_reason="audit",
        pause_request_id="req-1",
        context=bytes(range(256)),
    )
    await store.create(run)
    assert await store.get("r1") == run


async def test_create_refuses_an_existing_run_id(store: RunStore) -> None:
    """Creating the same id twice raises RunExistsError and keeps the first run."""
    await store.create(run_record())
    with pytest.raises(RunExistsError, match="'r1' is already in the store"):
        await store.create(run_record(context=b"other"))
    assert (await store.get("r1")).context == b"ctx-r1"


async def test_get_unknown_run_raises_run_not_found(store: RunStore) -> None:
    """An unknown id raises RunNotFoundError (a LookupError)."""
    with pytest.raises(RunNotFoundError, match="'nope' is not in the store"):
        await store.get("nope")
    with pytest.raises(LookupError):
        await store.get("nope")


async def test_save_with_the_stored_revision_replaces_the_run(store: RunStore) -> None:
    """Compare-and-set succeeds when the expected revision is the stored one."""
    run = run_record()
    await store.create(run)
    newer = bump(run, status="completed", awaiting=(), reasons=(), context=b"done")
    await store.save(newer, expected_revision=1)
    assert await store.get("r1") == newer


async def test_save_replaces_the_flow_and_creation_time_too(store: RunStore) -> None:
    """The service never changes a run's flow or creation time, and SQLite's update leaves
    them out for speed; a save that does change them still replaces them (one by one and in
    ``save_many``), counted and listed under the new flow."""
    run = run_record()
    await store.create(run)
    moved = bump(run, flow_id="other", created_at=T0 - timedelta(days=1))
    await store.save(moved, expected_revision=1)
    assert await store.get("r1") == moved
    assert (await store.stats(T0)).by_flow == {"other": 1}
    assert [r.run_id for r in (await store.list(flow_id="other")).runs] == ["r1"]
    again = bump(moved, flow_id="third", created_at=T0)
    many = getattr(store, "save_many", None)
    if many is not None:
        assert await many([(again, moved.revision)]) == [None]
    else:
        await store.save(again, expected_revision=moved.revision)
    assert await store.get("r1") == again
    assert (await store.stats(T0)).by_flow == {"third": 1}
    with pytest.raises(RevisionConflictError):  # a stale one still loses, whatever it changes
        await store.save(bump(run, flow_id="stale"), expected_revision=1)


async def test_save_with_a_stale_revision_raises_and_changes_nothing(store: RunStore) -> None:
    """A stale compare-and-set raises RevisionConflictError with expected/actual, and no
    history or idempotency record of the loser is kept."""
    run = run_record()
    await store.create(run)
    await store.save(bump(run), expected_revision=1)
    loser = bump(run, context=b"loser")
    entry = HistoryRecord(at=T0, event="resume", node_id="approve")
    with pytest.raises(RevisionConflictError, match="expected stored revision 1, found 2") as info:
        await store.save(loser, expected_revision=1, history=[entry], idempotency=("k", b"x"))
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert (await store.get("r1")).context == b"ctx-r1"
    assert await store.history("r1") == []
    assert await store.recall("r1", "k") is None


async def test_save_of_an_unknown_run_raises_run_not_found(store: RunStore) -> None:
    """save() never creates a run."""
    with pytest.raises(RunNotFoundError):
        await store.save(run_record("ghost"), expected_revision=0)


async def test_history_is_appended_in_order_with_create_and_save(store: RunStore) -> None:
    """History written with create/save reads back oldest first."""
    first = HistoryRecord(at=T0, event="start", revision=1)
    second = HistoryRecord(at=T0, event="pause", node_id="approve", by="ann", reason="wait")
    third = HistoryRecord(at=T0, event="resume", node_id="approve", by="bob", action="ok")
    run = run_record()
    await store.create(run, history=[first])
    await store.save(bump(run), 1, history=[second, third])
    assert await store.history("r1") == [first, second, third]
    assert await store.history("unknown") == []


async def test_concurrent_saves_with_the_same_revision_have_exactly_one_winner(
    store: RunStore,
) -> None:
    """Many tasks racing save() from the same revision: one wins, the rest conflict."""
    run = run_record()
    await store.create(run)
    outcomes: list[str] = []

    async def attempt(i: int) -> None:
        try:
            newer = bump(run, context=f"task-{i}".encode())
            await store.save(newer, 1, idempotency=("k", b"%d" % i))
            outcomes.append(f"task-{i}")
        except RevisionConflictError:
            outcomes.append("conflict")

    async with anyio.create_task_group() as tg:
        for i in range(20):
            tg.start_soon(attempt, i)
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1
    stored = await store.get("r1")
    assert stored.revision == 2
    assert stored.context == winners[0].encode()
    assert await store.recall("r1", "k") == winners[0].removeprefix("task-").encode()


RACER = """
import sys, anyio
from datetime import UTC, datetime
from flowcraft import RevisionConflictError
from flowcraft.stores import StoredRun, SqliteStore, RedisStore, PostgresStore

kind, target, namespace, me = sys.argv[1:5]

async def main():
    if kind == "sqlite":
        store = SqliteStore(target, namespace=namespace)
    elif kind == "redis":
        store = RedisStore(target, namespace=namespace)
    else:
        store = PostgresStore(target, namespace=namespace)
    current = await store.get("r1")          # connected and warmed up
    print("ready", flush=True)
    sys.stdin.readline()                     # the parent releases every racer at once
    run = StoredRun(
        run_id="r1", flow_id="approval", status="completed", revision=2,
        created_at=current.created_at, updated_at=datetime.now(UTC), context=me.encode(),
    )
    try:
        await store.save(run, 1, idempotency=("decision", me.encode()))
        print("won", flush=True)
    except RevisionConflictError as exc:
        print(f"lost {exc.actual}", flush=True)
    await store.close()

anyio.run(main)
"""


@pytest.mark.parametrize("store", ["sqlite", "redis", "postgres"], indirect=True)
async def test_processes_racing_save_have_exactly_one_winner(
    store: RunStore, request: pytest.FixtureRequest
) -> None:
    """Several OS processes racing save() from the same revision: exactly one wins."""
    kind, namespace, path = request.node.store_spec
    target = {"sqlite": path, "redis": REDIS_URL, "postgres": POSTGRES_DSN}[kind]
    await store.create(run_record())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, kind, target, namespace, f"p{i}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(5)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outputs = [p.communicate(timeout=60)[0].strip() for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert sorted(o.split()[0] for o in outputs) == ["lost"] * 4 + ["won"]
    assert all(o == "lost 2" for o in outputs if o != "won")
    winner = f"p{[o.split()[0] for o in outputs].index('won')}"
    assert (await store.get("r1")).context == winner.encode()
    assert await store.recall("r1", "decision") == winner.encode()


# --- listing, due index, stats ---------------------------------------------------------------


async def seed(store: RunStore) -> None:
    """Runs of two flows in every state, created one second apart."""
    specs: list[dict[str, Any]] = [
        {"run_id": "a", "status": "awaiting", "reasons": ("wait",)},
        {"run_id": "b", "status": "awaiting", "reasons": ("timer",), "flow_id": "timers"},
        {"run_id": "c", "status": "completed", "awaiting": (), "reasons": ()},
        {"run_id": "d", "status": "awaiting", "reasons": ("pause", "wait"),
         "pause_deadline": T0 + timedelta(hours=1)},
        {"run_id": "e", "status": "failed", "awaiting": (), "reasons": (), "flow_id": "timers"},
        {"run_id": "f", "status": "awaiting", "reasons": ("wait",),
         "pause_deadline": T0 + timedelta(hours=3)},
        {"run_id": "g", "status": "running", "awaiting": (), "reasons": ()},
    ]
    for i, spec in enumerate(specs):
        at = T0 + timedelta(seconds=i)
        await store.create(run_record(created_at=at, updated_at=at, **spec))


async def test_list_filters_by_status_flow_reason_and_expiry(store: RunStore) -> None:
    """Each filter narrows the listing; filters combine."""
    await seed(store)

    async def ids(**kw: Any) -> list[str]:
        return [r.run_id for r in (await store.list(**kw)).runs]

    assert await ids() == list("abcdefg")
    assert await ids(status="awaiting") == list("abdf")
    assert await ids(flow_id="timers") == list("be")
    assert await ids(reason="wait") == list("adf")
    assert await ids(reason="pause") == ["d"]
    now = T0 + timedelta(hours=2)
    assert await ids(expired=True, now=now) == ["d"]
    assert await ids(expired=False, now=now, status="awaiting") == list("abf")
    assert await ids(status="awaiting", flow_id="approval", reason="wait") == list("adf")


async def test_list_pages_with_a_cursor_until_exhausted(store: RunStore) -> None:
    """Pages of ``limit`` runs, in creation order, chained by next_cursor."""
    await seed(store)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await store.list(limit=3, cursor=cursor)
        pages += 1
        seen.extend(r.run_id for r in page.runs)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == list("abcdefg")
    assert pages == 3
    filtered = await store.list(status="awaiting", limit=2)
    assert [r.run_id for r in filtered.runs] == ["a", "b"]
    rest = await store.list(status="awaiting", limit=2, cursor=filtered.next_cursor)
    assert [r.run_id for r in rest.runs] == ["d", "f"]
    assert rest.next_cursor is None


async def test_list_pages_through_runs_created_at_the_same_time_by_each_filter(
    store: RunStore,
) -> None:
    """Runs sharing a creation time page in run_id order, each once, with any one filter."""
    for i in range(9):
        waiting = i % 3 != 0
        await store.create(
            run_record(
                run_id=f"t{i}",
                status="awaiting" if waiting else "completed",
                reasons=("wait",) if waiting else (),
                awaiting=("w",) if waiting else (),
                created_at=T0,
                updated_at=T0,
            )
        )

    async def walk(**kw: Any) -> list[str]:
        seen: list[str] = []
        cursor: str | None = None
        while True:
            page = await store.list(limit=2, cursor=cursor, **kw)
            seen.extend(r.run_id for r in page.runs)
            if page.next_cursor is None:
                return seen
            cursor = page.next_cursor

    waiting = [f"t{i}" for i in range(9) if i % 3 != 0]
    assert await walk() == [f"t{i}" for i in range(9)]
    assert await walk(flow_id="approval") == [f"t{i}" for i in range(9)]
    assert await walk(status="awaiting") == waiting
    assert await walk(reason="wait") == waiting
    assert await walk(reason="wait", status="awaiting") == waiting
    assert await walk(reason="timer") == []


async def test_list_needs_now_for_expired_and_rejects_bad_input(store: RunStore) -> None:
    """Caller mistakes raise ValueError."""
    with pytest.raises(ValueError, match="needs now="):
        await store.list(expired=True)
    with pytest.raises(ValueError, match="invalid list cursor"):
        await store.list(cursor="%%%")
    with pytest.raises(ValueError, match="limit"):
        await store.list(limit=0)


async def test_due_returns_awaiting_runs_due_by_now_earliest_first(store: RunStore) -> None:
    """The due index holds awaiting runs only, ordered by due time, honouring limit."""
    for rid, minutes, status in [
        ("late", 30, "awaiting"), ("soon", 5, "awaiting"), ("future", 90, "awaiting"),
        ("done", 1, "completed"), ("mid", 10, "awaiting"),
    ]:
        await store.create(run_record(rid, status=status, due_at=T0 + timedelta(minutes=minutes)))
    await store.create(run_record("nodue"))
    now = T0 + timedelta(minutes=60)
    assert [r.run_id for r in await store.due(now)] == ["soon", "mid", "late"]
    assert [r.run_id for r in await store.due(now, limit=2)] == ["soon", "mid"]
    soon = await store.get("soon")
    await store.save(bump(soon, status="completed"), soon.revision)
    assert [r.run_id for r in await store.due(now)] == ["mid", "late"]
    late = await store.get("late")
    await store.save(bump(late, due_at=T0 + timedelta(hours=5)), late.revision)
    assert [r.run_id for r in await store.due(now)] == ["mid"]


async def test_stats_count_by_status_flow_reason_and_expiry(store: RunStore) -> None:
    """stats() summarizes every run."""
    await seed(store)
    stats = await store.stats(T0 + timedelta(hours=2))
    assert stats.total == 7
    assert stats.by_status == {"awaiting": 4, "completed": 1, "failed": 1, "running": 1}
    assert stats.by_flow == {"approval": 5, "timers": 2}
    assert stats.awaiting_by_reason == {"wait": 3, "timer": 1, "pause": 1}
    assert stats.expired == 1


async def test_stats_give_awaiting_runs_and_the_oldest_wait_per_flow(store: RunStore) -> None:
    """awaiting_by_flow / awaiting_since_by_flow follow every write of an awaiting run."""
    await seed(store)  # no awaiting_since stored: counted from paused_at, else updated_at
    stats = await store.stats(T0)
    assert stats.awaiting_by_flow == {"approval": 3, "timers": 1}
    assert stats.awaiting_since_by_flow == {"approval": T0, "timers": T0 + timedelta(seconds=1)}
    old = T0 - timedelta(days=3)
    a = await store.get("a")
    # A later write (a hold, a fault) keeps awaiting_since: the age stays exact.
    held = bump(a, updated_at=T0 + timedelta(hours=5), awaiting_since=old, held=True)
    await store.save(held, a.revision)
    stats = await store.stats(T0)
    assert stats.awaiting_since_by_flow["approval"] == old
    # The run leaves awaiting: neither its count nor its age remain.
    done = bump(held, status="completed", awaiting=(), reasons=())
    await store.save(done, held.revision)
    stats = await store.stats(T0)
    assert stats.awaiting_by_flow == {"approval": 2, "timers": 1}
    assert stats.awaiting_since_by_flow["approval"] == T0 + timedelta(seconds=3)
    b = await store.get("b")
    await store.delete("b", b.revision)
    stats = await store.stats(T0)
    assert stats.awaiting_by_flow == {"approval": 2}
    assert "timers" not in stats.awaiting_since_by_flow


# --- idempotency, leases, retention ----------------------------------------------------------


async def test_remember_keeps_the_first_result_per_key(store: RunStore) -> None:
    """remember() is set-once per (run, key); recall() returns the first result."""
    assert await store.recall("r1", "k") is None
    assert await store.remember("r1", "k", b"first") is True
    assert await store.remember("r1", "k", b"second") is False
    assert await store.recall("r1", "k") == b"first"
    assert await store.recall("r2", "k") is None


async def test_a_lease_excludes_other_owners_until_it_expires(store: RunStore) -> None:
    """Leases: one owner at a time, renewable by the owner, free after expiry or release."""
    assert await store.acquire_lease("sched", "a", 30, T0)
    assert not await store.acquire_lease("sched", "b", 30, T0 + timedelta(seconds=10))
    assert await store.acquire_lease("sched", "a", 30, T0 + timedelta(seconds=20))  # renew
    assert not await store.acquire_lease("sched", "b", 30, T0 + timedelta(seconds=45))
    assert await store.acquire_lease("sched", "b", 30, T0 + timedelta(seconds=50))  # expired
    assert await store.acquire_lease("other", "a", 30, T0)
    await store.release_lease("sched", "a")  # not a's any more: no effect
    assert not await store.acquire_lease("sched", "a", 30, T0 + timedelta(seconds=51))
    await store.release_lease("sched", "b")
    assert await store.acquire_lease("sched", "a", 30, T0 + timedelta(seconds=51))


async def test_concurrent_lease_attempts_have_one_winner(store: RunStore) -> None:
    """Tasks racing for a free lease: exactly one gets it."""
    won: list[str] = []

    async def attempt(owner: str) -> None:
        if await store.acquire_lease("run:r1", owner, 60, T0):
            won.append(owner)

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(attempt, f"o{i}")
    assert len(won) == 1


async def test_delete_finished_removes_old_finished_runs_and_their_records(
    store: RunStore,
) -> None:
    """Finished runs updated before the cut-off go, with history and idempotency records."""
    await seed(store)
    await store.remember("c", "k", b"x")
    c = await store.get("c")
    await store.save(bump(c), c.revision, history=[HistoryRecord(at=T0, event="note")])
    cutoff = T0 + timedelta(seconds=3, milliseconds=500)
    assert await store.delete_finished(cutoff) == 1  # c; e updated after the cut-off
    with pytest.raises(RunNotFoundError):
        await store.get("c")
    assert await store.history("c") == []
    assert await store.recall("c", "k") is None
    assert [r.run_id for r in (await store.list()).runs] == list("abdefg")
    assert await store.delete_finished(T0 + timedelta(days=1)) == 1  # e
    assert (await store.stats(T0)).by_status == {"awaiting": 4, "running": 1}


async def test_delete_finished_of_many_runs_deletes_exactly_the_finished_ones(
    store: RunStore,
) -> None:
    """1,200 finished runs among awaiting ones (more than one of Redis's pipelined chunks):
    every finished one goes, with its records; the count says how many; the rest stay."""
    sem = anyio.Semaphore(16)

    async def one(i: int) -> None:
        finished = i % 4 != 0
        at = T0 + timedelta(microseconds=i)
        run = run_record(
            run_id=f"m{i:05d}",
            status="completed" if finished else "awaiting",
            awaiting=() if finished else ("approve",),
            reasons=() if finished else ("wait",),
            created_at=at,
            updated_at=at,
        )
        async with sem:
            await store.create(run, history=[HistoryRecord(at=at, event="start")])

    async with anyio.create_task_group() as tg:
        for i in range(1600):
            tg.start_soon(one, i)
    assert await store.delete_finished(T0 + timedelta(days=1)) == 1200
    assert await store.delete_finished(T0 + timedelta(days=1)) == 0
    left = await store.list(limit=1000)
    assert {r.run_id for r in left.runs} == {f"m{i:05d}" for i in range(0, 1600, 4)}
    assert await store.history("m00001") == []
    assert (await store.stats(T0)).by_status == {"awaiting": 400}


async def test_redis_delete_finished_keeps_a_run_rolled_back_after_it_was_listed(
    tmp_path: Path,
) -> None:
    """Between listing the finished runs and deleting them, one is rolled back to awaiting
    (another process): it is no longer finished, so it stays, uncounted."""
    namespace = f"t_{uuid.uuid4().hex[:12]}"
    store = await redis_store(namespace)
    try:
        await seed(store)  # c completed (updated T0+2s), e failed (T0+4s)
        real = store._redis()
        c = await store.get("c")

        class RollbackAfterListing:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            async def zrangebyscore(self, *args: Any, **kwargs: Any) -> Any:
                listed = await real.zrangebyscore(*args, **kwargs)
                back = bump(c, status="awaiting", awaiting=("approve",), reasons=("wait",))
                await store.save(back, c.revision)
                return listed

        store._redis = lambda: RollbackAfterListing()  # type: ignore[method-assign]
        assert await store.delete_finished(T0 + timedelta(days=1)) == 1  # e only
        del store._redis  # the class's own again
        assert (await store.get("c")).status == "awaiting"
        with pytest.raises(RunNotFoundError):
            await store.get("e")
        assert "c" in {r.run_id for r in (await store.list(status="awaiting")).runs}
    finally:
        await store.close()
        await drop("redis", namespace)


def test_invalid_namespace_is_refused(tmp_path: Path) -> None:
    """Namespaces become table names: anything but identifier characters is refused."""
    with pytest.raises(ValueError, match="invalid store namespace"):
        SqliteStore(tmp_path / "x.db", namespace="runs; DROP TABLE x")


def test_sqlite_store_defaults_to_a_file_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SqliteStore() with no arguments uses ./flowcraft.db."""
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        store = SqliteStore()
        await store.create(run_record())
        await store.close()

    anyio.run(main)
    assert (tmp_path / "flowcraft.db").exists()


async def test_a_missing_run_names_the_store_it_was_looked_for_in(store: RunStore) -> None:
    """RunNotFoundError says which store was asked, so a wrong database or prefix shows."""
    with pytest.raises(RunNotFoundError, match=r"not in the store flowcraft\.stores\.") as caught:
        await store.get("no-such-run")
    assert caught.value.store is store


async def test_save_many_applies_each_compare_and_set_alone(store: RunStore) -> None:
    """A batch of claims: each lands once; a conflicting or missing member is refused alone."""
    for run_id in ("a", "b", "c"):
        await store.create(run_record(run_id))
    await store.save(run_record("b", revision=2, context=b"other"), 1)  # b moved on
    many = store.save_many  # type: ignore[attr-defined]
    writes = [
        (run_record("a", revision=2, status="running"), 1),
        (run_record("b", revision=2, status="running"), 1),
        (run_record("zz", revision=2, status="running"), 1),
        (run_record("c", revision=2, status="running"), 1),
    ]
    errors = await many(writes)
    assert errors[0] is None
    assert errors[3] is None
    assert isinstance(errors[1], RevisionConflictError)
    assert errors[1].actual == 2
    assert isinstance(errors[2], RunNotFoundError)
    assert (await store.get("a")).status == "running"
    assert (await store.get("c")).status == "running"
    b = await store.get("b")
    assert (b.status, b.context) == ("awaiting", b"other")
    again = await many(writes[:1])  # the same claim twice: the second conflicts
    assert isinstance(again[0], RevisionConflictError)
    stats = await store.stats(T0)
    assert stats.by_status == {"running": 2, "awaiting": 1}


async def test_checkpoints_are_the_newest_kept_through_saves_of_every_kind(
    store: RunStore,
) -> None:
    """``save(checkpoint=N)`` keeps the newest N checkpoints, whatever writes come between.

    Writes without a checkpoint (claims, ``save_many``) neither add one nor drop one; a
    checkpoint read back is the run as it was saved at that revision.
    """
    run = run_record(revision=0, context=b"c0")
    await store.create(run)
    kinds = [3, 0, 3, 0, 3, 3, "many", 3, 1, 0, 2, "many", 2, 5, 0, 5]
    model: list[int] = []
    for kind in kinds:
        new = bump(run, context=b"c%d" % (run.revision + 1))
        if kind == "many":
            assert await store.save_many([(new, run.revision)]) == [None]  # type: ignore[attr-defined]
        elif kind:
            await store.save(new, run.revision, checkpoint=int(kind))
            model = [*model, new.revision][-int(kind) :]
        else:
            await store.save(new, run.revision)
        run = new
        kept = await store.checkpoints(run.run_id)
        assert [c.revision for c in kept] == model, kind
        assert [c.context for c in kept] == [b"c%d" % r for r in model]
    assert kept[-1] == await store.get(run.run_id)
    await store.delete(run.run_id, run.revision)
    assert await store.checkpoints(run.run_id) == []


async def test_a_long_history_reads_back_whole_and_in_order(store: RunStore) -> None:
    """Many writes of several records each (SQL stores pack them into rows of ~1 KB)."""
    run = run_record(revision=0)
    expected = [HistoryRecord(at=T0, event="start")]
    await store.create(run, history=expected)
    for i in range(60):
        records = [
            HistoryRecord(at=T0 + timedelta(seconds=i), event="note", node_id=f"n{i}", data={
                "i": i, "pad": "x" * (i * 7 % 300)
            }),
            HistoryRecord(at=T0 + timedelta(seconds=i), event="other", revision=i),
        ]
        new = bump(run)
        await store.save(new, run.revision, history=records)
        run = new
        expected.extend(records)
    assert await store.history(run.run_id) == expected


async def test_sqlite_reads_history_rows_written_one_record_each(tmp_path: Path) -> None:
    """A file written when each history row held one bare record (and each body was a
    msgpack map) reads back the same."""
    import sqlite3

    import msgspec

    path = tmp_path / "old.db"
    store = SqliteStore(path)
    await store.create(run_record(revision=0))
    await store.close()
    old = [HistoryRecord(at=T0, event="start"), HistoryRecord(at=T0, event="pause", node_id="a")]
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO flowcraft_history (run_id, body) VALUES (?, ?)",
        [("r1", msgspec.msgpack.encode(h)) for h in old],
    )
    as_map = run_record(revision=0, paused_by="ops")
    conn.execute(
        "UPDATE flowcraft_runs SET body = ? WHERE run_id = 'r1'", (msgspec.msgpack.encode(as_map),)
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    assert await store.get("r1") == as_map
    new = HistoryRecord(at=T0, event="resume", node_id="a")
    await store.save(run_record(revision=1), 0, history=[new])
    assert await store.history("r1") == [*old, new]
    await store.close()


async def test_times_far_from_now_read_back_exactly(store: RunStore) -> None:
    """Creation and update times before 1970 or after 2514 (a wider msgpack timestamp)."""
    early = datetime(1901, 2, 3, 4, 5, 6, 789012, tzinfo=UTC)
    late = datetime(2600, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    run = run_record(created_at=early, updated_at=late)
    await store.create(run)
    assert await store.get("r1") == run


async def test_sqlite_reads_checkpoints_kept_whole_before(tmp_path: Path) -> None:
    """A checkpoints table from before holds whole bodies (maps) and gains its columns."""
    import sqlite3

    import msgspec

    path = tmp_path / "old.db"
    store = SqliteStore(path)
    await store.create(run_record(revision=0))
    await store.close()
    conn = sqlite3.connect(path)
    for column in ("flow_id", "status", "created_at", "updated_at"):
        conn.execute(f"ALTER TABLE flowcraft_checkpoints DROP COLUMN {column}")
    old = run_record(revision=0, context=b"old")
    conn.execute(
        "INSERT INTO flowcraft_checkpoints (run_id, revision, body) VALUES ('r1', 0, ?)",
        (msgspec.msgpack.encode(old),),
    )
    conn.commit()
    conn.close()
    store = SqliteStore(path)
    new = run_record(revision=1, context=b"new")
    await store.save(new, 0, checkpoint=3)
    assert await store.checkpoints("r1") == [old, new]
    newer = run_record(revision=2, context=b"newer")
    await store.save(newer, 1, checkpoint=3)
    assert await store.checkpoints("r1") == [old, new, newer]
    await store.close()

async def test_a_claim_write_is_a_compare_and_set_like_any_other(store: RunStore) -> None:
    """``durable=False`` (a claim the segment's commit syncs) changes no semantics: create
    refuses a taken id, save is a compare-and-set, both read back at once."""
    first = HistoryRecord(at=T0, event="start", revision=1)
    second = HistoryRecord(at=T0, event="resume", node_id="approve", by="bob", action="ok")
    run = run_record()
    await store.create(run, history=[first], durable=False)  # type: ignore[call-arg]
    with pytest.raises(RunExistsError):
        await store.create(run, durable=False)  # type: ignore[call-arg]
    claimed = bump(run, status="running")
    await store.save(claimed, 1, history=[second], durable=False)  # type: ignore[call-arg]
    with pytest.raises(RevisionConflictError) as info:
        await store.save(bump(run), 1, durable=False)  # type: ignore[call-arg]
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert await store.get("r1") == claimed
    assert await store.history("r1") == [first, second]


async def test_get_and_recall_reads_the_run_and_a_remembered_result_together(
    store: RunStore,
) -> None:
    """Where a store offers ``get_and_recall`` it answers as ``get`` then ``recall`` would."""
    both = getattr(store, "get_and_recall", None)
    if both is None:
        assert isinstance(store, MemoryStore | SqliteStore)  # a read by key costs no round trip
        return
    run = run_record()
    await store.create(run)
    assert await both("r1", "k") == (run, None)
    await store.save(bump(run), 1, idempotency=("k", b"first"))
    assert await both("r1", "k") == (await store.get("r1"), b"first")
    with pytest.raises(RunNotFoundError):
        await both("unknown", "k")


# --- numbers no store can keep ----------------------------------------------------------------

_BEYOND = [2**63, 2**64, 2**70, -(2**63) - 1, -(2**70)]


@pytest.mark.parametrize("value", _BEYOND)
@pytest.mark.parametrize("field", ["priority", "revision", "fault_count", "resume_count"])
async def test_create_of_a_number_beyond_64_bits_is_out_of_range_and_stores_nothing(
    store: RunStore, field: str, value: int
) -> None:
    """Every store refuses a run field no signed 64-bit column holds with ``OutOfRangeError``
    (a ``ValueError`` naming the field and the range), never a driver's ``OverflowError``."""
    with pytest.raises(OutOfRangeError, match=rf"run 'r1': {field} {value} is out of range") as e:
        await store.create(run_record(**{field: value}))
    assert isinstance(e.value, ValueError)
    assert (e.value.field, e.value.value, e.value.run_id) == (field, value, "r1")
    assert str(2**63 - 1) in str(e.value)
    with pytest.raises(RunNotFoundError):
        await store.get("r1")
    assert len(await store.list()) == 0


@pytest.mark.parametrize("value", _BEYOND)
async def test_save_or_delete_of_a_number_beyond_64_bits_is_out_of_range_and_changes_nothing(
    store: RunStore, value: int
) -> None:
    """``save`` (of the run's fields, its expected revision, a history record's revision)
    and ``delete`` (its expected revision) refuse before writing: the run stays as it was."""
    run = run_record()
    await store.create(run)
    entry = HistoryRecord(at=T0, event="resume", revision=2)
    attempts: list[tuple[str, Any]] = [
        ("priority", store.save(bump(run, priority=value), 1, history=[entry])),
        ("revision", store.save(bump(run, revision=value), 1)),
        ("fault_count", store.save(bump(run, fault_count=value), 1, idempotency=("k", b"x"))),
        ("expected_revision", store.save(bump(run), value, history=[entry])),
        ("revision of a history record", store.save(
            bump(run), 1, history=[HistoryRecord(at=T0, event="x", revision=value)]
        )),
        ("expected_revision", store.delete("r1", value)),
    ]
    for field, attempt in attempts:
        with pytest.raises(OutOfRangeError, match=f"run 'r1': {field} {value} is out of range"):
            await attempt
    assert await store.get("r1") == run
    assert await store.history("r1") == []
    assert await store.recall("r1", "k") is None


async def test_the_64_bit_bounds_are_kept_exactly(store: RunStore) -> None:
    """-2**63 and 2**63 - 1 are stored and read back as given, in every integer field."""
    low, high = -(2**63), 2**63 - 1
    run = run_record(priority=low, fault_count=high, resume_count=high, revision=high - 1)
    await store.create(run)
    assert await store.get("r1") == run
    top = bump(run, priority=high)
    await store.save(top, high - 1)
    assert await store.get("r1") == top


async def test_save_many_refuses_a_write_beyond_64_bits_alone(store: RunStore) -> None:
    """In a batch of claims, the write no store can keep gets its ``OutOfRangeError``; the
    others land as if it were not there."""
    for run_id in ("a", "b", "c"):
        await store.create(run_record(run_id))
    many = store.save_many  # type: ignore[attr-defined]
    errors = await many([
        (run_record("a", revision=2, status="running"), 1),
        (run_record("b", revision=2, status="running", priority=2**64), 1),
        (run_record("c", revision=2, status="running"), 2**64),
    ])
    assert errors[0] is None
    assert isinstance(errors[1], OutOfRangeError)
    assert errors[1].field == "priority"
    assert isinstance(errors[2], OutOfRangeError)
    assert errors[2].field == "expected_revision"
    assert [(await store.get(r)).status for r in "abc"] == ["running", "awaiting", "awaiting"]


@pytest.mark.parametrize("ttl", [1e300, float("inf"), float("nan"), 10**30])
async def test_a_lease_no_time_can_hold_is_out_of_range_and_not_taken(
    store: RunStore, ttl: float
) -> None:
    """A lease ttl past year 9999 (or not a number) is refused; the lease stays free."""
    with pytest.raises(OutOfRangeError, match=r"lease ttl .* is out of range"):
        await store.acquire_lease("sched", "a", ttl, T0)
    assert await store.acquire_lease("sched", "b", 30, T0)


async def test_a_limit_beyond_any_page_reads_everything(store: RunStore) -> None:
    """``list``/``due`` with ``sys.maxsize`` or ``2**64`` as the limit (meaning "all") return
    every match; a cursor pointing at no time a store keeps is an invalid cursor."""
    for rid in ("x", "y"):
        await store.create(run_record(rid, due_at=T0))
    for limit in (sys.maxsize, 2**64):
        assert [r.run_id for r in await store.list(limit=limit)] == ["x", "y"]
        assert [r.run_id for r in await store.due(T0, limit=limit)] == ["x", "y"]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await store.due(T0, limit=0)
    beyond = base64.urlsafe_b64encode(f"{2**64}:x".encode()).decode()
    with pytest.raises(ValueError, match="invalid list cursor"):
        await store.list(cursor=beyond)


async def test_checkpoints_to_keep_beyond_any_count_keep_every_one(store: RunStore) -> None:
    """``save(checkpoint=2**64)`` keeps every checkpoint rather than overflowing a column."""
    run = run_record()
    await store.create(run)
    second = bump(run)
    await store.save(second, 1, checkpoint=2**64)
    third = bump(second)
    await store.save(third, 2, checkpoint=2**64)
    assert [c.revision for c in await store.checkpoints("r1")] == [2, 3]


@pytest.mark.parametrize("high", [2**53, 2**62 + 1, 2**63 - 3])
async def test_a_stale_revision_is_refused_however_large(store: RunStore, high: int) -> None:
    """Compare-and-set is exact on the whole 64-bit range: a revision one below the stored
    one (equal as a double above 2**53) conflicts on ``save`` and ``delete``."""
    run = run_record(revision=high + 1)
    await store.create(run)
    with pytest.raises(RevisionConflictError) as info:
        await store.save(bump(run, context=b"stale"), high)
    assert (info.value.expected, info.value.actual) == (high, high + 1)
    with pytest.raises(RevisionConflictError):
        await store.delete("r1", high)
    assert await store.get("r1") == run
    await store.save(bump(run), high + 1)
    assert (await store.get("r1")).revision == high + 2
