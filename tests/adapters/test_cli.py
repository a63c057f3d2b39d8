"""The ``flowcraft`` command, run as a real subprocess against a real SQLite file and PostgreSQL.

Every command goes through ``python -m flowcraft`` (one test through the console script);
JSON output is decoded into the public types (``flowcraft.http``, ``flowcraft.stores``,
``flowcraft.cli``), text output is checked for the facts an operator needs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import anyio
import httpx
import msgspec
import pytest

from flowcraft import LintIssue
from flowcraft.cli import BulkReport, CleanupReport, ContextReport
from flowcraft.http import AwaitingView, ExecutionList, ExecutionView, HistoryView
from flowcraft.stores import PostgresStore, RunStats
from tests.service._support import POSTGRES_DSN, drop, unavailable

ROOT = Path(__file__).resolve().parent.parent.parent
APP = "tests.adapters.cli_app:service"
T = TypeVar("T")

pytestmark = pytest.mark.timeout(60)


class Backend:
    """Where the subprocesses keep runs: the environment that names the store."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind, self.where = kind, where
        self.env = {
            **os.environ,
            "FLOWCRAFT_APP": APP,
            "FLOWCRAFT_TEST_STORE": f"{kind}:{where}",
            "PYTHONPATH": str(ROOT),
            "NO_COLOR": "",
        }
        self.env.pop("NO_COLOR")

    def run(self, *args: str, stdin: str | bytes | None = None, **env: str) -> Result:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        done = subprocess.run(
            [sys.executable, "-m", "flowcraft", *args],
            input=data if data is not None else b"",
            capture_output=True,
            cwd=ROOT,
            env={**self.env, **env},
            timeout=30,
        )
        return Result(done.returncode, done.stdout.decode(), done.stderr.decode())

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self.run(*args, stdin=stdin)
        assert result.code == 0, result.err
        return result.out

    def json(self, kind: type[T], *args: str) -> T:
        return msgspec.json.decode(self.ok("-o", "json", *args), type=kind)


class Result(msgspec.Struct, frozen=True):
    code: int
    out: str
    err: str


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Backend]:
    kind: str = request.param
    if kind == "sqlite":
        yield Backend("sqlite", str(tmp_path_factory.mktemp("cli") / "runs.db"))
        return
    namespace = f"cli{uuid.uuid4().hex[:10]}"

    async def probe() -> None:
        store = PostgresStore(POSTGRES_DSN, namespace=namespace)
        try:
            await store.recall("probe", "probe")
        finally:
            await store.close()

    try:
        anyio.run(probe)
    except Exception as exc:
        unavailable("postgres store", exc)
    try:
        yield Backend("postgres", namespace)
    finally:
        anyio.run(drop, "postgres", namespace)


def new_id() -> str:
    return "r" + uuid.uuid4().hex[:10]


def start(b: Backend, flow: str = "expense") -> ExecutionView:
    return b.json(ExecutionView, "runs", "start", flow, "--run-id", new_id(),
                  "--state", '{"amount": 1500}')


# --- runs ------------------------------------------------------------------------------------


def test_show_names_who_approved_a_quorum_wait_so_far(backend: Backend) -> None:
    """``runs show`` (text and JSON) and a vote's answer carry ``approved_by``."""
    b = backend
    run = start(b, "quorum").id
    voted = b.json(ExecutionView, "runs", "resume", run, "--action", "approve", "--by", "ann")
    assert [a.approved_by for a in voted.awaiting] == [["ann"]]
    assert [a.approved_by for a in b.json(ExecutionView, "runs", "show", run).awaiting] == [
        ["ann"]
    ]
    assert "approved by ann" in b.ok("runs", "show", run)


