"""``flowcraft.celery`` with real parts: ``celery worker`` subprocesses on RabbitMQ and Redis,
runs kept in PostgreSQL and Redis.

Each broker/store pair gets its own queue, store namespace and workers (``--pool=solo``, one
process each), started once per module and killed in a finalizer. The test process is the
client and runs the durable scheduler (timers and the sweep), as ``flowcraft scheduler run``
would. Every outcome is polled for, never slept for.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from flowcraft import FlowService, RunResult
from flowcraft.celery import (
    CeleryExecutor,
    UnsafeWorkerSettingsError,
    check_settings,
    install,
)
from flowcraft.stores import MemoryStore
from tests.adapters import _celery_app as appmod
from tests.adapters._celery_app import Twice
from tests.service._support import ROOT, drop, effects, unavailable

AMQP = os.environ.get("FLOWCRAFT_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_BROKER = os.environ.get("FLOWCRAFT_TEST_REDIS_BROKER", "redis://127.0.0.1:6379/14")
BROKERS = {"amqp": AMQP, "redis": REDIS_BROKER}
WAIT = 60.0  # seconds any outcome may take on a busy 2-core machine
FINISHED = {"completed", "failed", "cancelled"}


def reachable(url: str, port: int) -> None:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return
    except OSError as exc:
        unavailable(url.split(":", 1)[0], exc)


class Workers:
    """``celery worker`` subprocesses on one queue; ``stop`` (SIGTERM, then SIGKILL) always."""

    def __init__(
        self, broker: str, kind: str, ns: str, queue: str, tmp: Path, pool: str = "solo",
        **env: str,
    ):
        self.broker, self.kind, self.ns, self.queue, self.tmp = broker, kind, ns, queue, tmp
        self.pool = pool  # "solo", or "threads" (one thread: see BENCHMARKS.md, Celery)
        self.effects = tmp / "effects.txt"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "FLOWCRAFT_CELERY_BROKER": broker,
            "FLOWCRAFT_CELERY_STORE": kind,
            "FLOWCRAFT_CELERY_NS": ns,
            "FLOWCRAFT_CELERY_QUEUE": queue,
            "FLOWCRAFT_CELERY_TTL": "3",
            "FLOWCRAFT_TEST_EFFECTS": str(self.effects),
            **env,
        }
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Any] = []

    def start(self, n: int = 1) -> None:
        for _ in range(n):
            i = len(self.procs)
            log = open(self.tmp / f"worker{i}.log", "wb")  # noqa: SIM115
            self.logs.append(log)
            cmd = [
                sys.executable, "-m", "celery", "-A", "tests.adapters._celery_app", "worker",
                f"--pool={self.pool}", "--concurrency=1", "-Q", self.queue,
                "-n", f"w{i}-{self.queue}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--loglevel=WARNING",
            ]
            self.procs.append(
                subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=log)
            )

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(10)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        # A threads-pool worker lingers ~10 s after SIGTERM (its event-loop thread): once its
        # task is acked there is nothing to wait for.
        deadline = time.monotonic() + (2 if self.pool == "threads" else 10)
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)
        for log in self.logs:
            log.close()

    def count(self) -> Counter[tuple[str, str]]:
        return effects(self.effects)


def purge(broker: str, queue: str) -> None:
    app = appmod.make_app(broker)
    try:
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge(queue)
    except Exception:
        pass


@pytest.fixture(scope="module", params=[("amqp", "postgres"), ("redis", "redis")], ids=str)
def workers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Workers]:
    broker_kind, kind = request.param
    broker = BROKERS[broker_kind]
    reachable(broker, 5672 if broker_kind == "amqp" else 6379)
    reachable(kind, 5432 if kind == "postgres" else 6379)
    tag = uuid.uuid4().hex[:10]
    w = Workers(broker, kind, f"cel{tag}", f"flowcraft-test-{tag}", tmp_path_factory.mktemp(tag))
    w.start(2)
    try:
        yield w
    finally:
        w.stop()
        purge(broker, w.queue)
        anyio.run(drop, kind, w.ns)


async def settle(svc: FlowService, result: RunResult) -> RunResult:
    """The outcome of what ``start``/``resume`` handed over (or did inline)."""
    if result.status != "running":
        return result
    with anyio.fail_after(WAIT):
        return await svc.settled(result.run_id)


async def finished(svc: FlowService, run_id: str) -> RunResult:
    """The run once finished (the scheduler fires its timers)."""
    with anyio.fail_after(WAIT):
        while True:
            stored = await svc.store.get(run_id)
            if stored.status in FINISHED:
                return await svc.result(run_id)
            await anyio.sleep(0.1)


Scenario = Callable[[FlowService], Awaitable[str]]


async def approve(svc: FlowService) -> str:
    r = await settle(svc, await svc.start("approval", {"amount": 5}))
    await settle(svc, await svc.resume(r.run_id, {"action": "approved"}, by="ann"))
    return r.run_id


async def reject(svc: FlowService) -> str:
    r = await settle(svc, await svc.start("approval", {}))
    await settle(svc, await svc.resume(r.run_id, {"action": "rejected"}, idempotency_key="k1"))
    return r.run_id


async def parallel(svc: FlowService) -> str:
    r = await settle(svc, await svc.start("two-waits", {}))
    await settle(svc, await svc.resume(r.run_id, {"output": 1}, "b"))
    await settle(svc, await svc.resume(r.run_id, {"output": 2}, "a"))
    return r.run_id


async def nap(svc: FlowService) -> str:
    r = await settle(svc, await svc.start("nap", {}))
    await finished(svc, r.run_id)
    return r.run_id


async def escalation(svc: FlowService) -> str:
    r = await settle(svc, await svc.start("escalation", {}))
    await finished(svc, r.run_id)
    return r.run_id


async def retry(svc: FlowService) -> str:
    r = await settle(svc, await svc.start("retry", {}))
    return r.run_id


async def subflow(svc: FlowService) -> str:
    r = await settle(svc, await svc.start("parent", {}))
    await settle(svc, await svc.resume(r.run_id, {"output": 7, "action": "ok"}, "sub/ok"))
    return r.run_id


SCENARIOS: dict[str, Scenario] = {
    "approve": approve,
    "reject": reject,
    "parallel": parallel,
    "nap": nap,
    "escalation": escalation,
    "retry": retry,
    "subflow": subflow,
}


async def summary(svc: FlowService, run_id: str) -> tuple[Any, ...]:
    """What must match in-process: status, outputs, state, the history's story."""
    r = await svc.result(run_id)
    story = [
        (h.event, h.node_id, h.action, h.by)
        for h in await svc.store.history(run_id)
        if h.event != "recover"
    ]
    return r.status, r.outputs, r.context, story


