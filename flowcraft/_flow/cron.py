"""Cron sleeps: standard five-field cron expressions and the next time one matches in a zone.

A sleep built with ``cron="0 2 * * *", tz="Europe/Paris"`` wakes at the first instant strictly
after the run reaches it whose wall-clock time in ``tz`` matches. The grammar is Vixie cron's:

* five fields — minute (0-59), hour (0-23), day of month (1-31), month (1-12 or ``jan``-``dec``),
  day of week (0-7, 0 and 7 are Sunday, or ``sun``-``sat``); names are case-insensitive;
* each field a comma list of ``*``, ``n``, ``a-b``, each optionally ``/step``; ``n/step`` means
  ``n-<max>/step`` (as cronie and most modern crons read it);
* the macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily`` (``@midnight``)
  and ``@hourly``;
* day of month and day of week: when both fields are restricted, a day matching *either*
  matches; when either field starts with ``*``, a day must match both (so the ``*`` one matches
  every day). As in Vixie cron, ``*/2`` counts as starting with ``*``.

Daylight-saving time follows Vixie/Debian cron. An expression whose hour field is restricted
(it does not start with ``*``) names times of day: a time skipped by a spring-forward gap fires
at the instant the gap ends, and a time repeated by a fall-back overlap fires at its first
occurrence only — so ``0 2 * * *`` fires exactly once on every day. An expression whose hour
field starts with ``*`` keeps its rhythm in real time: skipped times do not exist, repeated
times fire in both passes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flowcraft._errors import InvalidDurationError

__all__ = ["CronSchedule", "parse_cron"]

HINT = (
    "Use a five-field cron expression 'minute hour day-of-month month day-of-week' such as "
    "'0 2 * * *' or '*/15 9-17 * * mon-fri' (or @daily, @hourly, ...) and an IANA time zone "
    "name such as 'Europe/Paris' (default 'UTC')."
)

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_WEEKDAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: (name, low, high, names) of each field, in order.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
#: The longest each month can be (February in a leap year): what "can ever match" is judged by.
_LONGEST = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: How far ahead a match is looked for. Feb 29 on a given weekday recurs within 40 years.
_HORIZON_YEARS = 100
_MINUTE = timedelta(minutes=1)


class _CronSyntaxError(Exception):
    """Why one field does not parse (turned into an ``InvalidDurationError`` by the caller)."""


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression in a time zone; ``next_after(now)`` is when a sleep wakes."""

    expression: str
    tz: ZoneInfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    any_day: bool  # the day-of-month field starts with "*"
    any_weekday: bool  # the day-of-week field starts with "*"
    any_hour: bool  # the hour field starts with "*": real-time rhythm across DST changes

    def matches(self, wall: datetime) -> bool:
        """Whether a wall-clock time (its minute; the zone is not consulted) matches the fields."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and self._day_matches(wall)
        )

    def next_after(self, now: datetime) -> datetime:
        """The first instant strictly after ``now`` (aware) at which the schedule fires, in UTC."""
        local = now.astimezone(self.tz)
        start = local.replace(tzinfo=None, second=0, microsecond=0)
        if local.fold == 0:
            # In the first pass of a fall-back overlap, wall times *before* now's come again
            # (second pass) after now: look back by the overlap's size.
            overlap = local.utcoffset() - local.replace(fold=1).utcoffset()  # type: ignore[operator]
            if overlap > timedelta(0):
                start -= overlap
        best: datetime | None = None
        best_wall = start
        while True:
            wall = self._next_wall(start)
            # Wall order is instant order except inside an overlap (a few hours at most).
            if best is not None and wall > best_wall + timedelta(hours=3):
                return best
            for instant in self._instants(wall):
                if instant > now and (best is None or instant < best):
                    best, best_wall = instant, wall
            start = wall + _MINUTE

    def can_match(self) -> bool:
        """Whether some calendar day matches (``0 0 30 2 *`` never does)."""
        if not (self.any_day or self.any_weekday):
            return True  # either field matching is enough, and every weekday comes round
        # Both must match. Every weekday falls on every (month, day) that exists, in some year.
        return any(d <= _LONGEST[m] for m in self.months for d in self.days)

    # --- search ----------------------------------------------------------------------------

    def _day_matches(self, wall: datetime) -> bool:
        day = wall.day in self.days
        weekday = (wall.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return day and weekday
        return day or weekday

    def _next_wall(self, t: datetime) -> datetime:
        """The first wall-clock minute at or after ``t`` that matches (naive calendar search)."""
        limit = t.year + _HORIZON_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                t = datetime(t.year + t.month // 12, t.month % 12 + 1, 1)
            elif not self._day_matches(t):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
            elif t.hour not in self.hours:
                i = bisect.bisect_left(self.hours, t.hour)
                base = datetime(t.year, t.month, t.day)
                t = base + (timedelta(hours=self.hours[i]) if i < len(self.hours) else _DAY)
            elif t.minute not in self.minutes:
                i = bisect.bisect_left(self.minutes, t.minute)
                base = t.replace(minute=0)
                t = base + (timedelta(minutes=self.minutes[i]) if i < len(self.minutes) else _HOUR)
            else:
                return t
        why = f"no match within {_HORIZON_YEARS} years"
        raise _refuse(f"cron {self.expression!r}", self.expression, why)

    def _instants(self, wall: datetime) -> tuple[datetime, ...]:
        """The instants a matching wall time fires at: one, none or two around DST changes."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first == second:
            return (first,)
        if first < second:  # repeated by a fall-back overlap
            return (first, second) if self.any_hour else (first,)
        # Skipped by a spring-forward gap (fold=1 reads it with the later offset: `second` lies
        # before the transition, `first` after it).
        return () if self.any_hour else (self._transition(second, first),)

    def _transition(self, before: datetime, after: datetime) -> datetime:
        """The first whole minute in ``(before, after]`` at which the zone's offset has changed."""
        offset = before.astimezone(self.tz).utcoffset()
        lo, hi = 0, int((after - before) / _MINUTE)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if (before + mid * _MINUTE).astimezone(self.tz).utcoffset() == offset:
                lo = mid
            else:
                hi = mid
        return before + hi * _MINUTE