def test_start_show_list_resume_history_stats(backend: Backend) -> None:
    """A wait is started, listed, shown with its actions and schema, decided once, audited."""
    b = backend
    view = start(b)
    run = view.id
    assert view.status == "awaiting"
    assert view.revision == 1
    (wait,) = view.awaiting
    assert wait.node_id == "approval"
    assert wait.actions == ["approved", "rejected"]
    assert wait.schema is not None
    assert "Decision" in str(wait.schema)

    text = b.ok("runs", "show", run)
    for fact in (run, "awaiting", "approval (wait)", "actions: approved, rejected",
                 "Manager approves the expense", '"approved"', "history"):
        assert fact in text
    assert "\x1b[" not in text  # no colour into a pipe

    listed = b.json(ExecutionList, "runs", "list", "--status", "awaiting", "--flow", "expense",
                    "--all")
    assert run in [e.id for e in listed.executions]
    assert run in b.ok("runs", "list", "--status", "awaiting", "--limit", "500", "--all")
    one = b.json(ExecutionList, "runs", "list", "--limit", "1")
    if one.next_cursor is not None:
        nxt = b.json(ExecutionList, "runs", "list", "--limit", "1", "--cursor", one.next_cursor)
        assert nxt.executions[0].id != one.executions[0].id

    bad = b.run("runs", "resume", run, "approval", "--action", "maybe", "--output", "{}")
    assert bad.code == 2
    assert "Resume with one of: 'approved', 'rejected'" in bad.err
    assert b.json(ExecutionView, "runs", "show", run).revision == 1  # nothing changed

    args = ("runs", "resume", run, "approval", "--action", "approved", "--by", "alice",
            "--output", '{"approved": true}', "--idempotency-key", "mail-1")
    done = b.json(ExecutionView, *args)
    assert done.status == "completed"
    assert done.outputs is not None
    assert done.outputs["pay"] == "paid"
    again = b.json(ExecutionView, *args)  # the same delivery: the first result
    assert again.revision == done.revision
    assert again.status == "completed"
    late = b.run("runs", "resume", run, "approval", "--action", "rejected", "--output", "{}")
    assert late.code == 4
    assert "approved" in late.err

    history = b.json(HistoryView, "runs", "history", run)
    events = [h.event for h in history.history]
    assert events[0] == "start"
    assert "resume" in events
    assert any(h.by == "alice" for h in history.history)
    assert "alice" in b.ok("runs", "history", run)

    stats = b.json(RunStats, "runs", "stats")
    assert stats.by_status.get("completed", 0) >= 1
    assert stats.by_flow["expense"] >= 1
    assert "total" in b.ok("runs", "stats")


def test_errors_exit_with_their_codes(backend: Backend) -> None:
    """Not found 3, usage 2, not awaiting 4; the library's message on stderr, nothing on stdout."""
    b = backend
    missing = b.run("runs", "show", "no-such-run")
    assert missing.code == 3
    assert "no-such-run" in missing.err
    assert missing.out == ""
    assert b.run("runs", "start", "no-such-flow").code == 3
    assert b.run("runs", "start", "expense", "--state", "{not json").code == 2
    assert b.run("runs", "list", "--cursor", "###").code == 2
    assert b.run("--app", "nowhere.at_all:service", "runs", "stats").code == 2
    assert b.run("runs", "frobnicate").code == 2


@pytest.mark.parametrize("spec", ["json:loads", ":", "tests.adapters.cli_app:Decision"])
def test_an_app_that_cannot_be_called_or_named_is_a_usage_error(
    sqlite: Backend, spec: str
) -> None:
    """--app naming a callable that needs arguments (was: a TypeError traceback): exit 2."""
    result = sqlite.run("--app", spec, "runs", "stats")
    assert result.code == 2, result.err
    assert f"--app {spec!r}" in result.err
    assert "Traceback" not in result.err


def test_a_state_that_cannot_be_serialized_is_bad_data_exit_2_not_integrity_5(
    tmp_path: Path,
) -> None:
    """SerializationError is the caller's data (the API's 422): exit 2, as --help says."""
    b = Backend("sqlite", str(tmp_path / "runs.db"))
    huge = b.run("runs", "start", "expense", "--state", '{"amount": ' + "9" * 30 + "}")
    assert huge.code == 2, huge.err
    assert "cannot serialize" in huge.err
    assert "Traceback" not in huge.err
    assert b.json(ExecutionList, "runs", "list").count == 0
    assert "a state that cannot be serialized" in " ".join(b.ok("--help").split())


