"""Every duration, time and id qwatch prints, formatted one way (pure: no I/O).

Times are shown in one `Zone`, the `display_time_zone` setting: UTC unless it says `local`
(the machine's zone) or an IANA name. Machine output (CSV, JSON) is `iso`, always UTC with
its offset, so it reads the same wherever it is made. Parsing what people type is
`qwatch.durations`; laying rows out as a table, CSV or JSON is `qwatch.output`.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

SHORT_ID = 8  # qmonitor shows a cluster id's last 8 characters


# --------------------------------------------------------------------------- durations


def hms(seconds: float | None) -> str:
    """Uptime as qmonitor shows it: h:mm:ss (hours grow past 24)."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def days_hms(seconds: float | None) -> str:
    """A long uptime in a narrow column: h:mm:ss below a day, 3d04:05 (days, hh:mm) above."""
    if seconds is None:
        return "-"
    days, rest = divmod(int(seconds), 86400)
    if not days:
        return hms(rest)
    return f"{days}d{rest // 3600:02d}:{rest % 3600 // 60:02d}"


def ago(seconds: float) -> str:
    """A short age, in its largest whole unit: 12s, 3m, 5h, 2d."""
    s = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def duration(span: timedelta) -> str:
    """The shortest text `durations.parse_duration` reads back as `span`: 30m, 1h30m, 7d, 45s."""
    seconds = int(span.total_seconds())
    if seconds <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


# --------------------------------------------------------------------------- ids


def short_id(cluster_id: str) -> str:
    """A cluster id as qmonitor shows it: its last 8 characters."""
    return cluster_id[-SHORT_ID:]


# --------------------------------------------------------------------------- times


@dataclass(frozen=True)
class Zone:
    """Where times are shown; `name` is what headers say: `time (UTC)`."""

    name: str  # "UTC", "local", or an IANA key
    tz: tzinfo | None  # None: the machine's zone at each moment, daylight saving included

    def at(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz)  # astimezone(None) is the machine's zone

    def header(self, column: str) -> str:
        """A column header that says its zone: `time (UTC)`."""
        return f"{column} ({self.name})"


UTC_ZONE = Zone("UTC", UTC)
LOCAL = "local"
ZONE_HINT = "UTC, local, or an IANA name like Europe/Paris"


def zone(name: str) -> Zone:
    """`UTC`, `local` or an IANA name as a Zone; ValueError when it is none of those."""
    if name.upper() == "UTC":
        return UTC_ZONE
    if name.lower() == LOCAL:
        return Zone(LOCAL, None)
    try:
        return Zone(name, zoneinfo.ZoneInfo(name))
    except Exception:  # not found, malformed key, a directory of the database…
        raise ValueError(f"unknown time zone {name!r} ({ZONE_HINT})") from None


DatePart = Literal["year", "day", "none"]
_DATES = {"year": "%Y-%m-%d ", "day": "%m-%d ", "none": ""}


def when(
    moment: datetime, zone: Zone = UTC_ZONE, *, date: DatePart = "year", seconds: bool = False
) -> str:
    """A time for people: `2025-03-01 10:00`, `03-01 10:00` (date="day"), `10:00:05`
    (date="none", seconds=True). The zone is not written: headers and titles say it."""
    clock = "%H:%M:%S" if seconds else "%H:%M"
    return zone.at(moment).strftime(_DATES[date] + clock)


def day(moment: datetime, zone: Zone = UTC_ZONE) -> str:
    """A date alone: `2025-03-01`."""
    return zone.at(moment).strftime("%Y-%m-%d")


def when_in(moment: datetime, zone: Zone = UTC_ZONE) -> str:
    """A time to the second that says its zone, for messages: `2025-03-01 10:00:05 UTC`."""
    return f"{when(moment, zone, seconds=True)} {zone.name}"


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with an explicit offset, or None: the form of CSV and JSON."""
    if moment is None:
        return None
    if moment.tzinfo is not UTC:  # the decoder's times are UTC already: no conversion
        moment = moment.astimezone(UTC)
    return moment.isoformat()
