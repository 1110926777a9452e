"""Backlogs per queue: the arithmetic, Redis LLEN of several lists, the ORM broker's rows as
django-q2 itself writes them (SQLite, and the same rows in PostgreSQL), unknown brokers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qwatch.config import Site
from qwatch.sources import backlog as backlog_module
from qwatch.sources.backlog import (
    BacklogReader,
    OrmCount,
    orm_backlogs,
    orm_due,
    redis_backlogs,
    unreadable,
)
from qwatch.sources.redis import open_connection
from qwatch.store.engine import create_read_only_engine
from qwatch.values import Backlog, backlog_total
from tests.plugins.postgres_server import PostgresServer
from tests.plugins.redis_server import RedisServer, redis_client

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)

# Tasks for the main queue and for the ALT_CLUSTERS queue "long", through django-q2's own
# ORM broker; prints every row's lock (the time it became due) as ISO text.
ENQUEUE_ORM = """
from django_q.tasks import async_task
from django_q.models import OrmQ
for _ in range(3):
    async_task("qtasks.nap", 0)
for _ in range(2):
    async_task("qtasks.nap", 0, cluster="long")
for key, lock in OrmQ.objects.order_by("id").values_list("key", "lock"):
    print(key, lock.isoformat())
"""


def test_orm_arithmetic() -> None:
    counts = {"main": OrmCount(4, T0 - timedelta(seconds=90)), "other": OrmCount(9, T0)}
    assert orm_backlogs(("main", "long"), counts, T0) == (
        Backlog("main", "orm", 4, 90.0),
        Backlog("long", "orm", 0),  # no row: empty, not unknown
    )
    # A clock behind the database's never shows a negative age.
    assert orm_backlogs(("main",), {"main": OrmCount(1, T0 + timedelta(seconds=5))}, T0) == (
        Backlog("main", "orm", 1, 0.0),
    )
    assert (
        backlog_total(
            [Backlog("a", "redis", 3), Backlog("b", "redis", None), Backlog("c", "r", 12)]
        )
        == 15
    )
    assert backlog_total([Backlog("a", "sqs", None)]) is None


@pytest.mark.parametrize("broker", ["sqs", "mongo", "iron_mq", "broker_class"])
async def test_brokers_without_a_side_effect_free_count_are_unknown(broker: str) -> None:
    site = Site(name="s", broker=broker, alt_queues=("long",))
    backlogs = await BacklogReader(site).read(None)
    assert backlogs == (
        Backlog("s", broker, None, reason=unreadable(broker)),
        Backlog("long", broker, None, reason=unreadable(broker)),
    )
    assert "side effects" in backlogs[0].reason


async def test_redis_lengths_of_several_queues_in_one_go(redis_server: RedisServer) -> None:
    queues = [f"q{i}" for i in range(10)]
    with redis_client(redis_server) as client:
        for i, queue in enumerate(queues):
            if i:
                client.rpush(f"django_q:{queue}:q", *[b"t"] * i)
        client.set("django_q:q3:q", b"not a list")
    connection = await open_connection(redis_server.settings())
    try:
        backlogs = await redis_backlogs(connection, queues)
    finally:
        await connection.close()
    assert [b.length for b in backlogs] == [0, 1, 2, None, 4, 5, 6, 7, 8, 9]
    assert backlogs[3].reason == "broker key holds something other than a list"
    assert {b.broker for b in backlogs} == {"redis"}


def _pairs(output: str) -> list[tuple[str, str]]:
    return [(key, lock) for key, lock in (line.split(" ") for line in output.splitlines())]


@pytest.fixture
def orm_rows(django_project_factory, redis_server):  # type: ignore[no-untyped-def]
    """A project on the ORM broker (SQLite) with 3 tasks queued to its main queue and 2 to
    "long"; its database path and the rows as (key, lock)."""
    project = django_project_factory(
        redis_server.url, name="ormsite", orm="default", ALT_CLUSTERS={"long": {}}
    )
    rows = [
        (key, datetime.fromisoformat(lock)) for key, lock in _pairs(project.run_python(ENQUEUE_ORM))
    ]
    return project.root / "db.sqlite3", rows


async def test_orm_backlog_of_each_queue_on_sqlite(orm_rows) -> None:  # type: ignore[no-untyped-def]
    db, rows = orm_rows
    assert [key for key, _ in rows] == ["ormsite"] * 3 + ["long"] * 2
    site = Site(
        name="ormsite", broker="orm", alt_queues=("long",), broker_database=f"sqlite:///{db}"
    )
    reader = BacklogReader(site)
    try:
        backlogs = await reader.read(None)
    finally:
        await reader.close()
    assert [(b.queue, b.broker, b.length) for b in backlogs] == [
        ("ormsite", "orm", 3),
        ("long", "orm", 2),
    ]
    oldest = min(lock for key, lock in rows if key == "ormsite")
    age = backlogs[0].oldest_age_s
    assert age is not None and 0 <= age < (datetime.now(UTC) - oldest).total_seconds() + 1


async def _due_at_edge(url: str, rows: list[tuple[str, datetime]]) -> None:
    """ORM.queue_size counts lock <= now: a row is due at its lock's very microsecond."""
    newest = max(lock for _, lock in rows)
    engine = create_read_only_engine(url)
    try:
        at = await orm_due(engine, newest)
        before = await orm_due(engine, newest - timedelta(microseconds=1))
    finally:
        await engine.dispose()
    assert at["ormsite"].length + at["long"].length == 5
    assert at["ormsite"].oldest_due == min(lock for key, lock in rows if key == "ormsite")
    assert sum(c.length for c in before.values()) == 4


