"""`qwatch daemon` end to end: a real redis-server, real django-q2 clusters, real databases."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from qwatch.daemon import SHUTDOWN_BUDGET_S
from qwatch.decode import Decoder
from tests.helpers import CAPTURE_SECRET, CAPTURE_SITE, EXPECTED, PAYLOADS, free_port, wait_for
from tests.plugins.qcluster import SECRET_KEY
from tests.plugins.qwatch_daemon import query, run_qwatch
from tests.plugins.redis_server import redis_client

NAME = "qwatchtest"


def live_records(server) -> list:
    decoder = Decoder(NAME, SECRET_KEY)
    with redis_client(server) as client:
        keys = client.keys(f"django_q:{NAME}:cluster:*")
        return [decoder.decode(v) for v in client.mget(keys) if v] if keys else []


def events(db_url: str) -> list[tuple[str, str, dict]]:
    rows = query(
        db_url,
        "SELECT c.cluster_id, e.kind, e.detail FROM events e "
        "JOIN clusters c ON c.id = e.cluster_pk ORDER BY e.at, e.id",
    )
    return [(cluster_id, kind, json.loads(detail)) for cluster_id, kind, detail in rows]


def kinds(db_url: str, cluster_id: str) -> list[str]:
    return [kind for cid, kind, _ in events(db_url) if cid == cluster_id]


def lock_renewals(server) -> int:
    """How many times the sampler lock was taken or renewed (the daemon's only EVAL)."""
    with redis_client(server) as client:
        return int(client.info("commandstats").get("cmdstat_eval", {}).get("calls", 0))


@pytest.mark.slow
def test_a_clusters_life_and_restart_are_recorded(
    redis_server, django_project_factory, daemon_factory, tmp_path
):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    project = django_project_factory(redis_server.url, name=NAME)
    first = project.start_cluster()
    daemon = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db)
    record = wait_for(
        lambda: [r for r in live_records(redis_server) if r.status == "Idle" and r.pool == 2],
        30,
        "an idle cluster with two workers",
    )[0]
    cid = record.cluster_id
    wait_for(lambda: "appeared" in kinds(db, cid), 20, "appeared")

    # More tasks than workers: the cluster's own queue fills and it says Working.
    project.enqueue(*["nap:1"] * 8)
    wait_for(lambda: "state_changed" in kinds(db, cid), 30, "state_changed")

    os.kill(record.workers[0], signal.SIGKILL)
    wait_for(lambda: "reincarnated" in kinds(db, cid), 30, "reincarnated")

    first.stop()
    stopped_at = datetime.now(UTC)
    wait_for(lambda: "vanished" in kinds(db, cid), 30, "vanished")

    second = project.start_cluster()
    new = wait_for(
        lambda: [r for r in live_records(redis_server) if r.cluster_id != cid], 30, "a new cluster"
    )[0]
    wait_for(lambda: "restarted" in kinds(db, new.cluster_id), 30, "restarted")
    second.stop()
    assert daemon.terminate() == 0

    story = events(db)
    changes = [d for c, k, d in story if c == cid and k == "state_changed"]
    assert {"from": "Idle", "to": "Working"} in changes
    assert changes[-1]["to"] == "Stopped"
    [reincarnated] = [d for c, k, d in story if c == cid and k == "reincarnated"]
    assert reincarnated["by"] >= 1
    [vanished] = [d for c, k, d in story if c == cid and k == "vanished"]
    assert vanished["during_gap"] is False and vanished["last_status"] == "Stopped"
    [restarted] = [d for c, k, d in story if c == new.cluster_id and k == "restarted"]
    assert restarted["previous"] == cid
    # Downtime runs from the old cluster's last record to the new one's birth.
    assert 0 < restarted["downtime_s"] < (new.tob - stopped_at).total_seconds() + 5

    samples = query(
        db,
        "SELECT s.status, s.pool, s.reincarnations, s.task_q_size FROM samples s "
        "JOIN clusters c ON c.id = s.cluster_pk WHERE c.cluster_id = :cid ORDER BY s.sampled_at",
        cid=cid,
    )
    statuses = [s[0] for s in samples]
    assert statuses[0] == "Idle" and "Working" in statuses and statuses[-1] == "Stopped"
    assert max(s[2] for s in samples) == reincarnated["total"]
    assert all(s[1] == 2 for s in samples if s[0] in ("Idle", "Working"))
    [(host, pid, ended)] = query(
        db, "SELECT host, pid, ended_at FROM clusters WHERE cluster_id = :cid", cid=cid
    )
    assert (host, pid) == (record.host, record.pid) and ended is not None


