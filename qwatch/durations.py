"""Durations and points in time as people type them on the command line (pure: now is passed in).

`90m`, `2h`, `7d`, `1w`, `1h30m` are durations; `--since 2h` means two hours before now.
Anything else must be an ISO 8601 time (`2025-03-01`, `2025-03-01T10:00`, `…+02:00`, `…Z`);
one without an offset is UTC, because everything qwatch stores is UTC. Only input lives
here: durations and times are written out by `qwatch.fmt` (`fmt.duration` reads back here).

Both are bounded, so no later arithmetic (bucket edges, ranges) can leave the calendar:
a duration is at most MAX_DURATION and a time lies in [EARLIEST, LATEST]. Anything
else is a DurationError, whose message says what was expected.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from qwatch.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")
HINT = "a duration like 90m, 2h, 7d or an ISO time like 2025-03-01T10:00"
MAX_DURATION = timedelta(days=36525)  # a hundred years
# Nothing qwatch stores is older than the Unix epoch; the top leaves bucket arithmetic
# room below datetime.max.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
_RANGE_HINT = f"use a time from {EARLIEST:%Y-%m-%d} to {LATEST - timedelta(days=1):%Y-%m-%d}"


class DurationError(UserError, ValueError):
    """Text that is neither a duration nor a time; the message says what was expected."""


def parse_duration(text: str) -> timedelta:
    """`90m` -> 90 minutes; units s, m, h, d, w, combinable (`1h30m`); whole numbers only."""
    compact = text.strip().lower()
    if not _WHOLE.fullmatch(compact):
        if compact.isascii() and compact.isdigit() and len(compact) <= 12:
            n = compact
            raise DurationError(f"{_short(text)} has no unit: write {n}s, {n}m, {n}h or {n}d")
        raise DurationError(f"cannot read {_short(text)} as a duration (like 90m, 2h, 7d or 1h30m)")
    seconds: int | None
    try:
        seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(compact))
    except ValueError:  # more digits than int() reads: far too long anyway
        seconds = None
    if seconds is None or seconds > MAX_DURATION.total_seconds():
        raise DurationError(
            f"{_short(text)} is too long: at most {MAX_DURATION.days}d (a hundred years)"
        )
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime) -> datetime:
    """A duration before `now`, `now` itself, or an ISO time; always aware UTC, and
    within [EARLIEST, LATEST]."""
    compact = text.strip()
    if compact.lower() == "now":
        return now
    if _WHOLE.fullmatch(compact.lower()):
        span = parse_duration(compact)
        if now - EARLIEST < span:
            raise DurationError(
                f"{_short(text)} reaches back before {EARLIEST:%Y-%m-%d}: {_RANGE_HINT}"
            )
        return now - span
    try:
        # 3.11's fromisoformat reads dates, "T" or space, fractions, offsets and "Z".
        moment = datetime.fromisoformat(compact)
    except ValueError as error:
        reason = str(error)
        if reason.startswith("year "):  # "year 0 is out of range"
            raise DurationError(f"{_short(text)} is out of range: {_RANGE_HINT}") from None
        if "out of range" in reason or "must be in" in reason:  # day 32, month 13
            raise DurationError(f"cannot read {_short(text)}: {reason}") from None
        raise DurationError(f"cannot read {_short(text)}: use {HINT}") from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # an offset that moves it off the calendar's ends
        moment = EARLIEST - timedelta(days=1)
    if not EARLIEST <= moment <= LATEST:
        raise DurationError(f"{_short(text)} is out of range: {_RANGE_HINT}")
    return moment


def _short(text: str) -> str:
    """The user's text for a message, cut so a pasted page stays one line."""
    return repr(text if len(text) <= 40 else text[:37] + "...")
