"""Takeovers (issue 13): a sampler frozen mid-poll while its standby takes over writes nothing
after the takeover (fencing), and a takeover while the database is down announces nothing
twice. Two real daemons, one real Redis, a real SQLite or PostgreSQL history."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from uuid import UUID

import pytest
import redis

from tests.helpers import CAPTURE_SITE, wait_for
from tests.plugins.qwatch_daemon import DaemonProcess, query
from tests.plugins.redis_server import redis_client
from tests.records import sign, stat_pickle, state
from tests.test_daemon import sites_config

PREFIX = f"django_q:{CAPTURE_SITE}:cluster:"
# Junk under the clusters' prefix: each poll reads and refuses every one, which makes a
# poll last most of the 0.5 s interval, so a freeze lands in the middle of one.
JUNK_KEYS = 40_000
ROUNDS = 4  # freezes in one test, the roles swapping each time (about 10 s each)


def add_cluster(client: redis.Redis, n: int) -> str:
    cluster_id = UUID(int=0xF0000 + n)
    fields = state(
        cluster_id=cluster_id,
        pid=5000 + n,
        host=f"fence-{n}",
        tob=datetime.now(UTC),
        timestamp=datetime.now(UTC),
    )
    # Django Q files a record under its cluster's id.
    client.set(f"{PREFIX}{cluster_id}", sign(stat_pickle(fields)), ex=600)
    return str(cluster_id)


def redis_ports(pid: int, redis_port: int) -> set[int]:
    """The local ports of `pid`'s connections to Redis (to find them in CLIENT LIST)."""
    out = subprocess.run(
        ["ss", "-tnpH", "dst", f"127.0.0.1:{redis_port}"], capture_output=True, text=True
    ).stdout
    return {
        int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if f"pid={pid}," in line
    }


def polling(client: redis.Redis, pid: int, redis_port: int) -> bool:
    """Whether `pid` is in the middle of a poll: its connection's last command read keys
    (SCAN or MGET; decoding what MGET gave comes after, with nothing sent)."""
    ports = redis_ports(pid, redis_port)
    return any(
        int(str(c["addr"]).rsplit(":", 1)[1]) in ports and c["cmd"] in ("scan", "mget")
        for c in client.client_list()
    )


def sampling(one: DaemonProcess, two: DaemonProcess) -> tuple[DaemonProcess, DaemonProcess]:
    """(sampler, standby): the daemon whose newest lock message says it samples."""

    def last(daemon: DaemonProcess) -> int:
        lines = daemon.log.splitlines()
        taken = [i for i, line in enumerate(lines) if "sampling site" in line]
        lost = [i for i, line in enumerate(lines) if "standing by" in line]
        return 1 if taken and (not lost or taken[-1] > lost[-1]) else 0

    both = (one, two)
    leaders = [d for d in both if last(d)]
    assert len(leaders) == 1, (one.log[-2000:], two.log[-2000:])
    return leaders[0], next(d for d in both if d is not leaders[0])


def freeze_the_sampler(
    client: redis.Redis, redis_port: int, db: str, roles: tuple[DaemonProcess, ...], n: int
) -> None:
    """One round: a new cluster, the sampler frozen mid-poll, the cluster's record deleted,
    the standby's takeover and `vanished`, the sampler resumed; then nothing stale."""
    sampler, standby = roles
    cluster = add_cluster(client, n)
    samples = "SELECT count(*) FROM samples s JOIN clusters c ON c.id = s.cluster_pk"
    of_it = f"{samples} WHERE c.cluster_id = '{cluster}'"
    wait_for(
        lambda: query(db, of_it)[0][0] >= 1,
        20,
        f"samples of cluster {n}",
        detail=lambda: sampler.log[-1500:],
    )
    stood_by = sampler.log.count("standing by")
    wait_for(lambda: polling(client, sampler.pid, redis_port), 10, "a poll")
    os.kill(sampler.pid, signal.SIGSTOP)
    vanished = (
        "SELECT e.at FROM events e JOIN clusters c ON c.id = e.cluster_pk "
        f"WHERE c.cluster_id = '{cluster}' AND e.kind = 'vanished'"
    )
    try:
        client.delete(f"{PREFIX}{cluster}")
        wait_for(lambda: query(db, vanished), 15, f"the standby's vanished of {n}")
    finally:
        os.kill(sampler.pid, signal.SIGCONT)
    wait_for(lambda: sampler.log.count("standing by") > stood_by, 10, "the old sampler")
    time.sleep(1.0)  # what it had in hand would be written by now

    stamps = query(db, vanished)
    assert len(stamps) == 1, (n, stamps, sampler.log[-3000:])
    [(at,)] = stamps
    after = query(db, f"{of_it} AND s.sampled_at > :at", at=at)
    ended = query(db, f"SELECT ended_at FROM clusters WHERE cluster_id = '{cluster}'")
    assert after == [(0,)], (n, sampler.log[-3000:])
    assert ended[0][0] is not None, (n, sampler.log[-3000:])
    assert "sampling site" in standby.log


