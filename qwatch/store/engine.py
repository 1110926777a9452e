"""The async engine for a history database URL: SQLite (embedded default) or PostgreSQL.

A SQLite history is private: the file (and so its -wal and -shm, which SQLite creates
with the database file's mode) is made 0600, and any directory made for it 0700. A
PostgreSQL URL's libpq options become asyncpg's connect arguments.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import ssl
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from qwatch.config import ConfigError, PostgresOptions, async_database_url, postgres_options
from qwatch.config.database_url import LIBPQ_OPTIONS

# Every wait on PostgreSQL is bounded, so a dead or hung server surfaces as an error the
# writer can buffer through instead of a daemon that silently stops.
PG_CONNECT_TIMEOUT_S = 5.0
PG_COMMAND_TIMEOUT_S = 30.0
# How long SQLite waits on another writer's lock before reporting "database is locked".
# The wait runs in aiosqlite's thread, which can't be cancelled and holds up the exit:
# it must fit in the daemon's 5 s shutdown budget. The daemon retries a locked write anyway.
SQLITE_BUSY_TIMEOUT_MS = 2000


def create_engine(url: str | URL, *, echo: bool = False) -> AsyncEngine:
    """An AsyncEngine for `url`, with the per-backend settings qwatch relies on.

    sqlite:/// and postgresql:// URLs are mapped to their async drivers (aiosqlite,
    asyncpg); an unsupported scheme, an unknown URL option or a CA file that will not
    load raises qwatch.config.ConfigError.
    """
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    parsed = make_url(async_database_url(text))
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    return _postgres_engine(parsed, echo=echo)


def _sqlite_engine(url: URL, *, echo: bool) -> AsyncEngine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        make_private_file(Path(database).expanduser())
    engine = create_async_engine(url, echo=echo)

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the monitor read while the daemon writes; NORMAL is durable enough in
        # WAL mode and far cheaper; foreign keys are off by default in SQLite.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    return engine


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is SQLite's "database or disk is full" (SQLITE_FULL)."""
    inner = getattr(error, "orig", None) or error
    return getattr(inner, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


async def truncate_wal(engine: AsyncEngine) -> None:
    """Copy a SQLite history's WAL into the database and cut it to nothing, so that space
    freed on a full disk goes to new writes rather than to a WAL that only shrinks at its
    next checkpoint (about 4 MB in). Nothing on PostgreSQL; errors are the caller's."""
    if engine.dialect.name != "sqlite":
        return
    async with engine.connect() as conn:
        await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def make_private_file(path: Path) -> None:
    """Create `path` empty and 0600 (an empty file is an empty SQLite database), and each
    missing directory above it 0700; an existing file or directory is left as it is."""
    missing = [parent for parent in path.parents if not parent.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            directory.mkdir(mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _postgres_engine(url: URL, *, echo: bool) -> AsyncEngine:
    options = postgres_options(url.query)
    return create_async_engine(
        url.difference_update_query(LIBPQ_OPTIONS),
        echo=echo,
        pool_pre_ping=True,
        connect_args=postgres_connect_args(options),
    )


def postgres_connect_args(options: PostgresOptions) -> dict[str, Any]:
    """asyncpg's connect() keywords for a URL's libpq options, over qwatch's defaults."""
    server_settings = {"application_name": options.application_name or "qwatch"}
    server_settings.update(options.settings)
    # date_trunc and casts to date follow the session zone: qwatch pins it to UTC.
    server_settings["timezone"] = "UTC"
    args: dict[str, Any] = {
        "timeout": options.connect_timeout or PG_CONNECT_TIMEOUT_S,
        "command_timeout": PG_COMMAND_TIMEOUT_S,
        "server_settings": server_settings,
    }
    if options.sslmode is not None or options.sslrootcert is not None:
        args["ssl"] = _ssl(options.sslmode or "prefer", options.sslrootcert)
    if options.target_session_attrs is not None:
        args["target_session_attrs"] = options.target_session_attrs
    return args


def _ssl(mode: str, rootcert: str | None) -> str | ssl.SSLContext:
    """libpq's sslmode as asyncpg's `ssl`. Without sslrootcert asyncpg reads a mode the
    way libpq does (PGSSLROOTCERT, ~/.postgresql/root.crt); with one, the modes that
    check certificates get a context verifying against it (libpq: `require` with a root
    certificate verifies it, as verify-ca does)."""
    if rootcert is None or mode in ("disable", "allow", "prefer"):
        return mode
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = mode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    try:
        if rootcert == "system":
            context.load_default_certs()
        else:
            context.load_verify_locations(cafile=os.path.expanduser(rootcert))
    except (OSError, ssl.SSLError) as error:
        reason = error.strerror or str(error).splitlines()[0]
        raise ConfigError(f"database URL: sslrootcert {rootcert} will not load: {reason}") from None
    return context


# SQLSTATE classes that say "try again later": connection, resources, operator
# intervention (shutdown, starting up), system error, transaction rollback (deadlock).
_TRANSIENT_SQLSTATE_CLASSES = {"08", "40", "53", "57", "58"}
_TRANSIENT_SQLSTATES = {"25006", "55P03", "55006"}  # read-only transaction, lock not available
_PERMANENT = (sa_exc.IntegrityError, sa_exc.DataError, sa_exc.ProgrammingError)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means the database is down, locked, read-only or timing out:
    worth waiting for. Anything else (a constraint or data error, a bug) fails the same
    way however often it is retried.
    """
    if isinstance(error, OSError | TimeoutError):
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if error.connection_invalidated:
            return True
        sqlstate = getattr(error.orig, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
        return not isinstance(error, _PERMANENT)
    # asyncpg raises its own errors, untranslated, while connecting.
    if type(error).__module__.startswith("asyncpg"):
        sqlstate = getattr(error, "sqlstate", None)
        return not sqlstate or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
    return False


def create_read_only_engine(url: str) -> AsyncEngine:
    """An engine on a Django project's own database (its cache table, its ORM queue) that
    cannot write: SQLite opened as a read-only URI (never created, never journaled by us),
    PostgreSQL sessions with default_transaction_read_only, MySQL/MariaDB sessions set
    READ ONLY as they connect. qwatch reads the site's tables;
    it must never be what changes or locks them.

    Raises ConfigError for a scheme qwatch does not read; an SQLite file that does not exist
    surfaces when connecting, as the driver's error.
    """
    parsed = make_url(async_database_url(url, project=True))
    if parsed.get_backend_name() == "mysql":
        return _mysql_read_only_engine(parsed)
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "").expanduser()
        if not parsed.database or parsed.database == ":memory:":
            raise ConfigError("database URL: a SQLite project database must be a file")
        # SQLAlchemy passes a `file:` database with uri=true on to sqlite3 as a URI.
        ro = URL.create(
            "sqlite+aiosqlite",
            database=f"file:{path.as_posix()}",
            query={"mode": "ro", "uri": "true"},
        )
        return create_async_engine(
            ro, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, poolclass=NullPool
        )
    options = postgres_options(parsed.query)
    args = postgres_connect_args(options)
    args["server_settings"]["default_transaction_read_only"] = "on"
    args["server_settings"]["application_name"] = options.application_name or "qwatch (read-only)"
    return create_async_engine(
        parsed.difference_update_query(LIBPQ_OPTIONS), pool_pre_ping=True, connect_args=args
    )


# MySQL/MariaDB: connecting is bounded by the driver; a statement by the server (MariaDB's
# max_statement_time, MySQL's max_execution_time for SELECTs), as PG_COMMAND_TIMEOUT_S.
MYSQL_CONNECT_TIMEOUT_S = 5


def _mysql_read_only_engine(url: URL) -> AsyncEngine:
    import importlib.util

    if importlib.util.find_spec("aiomysql") is None:
        raise ConfigError(
            "reading a MySQL database needs the aiomysql driver: install qwatch[mysql]"
        )
    engine = create_async_engine(
        url,
        poolclass=NullPool,  # the cache reader holds its one connection itself
        connect_args={
            "connect_timeout": MYSQL_CONNECT_TIMEOUT_S,
            # Every transaction of the session read-only: a write is refused by the server.
            "init_command": "SET SESSION TRANSACTION READ ONLY",
        },
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _statement_timeout(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT VERSION()")
            [(version,)] = cursor.fetchall()
            if "mariadb" in str(version).lower():
                cursor.execute(f"SET SESSION max_statement_time = {PG_COMMAND_TIMEOUT_S:g}")
            else:
                cursor.execute(
                    f"SET SESSION max_execution_time = {PG_COMMAND_TIMEOUT_S * 1000:.0f}"
                )
        finally:
            cursor.close()

    return engine