def test_a_reused_key_and_a_checkpoint_not_kept_exit_with_their_class_codes(
    tmp_path: Path,
) -> None:
    """IdempotencyKeyReusedError is bad data (2), CheckpointNotFoundError not found (3)."""
    b = Backend("sqlite", str(tmp_path / "runs.db"))
    run = start(b).id
    decide = ("runs", "resume", run, "approval", "--output", '{"approved": true}',
              "--idempotency-key", "mail-1")
    assert b.json(ExecutionView, *decide, "--action", "approved").status == "completed"
    reused = b.run(*decide, "--action", "rejected")
    assert reused.code == 2, reused.err
    assert "mail-1" in reused.err
    missing = b.run("runs", "rollback", run, "999")
    assert missing.code == 3, missing.err
    assert "999" in missing.err
    assert b.json(ExecutionView, "runs", "show", run).status == "completed"


@pytest.mark.parametrize("run_id", ["", "x" * 10_000, "a b", "run\n"],
                         ids=["empty", "10k", "space", "newline"])
def test_a_run_id_outside_the_doors_rule_is_a_usage_error_and_starts_nothing(
    tmp_path: Path, run_id: str
) -> None:
    """--run-id "" (was: a random id) or 10,000 characters: exit 2 naming --run-id."""
    sqlite = Backend("sqlite", str(tmp_path / "runs.db"))
    result = sqlite.run("runs", "start", "expense", "--run-id", run_id)
    assert result.code == 2, result.err
    assert "--run-id" in result.err
    assert "1 to 128 characters" in result.err
    assert len(result.err) < 400
    assert sqlite.json(ExecutionList, "runs", "list", "--flow", "expense").count == 0


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("runs", "pause", "{run}", "--reason", "r" * 1001), "--reason"),
        (("runs", "pause", "{run}", "--by", "b" * 256), "--by"),
        (("runs", "cancel", "{run}", "--reason", "r" * 1001), "--reason"),
        (("runs", "release", "{run}", "--by", "b" * 256), "--by"),
        (("runs", "release", "{run}", "--reason", "r" * 1001), "--reason"),
        (("runs", "resume", "{run}", "approval", "--action", "approved", "--output",
          '{"approved": true}', "--by", "b" * 256), "--by"),
        (("runs", "cancel", "--where", "flow=expense", "--yes", "--by", "b" * 256), "--by"),
    ],
    ids=["pause-reason", "pause-by", "cancel-reason", "release-by", "release-reason",
         "resume-by", "bulk-by"],
)
def test_a_reason_or_by_beyond_the_doors_rule_is_a_usage_error_and_changes_nothing(
    tmp_path: Path, args: tuple[str, ...], option: str
) -> None:
    """--reason at most 1,000 characters, --by at most 255, as over HTTP and MCP."""
    sqlite = Backend("sqlite", str(tmp_path / "runs.db"))
    run = start(sqlite).id
    result = sqlite.run(*(a.replace("{run}", run) for a in args))
    assert result.code == 2, result.err
    assert option in result.err
    assert "at most" in result.err
    assert len(result.err) < 400
    view = sqlite.json(ExecutionView, "runs", "show", run)
    assert (view.status, view.held, view.revision) == ("awaiting", False, 1)


LONG = "x" * 10_000


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("runs", "show", LONG), 2),  # refused by the run-id rule
        (("runs", "history", LONG), 2),
        (("runs", "start", LONG), 3),
        (("runs", "resume", LONG, "approval", "--action", "approved"), 2),
        (("runs", "cleanup", "--older-than", LONG, "--yes"), 2),
        (("runs", "cleanup", f"--older-than={LONG}", "--yes"), 2),
        (("runs", "list", "--limit", "9" * 10_000), 2),
        (("runs", "list", "--status", LONG), 2),
        (("runs", "list", "--cursor", LONG), 2),
        (("runs", "pause", "--where", f"flow=a,{LONG}", "--dry-run"), 2),
        (("--app", f"tests.adapters.cli_app:{LONG}", "runs", "stats"), 2),
        (("context", "inspect", "--key", LONG, "-"), 2),
    ],
    ids=["show", "history", "start", "resume", "duration", "duration=", "limit", "choice",
         "cursor", "where", "app", "key"],
)
def test_an_error_echoes_at_most_80_characters_of_a_long_input(
    sqlite: Backend, args: tuple[str, ...], code: int
) -> None:
    """A 10,000-character argument (was: echoed whole) is shown as its first 80 and "…"."""
    result = sqlite.run(*args)
    assert result.code == code, result.err[:500]
    assert "Traceback" not in result.err
    assert len(result.err) < 1000, result.err[:500]
    assert "x" * 81 not in result.err
    assert "9" * 81 not in result.err


