"""``flowcraft blueprint``: show, lint and draw a flow of the app, or a blueprint file."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

import click

import flowcraft
from flowcraft import Blueprint, FlowService
from flowcraft.cli.app import close_store, load_app, run_with
from flowcraft.cli.env import Env, pass_env
from flowcraft.cli.exits import FAILED, UsageProblem
from flowcraft.cli.output import emit
from flowcraft.views import flow_of


def read_blueprint(
    env: Env, target: str
) -> tuple[Blueprint, Mapping[str, object] | None, FlowService | None]:
    """A blueprint from a JSON file (or ``-``), else a flow id of the app."""
    if target == "-" or target.endswith(".json") or os.path.isfile(target):
        try:
            raw = sys.stdin.buffer.read() if target == "-" else open(target, "rb").read()  # noqa: SIM115
        except OSError as exc:
            raise UsageProblem(f"cannot read blueprint {target!r}: {exc.strerror}") from exc
        return Blueprint.from_json(raw), None, None
    service = load_app(env.app)
    bp, reg = flow_of(service, target)
    return bp, reg, service


@click.group()
def blueprint() -> None:
    """Show, lint and draw a flow of the app, or a blueprint JSON file."""


@blueprint.command("show")
@click.argument("target", metavar="FLOW_ID|FILE.json|-")
@pass_env
def blueprint_show(env: Env, target: str) -> None:
    """Print a blueprint's nodes and edges (its TS-shaped JSON with -o json)."""
    bp, _, service = read_blueprint(env, target)
    close_store(service)
    if env.json:
        sys.stdout.write(bp.to_json() + "\n")
        return
    sys.stdout.write(f"blueprint {bp.id}  digest {bp.digest[:12]}\n")
    for n in bp.nodes:
        sys.stdout.write(f"  node {n.id}  uses={n.uses}\n")
    for e in bp.edges:
        extra = "".join(f" {k}={v!r}" for k, v in (("action", e.action),
                        ("condition", e.condition)) if v is not None)
        sys.stdout.write(f"  edge {e.source} -> {e.target}{extra}\n")


@blueprint.command("lint")
@click.argument("target", metavar="FLOW_ID|FILE.json|-")
@pass_env
def blueprint_lint(env: Env, target: str) -> None:
    """Find problems a valid blueprint can still have; exit 1 on any error."""
    bp, reg, service = read_blueprint(env, target)
    close_store(service)
    issues = flowcraft.lint_blueprint(bp, reg)
    emit(env, issues, lambda: iter([str(i) for i in issues] or [f"{bp.id}: no issues"]))
    if any(i.severity == "error" for i in issues):
        raise SystemExit(FAILED)


@blueprint.command("mermaid")
@click.argument("target", metavar="FLOW_ID|FILE.json|-")
@click.option("--run", "run_id", help="Colour the nodes by this run's state (needs --app).")
@click.option("--direction", default="TD", show_default=True)
@pass_env
def blueprint_mermaid(env: Env, target: str, run_id: str | None, direction: str) -> None:
    """Draw a blueprint as a Mermaid flowchart."""
    bp, _, service = read_blueprint(env, target)
    result = None
    if run_id is not None:  # run_with closes the app's store (the same service)
        result = run_with(env.app, lambda s: s.result(run_id))
    else:
        close_store(service)
    sys.stdout.write(bp.to_mermaid(result, direction=direction) + "\n")
