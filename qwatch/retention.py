"""How long each kind of history row is kept: one definition for the daemon, the store and
the read side (which picks the finest table that still reaches back far enough).

The defaults keep 50 clusters under 1 GB for good (docs/performance.md, section 4): raw
samples for a week, minute rollups for two (the monitor's 7 d range reads them), hour
rollups and events for three years.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

KEEP_SAMPLES_DAYS = 7
KEEP_MINUTES_DAYS = 14
KEEP_HOURS_DAYS = 1095


@dataclass(frozen=True)
class Retention:
    samples: timedelta = timedelta(days=KEEP_SAMPLES_DAYS)
    minutes: timedelta = timedelta(days=KEEP_MINUTES_DAYS)
    hours: timedelta = timedelta(days=KEEP_HOURS_DAYS)
    events: timedelta = timedelta(days=KEEP_HOURS_DAYS)  # and closed Redis gaps

    @classmethod
    def of_days(cls, samples: int, minutes: int, hours: int) -> Retention:
        """From the [daemon] keep_*_days settings; events live as long as hour rollups."""
        return cls(
            timedelta(days=samples),
            timedelta(days=minutes),
            timedelta(days=hours),
            timedelta(days=hours),
        )

    @property
    def longest(self) -> timedelta:
        return max(self.samples, self.minutes, self.hours, self.events)
