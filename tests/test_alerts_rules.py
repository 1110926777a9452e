"""The alert rules by tables: polls and events in, alerts fired (+) and resolved (-) out.

No servers and no clock: every poll carries its time. Each case is a script of steps
(seconds, what the poll saw, events) and the changes expected, as "+rule:subject@s".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qwatch.alerts.rules import Alert, Evaluator, Poll
from qwatch.alerts.thresholds import (
    CLUSTER_DOWN,
    DEFAULTS,
    QUEUE_FULL,
    REDIS_UNREACHABLE,
    REINCARNATION_STORM,
    RESTART_LOOP,
    RULES,
    STUCK,
    TAKES,
    Threshold,
)
from qwatch.values import REINCARNATED, RESTARTED, ClusterStat
from tests.helpers import cluster_stat

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SITE = "shop"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stat(
    cluster_id: str = "c-web1",
    host: str = "web1",
    *,
    status: str = "Idle",
    tq: int = 0,
) -> ClusterStat:
    return cluster_stat(cluster_id, name=SITE, host=host, status=status, tq=tq, tob=T0)


@dataclass(frozen=True)
class Ev:
    """An event as the rules read it (qwatch.events.Event has the same fields)."""

    at: datetime
    host: str
    kind: str
    detail: Mapping[str, Any] = field(default_factory=dict)


WEB1 = (stat(),)
BOTH = (stat(), stat("c-web2", "web2"))
DOWN = "redis down"

# A step: (seconds, clusters or DOWN, extra Poll fields, events as (kind, host, detail)).
Step = tuple[float, Any, dict[str, Any], list[tuple[str, str, dict[str, Any]]]]


def run(
    steps: Sequence[Step],
    thresholds: Mapping[str, Threshold] | None = None,
    evaluator: Evaluator | None = None,
) -> list[str]:
    evaluator = evaluator or Evaluator(SITE, thresholds)
    changes: list[str] = []
    for seconds, clusters, extra, events in steps:
        at = t(seconds)
        if clusters == DOWN:
            poll = Poll(SITE, at, redis_ok=False, reason="ConnectionRefusedError")
        else:
            poll = Poll(SITE, at, clusters=clusters, **extra)
        seen = [Ev(at, host, kind, detail) for kind, host, detail in events]
        change = evaluator.evaluate(poll, seen)
        changes += [f"+{a.rule}:{a.subject}@{seconds:g}" for a in change.fired]
        changes += [f"-{a.rule}:{a.subject}@{seconds:g}" for a in change.resolved]
    return changes


def every(start: float, stop: float, step: float, clusters: Any, **extra: Any) -> list[Step]:
    """Polls from start to stop inclusive, all seeing the same."""
    out: list[Step] = []
    at = start
    while at <= stop:
        out.append((at, clusters, dict(extra), []))
        at += step
    return out


def restarts(at: Sequence[float], host: str = "web1") -> list[Step]:
    return [(s, WEB1, {}, [(RESTARTED, host, {"downtime_s": 1.0})]) for s in at]


def reinc(at: Sequence[float], by: int = 1, host: str = "web1") -> list[Step]:
    return [(s, WEB1, {}, [(REINCARNATED, host, {"by": by})]) for s in at]


CASES: dict[str, tuple[list[Step], dict[str, Threshold] | None, list[str]]] = {
    "cluster_down fires after for, resolves when a cluster is back": (
        [(0, WEB1, {}, []), *every(10, 80, 10, ()), (90, WEB1, {}, [])],
        None,
        ["+cluster_down:web1@70", "-cluster_down:web1@90"],
    ),
    "cluster_down: back before for, nothing": (
        [(0, WEB1, {}, []), *every(10, 60, 10, ()), (65, WEB1, {}, [])],
        None,
        [],
    ),
    "cluster_down: a host never seen live is not down": (
        [*every(0, 120, 10, ())],
        None,
        [],
    ),
    "cluster_down: a Stopped record is not a live cluster": (
        [(0, WEB1, {}, []), *every(10, 70, 10, (stat(status="Stopped"),))],
        None,
        ["+cluster_down:web1@70"],
    ),
    "cluster_down per host": (
        [(0, BOTH, {}, []), *every(10, 70, 10, (stat("c-web2", "web2"),))],
        None,
        ["+cluster_down:web1@70"],
    ),
    "cluster_down with for changed": (
        [(0, WEB1, {}, []), *every(10, 200, 10, ())],
        {CLUSTER_DOWN: Threshold(for_s=120)},
        ["+cluster_down:web1@130"],
    ),
    "cluster_down switched off": (
        [(0, WEB1, {}, []), *every(10, 200, 10, ())],
        {CLUSTER_DOWN: Threshold(enabled=False, for_s=60)},
        [],
    ),
    "a Redis outage is not cluster_down; Redis itself alerts after for": (
        [(0, WEB1, {}, []), *every(1, 100, 1, DOWN), *every(101, 110, 1, WEB1)],
        None,
        ["+redis_unreachable:@31", "-redis_unreachable:@101"],
    ),
    "cluster_down waits out the grace after Redis returns": (
        [(0, WEB1, {}, []), *every(1, 40, 1, DOWN), *every(41, 110, 1, ())],
        None,
        # missing from 41, but counted from 41 + 3.5 s of grace: first missing poll at 45
        ["+redis_unreachable:@31", "-redis_unreachable:@41", "+cluster_down:web1@105"],
    ),
    "cluster_down already pending holds through an outage": (
        [(0, WEB1, {}, []), *every(10, 40, 10, ()), *every(41, 50, 1, DOWN), (55, (), {}, [])],
        None,
        # pending since 10; the outage teaches nothing; at 55 (grace) still held
        [],
    ),
    "redis_unreachable with for changed, and switched off": (
        [(0, WEB1, {}, []), *every(1, 20, 1, DOWN)],
        {REDIS_UNREACHABLE: Threshold(for_s=5)},
        ["+redis_unreachable:@6"],
    ),
    "redis_unreachable switched off": (
        [(0, WEB1, {}, []), *every(1, 100, 1, DOWN)],
        {REDIS_UNREACHABLE: Threshold(enabled=False, for_s=30)},
        [],
    ),
    "restart_loop: the third restart within 15m fires; it resolves as they age out": (
        [*restarts([0, 300, 600]), *every(700, 1000, 100, WEB1)],
        None,
        ["+restart_loop:web1@600", "-restart_loop:web1@900"],
    ),
    "restart_loop: three restarts spread wider than the window, nothing": (
        restarts([0, 500, 1000]),
        None,
        [],
    ),
    "restart_loop with count and window changed": (
        restarts([0, 10]),
        {RESTART_LOOP: Threshold(count=2, window_s=60)},
        ["+restart_loop:web1@10"],
    ),
    "restart_loop counts per host": (
        [*restarts([0, 10], "web1"), *restarts([20], "web2")],
        None,
        [],
    ),
    "reincarnation_storm: ten within 10m fires; resolves as they age out": (
        [*reinc(range(0, 100, 10)), *every(500, 700, 50, WEB1)],
        None,
        ["+reincarnation_storm:web1@90", "-reincarnation_storm:web1@600"],
    ),
    "reincarnation_storm counts a jump by its size": (
        reinc([0, 5], by=5),
        None,
        ["+reincarnation_storm:web1@5"],
    ),
    "reincarnation_storm with count changed": (
        reinc([0, 5, 10]),
        {REINCARNATION_STORM: Threshold(count=3, window_s=60)},
        ["+reincarnation_storm:web1@10"],
    ),
    "reincarnation_storm switched off": (
        reinc(range(0, 200, 5)),
        {REINCARNATION_STORM: Threshold(enabled=False, count=10, window_s=600)},
        [],
    ),
    "stuck: a backlog that does not shrink for 10m while a cluster is up": (
        [*every(0, 700, 50, WEB1, queued=40), (750, WEB1, {"queued": 10}, [])],
        None,
        ["+stuck:@600", "-stuck:@750"],
    ),
    "stuck: a growing backlog is stuck too": (
        [(s, WEB1, {"queued": 10 + int(s)}, []) for s in range(0, 700, 60)],
        None,
        ["+stuck:@600"],
    ),
    "stuck: a draining backlog is not": (
        [(s, WEB1, {"queued": 1000 - int(s)}, []) for s in range(0, 900, 60)],
        None,
        [],
    ),
    "stuck: an empty queue in between starts again": (
        [
            *every(0, 500, 50, WEB1, queued=40),
            (550, WEB1, {"queued": 0}, []),
            *every(600, 1200, 50, WEB1, queued=40),
        ],
        None,
        ["+stuck:@1200"],
    ),
    "stuck: no live cluster, not stuck (cluster_down says so)": (
        [(0, WEB1, {"queued": 5}, []), *every(10, 700, 50, (), queued=40)],
        {CLUSTER_DOWN: Threshold(enabled=False)},
        [],
    ),
    "stuck: an unknown backlog never fires": (
        every(0, 1200, 60, WEB1, queued=None),
        None,
        [],
    ),
    "stuck with for changed": (
        every(0, 200, 30, WEB1, queued=3),
        {STUCK: Threshold(for_s=60)},
        ["+stuck:@60"],
    ),
    "queue_full: at queue_limit for 5m, per cluster; resolves when it drains": (
        [
            *every(0, 300, 30, (stat(tq=50), stat("c-web2", "web2", tq=10)), queue_limit=50),
            (330, (stat(tq=20),), {"queue_limit": 50}, []),
        ],
        None,
        ["+queue_full:c-web1@300", "-queue_full:c-web1@330"],
    ),
    "queue_full: no queue_limit known, nothing": (
        every(0, 600, 30, (stat(tq=5000),)),
        None,
        [],
    ),
    "queue_full with for changed": (
        every(0, 100, 10, (stat(tq=9),), queue_limit=8),
        {QUEUE_FULL: Threshold(for_s=20)},
        ["+queue_full:c-web1@20"],
    ),
}


@pytest.mark.parametrize("steps,thresholds,expected", CASES.values(), ids=list(CASES))
def test_rules(
    steps: list[Step], thresholds: dict[str, Threshold] | None, expected: list[str]
) -> None:
    assert run(steps, thresholds) == expected


def test_every_rule_has_defaults_severity_and_settings() -> None:
    assert set(DEFAULTS) == set(RULES) == set(TAKES)
    assert DEFAULTS[CLUSTER_DOWN].for_s == 60
    assert (DEFAULTS[RESTART_LOOP].count, DEFAULTS[RESTART_LOOP].window_s) == (3, 900)
    assert (DEFAULTS[REINCARNATION_STORM].count, DEFAULTS[REINCARNATION_STORM].window_s) == (
        10,
        600,
    )
    assert DEFAULTS[STUCK].for_s == 600
    assert DEFAULTS[QUEUE_FULL].for_s == 300
    assert DEFAULTS[REDIS_UNREACHABLE].for_s == 30


def fire_cluster_down(evaluator: Evaluator) -> Alert:
    run([(0, WEB1, {}, []), *every(10, 70, 10, ())], evaluator=evaluator)
    [alert] = evaluator.firing
    return alert


def test_an_alert_carries_identity_labels_summary_and_numbers() -> None:
    alert = fire_cluster_down(Evaluator(SITE))
    assert (alert.rule, alert.site, alert.subject, alert.host) == (
        CLUSTER_DOWN,
        SITE,
        "web1",
        "web1",
    )
    assert alert.labels == {
        "alertname": "cluster_down",
        "site": SITE,
        "host": "web1",
        "severity": "critical",
    }
    assert alert.started_at == t(70) and alert.firing
    assert alert.summary == (
        "shop: no live cluster on web1 for 1m; start qcluster there or check its supervisor"
    )
    assert alert.details["since"] == t(10).isoformat()
    assert alert.details["held_s"] == 60 and alert.details["for_s"] == 60
    json.dumps(alert.details)  # stored as JSON


@pytest.mark.parametrize(
    "steps,thresholds,line",
    [
        (
            restarts([0, 60, 120, 180]),
            None,
            "shop: the cluster on web1 restarted 3 times within 15m; it is crash-looping, "
            "read its log",
        ),
        (
            reinc([0], by=12),
            None,
            "shop: 12 worker reincarnations on web1 within 10m; tasks are killing workers "
            "(timeouts, memory, crashes)",
        ),
        (
            every(0, 600, 60, BOTH, queued=7),
            None,
            "shop: broker backlog 7 has not shrunk in 10m (was 7) while 2 cluster(s) look up; "
            "check that their workers take tasks",
        ),
        (
            every(0, 300, 60, (stat(cluster_id="0123456789abcdef", tq=4),), queue_limit=4),
            None,
            "shop: cluster 89abcdef on web1 has had its task queue at queue_limit 4 for 5m; "
            "its workers are not keeping up",
        ),
        (
            [(0, WEB1, {}, []), *every(1, 31, 1, DOWN)],
            None,
            "shop: Redis unreachable for 30s (ConnectionRefusedError); qwatch cannot see the "
            "clusters",
        ),
    ],
    ids=[r for r in RULES if r != CLUSTER_DOWN],
)
def test_summaries(steps: list[Step], thresholds: Any, line: str) -> None:
    evaluator = Evaluator(SITE, thresholds)
    fired: list[Alert] = []
    for seconds, clusters, extra, events in steps:
        at = t(seconds)
        poll = (
            Poll(SITE, at, redis_ok=False, reason="ConnectionRefusedError")
            if clusters == DOWN
            else Poll(SITE, at, clusters=clusters, **extra)
        )
        fired += evaluator.evaluate(poll, [Ev(at, h, k, d) for k, h, d in events]).fired
    assert [a.summary for a in fired[:1]] == [line]


def test_firing_numbers_move_without_firing_again() -> None:
    evaluator = Evaluator(SITE)
    fire_cluster_down(evaluator)
    change = evaluator.evaluate(Poll(SITE, t(130)))
    assert change.fired == () and change.resolved == ()
    [alert] = change.firing
    assert alert.started_at == t(70) and alert.details["held_s"] == 120
    assert "for 2m;" in alert.summary


def test_resumed_from_the_table_does_not_fire_again() -> None:
    first = Evaluator(SITE)
    stored = fire_cluster_down(first)
    # a restarted daemon: the table's firing alert and the hosts it knows
    resumed = Evaluator(SITE, firing=[stored])
    change = resumed.evaluate(Poll(SITE, t(80)))
    assert change.fired == () and [a.key for a in change.firing] == [stored.key]
    assert change.firing[0].started_at == t(70)
    change = resumed.evaluate(Poll(SITE, t(90), clusters=WEB1))
    assert [a.key for a in change.resolved] == [stored.key]
    assert change.resolved[0].ended_at == t(90)


def test_resumed_counting_windows_from_recent_events() -> None:
    history = [Ev(t(s), "web1", RESTARTED) for s in (0, 100)]
    evaluator = Evaluator(SITE, hosts=["web1"], events=history)
    change = evaluator.evaluate(Poll(SITE, t(200), clusters=WEB1), [Ev(t(200), "web1", RESTARTED)])
    assert [a.rule for a in change.fired] == [RESTART_LOOP]
    assert change.fired[0].details["restarts"] == 3


def test_resumed_stuck_keeps_firing_until_the_backlog_drops() -> None:
    evaluator = Evaluator(SITE)
    run(every(0, 600, 60, WEB1, queued=9), evaluator=evaluator)
    [stored] = evaluator.firing
    resumed = Evaluator(SITE, firing=[stored])
    assert run(every(700, 760, 30, WEB1, queued=9), evaluator=resumed) == []
    assert run([(790, WEB1, {"queued": 3}, [])], evaluator=resumed) == ["-stuck:@790"]


def test_a_rule_switched_off_resolves_what_the_table_had_firing() -> None:
    stored = fire_cluster_down(Evaluator(SITE))
    off = Evaluator(SITE, {CLUSTER_DOWN: replace(DEFAULTS[CLUSTER_DOWN], enabled=False)})
    resumed = Evaluator(SITE, off.thresholds, firing=[stored])
    change = resumed.evaluate(Poll(SITE, t(80)))
    assert [a.key for a in change.resolved] == [stored.key] and change.firing == ()


def test_alerts_of_other_sites_and_unknown_rules_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown rules"):
        Evaluator(SITE, {"cluster_gone": Threshold()})
    with pytest.raises(ValueError, match="site"):
        Evaluator(SITE).evaluate(Poll("other", t(0)))