def test_a_malformed_signing_key_is_not_echoed(sqlite: Backend) -> None:
    """--key without "=" may be the secret itself: the message names its position only."""
    result = sqlite.run("context", "inspect", "--key", "k1:hunter2", "-")
    assert result.code == 2, result.err
    assert "hunter2" not in result.err
    assert "ID=SECRET" in result.err


@pytest.mark.parametrize("key", ["", "k" * 256, "two words"])
def test_an_idempotency_key_outside_the_rule_is_a_usage_error_and_decides_nothing(
    tmp_path: Path, key: str
) -> None:
    """--idempotency-key follows the HTTP header's rule: 1-255 visible ASCII characters."""
    sqlite = Backend("sqlite", str(tmp_path / "runs.db"))
    run = start(sqlite).id
    result = sqlite.run("runs", "resume", run, "approval", "--action", "approved",
                        "--output", '{"approved": true}', "--idempotency-key", key)
    assert result.code == 2, result.err
    assert "--idempotency-key" in result.err
    assert sqlite.json(ExecutionView, "runs", "show", run).status == "awaiting"


def test_json_arguments_too_deep_or_not_utf8_are_one_line_usage_errors(
    sqlite: Backend, tmp_path: Path
) -> None:
    """--state nested too deeply or an @file that is not UTF-8: exit 2, one line, no traceback."""
    nested = '{"x":' + "[" * 5000 + "]" * 5000 + "}"
    deep = sqlite.run("runs", "start", "expense", "--state", nested)
    assert deep.code == 2, deep.err
    assert "Traceback" not in deep.err
    assert deep.err.count("\n") == 1
    assert "--state" in deep.err
    assert "nested too deeply" in deep.err
    binary = tmp_path / "state.json"
    binary.write_bytes(b'{"x": "\xff\xfe"}')
    bad = sqlite.run("runs", "start", "expense", "--state", f"@{binary}")
    assert bad.code == 2, bad.err
    assert "--state" in bad.err
    assert "not UTF-8" in bad.err
    assert sqlite.json(ExecutionList, "runs", "list", "--flow", "expense").count == 0


@pytest.mark.parametrize("age", ["-5", "1e400", "99999999999d", "nan"])
def test_cleanup_with_an_age_out_of_range_is_a_usage_error_and_deletes_nothing(
    sqlite: Backend, age: str
) -> None:
    """A negative, infinite or huge --older-than: exit 2, one line, nothing deleted."""
    run = start(sqlite).id
    sqlite.ok("runs", "cancel", run)
    result = sqlite.run("runs", "cleanup", f"--older-than={age}", "--yes")
    assert result.code == 2, result.err
    assert "Traceback" not in result.err
    assert "invalid duration" in result.err
    assert age in result.err
    assert sqlite.json(ExecutionView, "runs", "show", run).status == "cancelled"