async def test_orm_lock_due_edge_on_sqlite(orm_rows) -> None:  # type: ignore[no-untyped-def]
    db, rows = orm_rows
    await _due_at_edge(f"sqlite:///{db}", rows)


async def test_orm_lock_due_edge_on_postgresql(
    orm_rows, postgres_server: PostgresServer, pg_url: str
) -> None:  # type: ignore[no-untyped-def]
    # The rows django-q2 wrote, copied into django_q_ormq as Django creates it on PostgreSQL
    # (no PostgreSQL driver for Django is installed here).
    _db, rows = orm_rows
    database = pg_url.rsplit("/", 1)[1]
    values = ", ".join(f"('{key}', 'payload', '{lock.isoformat()}')" for key, lock in rows)
    postgres_server.psql(
        'CREATE TABLE django_q_ormq (id serial PRIMARY KEY, "key" varchar(100) NOT NULL, '
        'payload text NOT NULL, "lock" timestamp with time zone NULL);'
        f'INSERT INTO django_q_ormq ("key", payload, "lock") VALUES {values};'
        "INSERT INTO django_q_ormq (\"key\", payload, \"lock\") VALUES ('ormsite', 'p', NULL);",
        database,
    )
    await _due_at_edge(pg_url, rows)


async def test_unreachable_orm_database_is_unknown_not_a_crash(tmp_path: Path) -> None:
    site = Site(name="s", broker="orm", broker_database=f"sqlite:///{tmp_path / 'missing.sqlite3'}")
    reader = BacklogReader(site)
    try:
        (backlog,) = await reader.read(None)
    finally:
        await reader.close()
    assert backlog.length is None
    assert backlog.reason.startswith("ORM database: ")


async def test_a_slow_orm_database_never_holds_up_a_read(tmp_path: Path) -> None:
    """After the first read the value is served from memory while a refresh runs; once it is
    older than ORM_STALE_S it is unknown, with the reason."""
    now = [0.0]
    release = asyncio.Event()
    site = Site(name="s", broker="orm", broker_database=f"sqlite:///{tmp_path / 'x'}")
    reader = BacklogReader(site, clock=lambda: now[0])
    orm = reader._orm
    assert orm is not None
    # a read that answered at 0 s, then a database that stops answering
    orm._last = backlog_module._Read(0.0, datetime.now(UTC), {"s": OrmCount(2, None)})

    async def never() -> None:
        await release.wait()

    orm._refresh = never  # type: ignore[method-assign]
    now[0] = 6.0  # due for a refresh: started in the background, the old value served
    assert (await reader.read(None))[0].length == 2
    now[0] = 16.0
    (stale,) = await reader.read(None)
    assert stale.length is None and "slow" in stale.reason
    await reader.close()