@pytest.mark.slow
def test_a_redis_restart_is_one_gap_not_a_restart(
    redis_server, django_project_factory, daemon_factory, tmp_path
):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    project = django_project_factory(redis_server.url, name=NAME)
    project.start_cluster()
    daemon = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db)
    wait_for(lambda: query(db, "SELECT 1 FROM events WHERE kind = 'appeared'"), 30, "appeared")

    redis_server.kill()
    wait_for(lambda: query(db, "SELECT 1 FROM gaps"), 20, "a gap opened")
    redis_server.start()
    wait_for(lambda: query(db, "SELECT 1 FROM gaps WHERE ended_at IS NOT NULL"), 60, "gap closed")
    # Past the grace a restarted Redis gets: a false `vanished` would be written by now.
    samples_after = len(query(db, "SELECT 1 FROM samples")) + 6
    wait_for(lambda: len(query(db, "SELECT 1 FROM samples")) >= samples_after, 30, "more samples")
    assert daemon.terminate() == 0

    assert [k for _, k, _ in events(db) if k in ("appeared", "vanished", "restarted")] == [
        "appeared"
    ]
    [(reason,)] = query(db, "SELECT reason FROM gaps")
    assert str(redis_server.port) in reason
    assert daemon.log.count("recording a gap") == 1
    assert daemon.log.count("is back after") == 1


@pytest.mark.slow
def test_a_postgres_outage_loses_no_sample(
    redis_server, django_project_factory, daemon_factory, postgres_server_factory
):
    pg = postgres_server_factory()
    db = pg.create_database("outage")
    project = django_project_factory(redis_server.url, name=NAME)
    project.start_cluster()
    daemon = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db, sample_every=1.0)
    wait_for(lambda: len(query(db, "SELECT 1 FROM samples")) >= 2, 30, "samples in PostgreSQL")

    pg.stop()
    down = datetime.now(UTC)
    daemon.wait_log("history database unavailable", 30)
    # The sleep is the scenario: a 4 s outage, which the daemon bridges by sampling into
    # its buffer (one sample a second, so three or more for the assertions below).
    time.sleep(4)
    pg.start()
    up = datetime.now(UTC)
    daemon.wait_log("history database back", 60)
    assert daemon.terminate() == 0

    times = [r[0] for r in query(db, "SELECT sampled_at FROM samples ORDER BY sampled_at")]
    during = [t for t in times if down <= t <= up]
    assert len(during) >= 3, (down, up, times)
    steps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert max(steps) < 2.5, steps  # one sample a second, outage or not


@pytest.mark.slow
def test_two_daemons_one_sampler_and_a_takeover(
    redis_server, django_project_factory, daemon_factory, tmp_path
):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    project = django_project_factory(redis_server.url, name=NAME)
    project.start_cluster()
    one = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db)
    one.wait_log("sampling site")
    two = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db)
    two.wait_log("standing by")
    wait_for(lambda: len(query(db, "SELECT 1 FROM samples")) >= 4, 30, "samples")
    assert "sampling site" not in two.log

    one.kill()  # kill -9: no lock release, it has to expire
    killed = time.monotonic()
    two.wait_log("sampling site", 10)
    assert time.monotonic() - killed < 5  # three 0.5 s intervals of lock TTL, plus a poll
    before = len(query(db, "SELECT 1 FROM samples"))
    wait_for(lambda: len(query(db, "SELECT 1 FROM samples")) > before + 2, 30, "new sampler")

    started = time.monotonic()
    assert two.terminate() == 0
    assert time.monotonic() - started < 5
    # The takeover resumed the story: one cluster, appeared once, no duplicates.
    assert [k for _, k, _ in events(db)] == ["appeared"], (events(db), one.log, two.log)
    assert (
        query(db, "SELECT count(*), count(DISTINCT sampled_at) FROM samples")[0]
        == (len(query(db, "SELECT 1 FROM samples")),) * 2
    )


