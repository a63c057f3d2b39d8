"""Cron sleeps at build time: the parser, the builder, blueprint JSON, and the next-match search."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from flowcraft import Blueprint, InvalidDurationError, create_flow
from flowcraft._flow.cron import CronSchedule, parse_cron

MINUTE = timedelta(minutes=1)


def cron(expression: str, tz: str = "UTC") -> CronSchedule:
    return parse_cron(expression, tz, "test")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local(when: datetime, tz: str) -> str:
    """An instant as wall time with its UTC offset, e.g. '2024-03-31 03:00+02:00'."""
    return when.astimezone(ZoneInfo(tz)).isoformat(" ", "minutes")


# --- the grammar -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "field", "values"),
    [
        ("* * * * *", "minutes", tuple(range(60))),
        ("5 * * * *", "minutes", (5,)),
        ("1,5-7,40-50/5 * * * *", "minutes", (1, 5, 6, 7, 40, 45, 50)),
        ("*/15 * * * *", "minutes", (0, 15, 30, 45)),
        ("50/3 * * * *", "minutes", (50, 53, 56, 59)),  # n/step: n to the end
        ("0 9-17/4 * * *", "hours", (9, 13, 17)),
        ("0 0 1,15 * *", "days", frozenset({1, 15})),
        ("0 0 * jan,Mar-MAY */6", "months", frozenset({1, 3, 4, 5})),
        ("0 0 * */5 *", "months", frozenset({1, 6, 11})),
        ("0 0 * * mon-fri", "weekdays", frozenset({1, 2, 3, 4, 5})),
        ("0 0 * * 5-7", "weekdays", frozenset({5, 6, 0})),  # 7 is Sunday too
        ("0 0 * * SUN,7", "weekdays", frozenset({0})),
    ],
)
def test_fields_parse_numbers_names_ranges_lists_and_steps(
    expression: str, field: str, values: object
) -> None:
    """Every standard field form gives the set of values Vixie cron gives."""
    assert getattr(cron(expression), field) == values


@pytest.mark.parametrize(
    ("macro", "expanded"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ],
)
def test_macros_mean_their_five_field_expansion(macro: str, expanded: str) -> None:
    """``@daily`` and friends parse to the same schedule as their expansion."""
    now = utc("2024-05-17T13:37")
    assert cron(macro).next_after(now) == cron(expanded).next_after(now)


@pytest.mark.parametrize(
    ("expression", "why"),
    [
        ("* * * *", "has 5 fields, this one has 4"),
        ("* * * * * *", "has 5 fields, this one has 6"),
        ("", "has 5 fields, this one has 0"),
        ("@reboot", "unknown macro '@reboot'"),
        ("60 * * * *", "minute field '60': 60 is outside 0-59"),
        ("* 24 * * *", "hour field '24': 24 is outside 0-23"),
        ("* * 0 * *", "day of month field '0': 0 is outside 1-31"),
        ("* * * 13 *", "month field '13': 13 is outside 1-12"),
        ("* * * * 8", "day of week field '8': 8 is outside 0-7"),
        ("* * * * fri-mon", "range 'fri-mon' runs backwards"),
        ("*/0 * * * *", "step '0' is not a whole number"),
        ("*/ * * * *", "step '' is not a whole number"),
        ("1,,2 * * * *", "'' is not a number"),
        ("0 0 L * *", "'L' is not a number"),
        ("0 0 ? * 1", "'?' is not a number"),
        ("0 0 * * 1#2", "'1#2' is not a number"),
        ("0 0 * foo *", "'foo' is not a number or a name (jan, feb"),
        ("0 0 * * mon-", "'' is not a number"),
        ("٣ * * * *", "'٣' is not a number"),  # non-ASCII digits are refused
        ("0 0 30 2 *", "no month has such a day, so it never matches"),
        ("0 0 31 4,6,9,11 *", "no month has such a day"),
        ("0 0 30,31 feb *", "no month has such a day"),
        ("0 0 30 2 */2", "no month has such a day"),  # a '*'-led weekday: both must match
    ],
)
def test_bad_expressions_are_refused_saying_which_field_and_why(expression: str, why: str) -> None:
    """Each mistake names the field and the reason, and shows a valid expression."""
    with pytest.raises(InvalidDurationError, match="invalid cron schedule") as info:
        parse_cron(expression, "UTC", "flow 'f': sleep 's'")
    assert why in str(info.value)
    assert str(info.value).startswith("flow 'f': sleep 's': ")
    assert "'0 2 * * *'" in str(info.value)


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", 5])
def test_unknown_time_zones_are_refused(tz: object) -> None:
    """A zone that is not an IANA name is refused with the same clear error."""
    with pytest.raises(InvalidDurationError, match="invalid cron schedule"):
        parse_cron("0 2 * * *", tz, "x")


@pytest.mark.parametrize(
    "expression",
    ["0 0 29 2 *", "0 0 30 2 1", "0 0 31 * *", "0 0 */31 2 *", "0 0 */30 2 mon"],
)
def test_expressions_that_match_rarely_are_accepted(expression: str) -> None:
    """Feb 29, or Feb 30 *or* a Monday, or a day-31 matching some month, can match."""
    schedule = cron(expression)
    assert schedule.matches(schedule.next_after(utc("2025-03-01T00:00")).replace(tzinfo=None))


# --- day of month and day of week (Vixie cron) --------------------------------------------


def test_both_day_fields_restricted_means_either() -> None:
    """``0 0 13 * fri``: every 13th and every Friday, not only Friday the 13th."""
    schedule = cron("0 0 13 * fri")
    now = utc("2024-09-01T00:00")  # a Sunday
    wakes = []
    for _ in range(4):
        now = schedule.next_after(now)
        wakes.append(now.date().isoformat())
    assert wakes == ["2024-09-06", "2024-09-13", "2024-09-20", "2024-09-27"]
    assert schedule.next_after(utc("2024-10-12T12:00")) == utc("2024-10-13T00:00")  # a Sunday


def test_a_star_day_field_means_both_must_match() -> None:
    """``0 0 * * mon``: Mondays only; ``0 0 1 * *``: the 1st only."""
    assert cron("0 0 * * mon").next_after(utc("2024-09-01T00:00")) == utc("2024-09-02T00:00")
    assert cron("0 0 1 * *").next_after(utc("2024-09-02T00:00")) == utc("2024-10-01T00:00")


def test_a_stepped_star_counts_as_star_as_in_vixie_cron() -> None:
    """``*/2`` starts with ``*``: with a restricted weekday, a day must match both."""
    schedule = cron("0 0 */2 * mon")  # odd days that are Mondays
    assert schedule.next_after(utc("2024-09-01T00:00")) == utc("2024-09-09T00:00")


# --- time zones and daylight-saving time ------------------------------------------------------


def test_wall_clock_time_in_the_zone_is_what_matches() -> None:
    """``0 9 * * mon-fri`` in New York is 9 am local, in winter and in summer."""
    schedule = cron("0 9 * * mon-fri", "America/New_York")
    assert schedule.next_after(utc("2024-01-06T00:00")) == utc("2024-01-08T14:00")
    assert schedule.next_after(utc("2024-07-06T00:00")) == utc("2024-07-08T13:00")


@pytest.mark.parametrize(
    ("expression", "tz", "now", "wakes"),
    [
        # Spring forward: 02:00-02:59 does not exist. A named hour fires when the gap ends.
        ("0 2 * * *", "Europe/Paris", "2024-03-30T12:00", "2024-03-31 03:00+02:00"),
        ("30 2 * * *", "Europe/Paris", "2024-03-31T00:59", "2024-03-31 03:00+02:00"),
        ("0 2 * * *", "Europe/Paris", "2024-03-31T01:00", "2024-04-01 02:00+02:00"),
        ("30 2 * * *", "America/New_York", "2024-03-10T06:00", "2024-03-10 03:00-04:00"),
        # ...an expression with hour "*" keeps its rhythm: the skipped times do not exist.
        ("30 * * * *", "Europe/Paris", "2024-03-31T00:45", "2024-03-31 03:30+02:00"),
        ("*/20 * * * *", "America/New_York", "2024-03-10T06:50", "2024-03-10 03:00-04:00"),
        # Fall back: 02:00-02:59 (Paris), 01:00-01:59 (New York) happen twice.
        ("30 2 * * *", "Europe/Paris", "2024-10-27T00:00", "2024-10-27 02:30+02:00"),
        # ...a named hour fires at the first pass only: once a day.
        ("30 2 * * *", "Europe/Paris", "2024-10-27T00:30", "2024-10-28 02:30+01:00"),
        ("30 1 * * *", "America/New_York", "2024-11-03T05:30", "2024-11-04 01:30-05:00"),
        # ...an expression with hour "*" fires in both passes.
        ("*/20 * * * *", "Europe/Paris", "2024-10-27T00:50", "2024-10-27 02:00+01:00"),
        ("30 * * * *", "America/New_York", "2024-11-03T05:30", "2024-11-03 01:30-05:00"),
        ("0 3 * * *", "Europe/Paris", "2024-10-27T00:30", "2024-10-27 03:00+01:00"),
    ],
)
def test_daylight_saving_gaps_and_overlaps(expression: str, tz: str, now: str, wakes: str) -> None:
    """DST follows Vixie/Debian cron: a named time of day fires once a day, a rhythm keeps time."""
    assert local(cron(expression, tz).next_after(utc(now)), tz) == wakes


def test_a_daily_schedule_fires_once_on_every_day_across_both_changes() -> None:
    """Walking ``0 2 * * *`` in Paris through 2024 gives one wake on each day, no day twice."""
    schedule = cron("0 2 * * *", "Europe/Paris")
    now, days = utc("2023-12-31T12:00"), []
    for _ in range(366):
        now = schedule.next_after(now)
        days.append(now.astimezone(schedule.tz).date())
    first = days[0]
    assert days == [first + timedelta(days=i) for i in range(366)]
    assert (first.isoformat(), days[-1].isoformat()) == ("2024-01-01", "2024-12-31")


def test_next_after_is_strictly_after_now() -> None:
    """Reached exactly at a matching minute, a sleep waits for the next one (no instant loop)."""
    assert cron("0 2 * * *").next_after(utc("2024-01-01T02:00")) == utc("2024-01-02T02:00")
    now = utc("2024-01-01T01:59") + timedelta(seconds=59, microseconds=999_999)
    assert cron("0 2 * * *").next_after(now) == utc("2024-01-01T02:00")


def test_a_non_utc_now_gives_the_same_instant() -> None:
    """The clock's zone does not matter: the wake time is an instant, returned in UTC."""
    now = utc("2024-06-01T10:00")
    schedule = cron("15 * * * *", "Asia/Kolkata")  # a half-hour offset
    assert schedule.next_after(now.astimezone(ZoneInfo("America/Los_Angeles"))) == (
        schedule.next_after(now)
    )
    assert schedule.next_after(now) == utc("2024-06-01T10:45")


