"""The listener's pure state: lingering clusters, remembered hosts, health rules."""

from __future__ import annotations

from datetime import timedelta

from qwatch.serve.state import liveness, readiness
from tests.serve_helpers import SITE, T0, snapshot, stat, state_after


def test_a_vanished_cluster_lingers_five_minutes_then_goes():
    state = state_after(
        snapshot(T0, stat("a"), stat("b")), snapshot(T0 + timedelta(seconds=1), stat("a"))
    )
    (site,) = state.view().sites
    assert {(c.stat.cluster_id, c.live) for c in site.clusters} == {("a", True), ("b", False)}
    state.observe(snapshot(T0 + timedelta(minutes=5), stat("a")))
    assert {c.stat.cluster_id for c in state.view().sites[0].clusters} == {"a", "b"}
    state.observe(snapshot(T0 + timedelta(minutes=5, seconds=1), stat("a")))
    assert {c.stat.cluster_id for c in state.view().sites[0].clusters} == {"a"}


def test_a_host_counts_zero_for_a_day_after_its_last_cluster():
    state = state_after(snapshot(T0, stat("a", host="web1"), stat("b", host="web2")))
    state.observe(snapshot(T0 + timedelta(hours=1), stat("b", host="web2")))
    assert state.view().sites[0].hosts == {"web1": 0, "web2": 1}
    state.observe(snapshot(T0 + timedelta(hours=24), stat("b", host="web2")))
    assert state.view().sites[0].hosts == {"web1": 0, "web2": 1}
    state.observe(snapshot(T0 + timedelta(hours=24, seconds=1), stat("b", host="web2")))
    assert state.view().sites[0].hosts == {"web2": 1}


def test_events_add_up_and_durations_fill_the_histogram():
    state = state_after(
        snapshot(T0, stat("a"), events={"appeared": 1}),
        snapshot(T0 + timedelta(seconds=1), stat("a"), events={"state_changed": 2}),
        snapshot(T0 + timedelta(seconds=2), stat("a"), events={"state_changed": 1}),
    )
    site = state.view().sites[0]
    assert site.events == {"appeared": 1, "state_changed": 3}
    assert site.polls == 3 and site.buckets[-1] == 3
    assert site.buckets[0] == 0 and site.buckets[2] == 3  # 0.02 s: above 0.01, within 0.025


def test_a_standby_exports_no_cluster_and_is_ready():
    state = state_after(snapshot(T0, stat("a")), snapshot(T0 + timedelta(seconds=1), leader=False))
    site = state.view().sites[0]
    assert (site.clusters, dict(site.hosts), site.poll, site.redis_up) == ((), {}, None, True)
    probe = readiness(state.view())
    assert probe.status == 200
    assert probe.body["status"] == "standby" and probe.body["sites"] == {SITE: "standby"}


def test_a_redis_outage_keeps_the_last_clusters_and_is_not_ready():
    state = state_after(
        snapshot(T0, stat("a")),
        snapshot(T0 + timedelta(minutes=10), error="redis://127.0.0.1:1/0: connection refused"),
    )
    view = state.view()
    site = view.sites[0]
    assert not site.redis_up and [c.stat.cluster_id for c in site.clusters] == ["a"]
    assert site.last_poll_at == T0
    probe = readiness(view)
    assert probe.status == 503
    reasons = probe.body["reasons"]
    assert isinstance(reasons, list) and "connection refused" in reasons[0]
    assert liveness(view, T0 + timedelta(minutes=10, seconds=2)).status == 200


def test_liveness_fails_after_three_intervals_without_a_poll():
    assert liveness(state_after().view(), T0).status == 503
    view = state_after(snapshot(T0, stat("a"))).view()
    assert liveness(view, T0 + timedelta(seconds=3)).status == 200
    late = liveness(view, T0 + timedelta(seconds=3.5))
    assert late.status == 503 and late.body["status"] == "stalled"


def test_a_writer_half_full_is_not_ready():
    assert readiness(state_after(snapshot(T0, stat("a"), pending=1799)).view()).status == 200
    behind = readiness(state_after(snapshot(T0, stat("a"), pending=1800)).view())
    reasons = behind.body["reasons"]
    assert behind.status == 503 and isinstance(reasons, list) and "1800 of 3600" in reasons[0]
