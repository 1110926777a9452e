"""CacheSource over Django's DatabaseCache: values written by Django's own cache (a real
project's `caches['default']`, in a subprocess) into a real SQLite file and a real
PostgreSQL database, and hostile rows planted beside them."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from qwatch.config.settings import CacheSettings, Site
from qwatch.errors import SourceUnavailable
from qwatch.sources import open_source
from qwatch.sources.cache import CacheSource, open_reader, record_keys
from qwatch.sources.cache_database import DatabaseCacheReader, expires_at, unwrap
from qwatch.sources.cache_reader import MAX_VALUE_BYTES, Refused
from qwatch.values import Skipped
from tests.helpers import CAPTURE_SECRET, CAPTURE_SITE, EXPECTED
from tests.plugins.mariadb_server import MariaDBServer
from tests.plugins.postgres_server import PostgresServer
from tests.plugins.qcluster import DjangoProject
from tests.records import call_ops, read_record, sign, stat_pickle, state, whole

TABLE = "qwatch_cache"
INDEX = f"django_q:{CAPTURE_SITE}:cluster"

# Django's cache writes what the plan says: `set` through caches['default'] (so its own
# pickling, base64, key function and expiry), `raw` as a row typed straight into the table.
WRITER = """
import json, sys
from datetime import timedelta
from django.core.cache import caches
from django.db import connection
from django.utils import timezone
cache = caches["default"]
for step in json.loads(sys.argv[1]):
    if "set" in step:
        cache.set(step["set"], step["value"], step.get("timeout", 300))
    else:
        text = step.get("text") or "A" * step["size"]
        expires = timezone.now() + timedelta(seconds=step.get("ttl", 300))
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO %s (cache_key, value, expires) VALUES (%%s, %%s, %%s)"
                % connection.ops.quote_name(cache._table),
                [cache.make_key(step["raw"]), text,
                 connection.ops.adapt_datetimefield_value(expires)],
            )
"""


def _captures() -> dict[str, str]:
    """One captured django-q2 record (signed str) per cluster id."""
    chosen: dict[str, str] = {}
    for name, expected in sorted(EXPECTED.items()):
        if name.startswith("q2_") and name.endswith(".txt") and "rotated" not in name:
            chosen.setdefault(expected["cluster_id"], read_record(name).decode())
    return chosen


CAPTURES = _captures()


def _caches(prefix: str = "", version: int = 1) -> str:
    return (
        "CACHES = {'default': {'BACKEND': 'django.core.cache.backends.db.DatabaseCache', "
        f"'LOCATION': {TABLE!r}, 'KEY_PREFIX': {prefix!r}, 'VERSION': {version}}}}}\n"
    )


def mysql_databases(url: str) -> str:
    """Settings lines for a Django project on the MariaDB database at `url`, through
    PyMySQL (Django accepts it as MySQLdb: it reports a mysqlclient-like version)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return (
        "import pymysql\npymysql.install_as_MySQLdb()\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.mysql', "
        f"'NAME': {parsed.database!r}, 'HOST': {parsed.host!r}, 'PORT': {parsed.port}, "
        f"'USER': {parsed.username!r}, 'PASSWORD': {parsed.password!r}}}}}\n"
    )


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def project(
    request: pytest.FixtureRequest, django_project_factory: Callable[..., DjangoProject]
) -> tuple[DjangoProject, str]:
    """A Django project whose default cache is a DatabaseCache, and its database URL."""
    more = _caches("shop", 3)
    if request.param == "mysql":
        url = request.getfixturevalue("mysql_url")
        made = django_project_factory(
            "redis://unused",
            CAPTURE_SITE,
            more_settings=more + mysql_databases(url),
            own_database=True,
            orm="default",
        )
    elif request.param == "postgresql":
        url: str = request.getfixturevalue("pg_url")
        server: PostgresServer = request.getfixturevalue("postgres_server")
        name = url.rsplit("/", 1)[1]
        more += (
            "DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', "
            f"'NAME': {name!r}, 'HOST': '127.0.0.1', 'PORT': {server.port}, "
            "'USER': 'postgres'}}\n"
        )
        made = django_project_factory(
            "redis://unused", CAPTURE_SITE, more_settings=more, own_database=True, orm="default"
        )
    else:
        made = django_project_factory(
            "redis://unused", CAPTURE_SITE, more_settings=more, orm="default"
        )
        url = f"sqlite:///{made.root / 'db.sqlite3'}"
    made.manage("createcachetable")
    return made, url


def _write(project: DjangoProject, *steps: dict[str, Any]) -> None:
    project.run_python(WRITER, json.dumps(list(steps)))


def _site(url: str, **cache: Any) -> Site:
    settings = CacheSettings("database", url, table=TABLE, key_prefix="shop", version=3, **cache)
    return Site(name=CAPTURE_SITE, secret_key=CAPTURE_SECRET, cache=settings)