async def play(svc: FlowService, names: list[str]) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    async with svc.scheduler(0.2):
        for name in names:
            run_id = await SCENARIOS[name](svc)
            out[name] = await summary(svc, run_id)
    return out


async def in_process(names: list[str]) -> dict[str, tuple[Any, ...]]:
    svc = FlowService(appmod.make_runtime(), MemoryStore(), appmod.flows())
    return await play(svc, names)


def client(w: Workers, executor: type[CeleryExecutor] = CeleryExecutor) -> FlowService:
    app = appmod.make_app(w.broker)
    return appmod.make_service(w.kind, w.ns, executor(app, w.queue))


async def test_conformance_scenarios_end_as_in_process(workers: Workers) -> None:
    names = list(SCENARIOS)
    svc = client(workers)
    try:
        got = await play(svc, names)
    finally:
        await svc.store.close()
    assert got == await in_process(names)


async def test_every_message_published_twice_gives_the_same_end_states(workers: Workers) -> None:
    names = ["approve", "parallel", "nap", "subflow"]
    svc = client(workers, Twice)
    before = workers.count()
    try:
        got = await play(svc, names)
    finally:
        await svc.store.close()
    assert got == await in_process(names)
    ran = workers.count() - before
    assert ran
    assert max(ran.values()) == 1


async def test_timers_never_ride_the_broker(workers: Workers) -> None:
    """Sleeping runs leave no message at all on the broker: the scheduler owns the timers."""
    svc = client(workers)
    try:
        handed = [await svc.start("long", {}) for _ in range(50)]
        for h in handed:
            assert (await settle(svc, h)).status == "awaiting"
        ran = workers.count()
        async with svc.scheduler(0.1) as sched:
            with anyio.fail_after(WAIT):
                while sched.ticks < 3:
                    await anyio.sleep(0.05)
    finally:
        await svc.store.close()
    assert workers.count() == ran  # nothing was delivered while only timers were pending
    if workers.broker.startswith("redis"):
        from redis import Redis

        broker = Redis.from_url(workers.broker)
        try:
            assert broker.llen(workers.queue) == 0
            raw = broker.hvals("unacked")
            assert not [m for m in raw if workers.queue.encode() in m]
        finally:
            broker.close()
    else:  # AMQP: the queue holds no ready message (an unacked one would have run, above)
        from kombu import Connection

        with Connection(workers.broker) as conn:
            declared = conn.default_channel.queue_declare(queue=workers.queue, passive=True)
            assert declared.message_count == 0


def test_install_refuses_unsafe_settings_naming_them() -> None:
    from celery import Celery

    app = Celery("unsafe", broker="redis://127.0.0.1:6379/14")
    app.conf.update(accept_content=["json", "pickle"], worker_prefetch_multiplier=4)
    problems = " ".join(check_settings(app))
    for name in (
        "task_acks_late", "task_reject_on_worker_lost", "worker_prefetch_multiplier",
        "accept_content", "visibility_timeout",
    ):
        assert name in problems
    svc = FlowService(appmod.make_runtime(), MemoryStore(), appmod.flows())
    with pytest.raises(UnsafeWorkerSettingsError, match="task_acks_late"):
        install(app, svc)
    safe = appmod.make_app("redis://127.0.0.1:6379/14")
    assert check_settings(safe) == []
    task = install(safe, svc)
    assert task.name == "flowcraft.execute"