def test_pause_holds_release_frees_cancel_ends(backend: Backend) -> None:
    """A held run refuses decisions (exit 7) until released; cancel ends it; twice is exit 4."""
    b = backend
    run = start(b).id
    held = b.json(ExecutionView, "runs", "pause", run, "--reason", "maintenance", "--by", "ops",
                  "--expires-in", "1h")
    assert held.held
    assert held.paused_by == "ops"
    assert held.pause_deadline is not None
    text = b.ok("runs", "show", run)
    assert "held" in text
    assert "maintenance" in text
    assert "ops" in text
    refused = b.run("runs", "resume", run, "--action", "approved", "--output",
                    '{"approved": true}')
    assert refused.code == 7
    assert "ops" in refused.err
    freed = b.json(ExecutionView, "runs", "release", run, "--by", "ops",
                   "--reason", "window over")
    assert not freed.held
    assert freed.status == "awaiting"
    released = b.json(HistoryView, "runs", "history", run).history[-1]
    assert (released.event, released.by, released.reason) == ("release", "ops", "window over")
    cancelled = b.json(ExecutionView, "runs", "cancel", run, "--reason", "dup", "--by", "ops")
    assert cancelled.status == "cancelled"
    assert b.run("runs", "cancel", run).code == 4
    assert b.run("runs", "pause").code == 2  # neither a run nor --where


def test_bulk_where_previews_then_holds_releases_and_deletes(backend: Backend) -> None:
    """--where --dry-run lists the matches and changes nothing; without it the service's bulk
    operations act on every match; delete and rollback work on one run."""
    b = backend
    run = start(b).id
    report = b.json(BulkReport, "runs", "pause", "--where", "status=awaiting,flow=expense",
                    "--dry-run")
    assert report.dry_run
    assert run in report.matched
    assert not b.json(ExecutionView, "runs", "show", run).held  # a preview changes nothing
    assert run in b.ok("runs", "cancel", "--where", "status=awaiting", "--dry-run")
    assert b.run("runs", "pause", "--where", "colour=blue", "--dry-run").code == 2
    b.ok("runs", "pause", "--where", "status=awaiting,flow=expense", "--yes")
    assert b.json(ExecutionView, "runs", "show", run).held
    b.ok("runs", "release", "--where", "status=awaiting,flow=expense", "--yes",
         "--reason", "all clear")
    assert not b.json(ExecutionView, "runs", "show", run).held
    assert b.json(HistoryView, "runs", "history", run).history[-1].reason == "all clear"
    b.ok("runs", "rollback", run, "1")  # the stored start, kept as checkpoint 1
    assert b.json(ExecutionView, "runs", "show", run).status == "awaiting"
    assert b.run("runs", "cleanup", "--older-than", "1d", "--expired", "--yes").code == 0
    b.ok("runs", "delete", run, "--yes")
    assert b.run("runs", "show", run).code == 3


def test_cleanup_deletes_finished_runs_and_asks_first(backend: Backend) -> None:
    """cleanup refuses without --yes off a terminal, then deletes finished runs."""
    b = backend
    run = start(b).id
    b.ok("runs", "cancel", run)
    refused = b.run("runs", "cleanup", "--older-than", "0")
    assert refused.code == 2
    assert "--yes" in refused.err
    report = b.json(CleanupReport, "runs", "cleanup", "--older-than", "0", "--yes")
    assert report.deleted >= 1
    assert b.run("runs", "show", run).code == 3


