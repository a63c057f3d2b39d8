"""Durations: seconds in Python, compound strings, and a warning for what looks like ms."""

from __future__ import annotations

import warnings
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowcraft import FlowcraftWarning, InvalidDurationError, create_flow
from flowcraft._flow.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1h30m", 5400),
        ("2d12h", 216000),
        ("1m30s", 90),
        ("500ms", 0.5),
        ("2d 12h", 216000),
        ("1.5h", 5400),
        ("1s500ms", 1.5),
        ("PT1H30M", 5400),
    ],
)
def test_compound_strings_parse(text: str, seconds: float) -> None:
    """Compound and simple strings give the seconds they say."""
    assert parse_duration(text, "here") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30m1h", "1h1h", "1h30", "h", "1 hour"])
def test_malformed_strings_say_what_to_write(text: str) -> None:
    """Units out of order, repeated or missing are refused with the accepted forms."""
    with pytest.raises(InvalidDurationError, match=r"here: invalid duration .*'1h30m'"):
        parse_duration(text, "here")


@given(st.integers(min_value=0, max_value=10**11))
def test_format_and_parse_round_trip(ms: int) -> None:
    """Every whole number of milliseconds formats to a string that parses back to it."""
    assert round(parse_duration(format_duration(ms / 1000), "x") * 1000) == ms



def test_millisecond_looking_number_warns_at_to_blueprint() -> None:
    """The guide's ``duration: 3600000`` ("1 hour" in ms) warns, naming flow, node and fix."""
    flow = create_flow("delayed-notification").sleep("delay", duration=3600000)
    with pytest.warns(FlowcraftWarning) as caught:
        bp = flow.to_blueprint()
    text = str(caught[0].message)
    assert "flow 'delayed-notification': sleep 'delay' duration is 3600000 seconds" in text
    assert "pass 3600 or '1h'" in text
    assert bp.nodes[0].params == {"duration": 3600000000}  # seconds, as documented


@pytest.mark.parametrize(
    "build",
    [
        lambda f: f.node("n", print, timeout=2_000_000),
        lambda f: f.node("n", print, retry_delay=5_000_000.0),
        lambda f: f.wait("w", timeout=86400000),
    ],
)
def test_every_bare_duration_is_checked(build: object) -> None:
    """Node timeouts, retry delays and wait timeouts warn too."""
    flow = build(create_flow("d"))  # type: ignore[operator]
    with pytest.warns(FlowcraftWarning, match="Builder durations are seconds"):
        flow.to_blueprint()


def test_plain_seconds_strings_and_timedeltas_do_not_warn() -> None:
    """Below the threshold, and any string or timedelta, is taken as meant."""
    flow = (
        create_flow("d")
        .sleep("a", duration=999_999)
        .sleep("b", duration="1000h")
        .sleep("c", duration=timedelta(days=100))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        flow.to_blueprint()


def test_invalid_sleep_duration_names_the_flow_once() -> None:
    """The message reads ``flow 'd': sleep 's' duration: invalid ...`` (no doubled prefix)."""
    flow = create_flow("d").sleep("s", duration="soon")
    with pytest.raises(InvalidDurationError) as info:
        flow.to_blueprint()
    message = str(info.value)
    assert message.startswith("flow 'd': sleep 's' duration: invalid duration 'soon'")
    assert message.count("flow 'd'") == 1
    assert "Use seconds" in message
