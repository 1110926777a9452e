"""`qwatch check`: the pure verdicts, and the exit codes against a real cluster."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import pytest

from qwatch.check import Status, Thresholds, evaluate, parse_states
from qwatch.values import Backlog
from tests.helpers import wait_for
from tests.plugins.qwatch_daemon import qwatch_env
from tests.serve_helpers import SITE, T0, poll, stat


def verdict(limits: Thresholds, *clusters, queued: int = 3, marks=None, now=T0):
    return evaluate([poll(*clusters, queued=queued)], limits, now, marks)


def test_ok_line_carries_performance_data():
    got = verdict(Thresholds(min_clusters=1), stat("a"), stat("b", task_q_size=4))
    assert got.status is Status.OK
    assert got.line == (
        "QWATCH OK - 2 cluster(s), backlog 3 | clusters=2;;1:;0 task_queue=4;;;0 backlog=3;;;0"
    )


def test_min_clusters_per_host_is_critical():
    limits = Thresholds(host="web2", min_clusters=1)
    got = verdict(limits, stat("a", host="web1"))
    assert got.status is Status.CRITICAL
    assert got.line.startswith("QWATCH CRITICAL - 0 cluster(s) on web2, fewer than 1 | clusters=0")
    assert verdict(limits, stat("a", host="web2")).status is Status.OK


def test_state_not_is_critical():
    limits = Thresholds(state_not=parse_states("stopping,Stopped"))
    got = verdict(limits, stat("a"), stat("abcdefgh12345678", status="Stopping"))
    assert got.status is Status.CRITICAL and "cluster 12345678 on web1 is Stopping" in got.line
    with pytest.raises(ValueError, match="unknown state 'Dead'"):
        parse_states("Dead")


def test_queue_and_backlog_limits_warn():
    got = verdict(Thresholds(max_task_queue=5), stat("a", task_q_size=6))
    assert got.status is Status.WARNING and "task queue 6 above 5" in got.line
    assert "task_queue=6;5;;0" in got.line
    got = verdict(Thresholds(max_backlog=2), stat("a"), queued=3)
    assert got.status is Status.WARNING and "broker backlog 3 above 2" in got.line


def test_critical_outranks_warning_in_the_summary():
    limits = Thresholds(min_clusters=2, max_task_queue=0)
    got = verdict(limits, stat("a", task_q_size=1))
    assert got.status is Status.CRITICAL
    assert "fewer than 2" in got.line and "task queue" not in got.line.split("|")[0]


def test_sample_age_reads_the_watch_mark():
    limits = Thresholds(max_sample_age_s=60)
    fresh = verdict(limits, stat("a"), marks={SITE: T0 - timedelta(seconds=10)})
    assert fresh.status is Status.OK and "sample_age=10s;60" in fresh.line
    stale = verdict(limits, stat("a"), marks={SITE: T0 - timedelta(seconds=90)})
    assert stale.status is Status.WARNING and "last sample 90s ago, older than 60s" in stale.line
    never = verdict(limits, stat("a"), marks={SITE: None})
    assert never.status is Status.WARNING and "ever sampled" in never.line


def check(*args: str, env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "qwatch", "check", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout + done.stderr
    return done.returncode, lines[0]


@pytest.mark.slow
def test_exit_codes_against_a_real_cluster(
    redis_server, django_project_factory, daemon_factory, tmp_path
):
    import socket

    name = "qwatchcheck"
    db = f"sqlite:///{tmp_path / 'h.sqlite3'}"
    env = qwatch_env(name, redis_server.url, db)
    host = socket.gethostname()
    # Nothing yet: no cluster is CRITICAL, no Redis is CRITICAL, bad input is UNKNOWN.
    code, line = check("--min-clusters", "1", env=env)
    assert code == 2 and line.startswith("QWATCH CRITICAL - 0 cluster(s), fewer than 1")
    code, line = check(env={**env, "QWATCH_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert code == 2 and "QWATCH CRITICAL - " in line
    assert check("--state-not", "Dead", env=env)[0] == 3
    assert check("--max-sample-age", "soon", env=env)[0] == 3
    code, line = check("--max-sample-age", "60s", env=env)
    assert code == 3 and line.startswith("QWATCH UNKNOWN - history")  # no history yet

    project = django_project_factory(redis_server.url, name=name)
    project.start_cluster()
    wait_for(lambda: check("--min-clusters", "1", env=env)[0] == 0, 30, "an OK check")
    code, line = check("--host", host, "--min-clusters", "1", "--state-not", "Stopped", env=env)
    assert (
        code == 0 and line.startswith("QWATCH OK - 1 cluster(s) on ") and "clusters=1;;1:;0" in line
    )
    code, _ = check("--host", "no-such-host", "--min-clusters", "1", env=env)
    assert code == 2
    project.enqueue(*["nap:2"] * 12)  # two workers: the rest wait in Redis and the cluster
    code, line = wait_for(
        lambda: (r := check("--max-backlog", "0", "--max-task-queue", "0", env=env))[0] == 1 and r,
        30,
        "a WARNING for the queued tasks",
    )
    assert "above 0" in line
    daemon_factory(name=name, redis_url=redis_server.url, db_url=db)
    code, line = wait_for(
        lambda: (r := check("--max-sample-age", "60s", env=env))[0] == 0 and r, 30, "a fresh mark"
    )
    assert "sample_age=" in line


def test_backlog_limit_applies_per_queue_and_unknown_is_not_ok():
    queues = (Backlog(SITE, "redis", 1), Backlog("long", "redis", 5))
    got = evaluate([poll(stat("a"), backlogs=queues)], Thresholds(max_backlog=2), T0, None)
    assert got.status is Status.WARNING
    assert "queue long broker backlog 5 above 2" in got.line and f"queue {SITE} " not in got.line
    assert "backlog=6;2;;0 backlog_" + SITE + "=1;2;;0 backlog_long=5;2;;0" in got.line

    unknown = (Backlog(SITE, "sqs", None, reason="cannot be read"),)
    got = evaluate([poll(stat("a"), backlogs=unknown)], Thresholds(max_backlog=2), T0, None)
    assert got.status is Status.UNKNOWN and "backlog unknown: cannot be read" in got.line
    # without a backlog limit, an unreadable backlog is not a problem of its own
    assert evaluate([poll(stat("a"), backlogs=unknown)], Thresholds(), T0, None).status is Status.OK
    # a down cluster stays CRITICAL whatever the backlog
    got = evaluate([poll(backlogs=unknown)], Thresholds(min_clusters=1, max_backlog=2), T0, None)
    assert got.status is Status.CRITICAL


def test_the_database_url_is_parsed_only_when_the_history_is_read(redis_server):
    """Like `status`, a check without --max-sample-age opens no database: the URL's scheme
    is checked, the rest (by SQLAlchemy, 0.1 s to import) only when the history is read."""
    unparsable = "postgresql://qwatch@db:port/q"  # a port that is not a number
    env = qwatch_env("qwatchcheck", redis_server.url, unparsable)
    code, line = check("--max-sample-age", "60s", env=env)
    assert code == 3 and "QWATCH_DATABASE_URL: cannot parse" in line
    assert check(env=env)[0] == 0
    code, line = check(env={**env, "QWATCH_DATABASE_URL": "oracle://db/q"})
    assert code == 3 and "unsupported scheme 'oracle'" in line
    script = "import sys\nfrom qwatch.cli import main\nmain(['check'])\n"
    script += "print('sqlalchemy' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert done.stdout.splitlines()[-1] == "False", done.stderr
