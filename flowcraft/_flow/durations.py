"""Durations as the builder takes them (seconds, timedelta, "5m", ISO-8601); JSON durations.

Also what a sleep node's params mean: a duration, an absolute time or a cron schedule.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from flowcraft._errors import InvalidDurationError
from flowcraft._flow.cron import CronSchedule, parse_cron

__all__ = ["MS_SUSPECT", "format_duration", "json_duration", "parse_duration", "sleep_seconds"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


#: One or more ``<number><unit>`` parts, largest unit first: "500ms", "1h30m", "2d 12h".
_COMPOUND = re.compile(r"^\s*(?:\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)\s*)+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_ORDER = ("d", "h", "m", "s", "ms")

#: Bare numbers of seconds from this on look like milliseconds (a TS habit): the builder warns.
MS_SUSPECT = 1_000_000


_ISO = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: object, where: str) -> float:
    """Seconds from a builder duration: seconds, timedelta, ``"5m"``-style or ISO-8601 string."""
    if isinstance(value, bool):
        raise InvalidDurationError(where, value, "a bool is not a duration")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        seconds = _parse_duration_text(value, where)
    else:
        raise InvalidDurationError(where, value, f"unsupported type {type(value).__name__}")
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise InvalidDurationError(where, value, "must be a finite, non-negative number")
    return seconds


def _parse_duration_text(text: str, where: str) -> float:
    if _COMPOUND.match(text):
        found: list[tuple[str, str]] = _PART.findall(text)
        ranks = [_ORDER.index(unit) for _, unit in found]
        if any(a >= b for a, b in itertools.pairwise(ranks)):
            raise InvalidDurationError(
                where, text, "give each unit once, largest first, as in '1h30m' or '2d12h'"
            )
        return sum(float(number) * _UNITS[unit] for number, unit in found)
    iso = _ISO.match(text.strip().upper())
    if iso and text.strip().upper() not in ("P", "PT") and any(iso.groupdict().values()):
        parts = {k: float(v) if v else 0.0 for k, v in iso.groupdict().items()}
        return parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    raise InvalidDurationError(where, text)


def format_duration(seconds: float) -> str:
    """A compound duration string for ``seconds`` ("1h30m", "500ms"), the inverse of parsing."""
    ms = round(seconds * 1000)
    parts = []
    for unit in _ORDER:
        size = round(_UNITS[unit] * 1000)
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def json_duration(value: object, where: str) -> float:
    """Seconds from a blueprint-JSON duration: a number is milliseconds (TS), a string as above."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return parse_duration(value / 1000.0, where)
    return parse_duration(value, where)


def sleep_seconds(params: Mapping[str, Any] | None, where: str) -> float | datetime | CronSchedule:
    """A sleep's duration in seconds, its absolute wake time, or its cron schedule; validates.

    Exactly one of ``duration``, ``until`` and ``cron`` (with an optional ``tz``, default UTC).
    """
    params = params or {}
    duration, until, cron = params.get("duration"), params.get("until"), params.get("cron")
    given = [name for name in ("duration", "until", "cron") if params.get(name) is not None]
    if len(given) != 1:
        why = "give exactly one of duration, until or cron"
        raise InvalidDurationError(where, params, f"{why}, not {' and '.join(given) or 'none'}")
    if params.get("tz") is not None and cron is None:
        raise InvalidDurationError(where, params, "tz goes with cron only")
    if cron is not None:
        return parse_cron(cron, params.get("tz", "UTC"), where)
    if duration is not None:
        return json_duration(duration, where)
    if isinstance(until, str):
        try:
            until = datetime.fromisoformat(until)
        except ValueError as exc:
            raise InvalidDurationError(where, until, "until is not an ISO-8601 datetime") from exc
    if not isinstance(until, datetime) or until.tzinfo is None:
        raise InvalidDurationError(where, until, "until must be a timezone-aware datetime")
    return until