# --- properties -------------------------------------------------------------------------------


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    value = st.integers(low, high)
    span = st.tuples(value, value).map(lambda ab: f"{min(ab)}-{max(ab)}")
    atom = st.one_of(st.just("*"), value.map(str), span)
    stepped = st.tuples(atom, st.integers(1, high - low + 1)).map(lambda a: f"{a[0]}/{a[1]}")
    return st.lists(st.one_of(atom, stepped), min_size=1, max_size=3).map(",".join)


EXPRESSIONS = st.tuples(
    _field(0, 59), _field(0, 23), _field(1, 31), _field(1, 12), _field(0, 7)
).map(" ".join)
#: Often-matching expressions around the hours DST changes, where bugs would hide.
NIGHTLY = st.tuples(
    st.one_of(_field(0, 59), st.sampled_from(["0", "30", "*/15", "*"])),
    st.one_of(st.sampled_from(["*", "0-3", "1", "2", "3", "1,2", "*/2"]), _field(0, 23)),
).map(lambda mh: f"{mh[0]} {mh[1]} * * *")
ZONES = st.sampled_from(
    ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
)
#: The transitions of 2024 in Paris and New York, and Lord Howe's half-hour ones.
CHANGES = [
    ("Europe/Paris", utc("2024-03-31T01:00")),
    ("Europe/Paris", utc("2024-10-27T01:00")),
    ("America/New_York", utc("2024-03-10T07:00")),
    ("America/New_York", utc("2024-11-03T06:00")),
    ("Australia/Lord_Howe", utc("2024-04-06T15:00")),
    ("Australia/Lord_Howe", utc("2024-10-05T15:30")),
]
NOW = st.datetimes(datetime(2000, 1, 1), datetime(2060, 1, 1), timezones=st.just(UTC))
#: A zone and a time at most four hours from one of its DST changes.
NEAR_CHANGE = st.tuples(st.sampled_from(CHANGES), st.integers(-4 * 3600, 4 * 3600)).map(
    lambda c: (c[0][0], c[0][1] + timedelta(seconds=c[1]))
)


