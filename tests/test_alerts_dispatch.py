"""The daemon's alerting state and delivery task: a real aiohttp receiver, no daemon."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from qwatch.alerts.dispatch import RETRY_FAILED_S, Dispatcher, SiteAlerts
from qwatch.alerts.rules import Alert, Evaluator, Poll
from qwatch.alerts.silences import Silence
from qwatch.alerts.thresholds import Threshold
from qwatch.config import AlertSettings, WebhookTarget
from tests.helpers import cluster_stat, free_port, wait_for_async

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SITE = "shop"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def site_alerts() -> SiteAlerts:
    return SiteAlerts(Evaluator(SITE, {"cluster_down": Threshold(for_s=0)}, hosts={"web1"}))


def down(alerts: SiteAlerts, at: float) -> None:
    alerts.evaluate(Poll(SITE, t(at)), ())


def up(alerts: SiteAlerts, at: float) -> None:
    live = cluster_stat("c-1", name=SITE, host="web1", status="Idle")
    alerts.evaluate(Poll(SITE, t(at), (live,)), ())


def test_planned_once_per_poll_and_a_failure_retried_later() -> None:
    alerts = site_alerts()
    down(alerts, 0)
    [message] = alerts.plan(t(0), 3600, ())
    assert message.status == "firing"
    assert alerts.plan(t(0), 3600, ()) == []  # in flight: not planned again
    down(alerts, 1)
    assert alerts.plan(t(1), 3600, ()) == []
    alerts.failed(message, t(0))  # no target took it
    down(alerts, 2)
    assert alerts.plan(t(2), 3600, ()) == []
    down(alerts, RETRY_FAILED_S)
    [again] = alerts.plan(t(RETRY_FAILED_S), 3600, ())
    assert again.alerts[0].started_at == message.alerts[0].started_at
    up(alerts, RETRY_FAILED_S + 1)
    [resolved] = alerts.plan(t(RETRY_FAILED_S + 1), 3600, ())
    assert resolved.status == "resolved" and alerts.sent == {}


def test_a_silenced_alert_is_sent_when_the_silence_ends_and_resumed_ones_are_not_resent() -> None:
    alerts = site_alerts()
    quiet = [Silence(1, "all", None, None, t(30), "upgrade", t(-1))]
    down(alerts, 0)
    assert alerts.plan(t(0), 3600, quiet) == []
    down(alerts, 30)
    [message] = alerts.plan(t(30), 3600, quiet)
    fired = message.alerts[0]

    resumed = SiteAlerts.resumed(
        Evaluator(SITE, {"cluster_down": Threshold(for_s=0)}, firing=[fired]),
        [(fired, "firing", t(30))],
    )
    down(resumed, 31)
    assert resumed.plan(t(31), 3600, ()) == []
    down(resumed, 30 + 3600)
    assert [m.status for m in resumed.plan(t(30 + 3600), 3600, ())] == ["firing"]  # reminder


class Hook:
    def __init__(self) -> None:
        self.bodies: list[Any] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(text="ok")


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    found = Hook()
    app = web.Application()
    app.router.add_post("/hook", found.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    yield found, f"http://{host}:{port}/hook"
    await runner.cleanup()


async def test_the_task_sends_stores_and_reports_a_down_target_once_a_minute(
    hook: tuple[Hook, str], caplog: pytest.LogCaptureFixture
) -> None:
    receiver, url = hook
    dead = f"http://127.0.0.1:{free_port()}/hook?token=Sentinel-5d1"
    settings = AlertSettings(
        timeout_s=2, attempts=1, targets=(WebhookTarget(url=url), WebhookTarget(url=dead))
    )
    stored: list[tuple[str, tuple[tuple[Alert, str, datetime], ...]]] = []

    async def no_silences(at: datetime) -> list[Silence]:
        return []

    dispatcher = Dispatcher(settings, no_silences, lambda site, sent: stored.append((site, sent)))
    task = asyncio.create_task(dispatcher.run())
    caplog.set_level(logging.INFO, "qwatch.alerts")
    try:
        alerts = site_alerts()
        down(alerts, 0)
        dispatcher.after_poll(alerts, t(0))
        up(alerts, 1)
        dispatcher.after_poll(alerts, t(1))
        await wait_for_async(lambda: len(stored) == 2, 10, "two messages stored")
    finally:
        task.cancel()
    assert [body["status"] for body in receiver.bodies] == ["firing", "resolved"]
    assert [(site, [status for _, status, _ in sent]) for site, sent in stored] == [
        (SITE, ["firing"]),
        (SITE, ["resolved"]),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    at_start = [w for w in warnings if "cannot be reached now" in w]
    assert len(at_start) == 1, warnings  # the dead target, told once at start
    warnings = [w for w in warnings if w not in at_start]
    assert len(warnings) == 1, warnings  # two messages failed there, reported once
    assert (
        "could not send FIRING shop: cluster_down web1 to webhook http://127.0.0.1" in warnings[0]
    )
    assert "Sentinel-5d1" not in caplog.text
