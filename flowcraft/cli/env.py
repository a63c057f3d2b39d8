"""The global options every command sees (``--app``, ``-o``), and asking before deleting."""

from __future__ import annotations

import sys

import click
import msgspec

from flowcraft.cli.exits import UsageProblem


class Env(msgspec.Struct, kw_only=True):
    """The global options: which app, and text or JSON."""

    app: str | None
    output: str

    @property
    def json(self) -> bool:
        """Whether ``-o json`` was given."""
        return self.output == "json"


#: Hands a command the ``Env`` the top-level group made.
pass_env = click.make_pass_decorator(Env)


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` on a terminal unless ``--yes``; refuse without a terminal."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageProblem(f"{question} Refusing without --yes (standard input is not a terminal)")
    if not click.confirm(question, default=False, err=True):
        raise click.Abort