def fires(schedule: CronSchedule, instant: datetime) -> bool:
    """Whether the schedule fires at this whole-minute instant, by the documented rules.

    A reference written from the module docstring, minute by minute in real time: the wall time
    matches (a repeated time only in its first pass unless the hour field is ``*``), or — for a
    named hour — the instant ends a gap that skipped a matching wall time.
    """
    here = instant.astimezone(schedule.tz)
    wall = here.replace(tzinfo=None)
    before = (instant - MINUTE).astimezone(schedule.tz).replace(tzinfo=None)
    if not schedule.any_hour and wall - before > MINUTE:
        skipped = before + MINUTE
        while skipped < wall:
            if schedule.matches(skipped):
                return True
            skipped += MINUTE
    if not schedule.matches(wall):
        return False
    return schedule.any_hour or here.fold == 0


def check_next(expression: str, tz: str, now: datetime, horizon: timedelta) -> None:
    try:
        schedule = parse_cron(expression, tz, "property")
    except InvalidDurationError:
        assume(False)
        raise
    wake = schedule.next_after(now)
    assert wake > now
    assert wake.second == wake.microsecond == 0
    assert fires(schedule, wake), (expression, tz, now, wake)
    minute = now.replace(second=0, microsecond=0) + MINUTE
    end = min(wake, minute + horizon)
    while minute < end:
        assert not fires(schedule, minute), (expression, tz, now, minute, wake)
        minute += MINUTE


