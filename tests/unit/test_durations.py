"""`--older-than` durations: `30m`, `12h`, `7d`; anything else one clear UsageError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from krnet.core.model.durations import UNITS, format_duration, parse_duration
from krnet.errors import UsageError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30m", 1800),
        ("12h", 43_200),
        ("7d", 604_800),
        ("45s", 45),
        ("2w", 1_209_600),
        ("1h30m", 5400),
        ("0s", 0),
        (" 7D ", 604_800),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "d", "7x", "-1d", "1.5h", "7 d", "1h 30m", "h1", "7dd"])
def test_bad_durations_name_the_option_and_examples(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration(text)
    message = str(caught.value)
    assert message.startswith(f"--older-than {text!r} is not a duration")
    assert "30m, 12h or 7d" in message


@given(st.integers(min_value=0, max_value=10**9))
def test_format_and_parse_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


def test_a_duration_beyond_a_century_is_refused() -> None:
    assert parse_duration("5200w") == 5200 * 604_800
    with pytest.raises(UsageError, match="longer than 100 years"):
        parse_duration("99999999999999d")


def test_units_are_the_documented_ones() -> None:
    assert set(UNITS) == {"s", "m", "h", "d", "w"}
