"""The benchmark harness runs every scenario end to end (tiny N, no peers, no timing claims)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = (
    "approval",
    "chain100",
    "fanout20",
    "chain10000",
    "fanout5000",
    "timers10000",
    "approval_context_bytes",
)


@pytest.fixture(scope="module")
def records() -> list[dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-peers"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_benchmarks_print_a_meta_line_first(records: list[dict[str, object]]) -> None:
    """The first line describes the machine and the versions measured."""
    meta = records[0]
    assert meta["scenario"] == "meta"
    assert meta["quick"] is True
    assert "flowcraft" in meta["versions"]  # type: ignore[operator]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_reports_a_positive_number_for_floor_and_flowcraft(
    records: list[dict[str, object]], scenario: str
) -> None:
    """Every scenario prints a floor and a flowcraft line with a positive measurement."""
    lines = {r["impl"]: r for r in records if r["scenario"] == scenario}
    for impl in ("floor", "flowcraft"):
        rec = lines[impl]
        assert "error" not in rec, rec
        value = rec.get("us_per_op", rec.get("bytes"))
        assert isinstance(value, int | float)
        assert value > 0
        assert isinstance(rec["ratio_to_floor"], int | float)


def test_peers_are_reported_as_skipped_with_no_peers(records: list[dict[str, object]]) -> None:
    """With --no-peers every peer line says it was skipped and why."""
    peers = [r for r in records if r.get("impl") in ("langgraph", "flowcraft-ts")]
    assert peers
    assert all(r["skipped"] == "--no-peers" for r in peers)


def test_only_selects_scenarios_and_rejects_unknown_names() -> None:
    """--only runs just the named scenarios; an unknown name is a usage error."""
    ok = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-peers", "--only", "chain100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    scenarios = {json.loads(line)["scenario"] for line in ok.stdout.splitlines()}
    assert scenarios == {"meta", "chain100"}
    bad = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--only", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "unknown scenario" in bad.stderr


def test_durable_runs_on_sqlite_in_quick_mode_with_peers_skipped() -> None:
    """--durable --quick --no-peers: flowcraft at FULL and NORMAL on SQLite, peers skipped."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--durable",
            "--quick",
            "--no-peers",
            "--backends",
            "sqlite",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert lines[0]["scenario"] == "meta"
    by_impl = {r["impl"]: r for r in lines[1:]}
    fc = by_impl["flowcraft"]
    assert fc["backend"] == "sqlite"
    assert fc["settings"]["synchronous"] == "FULL"
    assert by_impl["flowcraft-normal"]["settings"]["synchronous"] == "NORMAL"
    for key in (
        "start_ms",
        "resume_ms",
        "pairs_per_s_c1",
        "pairs_per_s_c16",
        "bytes_per_paused_run",
        "list50_ms",
    ):
        assert fc[key] > 0, key
    assert fc["timers"]["n"] >= 20
    assert by_impl["langgraph"]["skipped"] == "--no-peers"
    assert by_impl["dbos"]["skipped"] == "--no-peers"
