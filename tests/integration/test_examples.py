"""Every script in examples/ runs, exits 0 and tells the story it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# One phrase per example that only appears when its own final asserts have passed.
KEY_PHRASES = {
    "diagram.py": "diagram: OK",
    "approval_service.py": "approval service: OK",
    "celery_approvals.py": "celery approvals: OK",
    "approval_webhook.py": "approval webhook: OK",
    "durable_timers.py": "durable timers: OK",
    "delayed_notification.py": "delayed notification: OK",
    "escalation.py": "escalation: OK",
    "expense_approval.py": "expense approval: OK",
    "maintenance_window.py": "maintenance window: OK",
    "parallel_review.py": "parallel review: OK",
    "research_pipeline.py": "research pipeline: OK",
    "retry_with_backoff.py": "retry with backoff: OK",
}

SCRIPTS = sorted(p.name for p in EXAMPLES.glob("*.py"))


def test_every_example_has_a_key_phrase() -> None:
    """The examples folder holds exactly the documented examples, each checked below."""
    assert sorted(KEY_PHRASES) == SCRIPTS


@pytest.mark.parametrize("script", SCRIPTS)
def test_example_runs_and_reports_success(script: str) -> None:
    """The example exits 0 and prints its success line."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    assert KEY_PHRASES[script] in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
