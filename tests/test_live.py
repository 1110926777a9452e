"""`qwatch status` end to end against a real redis-server and a real django-q2 cluster."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest

from qwatch import live
from qwatch.values import Backlog, Poll, Skipped
from tests.helpers import wait_for
from tests.plugins.qcluster import SECRET_KEY
from tests.plugins.qwatch_daemon import qwatch_env, run_qwatch
from tests.plugins.redis_server import redis_client
from tests.records import DECODER, TEXT_CAPTURES, read_record

NAME = "qwatchtest"


def status_json(*args: str, env: dict[str, str], cwd: str | None = None) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "qwatch", "status", "--json", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_status_follows_a_real_cluster(redis_server, django_project_factory, tmp_path):
    project = django_project_factory(redis_server.url, name=NAME, workers=3)
    cluster = project.start_cluster()
    env = qwatch_env(NAME, redis_server.url, f"sqlite:///{tmp_path / 'h.sqlite3'}")

    def idle() -> dict | None:
        found = status_json(env=env)["clusters"]
        return found[0] if found and found[0]["status"] == "Idle" else None

    seen = wait_for(idle, 30, "the cluster to be Idle")
    assert seen["host"] == socket.gethostname()
    assert seen["pid"] == cluster.pid
    assert seen["pool"] == 3 == len(seen["workers"])
    assert seen["name"] == NAME and seen["reincarnations"] == 0
    assert seen["tob"].endswith("+00:00") and seen["uptime_s"] >= 0

    # Django's own view of the same cluster, through its settings: nothing configured twice.
    by_django = status_json(
        "--django-settings", project.settings_module, env=_without_qwatch(env), cwd=project.root
    )
    assert [c["cluster_id"] for c in by_django["clusters"]] == [seen["cluster_id"]]
    assert by_django["backlogs"] == [
        {"queue": NAME, "broker": "redis", "length": 0, "oldest_age_s": None, "reason": ""}
    ]
    assert by_django["clusters"][0]["queue"] == "unknown"  # the record does not say

    os.kill(seen["workers"][0], signal.SIGKILL)
    wait_for(
        lambda: status_json(env=env)["clusters"][0]["reincarnations"] >= 1, 15, "a reincarnation"
    )

    table = run_qwatch("status", name=NAME, redis_url=redis_server.url, db_url="sqlite://")
    assert table.returncode == 0
    header, row = table.stdout.splitlines()[:2]
    assert header.split() == ["Host", "Id", "State", "Pool", "TQ", "RQ", "RC", "Up"]
    assert row.split()[:2] == [socket.gethostname(), seen["cluster_id"][-8:]]

    cluster.stop()
    wait_for(lambda: status_json(env=env)["clusters"] == [], 15, "the record to expire")


def test_status_reports_skipped_records_and_backlog(redis_server, tmp_path):
    with redis_client(redis_server) as client:
        client.set(f"django_q:{NAME}:cluster:forged", b"not-a-record", ex=30)
        client.rpush(f"django_q:{NAME}:q", b"a", b"b")
    env = qwatch_env(NAME, redis_server.url, f"sqlite:///{tmp_path / 'h.sqlite3'}")
    found = status_json(env=env)
    assert found["clusters"] == []
    assert [(b["queue"], b["length"]) for b in found["backlogs"]] == [(NAME, 2)]
    [skipped] = found["skipped"]
    assert skipped["key"] == f"django_q:{NAME}:cluster:forged" and skipped["reason"]

    table = run_qwatch("status", name=NAME, redis_url=redis_server.url, db_url="sqlite://")
    assert "Skipped 1 record(s)" in table.stdout
    assert f"Queued {NAME} (redis): 2" in table.stdout


def test_status_json_is_compact_unless_pretty(redis_server, tmp_path):
    with redis_client(redis_server) as client:
        client.set(f"django_q:{NAME}:cluster:forged", b"not-a-record", ex=30)
    env = qwatch_env(NAME, redis_server.url, f"sqlite:///{tmp_path / 'h.sqlite3'}")
    texts = {}
    for flags in ((), ("--pretty",)):
        done = subprocess.run(
            [sys.executable, "-m", "qwatch", "status", "--json", *flags],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        texts[flags] = done.stdout
    compact, pretty = texts[()], texts[("--pretty",)]
    assert compact.count("\n") == 1 and '"skipped":[{"key":' in compact
    assert pretty.startswith('{\n  "clusters": [],\n')
    assert json.loads(compact) == json.loads(pretty)


def test_status_imports_no_database_or_ui_library(redis_server, tmp_path):
    env = qwatch_env(NAME, redis_server.url, f"sqlite:///{tmp_path / 'h.sqlite3'}")
    code = (
        "import sys\n"
        "from qwatch.cli import main\n"
        "assert main(['status', '--json']) == 0\n"
        "heavy = ('sqlalchemy', 'alembic', 'aiohttp', 'prompt_toolkit', 'aiosqlite', 'asyncpg')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


def test_status_reads_tls_redis(tls_redis_server, tmp_path):
    env = qwatch_env(NAME, tls_redis_server.url, f"sqlite:///{tmp_path / 'h.sqlite3'}")
    assert tls_redis_server.url.startswith("rediss://")
    assert status_json(env=env) == {
        "clusters": [],
        "backlogs": [
            {"queue": NAME, "broker": "redis", "length": 0, "oldest_age_s": None, "reason": ""}
        ],
        "skipped": [],
    }


def test_unreachable_redis_is_one_line_without_the_password(redis_server, tmp_path):
    port = redis_server.port
    redis_server.stop()
    done = run_qwatch(
        "status",
        name=NAME,
        redis_url=f"redis://:hunter2-secret@127.0.0.1:{port}/0",
        db_url="sqlite://",
    )
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.strip().splitlines()
    assert f"127.0.0.1:{port}" in line and "hunter2" not in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--redis", "http://localhost"], "scheme"),
        (["--django-settings", "no.such.module"], "no.such.module"),
        (["--config", "/nonexistent/qwatch.toml"], "qwatch.toml"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(args, needle, tmp_path):
    env = qwatch_env(NAME, "redis://127.0.0.1:1/0", f"sqlite:///{tmp_path / 'h.sqlite3'}")
    done = subprocess.run(
        [sys.executable, "-m", "qwatch", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert needle in line and SECRET_KEY not in line


def _without_qwatch(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith("QWATCH_")}


def test_status_json_is_the_document_it_always_was():
    """`as_json` on real decoded captures (and a time not in UTC) gives the very text
    the first construction gave: a list per cluster's workers, every time converted to UTC,
    json's default circular check. Only its cost changed."""
    stats = [DECODER.decode(read_record(name)) for name in TEXT_CAPTURES]
    paris = timezone(timedelta(hours=1))
    stats.append(replace(stats[0], tob=stats[0].tob.astimezone(paris)))
    polls = [
        Poll(
            "researchq",
            datetime.now(UTC),
            tuple(stats),
            (Skipped("k", "bad"),),
            (
                Backlog("researchq", "redis", 3, 1.23456),
                Backlog("other", "redis", None, None, "unreadable"),
            ),
        )
    ]

    def first(stat):
        return {
            "name": stat.name,
            "cluster_id": stat.cluster_id,
            "host": stat.host,
            "pid": stat.pid,
            "sentinel": stat.sentinel,
            "workers": list(stat.workers),
            "pool": stat.pool,
            "status": stat.status,
            "task_q_size": stat.task_q_size,
            "done_q_size": stat.done_q_size,
            "reincarnations": stat.reincarnations,
            "tob": stat.tob.astimezone(UTC).isoformat(),
            "timestamp": stat.timestamp.astimezone(UTC).isoformat(),
            "uptime_s": round(stat.uptime_s, 3),
            "queue": "unknown",
        }

    document = {
        "clusters": [first(s) for s in stats],
        "backlogs": [live.backlog_json(b) for b in polls[0].backlogs],
        "skipped": [{"key": "k", "reason": "bad"}],
    }
    assert live.as_json(polls) == json.dumps(document, separators=(",", ":"))
    assert live.as_json(polls, pretty=True) == json.dumps(document, indent=2)