@pytest.mark.slow
def test_once_writes_one_poll_and_sigterm_flushes(
    redis_server, django_project_factory, daemon_factory, tmp_path
):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    project = django_project_factory(redis_server.url, name=NAME)
    project.start_cluster()
    wait_for(lambda: live_records(redis_server), 30, "a cluster")
    done = run_qwatch("daemon", "--once", name=NAME, redis_url=redis_server.url, db_url=db)
    assert done.returncode == 0, done.stderr
    assert query(db, "SELECT count(*) FROM samples") == [(1,)]
    assert [k for _, k, _ in events(db)] == ["appeared"]

    # A long sample interval: what SIGTERM finds unwritten (the partial minute) is flushed.
    daemon = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db, sample_every=60)
    daemon.wait_log("sampling site")
    # A few polls into the current minute: each poll renews the sampler lock (one EVAL).
    renewed = lock_renewals(redis_server)
    wait_for(lambda: lock_renewals(redis_server) >= renewed + 3, 10, "three more polls")
    started = time.monotonic()
    assert daemon.terminate() == 0
    assert time.monotonic() - started < 5
    assert query(db, "SELECT count(*) FROM rollup_minute WHERE n >= 2")[0][0] >= 1


def test_schema_versions_are_checked(redis_server, tmp_path):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    args = {"name": NAME, "redis_url": redis_server.url, "db_url": db}
    refused = run_qwatch("daemon", "--once", "--no-migrate", **args)
    assert refused.returncode == 2
    assert "qwatch db upgrade" in refused.stderr and "Traceback" not in refused.stderr

    assert run_qwatch("daemon", "--once", **args).returncode == 0  # an empty one is upgraded
    current = run_qwatch("db", "current", **args)
    assert current.returncode == 0 and "current" in current.stdout

    # And now a revision this code has never heard of.
    with sqlite3.connect(tmp_path / "history.sqlite3") as conn:
        conn.execute("UPDATE qwatch_alembic_version SET version_num = '9999_from_the_future'")
    newer = run_qwatch("daemon", "--once", **args)
    assert newer.returncode == 2
    assert "newer than this qwatch" in newer.stderr
    assert len(newer.stderr.strip().splitlines()) == 1


def test_time_without_a_daemon_is_a_gap_not_downtime(redis_server, tmp_path):
    path = tmp_path / "history.sqlite3"
    args = {"name": NAME, "redis_url": redis_server.url, "db_url": f"sqlite:///{path}"}
    # An empty fleet still leaves the daemon's mark: nothing else tells readers it ran.
    assert run_qwatch("daemon", "--once", **args).returncode == 0
    ((first_mark,),) = query(args["db_url"], "SELECT watched_at FROM watches")

    # As if that daemon had stopped ten minutes ago, in a Redis outage it never saw end.
    stopped = datetime.now(UTC) - timedelta(minutes=10)

    def as_stored(at: datetime) -> str:  # SQLAlchemy's text for a UTC time in SQLite
        return at.replace(tzinfo=None).isoformat(" ", timespec="microseconds")

    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE watches SET watched_at = ?", (as_stored(stopped),))
        conn.execute(
            "INSERT INTO gaps (site, started_at, reason) VALUES (?, ?, 'redis down')",
            (NAME, as_stored(stopped - timedelta(minutes=1))),
        )
    assert run_qwatch("daemon", "--once", **args).returncode == 0

    gaps = query(args["db_url"], "SELECT kind, started_at, ended_at FROM gaps ORDER BY started_at")
    ((mark,),) = query(args["db_url"], "SELECT watched_at FROM watches")
    assert [kind for kind, _, _ in gaps] == ["redis", "unwatched"]
    assert gaps[0][2] == gaps[1][1] == as_stored(stopped)
    assert gaps[1][2] == mark > first_mark


