"""``flowcraft``: operate durable runs from a terminal (extra ``cli``).

``flowcraft --app myproj.workflows:service runs list --status awaiting`` finds the
``FlowService`` the way Celery's ``-A`` finds an app (``module:attr``, or a module holding
one), runs one service call and prints it as text or, with ``-o json``, as the msgspec types of
the HTTP API (``flowcraft.http.ExecutionView``, ``ExecutionList``, ``HistoryView``,
``flowcraft.stores.RunStats``)
so scripts decode the same bodies whichever door they use. Errors go to stderr with the
library's message and exit with a code per error class (``EXIT_CODES``).

Start-up is kept short: click, the stores' drivers, the HTTP app, uvicorn and the MCP SDK are
imported only by the command that needs them: this module and the ones ``flowcraft.cli``
re-exports from need no click, and ``main`` imports the command tree (``root``) only when it
runs. The commands live by concept: ``runs`` (and ``bulk``, its ``--where`` form), ``serve``
(the scheduler, HTTP and MCP processes), ``blueprint``, ``context``; the view helpers
(``views``) need none of the extras and are shared with ``flowcraft.mcp``.
"""


from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import flowcraft
from flowcraft.cli.app import load_app
from flowcraft.cli.exits import (
    EXIT_CODES,
    FAILED,
    INTERRUPTED,
    OK,
    USAGE,
    exit_code,
)
from flowcraft.cli.output import clip_inputs, fail
from flowcraft.cli.reports import BulkReport, ContextReport, HistoryLine
from flowcraft.cli.views import CleanupReport, DeleteReport, Unsupported

__all__ = (
    "EXIT_CODES",
    "BulkReport",
    "CleanupReport",
    "ContextReport",
    "DeleteReport",
    "HistoryLine",
    "Unsupported",
    "load_app",
    "main",
)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the ``flowcraft`` command (the console script and ``python -m flowcraft``)."""
    try:
        import click
    except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
        raise ImportError(
            "the flowcraft command needs the 'cli' extra: pip install 'flowcraft[cli]'"
        ) from exc
    from flowcraft.cli.root import cli as command

    args = list(argv) if argv is not None else sys.argv[1:]
    # What a message may echo back, clipped: the arguments and the app named by the environment.
    # (``--opt=value`` echoes the value alone.)
    values = [a.partition("=")[2] for a in args if a.startswith("-")]
    inputs = [*args, *values, os.environ.get("FLOWCRAFT_APP", "")]
    try:
        command.main(args, "flowcraft", standalone_mode=False)
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except click.Abort:
        fail("aborted", INTERRUPTED)
    except click.ClickException as exc:
        shown = io.StringIO()
        exc.show(file=shown)
        sys.stderr.write(clip_inputs(shown.getvalue(), inputs))
        raise SystemExit(USAGE if isinstance(exc, click.UsageError) else exc.exit_code) from None
    except KeyboardInterrupt:
        fail("interrupted", INTERRUPTED)
    except flowcraft.FlowcraftError as exc:
        fail(clip_inputs(str(exc), inputs), exit_code(exc))
    except ValueError as exc:  # the service's argument checks (a bad cursor, a bad limit)
        fail(clip_inputs(str(exc), inputs), USAGE)
    except OSError as exc:
        fail(clip_inputs(str(exc), inputs), FAILED)
    raise SystemExit(OK)
