"""ALT_CLUSTERS end to end: a real django-q2 project with a main and a `long` cluster on the
Redis broker, read through its settings by `qwatch status` and recorded by the daemon."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import wait_for
from tests.plugins.qwatch_daemon import query

NAME = "altsite"

# Tasks to the main queue and to "long", through django-q2's own async_task.
ENQUEUE = """
from django_q.tasks import async_task
for _ in range(3):
    async_task("qtasks.nap", 0)
for _ in range(2):
    async_task("qtasks.nap", 0, cluster="long")
"""


def _status(project, db_url: str) -> dict:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in project.env().items() if not k.startswith("QWATCH_")}
    env["QWATCH_DATABASE_URL"] = db_url
    done = subprocess.run(
        [sys.executable, "-m", "qwatch", "status", "--json", "--django-settings", "qsettings"],
        env=env,
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _lengths(found: dict) -> dict[str, int | None]:  # type: ignore[type-arg]
    return {b["queue"]: b["length"] for b in found["backlogs"]}


@pytest.mark.slow
def test_alt_clusters_show_each_queue_and_both_clusters(
    redis_server, django_project_factory, daemon_factory, tmp_path
) -> None:
    project = django_project_factory(
        redis_server.url, name=NAME, ALT_CLUSTERS={"long": {"timeout": 30, "retry": 60}}
    )
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    project.run_python(ENQUEUE)
    # No cluster yet: the tasks wait, each in its own queue's list.
    before = _status(project, db)
    assert before["clusters"] == []
    assert before["backlogs"] == [
        {"queue": NAME, "broker": "redis", "length": 3, "oldest_age_s": None, "reason": ""},
        {"queue": "long", "broker": "redis", "length": 2, "oldest_age_s": None, "reason": ""},
    ]

    env = {k: v for k, v in project.env().items() if not k.startswith("QWATCH_")}
    daemon = daemon_factory(db_url=db, env=env, args=("--django-settings", "qsettings"))
    daemon.wait_log("sampling site")
    wait_for(
        lambda: {q for (q,) in query(db, "SELECT queue FROM queue_samples")} == {NAME, "long"},
        30,
        "per-queue samples of both queues",
    )

    project.start_cluster()
    # Not `qcluster --name long`: django-q2 1.11 sets Q_CLUSTER_NAME from it only after
    # django_q.conf has read its settings, so that cluster serves the main queue (its help
    # says to use the environment variable on Linux).
    project.start_cluster(Q_CLUSTER_NAME="long")
    found = wait_for(
        lambda: (
            (s := _status(project, db))
            and len(s["clusters"]) == 2
            and _lengths(s) == {NAME: 0, "long": 0}
            and s
        ),
        60,
        "both clusters up and both queues drained",
        step=0.5,
        detail=lambda: (
            json.dumps(_status(project, db))
            + "".join(c.log.read_text()[-800:] for c in project.clusters)
        ),
    )
    # Both write under the site's name; neither record says which queue it serves.
    assert {c["name"] for c in found["clusters"]} == {NAME}
    assert {c["queue"] for c in found["clusters"]} == {"unknown"}

    wait_for(
        lambda: (
            query(db, "SELECT count(*) FROM queue_samples WHERE queue = 'long' AND length = 0")[0][
                0
            ]
            >= 1
        ),
        30,
        "the drained long queue sampled",
    )
    stored = query(db, "SELECT queue, max(length) FROM queue_samples GROUP BY queue ORDER BY 1")
    assert stored == [(NAME, 3), ("long", 2)]
    assert daemon.terminate() == 0