def test_scheduler_fires_timers_and_stops_cleanly_on_sigterm(backend: Backend) -> None:
    """`scheduler run` fires a due timer, prints it, and exits 0 on SIGTERM."""
    b = backend
    run = start(b, "nap").id
    with subprocess.Popen(
        [sys.executable, "-m", "flowcraft", "scheduler", "run", "--interval", "0.1"],
        cwd=ROOT, env=b.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stderr is not None
            line = ""
            deadline = time.monotonic() + 20
            while run not in line and time.monotonic() < deadline:
                line = proc.stdout.readline().decode()
            assert run in line
            assert "completed" in line
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
            assert "stopped cleanly" in proc.stderr.read().decode()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert b.json(ExecutionView, "runs", "show", run).status == "completed"


@pytest.mark.parametrize("interval", ["0", "0s", "-1", "nan", "-inf"])
def test_a_scheduler_interval_not_above_zero_is_a_usage_error_not_a_busy_loop(
    tmp_path: Path, interval: str
) -> None:
    """--interval 0, negative or NaN (was: a scheduler ticking without a pause): exit 2."""
    b = Backend("sqlite", str(tmp_path / "runs.db"))
    done = subprocess.run(
        [sys.executable, "-m", "flowcraft", "scheduler", "run", f"--interval={interval}"],
        capture_output=True, text=True, cwd=ROOT, env=b.env, timeout=15,
    )
    assert done.returncode == 2, done.stderr
    assert "--interval" in done.stderr
    assert "more than 0" in done.stderr
    assert "Traceback" not in done.stderr
    assert "running every" not in done.stderr


def test_serve_answers_the_http_api(backend: Backend) -> None:
    """`serve` runs create_app under uvicorn; the run it shows is the CLI's view of it."""
    b = backend
    run = start(b).id
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with subprocess.Popen(
        [sys.executable, "-m", "flowcraft", "serve", "--port", str(port), "--token", "t0k"],
        cwd=ROOT, env=b.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as proc:
        try:
            url = f"http://127.0.0.1:{port}/executions/{run}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    response = httpx.get(url, headers={"Authorization": "Bearer t0k"})
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    with pytest.raises(subprocess.TimeoutExpired):
                        proc.wait(0.05)  # still starting (not exited)
            assert response.status_code == 200
            over_http = msgspec.json.decode(response.content, type=ExecutionView)
            assert over_http == b.json(ExecutionView, "runs", "show", run)
            proc.send_signal(signal.SIGTERM)
            # uvicorn shuts down gracefully, then re-raises the signal it caught (its way).
            assert proc.wait(10) in (0, -signal.SIGTERM)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert b.run("serve").code == 2  # no token


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--port", "99999"), "--port"),
        (("--port", "-1"), "--port"),
        (("--link-secret", ""), "--link-secret is empty"),
    ],
    ids=["port-too-large", "port-negative", "empty-link-secret"],
)
def test_serve_with_a_bad_port_or_an_empty_link_secret_is_a_usage_error(
    sqlite: Backend, args: tuple[str, str], words: str
) -> None:
    """A port outside 0-65535 (was: a raw OverflowError) or a forgeable secret: exit 2."""
    result = sqlite.run("serve", "--token", "t0k", *args)
    assert result.code == 2, result.err
    assert words in result.err
    assert "Traceback" not in result.err


# --- blueprints and contexts (no store needed) -----------------------------------------------


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Backend:
    return Backend("sqlite", str(tmp_path_factory.mktemp("cli1") / "runs.db"))


def test_blueprint_show_lint_mermaid_of_an_app_flow_and_a_file(
    sqlite: Backend, tmp_path: Path
) -> None:
    """A flow of the app and a JSON file both show, lint and draw."""
    b = sqlite
    text = b.ok("blueprint", "show", "expense")
    assert "node approval  uses=wait" in text
    assert "edge approval -> pay action='approved'" in text
    raw = b.ok("-o", "json", "blueprint", "show", "expense")
    path = tmp_path / "expense.json"
    path.write_text(raw)
    assert "blueprint expense" in b.ok("blueprint", "show", str(path))
    assert "blueprint expense" in b.ok("blueprint", "show", "-", stdin=raw)
    assert "FC003 wait-without-default [approval]" in b.ok("blueprint", "lint", "expense")
    issues = msgspec.json.decode(b.ok("-o", "json", "blueprint", "lint", str(path)),
                                 type=list[LintIssue])
    assert [(i.code, i.severity) for i in issues] == [("FC003", "warning")]
    assert "flowchart" in b.ok("blueprint", "mermaid", str(path))
    assert b.run("blueprint", "show", "no-such-flow").code == 3


def signed_context(tmp_path: Path, key: str = "k1=s3cret") -> tuple[Path, str]:
    """A context of the expense flow, made in a subprocess with the app's runtime.

    Signed with ``key`` (``ID=SECRET``); ``key=""`` makes an unsigned one.
    """
    code = (
        "import anyio, sys\n"
        "from tests.adapters.cli_app import expense, service\n"
        "async def main():\n"
        "    r = await service.runtime.run(expense.to_blueprint(), {'amount': 7},"
        " registry=expense.registry, run_id='ctx-1')\n"
        "    sys.stdout.buffer.write(r.serialized_context)\n"
        "anyio.run(main)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWCRAFT_TEST_KEYS": key,
           "FLOWCRAFT_TEST_STORE": f"sqlite:{tmp_path / 'unused.db'}"}
    if not key:
        del env["FLOWCRAFT_TEST_KEYS"]
    data = subprocess.run([sys.executable, "-c", code], capture_output=True, env=env,
                          cwd=ROOT, check=True).stdout
    path = tmp_path / ("ctx.bin" if key else "unsigned.bin")
    path.write_bytes(data)
    return path, key


