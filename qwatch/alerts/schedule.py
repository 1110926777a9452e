"""Which alerts to send after a poll (pure: the poll's time is the only clock).

After each poll of a site, `due` answers the messages to send: one `firing` message with
the alerts that fired (and those never sent yet, say after a silence ended, and the
reminders every `repeat_s`), and one `resolved` message with the alerts that resolved
after their firing was sent. `sent` says what went out for each alert (resumed from the
alerts table by a restarted daemon, so nothing goes out twice); `held` keys are not
tried before the time given (a message in flight, or one that failed on every target).
Silenced alerts are left out: they are sent once their silence ends (a resolution only
if their firing was sent).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from qwatch.alerts.payloads import FIRING, Message
from qwatch.alerts.rules import Alert, AlertKey, Change
from qwatch.alerts.silences import Silence, silenced


@dataclass(frozen=True, slots=True)
class Sent:
    """The last message that went out for one alert start."""

    started_at: datetime  # which start of the alert it was about
    status: str  # firing | resolved
    at: datetime


def _was_sent_firing(alert: Alert, sent: Mapping[AlertKey, Sent]) -> Sent | None:
    last = sent.get(alert.key)
    if last is None or last.started_at != alert.started_at or last.status != FIRING:
        return None
    return last


def due(
    site: str,
    change: Change,
    sent: Mapping[AlertKey, Sent],
    *,
    at: datetime,
    repeat_s: float,
    silences: Iterable[Silence] = (),
    held: Mapping[AlertKey, datetime] | None = None,
) -> list[Message]:
    quiet = tuple(silences)
    waiting = held or {}

    def sendable(alert: Alert) -> bool:
        until = waiting.get(alert.key)
        return (until is None or at >= until) and not silenced(alert, quiet, at)

    firing = []
    for alert in change.firing:
        last = _was_sent_firing(alert, sent)
        reminder = last is not None and repeat_s > 0 and (at - last.at).total_seconds() >= repeat_s
        if (last is None or reminder) and sendable(alert):
            firing.append(alert)
    resolved = [
        alert
        for alert in change.resolved
        if _was_sent_firing(alert, sent) is not None and not silenced(alert, quiet, at)
    ]
    return [Message(site, tuple(alerts)) for alerts in (firing, resolved) if alerts]
