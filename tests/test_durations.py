"""Every time, duration and range a user types is a value or one line, exit 2.

parse_duration and parse_time over random strings (hypothesis) never raise anything but
DurationError and never return a value off the calendar qwatch's arithmetic works in;
`history` and `report` refuse out-of-range input against a real history on both engines.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from qwatch.cli import main
from qwatch.durations import (
    EARLIEST,
    LATEST,
    MAX_DURATION,
    DurationError,
    parse_duration,
    parse_time,
)
from tests.helpers import write_small_history

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)

_numbers = st.integers(min_value=0, max_value=10**40).map(str)
_durations = st.lists(
    st.tuples(_numbers, st.sampled_from("smhdwSMHDW")), min_size=1, max_size=4
).map(lambda parts: "".join(n + u for n, u in parts))
_offsets = st.sampled_from(["", "Z", "+00:00", "+05:30", "-23:59", "+14:00"])
_iso_times = st.builds(
    lambda y, mo, d, h, mi, off, sep: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}{off}",
    st.integers(0, 99999),
    st.integers(0, 13),
    st.integers(0, 32),
    st.integers(0, 25),
    st.integers(0, 60),
    _offsets,
    st.sampled_from(["T", " "]),
) | st.builds(lambda y: f"{y:04d}-01-01", st.integers(0, 99999))
_texts = st.text() | _durations | _iso_times | st.just("now")


@given(_texts)
@example("99999999999d")
@example("1" * 5000 + "d")
@example("0001-01-01")
@example("9999-12-31T23:00-05:00")
@example("0001-01-01T00:00+05:00")
def test_parse_duration_is_a_bounded_value_or_a_duration_error(text: str) -> None:
    try:
        span = parse_duration(text)
    except DurationError as error:
        assert "\n" not in str(error)
        return
    assert timedelta(0) <= span <= MAX_DURATION


@given(_texts)
@example("99999999999d")
@example("36525d")
@example("0001-01-01")
@example("9999-12-31T23:00-05:00")
@example("0001-01-01T00:00+05:00")
def test_parse_time_is_a_bounded_value_or_a_duration_error(text: str) -> None:
    try:
        moment = parse_time(text, NOW)
    except DurationError as error:
        assert "\n" not in str(error)
        return
    assert moment.tzinfo is UTC
    assert EARLIEST <= moment <= LATEST


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("99999999999d", "'99999999999d' is too long: at most 36525d"),
        ("36525d", "reaches back before 1970-01-01"),
        ("0001-01-01", "'0001-01-01' is out of range: use a time from 1970-01-01 to 9998-12-31"),
        ("9999-12-31T23:00-05:00", "is out of range"),
        ("2025-01-32", "cannot read '2025-01-32': day is out of range for month"),
    ],
)
def test_out_of_range_messages(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        parse_time(text, NOW)


def test_the_calendar_edges_still_read() -> None:
    assert parse_time("1970-01-01", NOW) == EARLIEST
    assert parse_duration("36525d") == MAX_DURATION


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def history_url(db_url: str) -> str:
    """A real history, on SQLite and PostgreSQL: one cluster, the last ten minutes."""
    write_small_history(db_url, datetime.now(UTC))
    return db_url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["history", "5ma11c1u", "--since", "0001-01-01"], "--since: '0001-01-01' is out of range"),
        (["history", "5ma11c1u", "--since", "99999999999d"], "--since: '99999999999d' is too long"),
        (["history", "5ma11c1u", "--until", "0001-01-01"], "--until: '0001-01-01' is out of range"),
        (["history", "5ma11c1u", "--every", "99999999999d"], "--every: '99999999999d' is too long"),
        (["report", "daily_availability", "--since", "0001-01-01"], "--since: '0001-01-01' is"),
        (["report", "restarts", "--since", "99999999999d"], "--since: '99999999999d' is too long"),
        (["report", "cluster_runs", "--until", "9999-12-31"], "--until: '9999-12-31' is out of"),
    ],
)
def test_out_of_range_input_is_one_line_exit_2(
    history_url: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main([*args, "--db", history_url])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("qwatch: ") and message in err and err.count("\n") == 1


def test_the_earliest_time_reads_the_whole_history(
    history_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (
        ["history", "5ma11c1u", "--since", "1970-01-01"],
        ["history", "5ma11c1u", "--since", "1970-01-01", "--every", "36525d"],
        ["report", "daily_availability", "--since", "1970-01-01"],
    ):
        code = main([*args, "--db", history_url])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "web-1" in out or "5ma11c1u" in out