def no_app(b: Backend) -> Backend:
    """The same backend with no ``FLOWCRAFT_APP``: ``context inspect`` needs none."""
    offline = Backend(b.kind, b.where)
    offline.env = {k: v for k, v in b.env.items() if k != "FLOWCRAFT_APP"}
    return offline


def test_context_inspect_decodes_with_no_app_and_no_blueprint(
    sqlite: Backend, tmp_path: Path
) -> None:
    """Only the file and its key: run, blueprint id, revision, status, awaiting, history."""
    offline = no_app(sqlite)
    ctx, key = signed_context(tmp_path)
    report = offline.json(ContextReport, "context", "inspect", str(ctx), "--key", key)
    assert (report.verified, report.signed_by, report.keys_from) == (True, "k1", "key")
    assert report.decoded
    assert not report.checked
    assert (report.run_id, report.blueprint_id, report.revision) == ("ctx-1", "expense", 1)
    assert report.status == "awaiting"
    assert report.state == {"amount": 7}
    assert report.outputs == {"submit": "submitted"}
    (wait,) = [msgspec.convert(a, AwaitingView) for a in report.awaiting]
    assert (wait.node_id, wait.reason) == ("approval", "wait")
    assert wait.description == "Manager approves the expense"
    assert wait.actions == []  # no flow to read them from
    assert [(h.event, h.node_id) for h in report.history] == [("pause", "approval")]
    text = offline.ok("context", "inspect", str(ctx), "--key", key)
    for fact in ("run        ctx-1", "blueprint  expense", "verified (key k1)",
                 "status     awaiting", "revision   1", "awaiting   approval (wait) since ",
                 "Manager approves the expense", "pause  approval", "checked    no flow"):
        assert fact in text, fact
    piped = offline.run("context", "inspect", "-", "--key", key, stdin=ctx.read_bytes())
    assert piped.code == 0, piped.err
    assert piped.out == text
    unsigned, _ = signed_context(tmp_path, key="")
    plain = offline.json(ContextReport, "context", "inspect", str(unsigned))
    assert (plain.verified, plain.signed_by, plain.run_id) == (False, None, "ctx-1")
    assert "signature  none" in offline.ok("context", "inspect", str(unsigned))
    refused = offline.run("context", "inspect", str(unsigned), "--key", key)
    assert refused.code == 5
    assert "not signed" in refused.err


def test_context_inspect_with_a_blueprint_or_the_app_adds_actions(
    sqlite: Backend, tmp_path: Path
) -> None:
    """--blueprint (or --app) checks the context and lists each wait's actions."""
    b = sqlite
    offline = no_app(b)
    ctx, key = signed_context(tmp_path)
    bp = tmp_path / "expense.json"
    bp.write_text(b.ok("-o", "json", "blueprint", "show", "expense"))
    report = offline.json(ContextReport, "context", "inspect", str(ctx), "--key", key,
                          "--blueprint", str(bp))
    assert report.verified
    assert report.checked
    assert report.digest
    assert report.run_id == "ctx-1"
    assert report.revision == 1
    assert report.status == "awaiting"
    (wait,) = [msgspec.convert(a, AwaitingView) for a in report.awaiting]
    assert wait.node_id == "approval"
    assert wait.actions == ["approved", "rejected"]
    assert [h.event for h in report.history] == ["pause"]
    piped = offline.run("context", "inspect", "-", "--key", key, "--blueprint", str(bp),
                        stdin=ctx.read_bytes())
    assert piped.code == 0, piped.err
    text = piped.out
    for fact in ("ctx-1", "verified", "revision   1", "approval (wait)", "approved, rejected"):
        assert fact in text
    with_app = b.run("-o", "json", "context", "inspect", str(ctx), FLOWCRAFT_TEST_KEYS=key)
    by_app = msgspec.json.decode(with_app.out, type=ContextReport)
    assert (by_app.status, by_app.keys_from, by_app.signed_by) == ("awaiting", "app", "k1")
    assert by_app.checked