@given(expression=EXPRESSIONS, tz=ZONES, now=NOW)
@example(expression="0 0 29 2 *", tz="UTC", now=utc("2097-03-01T00:00"))
@example(expression="0 2 * * *", tz="Europe/Paris", now=utc("2024-03-31T00:30"))
def test_next_match_is_after_now_matches_and_nothing_earlier_matches(
    expression: str, tz: str, now: datetime
) -> None:
    """Any expression, zone, time: the wake is after now, fires, and no earlier minute does."""
    check_next(expression, tz, now, timedelta(days=2))


@given(expression=NIGHTLY, near=NEAR_CHANGE)
@example(expression="*/20 * * * *", near=("Europe/Paris", utc("2024-10-27T00:50")))
@example(expression="30 1 * * *", near=("America/New_York", utc("2024-11-03T05:45")))
def test_around_dst_changes_the_next_match_is_the_first_firing_minute(
    expression: str, near: tuple[str, datetime]
) -> None:
    """Night-time schedules checked minute by minute across gaps and overlaps, all the way."""
    tz, now = near
    check_next(expression, tz, now, timedelta(days=2))


# --- builder and blueprint JSON -----------------------------------------------------------------


def test_builder_writes_cron_and_tz_params_that_round_trip_through_json() -> None:
    """``.sleep(cron=, tz=)`` stores TS-style params; the JSON loads back equal."""
    flow = create_flow("nightly").sleep("at-two", cron="0 2 * * *", tz="Europe/Paris")
    bp = flow.to_blueprint()
    assert bp.nodes[0].uses == "sleep"
    assert bp.nodes[0].params == {"cron": "0 2 * * *", "tz": "Europe/Paris"}
    again = Blueprint.from_json(bp.to_json())
    assert again == bp
    assert again.digest == bp.digest


