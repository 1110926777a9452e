"""The listener end to end, once: a real Prometheus scrapes a real daemon watching a real
qcluster, through a real Redis and PostgreSQL, and both are taken away in turn."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from tests.helpers import free_port, wait_for
from tests.plugins.prometheus_server import PROMTOOL, SCRAPE_TOKEN, PrometheusServer
from tests.test_daemon import live_records

NAME = "qwatchtest"  # live_records reads this site


def get(url: str, token: str | None = SCRAPE_TOKEN) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def promtool_accepts(body: bytes) -> None:
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_prometheus_scrapes_a_daemon_through_outages(
    redis_server,
    django_project_factory,
    daemon_factory,
    postgres_server_factory,
    prometheus_server: PrometheusServer,
):
    pg = postgres_server_factory()
    db = pg.create_database("metrics")
    project = django_project_factory(redis_server.url, name=NAME)
    project.start_cluster()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    daemon = daemon_factory(
        name=NAME,
        redis_url=redis_server.url,
        db_url=db,
        args=["--listen", f":{port}"],
        env={"QWATCH_METRICS_TOKEN": SCRAPE_TOKEN},
    )
    prometheus_server.scrape(f"127.0.0.1:{port}")
    record = wait_for(
        lambda: [r for r in live_records(redis_server) if r.status == "Idle" and r.pool == 2],
        30,
        "an idle cluster with two workers",
    )[0]
    labels = f'site="{NAME}",cluster_id="{record.cluster_id}"'

    # Prometheus sees the cluster's workers and state through its query API.
    wait_for(
        lambda: prometheus_server.value(f"qwatch_cluster_workers{{{labels}}}") == 2,
        30,
        "Prometheus to see two workers",
    )
    assert prometheus_server.value(f'qwatch_cluster_state{{{labels},state="Idle"}}') == 1
    assert prometheus_server.value(f'qwatch_cluster_state{{{labels},state="Stopped"}}') == 0
    assert prometheus_server.value(f'up{{instance="127.0.0.1:{port}"}}') == 1
    # The dashboard's fleet table finds it too.
    rows = prometheus_server.query(
        'max by (site, host, cluster_id, state) (qwatch_cluster_state{site=~".*"} == 1)'
    )
    assert [(r["metric"]["cluster_id"], r["metric"]["state"]) for r in rows] == [
        (record.cluster_id, "Idle")
    ]

    # The token: every path but /healthz needs it; the daemon never logs it.
    assert get(f"{base}/healthz", token=None)[0] == 200
    for path in ("/metrics", "/readyz", "/api/clusters"):
        assert get(f"{base}{path}", token=None)[0] == 401
        assert get(f"{base}{path}", token="wrong")[0] == 401
    status, body = get(f"{base}/metrics")
    assert status == 200
    promtool_accepts(body)
    status, body = get(f"{base}/api/clusters")
    assert status == 200 and record.cluster_id.encode() in body

    # A killed worker raises the reincarnations counter.
    os.kill(record.workers[0], signal.SIGKILL)
    wait_for(
        lambda: (
            (prometheus_server.value(f"qwatch_cluster_reincarnations_total{{{labels}}}") or 0) >= 1
        ),
        30,
        "Prometheus to see a reincarnation",
    )
    promtool_accepts(get(f"{base}/metrics")[1])

    # A database outage: scrapes still answer, from memory, and quickly.
    pg.stop()
    try:
        time.sleep(2)
        started = time.monotonic()
        status, body = get(f"{base}/metrics")
        assert status == 200 and time.monotonic() - started < 1.0
        assert b"qwatch_redis_up" in body
        promtool_accepts(body)
        assert get(f"{base}/readyz")[0] == 200  # a few polls buffered: far from half full
    finally:
        pg.start()

    # A Redis outage: redis_up 0 and not ready, yet alive.
    redis_server.stop()
    try:
        wait_for(lambda: get(f"{base}/readyz")[0] == 503, 20, "/readyz to fail")
        status, body = get(f"{base}/readyz")
        assert b"Redis not read" in body
        assert get(f"{base}/healthz", token=None)[0] == 200
        wait_for(
            lambda: prometheus_server.value(f'qwatch_redis_up{{site="{NAME}"}}') == 0,
            30,
            "Prometheus to see Redis down",
        )
        promtool_accepts(get(f"{base}/metrics")[1])
    finally:
        redis_server.start()
    wait_for(lambda: get(f"{base}/readyz")[0] == 200, 60, "/readyz back once Redis is")

    prometheus_server.scrape()
    assert daemon.terminate() == 0
    assert SCRAPE_TOKEN not in daemon.log
    assert "serving /metrics" in daemon.log
