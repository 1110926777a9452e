"""Private by default: qwatch's files are the owner's, and other people's tables are theirs.

- A SQLite history qwatch creates, its -wal and -shm, and the directory made for it are
  0600/0700; a directory that already exists is left as it is.
- A first migration into a database holding tables qwatch did not create is refused in
  one line (exit 2) unless --allow-foreign-tables; on PostgreSQL a schema of qwatch's own
  (`?options=-csearch_path%3Dqwatch`) needs no flag.
- qwatch's revision lives in `qwatch_alembic_version`: another Alembic user's
  `alembic_version` is never read as qwatch's, and a database made before (its revision
  in `alembic_version`, tests/fixtures/history_0004_alembic_version.sql) is recognised
  and its table renamed on upgrade.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from qwatch.store import migrate
from qwatch.store.engine import create_engine
from tests.helpers import FIXTURES, write_small_history
from tests.plugins.postgres_server import PostgresServer
from tests.plugins.qwatch_daemon import query, run_qwatch
from tests.plugins.redis_server import RedisServer

NO_REDIS = "redis://127.0.0.1:9/0"  # `db` and the read commands never touch it
LEGACY_DUMP = FIXTURES / "history_0004_alembic_version.sql"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, under which SQLite alone would make its files 0644."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def db(*args: str, url: str) -> tuple[int, str, str]:
    done = run_qwatch("db", *args, name="shop", redis_url=NO_REDIS, db_url=url)
    return done.returncode, done.stdout, done.stderr


def tables(url: str) -> set[str]:
    async def read() -> set[str]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
        finally:
            await engine.dispose()

    return asyncio.run(read())


# --------------------------------------------------------------------------- file modes


def test_a_new_history_its_wal_and_its_directory_are_the_owner_s(
    tmp_path: Path, umask_022: None
) -> None:
    path = tmp_path / "made" / "by" / "qwatch" / "history.sqlite3"
    engine = create_engine(f"sqlite:///{path}")

    async def write_and_look() -> dict[str, int]:
        try:
            await migrate.upgrade(engine)
            async with engine.begin() as conn:  # WAL mode: the write makes -wal and -shm
                await conn.execute(
                    text(
                        "INSERT INTO gaps (site, kind, started_at, reason) "
                        "VALUES ('s', 'redis', '2026-01-01 00:00:00', 'r')"
                    )
                )
                found = {p.name: mode(p) for p in path.parent.iterdir()}
        finally:
            await engine.dispose()
        return found

    found = asyncio.run(write_and_look())
    assert found == {
        "history.sqlite3": 0o600,
        "history.sqlite3-wal": 0o600,
        "history.sqlite3-shm": 0o600,
    }
    for directory in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert mode(directory) == 0o700, directory


def test_the_default_history_by_the_cli(tmp_path: Path, umask_022: None) -> None:
    data_home = Path(os.environ["XDG_DATA_HOME"])  # a fresh one per test (conftest)
    existing = mode(data_home)
    env_url = f"sqlite:///{data_home / 'qwatch' / 'history.sqlite3'}"
    code, _, err = db("upgrade", url=env_url)
    assert code == 0, err
    assert mode(data_home / "qwatch") == 0o700
    assert mode(data_home / "qwatch" / "history.sqlite3") == 0o600
    assert mode(data_home) == existing  # not qwatch's to change


def test_an_existing_directory_is_left_as_it_is(tmp_path: Path, umask_022: None) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    code, _, err = db("upgrade", url=f"sqlite:///{shared / 'history.sqlite3'}")
    assert code == 0, err
    assert mode(shared) == 0o755
    assert mode(shared / "history.sqlite3") == 0o600


# --------------------------------------------------------------------------- foreign tables


def _add_django_tables(url: str) -> None:
    async def add() -> None:
        engine = create_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE django_migrations (id INTEGER PRIMARY KEY)"))
                await conn.execute(text("CREATE TABLE auth_user (id INTEGER PRIMARY KEY)"))
                await conn.execute(text("INSERT INTO auth_user (id) VALUES (7)"))
        finally:
            await engine.dispose()

    asyncio.run(add())


def test_a_database_holding_others_tables_is_refused_unless_allowed(db_url: str) -> None:
    _add_django_tables(db_url)
    code, out, err = db("upgrade", url=db_url)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("qwatch: the database ")
    assert "already holds tables qwatch did not create (auth_user, django_migrations)" in err
    assert "--allow-foreign-tables" in err and "search_path" in err
    assert tables(db_url) == {"auth_user", "django_migrations"}  # nothing added

    code, out, err = db("upgrade", "--allow-foreign-tables", url=db_url)
    assert code == 0, err
    assert "(current;" in out
    assert {"auth_user", "clusters", "qwatch_alembic_version"} <= tables(db_url)
    assert query(db_url, "SELECT id FROM auth_user") == [(7,)]
    # Once qwatch's, the database is upgraded without the flag, whatever else it holds.
    code, _, err = db("upgrade", url=db_url)
    assert code == 0, err


def test_the_daemon_refuses_others_tables_too(redis_server: RedisServer, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mysite.sqlite3'}"  # the Django app's own database
    _add_django_tables(url)
    args = {"name": "shop", "redis_url": redis_server.url, "db_url": url}
    refused = run_qwatch("daemon", "--once", **args)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].startswith("qwatch: the database ")
    assert "already holds tables qwatch did not create" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert tables(url) == {"auth_user", "django_migrations"}

    allowed = run_qwatch("daemon", "--once", "--allow-foreign-tables", **args)
    assert allowed.returncode == 0, allowed.stderr
    assert "clusters" in tables(url)


def test_another_alembic_users_version_table_is_not_qwatch_s(db_url: str) -> None:
    # Its revision even shares a name with qwatch's first: the tables beside it decide.
    async def theirs() -> None:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
                await conn.execute(text("INSERT INTO alembic_version VALUES ('0001_initial')"))
                await conn.execute(text("CREATE TABLE invoices (id INTEGER PRIMARY KEY)"))
        finally:
            await engine.dispose()

    asyncio.run(theirs())
    code, _, err = db("upgrade", url=db_url)
    assert code == 2 and "(alembic_version, invoices)" in err

    code, out, err = db("upgrade", "--allow-foreign-tables", url=db_url)
    assert code == 0, err
    assert f"revision {migrate.head()} (current;" in out
    assert query(db_url, "SELECT version_num FROM alembic_version") == [("0001_initial",)]
    assert query(db_url, "SELECT version_num FROM qwatch_alembic_version") == [(migrate.head(),)]


def test_a_schema_of_its_own_needs_no_flag(postgres_server: PostgresServer) -> None:
    name = f"t_{uuid.uuid4().hex[:16]}"
    base = postgres_server.create_database(name)
    try:
        _add_django_tables(base)
        postgres_server.psql("CREATE SCHEMA qwatch", database=name)
        url = f"{base}?options=-csearch_path%3Dqwatch"
        code, _, err = db("upgrade", url=url)
        assert code == 0, err
        in_qwatch = postgres_server.psql(
            "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables"
            " WHERE table_schema = 'qwatch'",
            database=name,
        )
        assert "clusters" in in_qwatch and "qwatch_alembic_version" in in_qwatch
        assert tables(base) == {"auth_user", "django_migrations"}  # public: untouched
        write_small_history(url, datetime.now(UTC))
        done = run_qwatch("history", "5ma11c1u", name="shop", redis_url=NO_REDIS, db_url=url)
        assert done.returncode == 0 and "on web-1" in done.stdout, done.stderr
    finally:
        postgres_server.drop_database(name)


# --------------------------------------------------------------------------- the old name


def _legacy_database(db_url: str) -> None:
    """A qwatch history as the code before qwatch_alembic_version made it."""
    if db_url.startswith("sqlite"):
        with sqlite3.connect(db_url.split(":///", 1)[1]) as conn:
            conn.executescript(LEGACY_DUMP.read_text())
        return

    # PostgreSQL: upgraded, then given back the table and constraint names Alembic's
    # defaults gave it then (alembic_version, alembic_version_pkc).
    async def make() -> None:
        engine = create_engine(db_url)
        try:
            await migrate.upgrade(engine)
            async with engine.begin() as conn:
                await conn.execute(
                    text("ALTER TABLE qwatch_alembic_version RENAME TO alembic_version")
                )
                await conn.execute(text(
                    "ALTER TABLE alembic_version RENAME CONSTRAINT qwatch_alembic_version_pkc "
                    "TO alembic_version_pkc"
                ))  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(make())


def test_a_history_made_before_the_rename_is_recognised_and_moved(db_url: str) -> None:
    _legacy_database(db_url)
    code, out, err = db("current", url=db_url)
    assert code == 0, err
    # The SQLite dump was made at 0004; the PostgreSQL one is remade at the head.
    legacy = "0004_daily_availability_by_day" if db_url.startswith("sqlite") else migrate.head()
    assert f"revision {legacy} (" in out  # taken for qwatch's own history
    if db_url.startswith("sqlite"):
        # Taken for qwatch's own history at an older revision (0005 came after the dump),
        # not for a database that was never migrated.
        done = run_qwatch(
            "report", "cluster_runs", "--since", "2026-01-01", "--until", "2026-01-10",
            name="shop", redis_url=NO_REDIS, db_url=db_url,
        )  # fmt: skip
        assert done.returncode == 2 and "older schema" in done.stderr, done.stderr

    code, out, err = db("upgrade", url=db_url)
    assert code == 0, err
    assert f"revision {migrate.head()} (current;" in out
    found = tables(db_url)
    assert "alembic_version" not in found and "qwatch_alembic_version" in found
    assert query(db_url, "SELECT version_num FROM qwatch_alembic_version") == [(migrate.head(),)]
    if db_url.startswith("sqlite"):
        assert query(db_url, "SELECT count(*) FROM samples") == [(11,)]
        done = run_qwatch(
            "report", "cluster_runs", "--since", "2026-01-01", "--until", "2026-01-10",
            name="shop", redis_url=NO_REDIS, db_url=db_url,
        )  # fmt: skip
        assert done.returncode == 0 and "5ma11c1u" in done.stdout, done.stderr