@pytest.mark.slow
def test_shutdown_is_bounded_when_the_database_is_locked(
    redis_server, django_project_factory, daemon_factory, tmp_path
):
    path = tmp_path / "history.sqlite3"
    db = f"sqlite:///{path}"
    project = django_project_factory(redis_server.url, name=NAME)
    project.start_cluster()
    patient = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db)
    wait_for(lambda: query(db, "SELECT 1 FROM samples"), 30, "a sample")
    hasty = daemon_factory(name=NAME, redis_url=redis_server.url, db_url=db)

    with sqlite3.connect(path, isolation_level=None) as holder:
        holder.execute("BEGIN EXCLUSIVE")  # another program holds the database
        started = time.monotonic()
        assert patient.terminate() == 0  # gives up on the flush, says so, exits in time
        assert time.monotonic() - started < 5
        assert "polls unwritten" in patient.log

        hasty.wait_log("sampling site", 10)  # took over the lock the patient one released
        hasty.process.send_signal(signal.SIGTERM)
        hasty.wait_log("stopping after the poll in flight")
        started = time.monotonic()
        hasty.process.send_signal(signal.SIGTERM)
        assert hasty.process.wait(5) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 1.5
        holder.execute("ROLLBACK")


# -- shutdown budget, `--once` exit codes, gaps: real Redis servers and captured records

CAPTURED = ("q2_url_notz_idle.txt", "q139_sha1_idle.txt")  # two live clusters


def seed_captures(server, names: tuple[str, ...] = CAPTURED) -> None:
    """Captured records of CAPTURE_SITE, as Django Q left them (kept long enough for a test)."""
    with redis_client(server) as client:
        for name in names:
            raw = (PAYLOADS / name).read_bytes().rstrip(b"\n")  # saved as a text line
            client.set(str(EXPECTED[name]["redis_key"]), raw, ex=600)


def sites_config(path: Path, *sites: tuple[str, str]) -> Path:
    """A qwatch.toml listing (name, redis_url) sites, all keyed with the captures' secret."""
    tables = "".join(
        f'[[sites]]\nname = "{name}"\nredis_url = "{url}"\nsecret_key = "{CAPTURE_SECRET}"\n\n'
        for name, url in sites
    )
    path.write_text(tables)
    return path


def by_config(db_url: str) -> dict[str, str | None]:
    """run_qwatch's arguments when --config names the sites."""
    return {"name": None, "redis_url": None, "db_url": db_url}


def stored(text) -> datetime:
    """A time as SQLite hands it back (naive UTC text), aware."""
    at = text if isinstance(text, datetime) else datetime.fromisoformat(text)
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def test_one_frozen_redis_does_not_hold_up_the_other_sites_stop(
    redis_server_factory, daemon_factory, tmp_path
):
    healthy, frozen = redis_server_factory(), redis_server_factory()
    seed_captures(healthy)
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    config = sites_config(
        tmp_path / "qwatch.toml", (CAPTURE_SITE, healthy.url), ("frozen", frozen.url)
    )
    daemon = daemon_factory(db_url=db, config=config, sample_every=1.0)
    daemon.wait_log(f"sampling site {CAPTURE_SITE!r}")
    daemon.wait_log("sampling site 'frozen'")
    samples = "SELECT count(*) FROM samples"
    wait_for(lambda: query(db, samples)[0][0] >= 2, 20, "samples of the healthy site")

    os.kill(frozen.pid, signal.SIGSTOP)
    try:
        # The healthy site goes on sampling while the frozen one's poll hangs.
        before = query(db, samples)[0][0]
        wait_for(lambda: query(db, samples)[0][0] >= before + 4, 20, "samples meanwhile")
        started = time.monotonic()
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(SHUTDOWN_BUDGET_S + 2) == 0, daemon.log
        assert time.monotonic() - started < SHUTDOWN_BUDGET_S + 1, daemon.log
    finally:
        os.kill(frozen.pid, signal.SIGCONT)

    assert "stopped waiting for 'frozen'" in daemon.log
    with redis_client(healthy) as client:
        assert client.keys("qwatch:daemon:*") == []  # its lock released
    # The final batch was written: the newest sample's minute has its rollup row.
    ((newest,),) = query(db, "SELECT max(sampled_at) FROM samples")
    minute = stored(newest).replace(second=0, microsecond=0)
    buckets = [stored(b) for (b,) in query(db, "SELECT DISTINCT bucket FROM rollup_minute")]
    assert minute in buckets, (minute, buckets)


