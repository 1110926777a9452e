"""What a notification says, per target kind (pure: no I/O, no clock but the alerts' times).

A `Message` is the alerts of one site that go out together (those that fired or resolved
in one poll, or a reminder). From it come:

    alertmanager_body   Alertmanager's webhook body, version "4" (docs/alerts.md)
    slack_body          {"text": …}, for Slack and Mattermost incoming webhooks
    command_env         the QWATCH_ALERT_* variables a command target is given
    email_message       a plain-text email

The command target reads alertmanager_body as JSON on its stdin.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

from qwatch.alerts.rules import CRITICAL, Alert
from qwatch.fmt import duration

FIRING = "firing"
RESOLVED = "resolved"
# Alertmanager's endsAt for an alert still firing: Go's zero time.
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True, slots=True)
class Message:
    site: str
    alerts: tuple[Alert, ...]

    def __post_init__(self) -> None:
        if not self.alerts:
            raise ValueError("a message carries at least one alert")
        if any(alert.site != self.site for alert in self.alerts):
            raise ValueError("a message carries the alerts of one site")

    @property
    def status(self) -> str:
        """firing while any of its alerts fires, as Alertmanager groups say."""
        return FIRING if any(alert.firing for alert in self.alerts) else RESOLVED


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id of an alert's labels (16 hex digits, as Alertmanager's are)."""
    text = "\x00".join(f"{key}\x00{labels[key]}" for key in sorted(labels))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _status(alert: Alert) -> str:
    return FIRING if alert.firing else RESOLVED


def _common(dicts: Sequence[Mapping[str, str]]) -> dict[str, str]:
    first, *rest = dicts
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in rest)}


def alertmanager_body(message: Message, *, receiver: str = "qwatch") -> dict[str, Any]:
    """Alertmanager's webhook shape, so receivers built for it take qwatch's unchanged.

    Each alert also carries `details`, the numbers behind it (receivers ignore extra keys).
    """
    alerts: list[dict[str, Any]] = []
    every_labels: list[dict[str, str]] = []
    every_annotations: list[dict[str, str]] = []
    for alert in message.alerts:
        labels = alert.labels
        annotations = {"summary": alert.summary}
        every_labels.append(labels)
        every_annotations.append(annotations)
        alerts.append(
            {
                "status": _status(alert),
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339(alert.started_at),
                "endsAt": ZERO_TIME if alert.ended_at is None else rfc3339(alert.ended_at),
                "generatorURL": "",
                "fingerprint": fingerprint(labels),
                "details": dict(alert.details),
            }
        )
    group = {"site": message.site}
    return {
        "version": "4",
        "groupKey": "{}:" + "{" + ",".join(f"{k}={json.dumps(v)}" for k, v in group.items()) + "}",
        "truncatedAlerts": 0,
        "status": message.status,
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": _common(every_labels),
        "commonAnnotations": _common(every_annotations),
        "externalURL": "",
        "alerts": alerts,
    }


def line_of(alert: Alert) -> str:
    """One alert as one line: status, rule, severity, and the summary (or how long it lasted)."""
    if alert.firing:
        return f"[FIRING] {alert.rule} ({alert.severity}) {alert.summary}"
    assert alert.ended_at is not None
    lasted = duration(alert.ended_at - alert.started_at)
    return f"[RESOLVED] {alert.rule} after {lasted}: {alert.summary}"


def slack_body(message: Message) -> dict[str, str]:
    return {"text": "\n".join(line_of(alert) for alert in message.alerts)}


def command_env(message: Message) -> dict[str, str]:
    """QWATCH_ALERT_* for a command target; per-alert fields only when it carries one alert."""
    alerts = message.alerts
    severities = {alert.severity for alert in alerts}
    env = {
        "QWATCH_ALERT_STATUS": message.status,
        "QWATCH_ALERT_SITE": message.site,
        "QWATCH_ALERT_COUNT": str(len(alerts)),
        "QWATCH_ALERT_RULES": ",".join(sorted({alert.rule for alert in alerts})),
        "QWATCH_ALERT_SEVERITY": CRITICAL if CRITICAL in severities else min(severities),
        "QWATCH_ALERT_SUMMARY": "\n".join(line_of(alert) for alert in alerts),
    }
    if len(alerts) == 1:
        (alert,) = alerts
        env["QWATCH_ALERT_RULE"] = alert.rule
        env["QWATCH_ALERT_HOST"] = alert.host or ""
        env["QWATCH_ALERT_CLUSTER_ID"] = alert.cluster_id or ""
        env["QWATCH_ALERT_STARTS_AT"] = rfc3339(alert.started_at)
        env["QWATCH_ALERT_ENDS_AT"] = "" if alert.ended_at is None else rfc3339(alert.ended_at)
    return env


def subject_of(message: Message) -> str:
    alerts = message.alerts
    if len(alerts) == 1:
        (alert,) = alerts
        about = f"{alert.rule} {alert.subject}".rstrip()
    else:
        about = f"{len(alerts)} alerts ({', '.join(sorted({a.rule for a in alerts}))})"
    return f"[qwatch] {message.status.upper()} {message.site}: {about}"


def email_message(
    message: Message, *, sender: str, to: Sequence[str], now: datetime
) -> EmailMessage:
    email = EmailMessage()
    email["Subject"] = subject_of(message)
    email["From"] = sender
    email["To"] = ", ".join(to)
    email["Date"] = format_datetime(now.astimezone(UTC))
    email["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    parts = []
    for alert in message.alerts:
        times = f"started {rfc3339(alert.started_at)}"
        if alert.ended_at is not None:
            times += f", resolved {rfc3339(alert.ended_at)}"
        numbers = ", ".join(f"{key}={value}" for key, value in sorted(alert.details.items()))
        parts.append(f"{line_of(alert)}\n  {times}\n  {numbers}")
    email.set_content("\n\n".join(parts) + "\n")
    return email
