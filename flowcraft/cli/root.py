"""The ``flowcraft`` command: its global options, its help, and its commands by concept."""

from __future__ import annotations

import sys

import click

import flowcraft
from flowcraft.cli.blueprint import blueprint
from flowcraft.cli.context import context
from flowcraft.cli.env import Env
from flowcraft.cli.runs import runs
from flowcraft.cli.serve import mcp, scheduler, serve

_HELP = """Operate flowcraft's durable runs: list, inspect, decide, hold, clean up.

\b
--app names the FlowService (like Celery's -A): module:attr, or a module
holding one; $FLOWCRAFT_APP works too. -o json prints the HTTP API's types.

\b
Examples:
  export FLOWCRAFT_APP=myproj.workflows:service
  flowcraft runs list --status awaiting --reason wait
  flowcraft runs show RUN
  flowcraft runs resume RUN manager-approval --action approved \\
      --output '{"approved": true}' --by alice --idempotency-key ticket-42
  flowcraft -o json runs stats | jq .by_status
  flowcraft context inspect ctx.bin --key k1=$SECRET

\b
Exit codes: 0 ok, 1 failed (the store is unavailable...), 2 usage or
invalid data (unknown action, bad JSON, a state that cannot be serialized),
3 not found, 4 conflict / not awaiting, 5 a stored context that fails its
integrity check or does not decode, 6 expired, 7 held, 8 not supported by
this flowcraft version, 130 interrupted.
"""


_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(help=_HELP, context_settings=_SETTINGS)
@click.option("--app", "-A", envvar="FLOWCRAFT_APP", metavar="MODULE[:ATTR]",
              help="The FlowService to operate (or $FLOWCRAFT_APP).")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Text for people, JSON for scripts.")
@click.version_option(flowcraft.__version__, prog_name="flowcraft")
@click.pass_context
def cli(ctx: click.Context, app: str | None, output: str) -> None:
    """The global options, kept for the commands."""
    ctx.obj = Env(app=app, output=output)


@click.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script.

    \b
    Example:
      eval "$(flowcraft completion bash)"
    """
    from click.shell_completion import get_completion_class

    kind = get_completion_class(shell)
    assert kind is not None
    sys.stdout.write(kind(cli, {}, "flowcraft", "_FLOWCRAFT_COMPLETE").source() + "\n")


for command in (runs, scheduler, serve, mcp, blueprint, context, completion):
    cli.add_command(command)