def test_once_exits_1_naming_a_site_it_could_not_read(redis_server_factory, tmp_path):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    server = redis_server_factory(password="right-Pa55word")
    seed_captures(server)

    def once(redis_url: str):
        config = sites_config(tmp_path / "qwatch.toml", (CAPTURE_SITE, redis_url))
        return run_qwatch("daemon", "--once", "--config", str(config), **by_config(db))

    def assert_refused(done, reason: str, address: str) -> None:
        assert done.returncode == 1, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"qwatch: could not read site {CAPTURE_SITE!r}: Redis {address}")
        assert reason in last and "Pa55word" not in done.stderr and "Traceback" not in done.stderr

    address = f"redis://127.0.0.1:{server.port}/0"
    assert_refused(once(server.url_for(password="wrong-Pa55word")), "authentication", address)
    port = free_port()  # nothing listens there
    assert_refused(once(f"redis://127.0.0.1:{port}/0"), "refused", f"redis://127.0.0.1:{port}/0")

    done = once(server.url)
    assert done.returncode == 0, done.stderr
    assert query(db, "SELECT count(*) FROM samples") == [(len(CAPTURED),)]


def test_once_exits_1_while_redis_is_loading(redis_server_factory, tmp_path):
    # A real LOADING: an RDB of many keys, loaded with a delay per key.
    server = redis_server_factory(extra_args=("--enable-debug-command", "yes"))
    with redis_client(server) as client:
        client.execute_command("DEBUG", "POPULATE", 200_000)
        client.save()
    server.stop()
    slow = ("--key-load-delay", "1000", "--loading-process-events-interval-bytes", "1024")
    loading = subprocess.Popen(
        [*server._command(), *slow], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        with redis_client(server) as client:

            def answers_loading() -> bool:
                try:
                    client.ping()
                except redis.BusyLoadingError:
                    return True
                except redis.ConnectionError:
                    pass
                return False

            wait_for(answers_loading, 10, "redis-server loading its dataset")
        db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
        config = sites_config(tmp_path / "qwatch.toml", (CAPTURE_SITE, server.url))
        done = run_qwatch("daemon", "--once", "--config", str(config), **by_config(db))
        with redis_client(server) as client:
            assert answers_loading()  # still loading when qwatch gave up
    finally:
        loading.kill()
        loading.wait()
    assert done.returncode == 1, done.stderr
    assert "LOADING" in done.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("how", ["CLIENT PAUSE", "DEBUG SLEEP"])
def test_a_gap_begins_at_the_last_good_poll(how, redis_server_factory, daemon_factory, tmp_path):
    server = redis_server_factory(extra_args=("--enable-debug-command", "yes"))
    seed_captures(server)
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    interval = 0.5
    config = sites_config(tmp_path / "qwatch.toml", (CAPTURE_SITE, server.url))
    daemon = daemon_factory(db_url=db, config=config, interval=interval, sample_every=1.0)
    wait_for(lambda: query(db, "SELECT 1 FROM samples"), 20, "a sample")
    with redis_client(server) as client:
        asked = datetime.now(UTC)
        if how == "CLIENT PAUSE":
            client.execute_command("CLIENT", "PAUSE", 7000, "ALL")
        else:
            # Runs in a thread: the reply comes only once the sleep is over.
            sleeper = threading.Thread(target=client.execute_command, args=("DEBUG", "SLEEP", 7))
            sleeper.start()
        unresponsive = datetime.now(UTC)
        [(started, reason)] = wait_for(
            lambda: query(db, "SELECT started_at, reason FROM gaps"), 20, "a gap"
        )
        if how == "DEBUG SLEEP":
            sleeper.join()
    assert "timed out" in reason
    # Not when the command timed out (5 s later), but at the last poll that was answered:
    # within one interval (and a poll's time) before Redis stopped answering.
    started = stored(started)
    assert asked - timedelta(seconds=interval + 0.5) <= started <= unresponsive, (asked, started)
    wait_for(lambda: query(db, "SELECT 1 FROM gaps WHERE ended_at IS NOT NULL"), 30, "gap ends")
    assert daemon.terminate() == 0