_DAY = timedelta(days=1)
_HOUR = timedelta(hours=1)


def parse_cron(expression: object, tz: object, where: str) -> CronSchedule:
    """Parse a cron expression and time zone name; refuse one that can never match."""
    if not isinstance(expression, str):
        raise _refuse(where, expression, "a cron expression is a string")
    zone = _zone(tz, where)
    text = _MACROS.get(expression.strip().lower(), expression)
    fields = text.split()
    if len(fields) != 5:
        why = f"a cron expression has 5 fields, this one has {len(fields)}"
        if expression.strip().startswith("@"):
            why = f"unknown macro {expression.strip()!r}"
        raise _refuse(where, expression, why)
    sets: list[set[int]] = []
    for (name, low, high, names), field in zip(_FIELDS, fields, strict=True):
        try:
            sets.append(_field(field, low, high, names))
        except _CronSyntaxError as exc:
            raise _refuse(where, expression, f"{name} field {field!r}: {exc}") from None
    minutes, hours, days, months, weekdays = sets
    schedule = CronSchedule(
        expression=expression,
        tz=zone,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days=frozenset(days),
        months=frozenset(months),
        weekdays=frozenset(d % 7 for d in weekdays),
        any_day=fields[2].startswith("*"),
        any_weekday=fields[4].startswith("*"),
        any_hour=fields[1].startswith("*"),
    )
    if not schedule.can_match():
        raise _refuse(where, expression, "no month has such a day, so it never matches")
    return schedule


def _refuse(where: str, value: object, why: str) -> InvalidDurationError:
    return InvalidDurationError(where, value, why, hint=HINT, what="cron schedule")


def _zone(tz: object, where: str) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    if not isinstance(tz, str) or not tz:
        raise _refuse(where, tz, "tz is an IANA time zone name")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _refuse(where, tz, "unknown time zone") from exc


def _field(field: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    values: set[int] = set()
    for part in field.split(","):
        span, slash, step_text = part.partition("/")
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) < 1:
                raise _CronSyntaxError(f"step {step_text!r} is not a whole number of at least 1")
            step = int(step_text)
        else:
            step = 1
        if span == "*":
            first, last = low, high
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = _value(a, low, high, names), _value(b, low, high, names)
            if first > last:
                raise _CronSyntaxError(f"range {span!r} runs backwards")
        else:
            first = _value(span, low, high, names)
            last = high if slash else first
        values.update(range(first, last + 1, step))
    return values


def _value(text: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not (text.isascii() and text.isdigit()):
        known = f" or a name ({', '.join(names)})" if names else ""
        raise _CronSyntaxError(f"{text!r} is not a number{known}")
    value = int(text)
    if not low <= value <= high:
        raise _CronSyntaxError(f"{value} is outside {low}-{high}")
    return value
