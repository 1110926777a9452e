"""Durations and points in time as people type them on the command line (pure: now is passed in).

`90m`, `2h`, `7d`, `1w`, `1h30m` are durations; `--since 2h` means two hours before now.
Anything else must be an ISO 8601 time (`2025-03-01`, `2025-03-01T10:00`, `…+02:00`, `…Z`);
one without an offset is UTC, because everything qwatch stores is UTC. Only input lives
here: durations and times are written out by `qwatch.fmt` (`fmt.duration` reads back here).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from qwatch.errors import UserError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART = re.compile(r"(\d+)([smhdw])")
_WHOLE = re.compile(r"(?:\d+[smhdw])+")
HINT = "a duration like 90m, 2h, 7d or an ISO time like 2025-03-01T10:00"


class DurationError(UserError, ValueError):
    """Text that is neither a duration nor a time; the message says what was expected."""


def parse_duration(text: str) -> timedelta:
    """`90m` -> 90 minutes; units s, m, h, d, w, combinable (`1h30m`); whole numbers only."""
    compact = text.strip().lower()
    if not _WHOLE.fullmatch(compact):
        if compact.isdigit():
            raise DurationError(f"{text!r} has no unit: write {text}s, {text}m, {text}h or {text}d")
        raise DurationError(f"cannot read {text!r} as a duration (like 90m, 2h, 7d or 1h30m)")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(compact))
    return timedelta(seconds=seconds)


def parse_time(text: str, now: datetime) -> datetime:
    """A duration before `now`, `now` itself, or an ISO time; always aware UTC."""
    compact = text.strip()
    if compact.lower() == "now":
        return now
    if _WHOLE.fullmatch(compact.lower()):
        return now - parse_duration(compact)
    try:
        # 3.11's fromisoformat reads dates, "T" or space, fractions, offsets and "Z".
        moment = datetime.fromisoformat(compact)
    except ValueError:
        raise DurationError(f"cannot read {text!r}: use {HINT}") from None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
