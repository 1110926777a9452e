"""/metrics text from a View, and the listener's endpoints and token, without a daemon."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from qwatch.config import ListenAddress
from qwatch.errors import ConfigError
from qwatch.serve.metrics import render
from qwatch.serve.server import Listener, make_app
from qwatch.values import Backlog
from tests.serve_helpers import SITE, T0, snapshot, stat, state_after

PROMTOOL = shutil.which("promtool")


def samples(text: bytes) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_metrics_carry_the_documented_names_and_labels():
    gone = stat("b", host="web2", status="Working")
    state = state_after(
        snapshot(T0, stat("a"), gone, events={"appeared": 2}),
        snapshot(
            T0 + timedelta(seconds=1),
            stat("a", status="Working", reincarnations=4, task_q_size=7),
            events={"vanished": 1},
        ),
    )
    got = samples(render(state.view()))
    a = {"site": SITE, "host": "web1", "cluster_id": "a"}
    b = {"site": SITE, "host": "web2", "cluster_id": "b"}

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset(labels.items()))]

    assert value("qwatch_cluster_info", **a, pid="100") == 1
    assert ("qwatch_cluster_info", frozenset({**b, "pid": "100"}.items())) not in got
    assert value("qwatch_cluster_state", **a, state="Working") == 1
    assert value("qwatch_cluster_state", **a, state="Idle") == 0
    assert value("qwatch_cluster_state", **b, state="Working") == 0  # vanished: no state
    assert value("qwatch_cluster_workers", **a) == 2
    assert value("qwatch_cluster_task_queue_size", **a) == 7
    assert value("qwatch_cluster_result_queue_size", **a) == 0
    assert value("qwatch_cluster_reincarnations_total", **a) == 4
    assert value("qwatch_cluster_start_time_seconds", **a) == (T0 - timedelta(hours=1)).timestamp()
    assert value("qwatch_host_clusters", site=SITE, host="web1") == 1
    assert value("qwatch_host_clusters", site=SITE, host="web2") == 0
    assert value("qwatch_site_clusters", site=SITE) == 1
    assert value("qwatch_broker_queue_length", site=SITE, queue=SITE, broker="redis") == 3
    assert value("qwatch_events_total", site=SITE, kind="appeared") == 2
    assert value("qwatch_events_total", site=SITE, kind="vanished") == 1
    assert value("qwatch_redis_up", site=SITE) == 1
    assert (
        value("qwatch_last_poll_timestamp_seconds", site=SITE)
        == (T0 + timedelta(seconds=1)).timestamp()
    )
    assert value("qwatch_poll_duration_seconds_count", site=SITE) == 2
    assert value("qwatch_sampler", site=SITE) == 1
    assert value("qwatch_store_pending_polls") == 0
    assert value("qwatch_store_dropped_polls_total") == 0
    assert value("qwatch_build_info", version="0.1.0") == 1


def test_skipped_records_are_counted_by_reason():
    from qwatch.serve.state import SiteSnapshot, Snapshot
    from tests.serve_helpers import poll

    part = SiteSnapshot(SITE, True, 0.01, poll(stat("a"), skipped=2))
    state = state_after(Snapshot(T0, (part,), 0, 0, 10))
    got = samples(render(state.view()))
    key = ("qwatch_records_skipped", frozenset({"site": SITE, "reason": "bad signature"}.items()))
    assert got[key] == 2


def test_alerts_firing_per_rule_from_the_sampler_only():
    from qwatch.serve.state import SiteSnapshot, Snapshot
    from tests.serve_helpers import poll

    leader = SiteSnapshot(SITE, True, 0.01, poll(stat("a")), alerts_firing={"cluster_down": 2})
    standby = SiteSnapshot("other", False, 0.01, alerts_firing={"stuck": 1})
    got = samples(render(state_after(Snapshot(T0, (leader, standby), 0, 0, 10)).view()))
    firing = {
        dict(labels)["rule"]: value
        for (name, labels), value in got.items()
        if name == "qwatch_alerts_firing" and dict(labels)["site"] == SITE
    }
    assert firing["cluster_down"] == 2 and firing["stuck"] == 0 and len(firing) == 6
    assert not [k for k in got if k[0] == "qwatch_alerts_firing" and ("site", "other") in k[1]]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (apt prometheus) not installed")
def test_promtool_accepts_the_exposition():
    state = state_after(snapshot(T0, stat("a"), stat("b", host="web2"), events={"appeared": 2}))
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=render(state.view()), capture_output=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


async def test_endpoints_answer_from_the_last_poll_and_enforce_the_token():
    state = state_after(snapshot(T0, stat("a")))
    app = make_app(state, "s3cret", now=lambda: T0 + timedelta(seconds=1))
    async with TestClient(TestServer(app)) as client:
        health = await client.get("/healthz")  # no token needed
        assert health.status == 200 and (await health.json())["status"] == "ok"
        for path in ("/metrics", "/readyz", "/api/clusters"):
            assert (await client.get(path)).status == 401
            wrong = await client.get(path, headers={"Authorization": "Bearer s3cre"})
            assert wrong.status == 401
        auth = {"Authorization": "Bearer s3cret"}
        metrics = await client.get("/metrics", headers=auth)
        assert metrics.status == 200
        assert metrics.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"qwatch_cluster_info{" in await metrics.read()
        ready = await client.get("/readyz", headers=auth)
        assert ready.status == 200 and (await ready.json())["sites"] == {SITE: "sampling"}
        clusters = json.loads(await (await client.get("/api/clusters", headers=auth)).text())
        assert [c["cluster_id"] for c in clusters["clusters"]] == ["a"]
        assert set(clusters) == {"clusters", "backlogs", "skipped"}  # status --json's keys


def test_backlog_per_queue_and_no_sample_for_an_unknown_one():
    backlogs = (
        Backlog(SITE, "orm", 4, 12.5),
        Backlog("long", "orm", 0),
        Backlog("gone", "orm", None, reason="ORM database: unreachable"),
    )
    got = samples(render(state_after(snapshot(T0, stat("a"), backlogs=backlogs)).view()))
    lengths = {
        dict(labels)["queue"]: v
        for (n, labels), v in got.items()
        if n == "qwatch_broker_queue_length"
    }
    assert lengths == {SITE: 4, "long": 0}  # "gone" is absent, not 0
    ages = [
        (dict(labels), v)
        for (n, labels), v in got.items()
        if n == "qwatch_broker_oldest_task_age_seconds"
    ]
    assert ages == [({"site": SITE, "queue": SITE, "broker": "orm"}, 12.5)]


async def test_a_busy_port_is_a_config_error_naming_listen():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = Listener(state_after(), ListenAddress("127.0.0.1", port), None)
        with pytest.raises(ConfigError, match=rf"^listen: cannot listen on 127.0.0.1:{port}: "):
            await listener.start()


def test_render_equals_prometheus_client_byte_for_byte():
    from qwatch.serve.metrics import reference

    odd = stat('x"y\\z', host="web\n3", pid=None, reincarnations=1_234_567, workers=())
    big = stat("big", host="web1", task_q_size=5_000_000, tob=T0 - timedelta(days=400))
    state = state_after(
        snapshot(T0, stat("a"), stat("gone", host="web2"), odd, big, events={"appeared": 4}),
        snapshot(T0 + timedelta(seconds=1), stat("a", status="Stopping"), odd, big),
    )
    view = state.view()
    assert render(view) == reference(view)
    assert render(state_after().view()) == reference(state_after().view())


def test_a_renderer_keeps_unchanged_clusters_and_stays_equal_to_prometheus_client():
    from qwatch.serve.metrics import Renderer, reference

    renderer = Renderer()
    state = state_after(snapshot(T0, stat("a"), stat("b", host="web2")))
    assert renderer(state.view()) == reference(state.view())
    # b's record moves on (its timestamp) but shows the same; a changes state; c appears
    state.observe(
        snapshot(
            T0 + timedelta(seconds=1),
            stat("a", status="Working", task_q_size=3),
            stat("b", host="web2", timestamp=T0 + timedelta(seconds=1)),
            stat("c", host="web3"),
        )
    )
    assert renderer(state.view()) == reference(state.view())
    state.observe(snapshot(T0 + timedelta(minutes=6), stat("c", host="web3")))  # a, b gone
    assert renderer(state.view()) == reference(state.view())
    assert b'cluster_id="a"' not in renderer(state.view())
