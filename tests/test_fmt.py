"""qwatch.fmt: durations, times in the display zone, ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from qwatch import fmt
from qwatch.durations import parse_duration

S, M, H, D = (timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1),
              timedelta(days=1))  # fmt: skip
AT = datetime(2025, 3, 1, 10, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("span_", "text"), [(30 * M, "30m"), (H, "1h"), (90 * M, "1h30m"), (7 * D, "7d"),
                        (45 * S, "45s"), (timedelta(0), "0s")],
)  # fmt: skip
def test_duration_reads_back(span_: timedelta, text: str) -> None:
    assert fmt.duration(span_) == text
    if span_:
        assert parse_duration(text) == span_


def test_durations() -> None:
    assert fmt.hms(None) == "-" and fmt.hms(-3) == "0:00:00" and fmt.hms(3723) == "1:02:03"
    assert fmt.days_hms(3723) == "1:02:03" and fmt.days_hms(2 * 86400 + 3723) == "2d01:02"
    assert fmt.days_hms(None) == "-"
    assert [fmt.ago(s) for s in (0, 59, 60, 3 * 3600 + 5, 2 * 86400)] == [
        "0s",
        "59s",
        "1m",
        "3h",
        "2d",
    ]


def test_short_id_is_qmonitors() -> None:
    assert fmt.short_id("a1b2c3d4-0000-4000-8000-00000000b002") == "0000b002"
    assert fmt.short_id("1234") == "1234"


def test_times_in_utc_by_default() -> None:
    moment = AT.astimezone(timezone(timedelta(hours=2)))  # the same instant, written in +02:00
    assert fmt.when(moment) == "2025-03-01 10:00"
    assert fmt.when(moment, date="day", seconds=True) == "03-01 10:00:05"
    assert fmt.when(moment, date="none", seconds=True) == "10:00:05"
    assert fmt.day(moment) == "2025-03-01"
    assert fmt.when_in(moment) == "2025-03-01 10:00:05 UTC"
    assert fmt.iso(moment) == "2025-03-01T10:00:05+00:00" and fmt.iso(None) is None


def test_zones() -> None:
    assert fmt.zone("UTC") is fmt.UTC_ZONE and fmt.zone("utc") is fmt.UTC_ZONE
    paris = fmt.zone("Europe/Paris")
    assert fmt.when(AT, paris) == "2025-03-01 11:00"  # CET in winter
    assert fmt.when(AT + 120 * D, paris) == "2025-06-29 12:00"  # CEST in summer
    assert paris.header("time") == "time (Europe/Paris)"
    local = fmt.zone("local")
    assert local.name == "local" and fmt.when(AT, local) == AT.astimezone().strftime(
        "%Y-%m-%d %H:%M"
    )
    for bad in ("Mars/Olympus", "", "../etc"):
        with pytest.raises(ValueError, match="unknown time zone"):
            fmt.zone(bad)