@pytest.mark.parametrize("app", [False, True], ids=["no-app", "app"])
def test_context_inspect_refuses_tampered_and_foreign_key_contexts(
    sqlite: Backend, tmp_path: Path, app: bool
) -> None:
    """A changed byte, another key, or a missing key: exit 5 with the reason."""
    b = sqlite if app else no_app(sqlite)
    ctx, key = signed_context(tmp_path)
    data = bytearray(ctx.read_bytes())
    data[-1] ^= 0x01
    tampered = tmp_path / "tampered.bin"
    tampered.write_bytes(bytes(data))
    bad = b.run("context", "inspect", str(tampered), "--key", key)
    assert bad.code == 5
    assert "signature does not match" in bad.err
    assert bad.out == ""
    foreign = b.run("context", "inspect", str(ctx), "--key", "k2=other")
    assert foreign.code == 5
    assert "unknown key id" in foreign.err
    assert foreign.out == ""
    unkeyed = b.run("context", "inspect", str(ctx))
    assert unkeyed.code == 5
    assert "signed" in unkeyed.err
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(ctx.read_bytes()[:40])
    assert b.run("context", "inspect", str(truncated), "--key", key).code == 5
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00not a context")
    assert b.run("context", "inspect", str(junk)).code == 5


# --- the tool itself -------------------------------------------------------------------------


def test_help_shows_examples_and_imports_no_extra_package(sqlite: Backend) -> None:
    """--help has examples and exit codes, and loads neither the HTTP app, uvicorn nor MCP."""
    script = Path(sys.executable).parent / "flowcraft"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "Examples:" in done.stdout
    assert "Exit codes" in done.stdout
    code = (
        "import sys\n"
        "from flowcraft.cli import main\n"
        "try:\n    main(['runs', 'resume', '--help'])\n"
        "except SystemExit:\n    pass\n"
        "heavy = ('starlette', 'uvicorn', 'mcp', 'psycopg', 'redis', 'flowcraft.http')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "--idempotency-key" in out
    assert out.strip().endswith("[]")
    assert "_FLOWCRAFT_COMPLETE" in sqlite.ok("completion", "bash")


@pytest.mark.parametrize(
    ("blocked", "module", "extra"),
    [("click", "flowcraft.cli", "cli"), ("mcp_types", "flowcraft.mcp", "mcp")],
)
def test_a_missing_extra_names_what_to_install(blocked: str, module: str, extra: str) -> None:
    """Without its package the adapter raises ImportError naming pip install 'flowcraft[x]'."""
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        f"import {module} as m\n"
        "getattr(m, 'main', lambda: None)()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert f"pip install 'flowcraft[{extra}]'" in done.stderr


@pytest.mark.parametrize("run_id", ["", "x" * 10_000, "a b", "run\n"],
                         ids=["empty", "10k", "space", "newline"])
@pytest.mark.parametrize(
    ("command", "after"),
    [
        (("runs", "show"), ()),
        (("runs", "history"), ()),
        (("runs", "cancel"), ("--yes",)),
        (("runs", "delete"), ("--yes",)),
    ],
    ids=["show", "history", "cancel", "delete"],
)
def test_a_positional_run_id_outside_the_doors_rule_is_a_usage_error(
    tmp_path: Path, run_id: str, command: tuple[str, ...], after: tuple[str, ...]
) -> None:
    """A RUN_ID no run can have is refused as --run-id is: exit 2 naming RUN_ID and the
    rule, the input clipped, the store never asked (not a 'not found' exit 3)."""
    sqlite = Backend("sqlite", str(tmp_path / "runs.db"))
    result = sqlite.run(*command, run_id, *after)
    assert result.code == 2, result.err
    assert "RUN_ID" in result.err
    assert "1 to 128 characters" in result.err
    assert len(result.err) < 400
