"""Silences: which alerts a maintenance window keeps quiet (pure: the time is passed in).

A silence names a rule (or `all`), optionally a site and a host (None: every one), and
an end. An alert it matches is still recorded; nothing is sent for it until it ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from qwatch.alerts.rules import Alert

ALL = "all"


@dataclass(frozen=True, slots=True)
class Silence:
    id: int
    rule: str  # a rule name, or ALL
    site: str | None  # None: every site
    host: str | None  # None: every host (and the alerts that have none)
    until: datetime
    reason: str
    created_at: datetime

    def active(self, at: datetime) -> bool:
        return self.created_at <= at < self.until

    def matches(self, alert: Alert, at: datetime) -> bool:
        """Whether this silence, at `at`, keeps `alert` quiet."""
        return (
            self.active(at)
            and self.rule in (ALL, alert.rule)
            and self.site in (None, alert.site)
            and self.host in (None, alert.host)
        )


def silenced(alert: Alert, silences: Iterable[Silence], at: datetime) -> bool:
    return any(silence.matches(alert, at) for silence in silences)
