"""Alerts wired into the daemon, end to end: a real qcluster, real daemons, a real HTTP
receiver (aiohttp, in a thread of its own): cluster_down fires once after `for` (through a
receiver that answers 500 twice first), only the sampler of a pair sends, it resolves when
the cluster is back, is not sent again by a daemon taking over or restarted, is counted
on /metrics, and a silence holds; and, with a real SMTP server (aiosmtpd) and a command
target, killing workers in a row fires reincarnation_storm and a backlog fed to a cluster
whose workers are stopped (SIGSTOP) fires stuck."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from qwatch.values import ClusterStat
from tests.helpers import free_port, wait_for
from tests.plugins.qcluster import SECRET_KEY, DjangoProject
from tests.plugins.qwatch_daemon import DaemonProcess, query, run_qwatch
from tests.plugins.redis_server import RedisServer
from tests.test_alerts_notify import Mailbox
from tests.test_daemon import live_records

NAME = "qwatchtest"


@dataclass
class Receiver:
    """An aiohttp receiver on a loop in its own thread: every body it was sent."""

    bodies: list[Any] = field(default_factory=list)  # the ones answered 200
    refuse: int = 0  # answer this many requests 500 first
    requests: int = 0
    url: str = ""

    def statuses(self) -> list[tuple[str, list[str]]]:
        return [(b["status"], [a["labels"]["alertname"] for a in b["alerts"]]) for b in self.bodies]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        found.requests += 1
        if found.refuse > 0:
            found.refuse -= 1
            return web.Response(status=500, text="busy")
        found.bodies.append(body)
        return web.Response(text="ok")

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        found.url = f"http://{host}:{port}/hook"
        return runner

    def serve() -> None:
        asyncio.set_event_loop(loop)
        holder.append(loop.run_until_complete(start()))
        ready.set()
        loop.run_forever()

    holder: list[web.AppRunner] = []
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield found
    asyncio.run_coroutine_threadsafe(holder[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def alerts_config(path: Path, redis_url: str, hook: str) -> Path:
    path.write_text(
        f'[[sites]]\nname = "{NAME}"\nredis_url = "{redis_url}"\nsecret_key = "{SECRET_KEY}"\n\n'
        '[alerts]\nrepeat = "1h"\n\n'
        '[alerts.rules.cluster_down]\nfor = "2s"\n\n'
        f'[[notify]]\nkind = "webhook"\nurl = "{hook}?token=Sentinel-91c2"\n'
    )
    return path


def stored(db: str) -> list[tuple[Any, ...]]:
    return query(
        db,
        "SELECT rule, subject, resolved_at, last_notified_status, details FROM alerts "
        "ORDER BY started_at, id",
    )


@pytest.mark.slow
def test_cluster_down_fires_once_resolves_resumes_and_is_silenced(
    redis_server, django_project_factory, daemon_factory, receiver, tmp_path
):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    config = alerts_config(tmp_path / "qwatch.toml", redis_server.url, receiver.url)
    project = django_project_factory(redis_server.url, name=NAME)
    first = project.start_cluster()
    daemon = daemon_factory(db_url=db, config=config)
    daemon.wait_log("sampling site")
    standby = daemon_factory(db_url=db, config=config)
    standby.wait_log("standing by")
    wait_for(lambda: query(db, "SELECT 1 FROM events WHERE kind = 'appeared'"), 30, "appeared")
    assert receiver.bodies == [] and stored(db) == []
    receiver.refuse = 2  # retried after 1 s and 2 s: delivered on the third attempt

    # Stopped: down for `for` (2 s) once it is no longer live, then one message.
    stopping = time.monotonic()
    first.stop()  # returns once the cluster has exited: it stopped being live before that
    wait_for(lambda: receiver.bodies, 30, "a firing message", detail=lambda: daemon.log)
    assert time.monotonic() - stopping >= 2
    assert receiver.requests == 3
    [body] = receiver.bodies
    assert receiver.statuses() == [("firing", ["cluster_down"])]
    [alert] = body["alerts"]
    assert alert["labels"]["site"] == NAME and alert["labels"]["severity"] == "critical"
    host = alert["labels"]["host"]
    assert alert["details"]["held_s"] >= 2
    assert body["status"] == "firing" and alert["endsAt"] == "0001-01-01T00:00:00Z"
    wait_for(lambda: stored(db) and stored(db)[0][3] == "firing", 10, "last_notified_status")
    [(rule, subject, resolved_at, _, details)] = stored(db)
    assert (rule, subject, resolved_at) == ("cluster_down", host, None)
    assert json.loads(details)["for_s"] == 2.0
    assert "Sentinel-91c2" not in daemon.log  # the webhook's query string stays secret
    assert "sent FIRING qwatchtest: cluster_down" in daemon.log
    assert "(3 attempt(s)" in daemon.log
    # a standby neither evaluates nor sends
    assert "qwatch.alerts" not in standby.log and "alert cluster_down" not in standby.log

    # The standby takes over, then a restarted daemon: each resumes from the table, the
    # alert still firing, and neither sends it again.
    assert daemon.terminate() == 0
    standby.wait_log("sampling site")
    time.sleep(3)
    assert receiver.statuses() == [("firing", ["cluster_down"])], standby.log
    assert standby.terminate() == 0
    port = free_port()
    second = daemon_factory(db_url=db, config=config, args=["--listen", f"127.0.0.1:{port}"])
    second.wait_log("sampling site")
    time.sleep(4)
    assert receiver.statuses() == [("firing", ["cluster_down"])], second.log
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        metrics = reply.read().decode()
    assert f'qwatch_alerts_firing{{rule="cluster_down",site="{NAME}"}} 1.0' in metrics
    assert f'qwatch_alerts_firing{{rule="stuck",site="{NAME}"}} 0.0' in metrics
    assert len(stored(db)) == 1

    # Back: resolved, once.
    project.start_cluster()
    wait_for(lambda: len(receiver.bodies) == 2, 30, "a resolved message", detail=lambda: second.log)
    assert receiver.statuses() == [("firing", ["cluster_down"]), ("resolved", ["cluster_down"])]
    assert receiver.bodies[1]["alerts"][0]["endsAt"] != "0001-01-01T00:00:00Z"
    wait_for(lambda: stored(db)[0][3] == "resolved", 10, "resolved stored")
    assert stored(db)[0][2] is not None

    # Silenced: the alert is recorded, nothing is sent.
    silence = run_qwatch(
        "silence", "add", "cluster_down", "--site", NAME, "--for", "1h", "--reason", "upgrade",
        "--config", str(config), name=None, redis_url=None, db_url=db,
    )  # fmt: skip
    assert silence.returncode == 0, silence.stderr
    time.sleep(3)  # the daemon reads the silences every 2 s
    project.stop_all()
    wait_for(lambda: len(stored(db)) == 2, 30, "the silenced alert recorded")
    time.sleep(3)
    assert len(receiver.bodies) == 2, receiver.statuses()
    assert stored(db)[1][3] is None
    listed = run_qwatch(
        "alerts", "--format", "json", "--config", str(config), name=None, redis_url=None, db_url=db
    )
    assert listed.returncode == 0, listed.stderr
    [firing] = json.loads(listed.stdout)
    assert (firing["rule"], firing["subject"], firing["silenced"]) == ("cluster_down", host, True)
    assert second.terminate() == 0


COMMAND = """#!/bin/sh
# Each message the daemon sends, as its own file: the JSON on stdin, the rules it names.
out="$(dirname "$0")/got-$$"
cat > "$out.json"
printf '%s' "$QWATCH_ALERT_RULES" > "$out.rules"
"""


@pytest.mark.slow
def test_reincarnations_and_a_stuck_backlog_reach_a_command_and_an_smtp_server(
    redis_server: RedisServer,
    django_project_factory: Callable[..., DjangoProject],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    script = inbox / "page.sh"
    script.write_text(COMMAND)
    script.chmod(0o755)
    mailbox = Mailbox()
    port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    config = tmp_path / "qwatch.toml"
    config.write_text(
        f'[[sites]]\nname = "{NAME}"\nredis_url = "{redis_server.url}"\n'
        f'secret_key = "{SECRET_KEY}"\n\n'
        '[alerts.rules.reincarnation_storm]\ncount = 2\nwindow = "1m"\n\n'
        '[alerts.rules.stuck]\nfor = "3s"\n\n'
        f'[[notify]]\nkind = "command"\nargv = ["{script}"]\n\n'
        f'[[notify]]\nkind = "email"\nsmtp_url = "smtp://127.0.0.1:{port}?starttls=false"\n'
        'to = ["oncall@example.com"]\n'
    )
    project = django_project_factory(redis_server.url, name=NAME)
    stopped: list[int] = []

    def got(rule: str) -> list[dict[str, Any]]:
        """The firing bodies the command received that name `rule` (a storm's resolution,
        a minute after the first kill, may come in too on a slow machine)."""
        bodies = [
            json.loads(path.with_suffix(".json").read_text())
            for path in sorted(inbox.glob("got-*.rules"))
            if rule in path.read_text().split(",")
        ]
        return [body for body in bodies if body["status"] == "firing"]

    def mailed(rule: str) -> list[bytes]:
        return [content for _, _, content in mailbox.messages if rule.encode() in content]

    # The script writes its .rules file after the body: a body named there is complete.

    try:
        project.start_cluster()
        daemon = daemon_factory(db_url=db, config=config)
        daemon.wait_log("sampling site")
        record = wait_for(
            lambda: [r for r in live_records(redis_server) if r.status == "Idle" and r.pool == 2],
            30,
            "an idle cluster with two workers",
        )[0]

        # Two workers killed in a row: two reincarnations within the minute.
        for kills in (1, 2):
            os.kill(record.workers[0], signal.SIGKILL)

            def replaced(n: int = kills) -> list[ClusterStat]:
                return [
                    r for r in live_records(redis_server) if r.reincarnations >= n and r.pool == 2
                ]

            record = wait_for(replaced, 30, f"{kills} reincarnation(s)")[0]
        wait_for(lambda: got("reincarnation_storm"), 30, "the command", detail=lambda: daemon.log)
        [body] = got("reincarnation_storm")
        assert body["version"] == "4" and body["status"] == "firing"
        [alert] = body["alerts"]
        assert alert["labels"]["alertname"] == "reincarnation_storm"
        assert alert["labels"]["host"] == record.host
        wait_for(lambda: mailed("reincarnation_storm"), 30, "the email", detail=lambda: daemon.log)

        # Workers stopped, tasks fed: the pusher fills the cluster's own queue, the rest
        # stays in the broker and does not drain while the cluster still says it is up.
        stopped.extend(record.workers)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        project.enqueue(*["nap:0.1"] * 20)
        wait_for(lambda: got("stuck"), 40, "stuck through the command", detail=lambda: daemon.log)
        [body] = got("stuck")
        [alert] = body["alerts"]
        assert alert["labels"]["alertname"] == "stuck" and alert["labels"]["site"] == NAME
        assert "host" not in alert["labels"]  # a site-wide rule
        wait_for(lambda: mailed("stuck"), 30, "stuck by email", detail=lambda: daemon.log)
        assert all(b"oncall@example.com" in m for m in mailed("stuck"))
        rules = [rule for (rule,) in query(db, "SELECT rule FROM alerts ORDER BY started_at")]
        assert rules == ["reincarnation_storm", "stuck"]
        assert daemon.terminate() == 0
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        project.stop_all()
        smtp.stop()
