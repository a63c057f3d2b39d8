"""The command line's small languages: durations, JSON arguments, ``--where``, ``--key``."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import msgspec

from flowcraft.cli.exits import UsageProblem
from flowcraft.cli.output import shown
from flowcraft.views import name_problem, reason_problem, run_id_problem

_LONGEST = 1000 * 365.25 * 86400.0  # seconds: any longer is a typo, and dates overflow
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str, what: str = "", *, positive: bool = False) -> float:
    """Seconds of ``"90"``, ``"45s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``.

    ``what`` names the option in the message (``--interval``); ``positive`` refuses 0 too.
    """
    raw = text.strip().lower()
    seconds: float | None = None
    for unit in sorted(_UNITS, key=len, reverse=True):
        if raw.endswith(unit) and raw[: -len(unit)].replace(".", "", 1).isdigit():
            seconds = float(raw[: -len(unit)]) * _UNITS[unit]
            break
    if seconds is None:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = math.nan
    low_ok = seconds > 0 if positive else seconds >= 0
    if not (low_ok and seconds <= _LONGEST):  # NaN fails both comparisons: refused too
        where = f"{what} " if what else ""
        least = "more than 0" if positive else "not negative"
        raise UsageProblem(
            f"{where}invalid duration {shown(text)}: use e.g. 90, 45s, 30m, 12h, 7d "
            f"({least}, at most 1000 years)"
        )
    return seconds


def check_texts(*, reason: str | None = None, by: str | None = None) -> None:
    """Refuse a ``--reason`` or ``--by`` too long to record (every door's rule)."""
    for problem in (
        reason_problem(reason, "--reason") if reason is not None else None,
        name_problem(by, "--by") if by is not None else None,
    ):
        if problem is not None:
            raise UsageProblem(problem)


def read_json(value: str | None, what: str) -> Any:
    """A JSON value given inline, as ``@file``, or ``-`` (standard input)."""
    if value is None:
        return None
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        try:
            with open(value[1:], encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageProblem(f"{what}: cannot read {shown(value[1:])}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise UsageProblem(
                f"{what}: {shown(value[1:])} is not UTF-8 text ({exc.reason})"
            ) from exc
    else:
        text = value
    try:
        return msgspec.json.decode(text.encode())
    except msgspec.DecodeError as exc:
        raise UsageProblem(f"{what} is not JSON ({exc}): {text[:80]!r}") from exc
    except UnicodeEncodeError as exc:  # undecodable bytes on the command line or stdin
        raise UsageProblem(f"{what} is not UTF-8 text: {text[:80]!r}") from exc
    except RecursionError as exc:
        raise UsageProblem(f"{what}: the JSON is nested too deeply; pass a flatter value") from exc


_WHERE_KEYS = {"status": "status", "flow": "flow_id", "reason": "reason", "expired": "expired"}


def parse_where(text: str) -> dict[str, Any]:
    """``status=awaiting,flow=expense,reason=wait,expired=true`` as ``list()`` filters."""
    found: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in _WHERE_KEYS:
            raise UsageProblem(
                f"--where {shown(text)}: {shown(part)} is not KEY=VALUE with KEY one of "
                + ", ".join(_WHERE_KEYS)
            )
        name = _WHERE_KEYS[key.strip()]
        value = value.strip()
        if name == "expired":
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise UsageProblem(f"--where expired={shown(value)}: use true or false")
            found[name] = value.lower() in ("true", "yes", "1")
        else:
            found[name] = value
    if not found:
        raise UsageProblem("--where needs at least one KEY=VALUE")
    return found


def parse_keys(pairs: Sequence[str]) -> dict[str, str]:
    """``--key ID=SECRET`` pairs as ``signing_keys``."""
    keys: dict[str, str] = {}
    for position, pair in enumerate(pairs, 1):
        key_id, sep, secret = pair.partition("=")
        if not sep or not key_id or not secret:
            # Not echoed: a pair without its "=" may be the secret itself.
            raise UsageProblem(f"--key number {position}: use ID=SECRET")
        keys[key_id] = secret
    return keys


def checked_run_id(ctx: Any, param: Any, value: str | None) -> str | None:
    """A click callback for a ``RUN_ID`` argument: the doors' run-id rule, else a usage error.

    An id no run can have (empty, 10,000 characters, a space) is refused before any store is
    opened, as ``--run-id`` and the HTTP and MCP doors refuse it.
    """
    if value is not None:
        problem = run_id_problem(value, "RUN_ID")
        if problem is not None:
            raise UsageProblem(problem)
    return value
