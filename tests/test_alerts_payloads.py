"""The notification bodies: Alertmanager's webhook shape, Slack text, command env, email."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from qwatch.alerts.payloads import (
    ZERO_TIME,
    Message,
    alertmanager_body,
    command_env,
    email_message,
    slack_body,
)
from qwatch.alerts.rules import Alert
from tests.helpers import ALERT_T0, down_alert

T0 = ALERT_T0

DOWN = down_alert()
FULL = Alert(
    rule="queue_full",
    site="shop",
    subject="c-0123456789",
    severity="warning",
    summary="shop: cluster 23456789 on web1 has had its task queue at queue_limit 4 for 5m; …",
    started_at=T0 + timedelta(seconds=5),
    ended_at=T0 + timedelta(minutes=20, seconds=5),
    host="web1",
    cluster_id="c-0123456789",
    details={"task_q_size": 4, "queue_limit": 4},
)


def test_alertmanager_body_version_4() -> None:
    body = alertmanager_body(Message("shop", (DOWN, FULL)))
    json.dumps(body)
    assert body["version"] == "4"
    assert body["status"] == "firing"  # one of its alerts still fires
    assert body["groupLabels"] == {"site": "shop"}
    assert body["groupKey"] == '{}:{site="shop"}'
    assert body["commonLabels"] == {"site": "shop", "host": "web1"}
    assert body["commonAnnotations"] == {}
    assert body["truncatedAlerts"] == 0 and body["receiver"] == "qwatch"
    first, second = body["alerts"]
    assert first["status"] == "firing"
    assert first["labels"] == {
        "alertname": "cluster_down",
        "site": "shop",
        "host": "web1",
        "severity": "critical",
    }
    assert first["annotations"] == {"summary": DOWN.summary}
    assert first["startsAt"] == "2026-12-01T09:00:00Z" and first["endsAt"] == ZERO_TIME
    assert first["details"]["held_s"] == 60.0
    assert second["status"] == "resolved"
    assert second["labels"]["cluster_id"] == "c-0123456789"
    assert second["endsAt"] == "2026-12-01T09:20:05Z"
    assert len({first["fingerprint"], second["fingerprint"]}) == 2
    # the fingerprint follows the labels only: the same alert next time has the same one
    again = alertmanager_body(Message("shop", (DOWN,)))
    assert again["alerts"][0]["fingerprint"] == first["fingerprint"]
    assert again["commonLabels"] == first["labels"]
    assert again["commonAnnotations"] == {"summary": DOWN.summary}


def test_resolved_message() -> None:
    body = alertmanager_body(Message("shop", (FULL,)))
    assert body["status"] == "resolved"


def test_slack_body() -> None:
    assert slack_body(Message("shop", (DOWN, FULL))) == {
        "text": f"[FIRING] cluster_down (critical) {DOWN.summary}\n"
        f"[RESOLVED] queue_full after 20m: {FULL.summary}"
    }


def test_command_env() -> None:
    env = command_env(Message("shop", (DOWN,)))
    assert env == {
        "QWATCH_ALERT_STATUS": "firing",
        "QWATCH_ALERT_SITE": "shop",
        "QWATCH_ALERT_COUNT": "1",
        "QWATCH_ALERT_RULES": "cluster_down",
        "QWATCH_ALERT_SEVERITY": "critical",
        "QWATCH_ALERT_SUMMARY": f"[FIRING] cluster_down (critical) {DOWN.summary}",
        "QWATCH_ALERT_RULE": "cluster_down",
        "QWATCH_ALERT_HOST": "web1",
        "QWATCH_ALERT_CLUSTER_ID": "",
        "QWATCH_ALERT_STARTS_AT": "2026-12-01T09:00:00Z",
        "QWATCH_ALERT_ENDS_AT": "",
    }
    several = command_env(Message("shop", (DOWN, FULL)))
    assert several["QWATCH_ALERT_COUNT"] == "2" and "QWATCH_ALERT_RULE" not in several
    assert several["QWATCH_ALERT_RULES"] == "cluster_down,queue_full"
    assert command_env(Message("shop", (FULL,)))["QWATCH_ALERT_SEVERITY"] == "warning"


def test_email_message() -> None:
    email = email_message(
        Message("shop", (DOWN,)), sender="qwatch@example.com", to=["a@example.com"], now=T0
    )
    assert email["Subject"] == "[qwatch] FIRING shop: cluster_down web1"
    assert email["To"] == "a@example.com" and email["From"] == "qwatch@example.com"
    text = email.get_content()
    assert DOWN.summary in text and "held_s=60.0" in text
    several = email_message(Message("shop", (DOWN, FULL)), sender="q@x", to=["a@x"], now=T0)
    assert several["Subject"] == "[qwatch] FIRING shop: 2 alerts (cluster_down, queue_full)"


def test_a_message_is_one_site_and_not_empty() -> None:
    with pytest.raises(ValueError):
        Message("shop", ())
    with pytest.raises(ValueError):
        Message("other", (DOWN,))