def _record_key(cluster_id: str) -> str:
    return f"{INDEX}:{cluster_id}"


async def test_poll_reads_every_cluster_django_wrote(project: tuple[DjangoProject, str]) -> None:
    made, url = project
    ids = sorted(CAPTURES)[:3]
    _write(
        made,
        {"set": INDEX, "value": [_record_key(i) for i in ids], "timeout": None},
        *({"set": _record_key(i), "value": CAPTURES[i]} for i in ids),
    )
    source = open_source(_site(url))
    assert isinstance(source, CacheSource)
    try:
        poll = await source.poll()
        version = await source.server_version()
        assert await source.acquire_lock("k", "t", 5.0) is True
    finally:
        await source.close()
    assert sorted(c.cluster_id for c in poll.clusters) == ids
    assert poll.skipped == ()
    starts = {"sqlite": "SQLite 3.", "postgresql": "PostgreSQL ", "mysql": "MariaDB 10."}
    assert version.startswith(starts[url.split(":", 1)[0].split("+")[0]])


async def test_missing_index_is_no_cluster(project: tuple[DjangoProject, str]) -> None:
    _, url = project
    async with CacheSource(_site(url)) as source:
        poll = await source.poll()
    assert poll.clusters == () and poll.skipped == ()


async def test_hostile_values_are_refused_with_reasons_never_run(
    project: tuple[DjangoProject, str], tmp_path: Path
) -> None:
    made, url = project
    marker = tmp_path / "ran"
    good = sorted(CAPTURES)[0]
    copy_of = sorted(CAPTURES)[1]
    system = whole(call_ops("os", "system", f"touch {marker}"))
    forged = sign(stat_pickle(state()), key="not-the-site-key-0123456789")
    hostile = {
        "notb64": {"raw": _record_key("notb64"), "text": "not base64 at all!"},
        "system": {"raw": _record_key("system"), "text": _b64(system)},
        "huge": {"raw": _record_key("huge"), "size": (MAX_VALUE_BYTES // 3 + 1) * 4 + 8},
        "int": {"set": _record_key("int"), "value": 12345},
        "forged": {"set": _record_key("forged"), "value": forged},
        "copy": {"set": _record_key("copy"), "value": CAPTURES[copy_of]},
        "expired": {"set": _record_key("expired"), "value": CAPTURES[copy_of], "timeout": -60},
    }
    index = [_record_key(good), *(_record_key(k) for k in hostile), "other:app:key"]
    _write(
        made,
        {"set": INDEX, "value": index, "timeout": None},
        {"set": _record_key(good), "value": CAPTURES[good]},
        *hostile.values(),
    )
    async with CacheSource(_site(url)) as source:
        poll = await source.poll()
    assert [c.cluster_id for c in poll.clusters] == [good]
    reasons = {s.key.rsplit(":", 1)[1]: s.reason for s in poll.skipped}
    assert reasons == {
        "notb64": "value is not base64",
        "system": "forbidden global os.system",
        "huge": "too large",
        "int": "not a Django Q record",
        "forged": "bad signature",
        "copy": f"record is for cluster {copy_of}",
        "key": "index entry is not a record key of this site",
    }
    assert not marker.exists()
    # The expired row is left out, as Django's own get_many would leave it.
    assert "expired" not in reasons


async def test_hostile_index_is_refused(project: tuple[DjangoProject, str], tmp_path: Path) -> None:
    made, url = project
    marker = tmp_path / "ran"
    system = whole(call_ops("os", "system", f"touch {marker}"))
    _write(made, {"raw": INDEX, "text": _b64(system)})
    async with CacheSource(_site(url)) as source:
        poll = await source.poll()
    assert poll.clusters == ()
    assert poll.skipped == (Skipped(f"shop:3:{INDEX}", "forbidden global os.system"),)
    assert not marker.exists()


async def test_missing_table_and_unreachable_database_are_unavailable(
    project: tuple[DjangoProject, str],
) -> None:
    _, url = project
    source = CacheSource(
        _site(url).__class__(
            name=CAPTURE_SITE,
            secret_key=CAPTURE_SECRET,
            cache=CacheSettings("database", url, table="no_such_table"),
        )
    )
    with pytest.raises(SourceUnavailable, match="database cache no_such_table in "):
        await source.poll()
    await source.close()


@pytest.mark.parametrize(("scheme", "says"), [("postgresql", ""), ("mysql", "Can't connect")])
async def test_an_unreachable_database_is_named_without_its_password(
    scheme: str, says: str
) -> None:
    from tests.helpers import free_port

    url = f"{scheme}://qw:s3cr3t-pw@127.0.0.1:{free_port()}/shop"
    source = CacheSource(_site(url))
    with pytest.raises(SourceUnavailable) as raised:
        await source.poll()
    await source.close()
    message = str(raised.value)
    assert "s3cr3t-pw" not in message and "\n" not in message
    assert message.startswith(f"database cache {TABLE} in {scheme}://qw:***@127.0.0.1:")
    assert says in message


async def test_missing_sqlite_file_is_unavailable(tmp_path: Path) -> None:
    source = CacheSource(_site(f"sqlite:///{tmp_path / 'nope.sqlite3'}"))
    with pytest.raises(SourceUnavailable, match="unable to open database file"):
        await source.poll()
    await source.close()
    assert not (tmp_path / "nope.sqlite3").exists()  # read-only: never created


async def test_naive_expires_is_read_in_the_projects_zone(
    django_project_factory: Callable[..., DjangoProject],
) -> None:
    # USE_TZ=False: Django writes `expires` as naive local time in TIME_ZONE. Read as UTC,
    # a row that expired a minute ago in Tokyo would look nine hours alive.
    made = django_project_factory(
        "redis://unused",
        CAPTURE_SITE,
        more_settings=_caches("shop", 3) + "USE_TZ = False\nTIME_ZONE = 'Asia/Tokyo'\n",
        orm="default",
    )
    made.manage("createcachetable")
    good, stale = sorted(CAPTURES)[:2]
    _write(
        made,
        {"set": INDEX, "value": [_record_key(good), _record_key(stale)], "timeout": None},
        {"set": _record_key(good), "value": CAPTURES[good]},
        {"set": _record_key(stale), "value": CAPTURES[stale], "timeout": -60},
    )
    url = f"sqlite:///{made.root / 'db.sqlite3'}"
    async with CacheSource(_site(url, time_zone="Asia/Tokyo")) as source:
        poll = await source.poll()
    assert [c.cluster_id for c in poll.clusters] == [good]


def test_expires_at_reads_each_store_s_form() -> None:
    tokyo = timezone(timedelta(hours=9))
    assert expires_at("2026-01-01 09:00:00", tokyo) == datetime(2026, 1, 1, tzinfo=UTC)
    assert expires_at("9999-12-31 23:59:59", UTC) == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    aware = datetime(2026, 1, 1, tzinfo=UTC)
    assert expires_at(aware, tokyo) == aware
    assert expires_at("soon", UTC) is None
    assert expires_at(17, UTC) is None


def test_unwrap_refuses_what_is_not_base64_text() -> None:
    assert unwrap("aGk=") == b"hi"
    assert unwrap("aGk=\n!") == Refused("value is not base64")
    assert unwrap("é") == Refused("value is not base64")
    assert unwrap(b"aGk=") == Refused("value is not text")
    assert unwrap(None) == Refused("value is not text")


def test_index_must_be_a_pickled_list_of_str() -> None:
    import pickle

    prefix = f"{INDEX}:"
    keys = [f"{prefix}a", f"{prefix}b", f"{prefix}a"]
    assert record_keys(pickle.dumps(keys, 5), prefix) == ([f"{prefix}a", f"{prefix}b"], [])
    assert record_keys(pickle.dumps({"a": 1}, 5), prefix) == "index is not a list"
    assert record_keys(pickle.dumps([1], 5), prefix) == "index holds something other than str"
    assert record_keys(pickle.dumps([datetime.now(UTC)], 5), prefix) == (
        "forbidden global datetime.datetime"
    )
    assert record_keys(b"garbage", prefix) == "bad pickle"


def test_every_backend_has_its_reader() -> None:
    memcached = open_reader(CacheSettings("memcached", "127.0.0.1:11211"))
    file = open_reader(CacheSettings("file", "/nonexistent"))
    assert (type(memcached).__name__, type(file).__name__) == ("MemcachedReader", "FileCacheReader")


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


async def test_a_source_held_open_never_holds_django_back(
    project: tuple[DjangoProject, str], request: pytest.FixtureRequest
) -> None:
    # The reader keeps its connection between polls; each read must end its transaction,
    # or SQLite's SHARED lock would keep Django from writing (database is locked) and a
    # PostgreSQL session would sit idle in transaction.
    made, url = project
    first, second = sorted(CAPTURES)[:2]
    _write(
        made,
        {"set": INDEX, "value": [_record_key(first)], "timeout": None},
        {"set": _record_key(first), "value": CAPTURES[first]},
    )
    async with CacheSource(_site(url)) as source:
        assert [c.cluster_id for c in (await source.poll()).clusters] == [first]
        # MySQL/MariaDB: nothing to list (information_schema.innodb_trx keeps a row per
        # session even between transactions); the second poll below tells instead, since
        # under REPEATABLE READ a transaction left open would not see the row Django adds.
        if url.startswith("postgresql"):
            server: PostgresServer = request.getfixturevalue("postgres_server")
            states = server.psql(
                "SELECT state FROM pg_stat_activity WHERE application_name LIKE 'qwatch%'"
            )
            assert "idle" in states and "in transaction" not in states
        _write(
            made,
            {"set": INDEX, "value": [_record_key(first), _record_key(second)], "timeout": None},
            {"set": _record_key(second), "value": CAPTURES[second]},
        )
        assert sorted(c.cluster_id for c in (await source.poll()).clusters) == [first, second]


async def test_a_lost_connection_is_unavailable_then_made_again(
    postgres_server_factory: Callable[..., PostgresServer],
) -> None:
    import base64
    import pickle

    server = postgres_server_factory()
    url = server.create_database("shop").replace("postgresql+asyncpg://", "postgresql://")
    cluster_id = sorted(CAPTURES)[0]

    def row(key: str, value: object) -> str:
        text = base64.b64encode(pickle.dumps(value, 5)).decode()  # as Django's _base_set
        return f"('shop:3:{key}', '{text}', now() + interval '1 hour')"

    server.psql(
        f"CREATE TABLE {TABLE} (cache_key varchar(255) PRIMARY KEY, value text NOT NULL, "
        "expires timestamptz NOT NULL);"
        f"INSERT INTO {TABLE} VALUES {row(INDEX, [_record_key(cluster_id)])}, "
        f"{row(_record_key(cluster_id), CAPTURES[cluster_id])}",
        database="shop",
    )
    async with CacheSource(_site(url)) as source:
        assert [c.cluster_id for c in (await source.poll()).clusters] == [cluster_id]
        server.stop()
        with pytest.raises(SourceUnavailable, match=f"^database cache {TABLE} in postgresql://"):
            await source.poll()
        server.start()
        assert [c.cluster_id for c in (await source.poll()).clusters] == [cluster_id]


async def test_rows_django_would_never_write_are_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as db:  # SQLite takes any type in any column
        db.execute(f"CREATE TABLE {TABLE} (cache_key text, value text, expires datetime)")
        db.executemany(
            f"INSERT INTO {TABLE} VALUES (?, ?, ?)",
            [
                ("k:when", "aGk=", "next tuesday"),
                ("k:blob", b"aGk=", "9999-12-31 23:59:59"),
                ("k:good", "aGk=", "9999-12-31 23:59:59"),
                ("k:gone", "aGk=", "2000-01-01 00:00:00"),
            ],
        )
    db.close()
    reader = DatabaseCacheReader(CacheSettings("database", f"sqlite:///{path}", table=TABLE))
    try:
        found = await reader.get_many(["k:when", "k:blob", "k:good", "k:gone", "k:none"])
    finally:
        await reader.close()
    assert found == {
        "k:when": Refused("expires is not a time"),
        "k:blob": Refused("value is not text"),
        "k:good": b"hi",
    }


async def test_the_mysql_session_cannot_write(
    mysql_url: str, mariadb_server: MariaDBServer
) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from qwatch.store.engine import PG_COMMAND_TIMEOUT_S, create_read_only_engine

    database = mysql_url.rsplit("/", 1)[1]
    mariadb_server.sql(f"CREATE TABLE `{database}`.t (a int)")
    engine = create_read_only_engine(mysql_url)
    try:
        async with engine.connect() as connection:
            [(read_only, limit)] = (
                await connection.execute(text("SELECT @@tx_read_only, @@max_statement_time"))
            ).all()
            with pytest.raises(OperationalError, match="READ ONLY"):
                await connection.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
    assert (read_only, float(limit)) == (1, PG_COMMAND_TIMEOUT_S)
    assert mariadb_server.sql(f"SELECT COUNT(*) FROM `{database}`.t").strip() == "0"


def test_mysql_without_its_driver_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from qwatch.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "aiomysql" else real(name, *a)
    )
    with pytest.raises(ConfigError) as raised:
        DatabaseCacheReader(CacheSettings("database", "mysql://u:pw@h/db", table=TABLE))
    assert str(raised.value) == (
        "reading a MySQL database needs the aiomysql driver: install qwatch[mysql]"
    )


async def test_mysql_through_its_socket(mysql_url: str, mariadb_server: MariaDBServer) -> None:
    # As database_url() writes Django's HOST "/path/mysqld.sock": no host, the socket file.
    credentials, database = mysql_url.split("@", 1)[0], mysql_url.rsplit("/", 1)[1]
    url = f"{credentials}@/{database}?unix_socket={mariadb_server.socket}"
    reader = DatabaseCacheReader(CacheSettings("database", url, table=TABLE))
    try:
        assert (await reader.version()).startswith("MariaDB 10.")
    finally:
        await reader.close()