@pytest.mark.slow
def test_a_frozen_sampler_writes_nothing_after_the_takeover(redis_server, daemon_factory, tmp_path):
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    config = sites_config(tmp_path / "qwatch.toml", (CAPTURE_SITE, redis_server.url))
    with redis_client(redis_server) as client:
        # Each round's new cluster must be found at once, whoever samples: with 40,000 keys
        # under the prefix the budgeted SCAN takes up to tens of seconds to come by a new
        # one (docs/performance.md, section 10), so the server sends keyspace events.
        client.config_set("notify-keyspace-events", "K$")
        pipe = client.pipeline(transaction=False)
        for i in range(JUNK_KEYS):
            pipe.set(f"{PREFIX}junk{i}", b"not a record")
        pipe.execute()
        one = daemon_factory(db_url=db, config=config, sample_every=1.0)
        one.wait_log("sampling site")
        two = daemon_factory(db_url=db, config=config, sample_every=1.0)
        two.wait_log("standing by")

        for n in range(ROUNDS):
            freeze_the_sampler(client, redis_server.port, db, sampling(one, two), n)
        assert one.terminate() == 0
        assert two.terminate() == 0
    # One vanished per cluster, however many daemons saw it go.
    kinds = query(db, "SELECT kind, count(*) FROM events GROUP BY kind ORDER BY kind")
    assert dict(kinds) == {"appeared": ROUNDS, "vanished": ROUNDS}, (one.log, two.log)


@pytest.mark.slow
def test_a_takeover_during_a_postgres_outage_announces_nothing_twice(
    redis_server, daemon_factory, postgres_server_factory, tmp_path
):
    pg = postgres_server_factory()
    db = pg.create_database("takeover")
    config = sites_config(tmp_path / "qwatch.toml", (CAPTURE_SITE, redis_server.url))
    with redis_client(redis_server) as client:
        live = [add_cluster(client, n) for n in range(5)]
        one = daemon_factory(db_url=db, config=config, sample_every=1.0)
        one.wait_log("sampling site")
        appeared = "SELECT count(*) FROM events WHERE kind = 'appeared'"
        wait_for(lambda: query(db, appeared) == [(5,)], 20, "five clusters appeared")
        two = daemon_factory(db_url=db, config=config, sample_every=1.0)
        two.wait_log("standing by")

        pg.stop()
        one.wait_log("history database unavailable", 30)
        one.kill()  # kill -9 while the database is down: the standby takes over blind
        two.wait_log("could not read site", 20)
        # While nobody can read the history, one cluster goes and another comes.
        client.delete(f"{PREFIX}{live[0]}")
        newcomer = add_cluster(client, 5)
        time.sleep(2)  # polls held meanwhile
        pg.start()
        two.wait_log("resumed from its history", 60)
        kinds = "SELECT count(*) FROM events"
        wait_for(lambda: query(db, kinds) == [(7,)], 30, "the outage's two events")
        assert two.terminate() == 0

    rows = query(
        db,
        "SELECT c.cluster_id, e.kind FROM events e JOIN clusters c ON c.id = e.cluster_pk "
        "ORDER BY e.at, e.id",
    )
    assert sorted(rows) == sorted(
        [(cluster, "appeared") for cluster in live]
        + [(live[0], "vanished"), (newcomer, "appeared")]
    ), (rows, two.log)
    assert "holding its polls" in two.log
