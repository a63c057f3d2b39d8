"""Flowcraft TS peer: install the npm package into benchmarks/.ts/ and run flowcraft_ts.mjs."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
INSTALL_DIR = HERE / ".ts"  # gitignored cache; delete it to force a fresh install
SCRIPT = HERE / "flowcraft_ts.mjs"
PACKAGE = "flowcraft@2"


class PeerUnavailable(Exception):
    """The peer cannot run here; the message says why."""


def _installed_version() -> str | None:
    manifest = INSTALL_DIR / "node_modules" / "flowcraft" / "package.json"
    try:
        version = json.loads(manifest.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None
    return version if isinstance(version, str) and version.startswith("2.") else None


def _install(npm: str) -> None:
    INSTALL_DIR.mkdir(parents=True, exist_ok=True)
    pkg = INSTALL_DIR / "package.json"
    if not pkg.exists():
        pkg.write_text('{"name": "flowcraft-bench-peer", "private": true, "type": "module"}\n')
    proc = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--loglevel=error", PACKAGE],
        cwd=INSTALL_DIR,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise PeerUnavailable(f"npm install {PACKAGE} failed: {' | '.join(tail)}")


def run(*, quick: bool) -> dict[str, Any]:
    """Install if needed, run the three flows in Node, return the parsed JSON timings."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PeerUnavailable("node and npm are not both on PATH")
    try:
        if _installed_version() is None:
            _install(npm)
        if _installed_version() is None:
            raise PeerUnavailable(f"npm install {PACKAGE} left no flowcraft 2.x in {INSTALL_DIR}")
        script = INSTALL_DIR / SCRIPT.name
        shutil.copyfile(SCRIPT, script)  # bare 'flowcraft' import resolves from node_modules here
        proc = subprocess.run(
            [node, script.name, *(["quick"] if quick else [])],
            cwd=INSTALL_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerUnavailable(f"timed out: {exc.cmd}") from exc
    except OSError as exc:
        raise PeerUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise PeerUnavailable(f"node exited {proc.returncode}: {' | '.join(tail)}")
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
    except (ValueError, IndexError) as exc:
        raise PeerUnavailable(f"unreadable output from node: {proc.stdout[-200:]!r}") from exc
