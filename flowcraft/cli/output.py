"""What ``flowcraft`` prints: text for people (colour on a terminal), JSON for scripts."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

if TYPE_CHECKING:
    from flowcraft.cli.env import Env
    from flowcraft.views import ExecutionView


ENCODER = msgspec.json.Encoder()
#: How much of an input a message echoes back (a 10,000-character id is shown as 80 and "…").
ECHO = 80


def clip(text: str, limit: int = ECHO) -> str:
    """``text`` cut to its first ``limit`` characters and "…" when longer."""
    return text if len(text) <= limit else text[:limit] + "\u2026"


def shown(value: str) -> str:
    """How a message quotes an input: its repr, clipped (``clip``)."""
    return repr(clip(value))


def clip_inputs(message: str, inputs: Sequence[str]) -> str:
    """``message`` with every long input it echoes (as given, or as its repr) clipped.

    The library's errors quote what they were given (``run 'xxxx…' is not in the store``); a
    command line echoing a 10,000-character argument back would bury the message.
    """
    for value in sorted({v for v in inputs if len(v) > ECHO}, key=len, reverse=True):
        for form in (repr(value)[1:-1], value):
            if len(form) > ECHO and form in message:
                message = message.replace(form, clip(form))
    return message


def _colour_on(stream: Any) -> bool:
    return "NO_COLOR" not in os.environ and bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, colour: str, *, err: bool = False) -> str:
    """``text`` in ``colour`` on a terminal (stderr's with ``err``), unless ``NO_COLOR``."""
    if not _colour_on(sys.stderr if err else sys.stdout):
        return text
    codes = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "dim": 2, "bold": 1}
    return f"\x1b[{codes[colour]}m{text}\x1b[0m"


STATUS_COLOUR = {
    "awaiting": "yellow",
    "running": "blue",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}


def when(at: datetime | None) -> str:
    """A time as UTC to the second (``-`` for none)."""
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def table_lines(rows: list[list[str]], header: list[str]) -> Iterator[str]:
    """``rows`` under ``header`` in left-aligned columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    yield "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    for row in rows:
        yield "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()


def compact(value: Any) -> str:
    """A value as one line of JSON (its repr if it has none)."""
    try:
        return ENCODER.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


def view_lines(view: ExecutionView, history: Sequence[Any] = ()) -> Iterator[str]:
    """The facts of a run an operator needs, one per line."""
    status = paint(view.status, STATUS_COLOUR.get(view.status, "bold"))
    yield f"run       {view.id}"
    yield f"flow      {view.flow_id}"
    yield f"status    {status}{'  (held)' if view.held else ''}"
    yield f"revision  {view.revision}"
    if view.created_at is not None:
        yield f"created   {when(view.created_at)}   updated {when(view.updated_at)}"
    if view.held:
        yield (
            f"held      by {view.paused_by or '-'} at {when(view.paused_at)}: "
            f"{view.paused_reason or '(no reason)'}"
        )
    if view.pause_deadline is not None:
        yield f"expires   {when(view.pause_deadline)}"
    for a in view.awaiting:
        yield f"awaiting  {a.node_id} ({a.reason}) since {when(a.since)}"
        if a.description:
            yield f"          {a.description}"
        if a.actions:
            yield f"          actions: {', '.join(a.actions)}"
        if a.schema is not None:
            yield f"          schema: {compact(a.schema)}"
        if a.wake_at is not None:
            yield f"          wakes at {when(a.wake_at)}"
        if a.expires_at is not None:
            yield f"          expires at {when(a.expires_at)}"
        if a.approved_by:
            yield f"          approved by {', '.join(a.approved_by)}"
    for error in view.errors:
        yield paint(f"error     {error}", "red")
    if view.outputs:
        yield f"outputs   {compact(view.outputs)}"
    for h in history:
        yield "history   " + history_line(h)


def history_line(h: Any) -> str:
    """One history record (the store's or a context's) as text."""
    parts = [when(h.at), h.event]
    if h.node_id:
        parts.append(h.node_id)
    if getattr(h, "action", None):
        parts.append(f"action={h.action}")
    if getattr(h, "by", None):
        parts.append(f"by={h.by}")
    if getattr(h, "reason", None):
        parts.append(f"reason={h.reason!r}")
    if getattr(h, "revision", None) is not None:
        parts.append(f"revision={h.revision}")
    return "  ".join(parts)


def emit(env: Env, value: object, lines: Callable[[], Iterator[str]]) -> None:
    """Print ``value`` as JSON with ``-o json``, else the text ``lines`` gives."""
    if env.json:
        sys.stdout.write(ENCODER.encode(value).decode() + "\n")
    else:
        for line in lines():
            sys.stdout.write(line + "\n")
    sys.stdout.flush()


def fail(message: str, code: int) -> NoReturn:
    """Print ``message`` to stderr and exit with ``code``."""
    sys.stderr.write(paint("flowcraft: error: ", "red", err=True) + message + "\n")
    raise SystemExit(code)