def test_builder_takes_a_zoneinfo_and_defaults_to_utc() -> None:
    """A ``ZoneInfo`` is stored by its key; without ``tz`` the params carry no zone (UTC)."""
    zoned = create_flow("f").sleep("s", cron="@daily", tz=ZoneInfo("Asia/Tokyo")).to_blueprint()
    assert zoned.nodes[0].params == {"cron": "@daily", "tz": "Asia/Tokyo"}
    plain = create_flow("f").sleep("s", cron="@daily").to_blueprint()
    assert plain.nodes[0].params == {"cron": "@daily"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cron": "0 0 30 2 *"}, "never matches"),
        ({"cron": "0 25 * * *"}, "hour field '25'"),
        ({"cron": "0 2 * * *", "tz": "Paris"}, "unknown time zone"),
        ({"cron": "0 2 * * *", "duration": 5}, "exactly one of duration, until or cron"),
        ({"cron": "0 2 * * *", "until": datetime(2030, 1, 1, tzinfo=UTC)}, "exactly one"),
        ({"duration": 5, "tz": "UTC"}, "tz goes with cron only"),
        ({}, "exactly one of duration, until or cron"),
    ],
)
def test_to_blueprint_refuses_bad_cron_sleeps_naming_flow_and_node(
    kwargs: dict[str, object], match: str
) -> None:
    """Every mistake surfaces at ``to_blueprint()`` as ``InvalidDurationError`` naming the node."""
    flow = create_flow("nightly").sleep("at-two", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidDurationError, match=match) as info:
        flow.to_blueprint()
    assert "flow 'nightly': sleep 'at-two'" in str(info.value)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"cron": "0 0 31 2 *"}, "never matches"),
        ({"cron": "0 2 * * *", "tz": "Nowhere/Land"}, "unknown time zone"),
        ({"cron": "0 2 * * *", "duration": 1000}, "exactly one of duration, until or cron"),
        ({"duration": 1000, "tz": "UTC"}, "tz goes with cron only"),
        ({"cron": 5}, "a cron expression is a string"),
    ],
)
def test_blueprint_json_with_a_bad_cron_sleep_is_refused(
    params: dict[str, object], match: str
) -> None:
    """A hand-written or TS-authored blueprint gets the same validation on load."""
    doc = {"id": "nightly", "nodes": [{"id": "at-two", "uses": "sleep", "params": params}]}
    with pytest.raises(InvalidDurationError, match=match) as info:
        Blueprint.from_json(doc)
    assert "flow 'nightly': sleep 'at-two'" in str(info.value)


def test_blueprint_json_with_a_cron_sleep_loads() -> None:
    """``{"uses": "sleep", "params": {"cron": ..., "tz": ...}}`` is a valid blueprint."""
    doc = {
        "id": "nightly",
        "nodes": [{"id": "at-two", "uses": "sleep", "params": {"cron": "0 2 * * *", "tz": "UTC"}}],
        "edges": [],
    }
    assert Blueprint.from_json(doc).nodes[0].params == {"cron": "0 2 * * *", "tz": "UTC"}
