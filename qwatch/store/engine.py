"""The async engine for a history database URL: SQLite (embedded default) or PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from qwatch.config import async_database_url

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
    asyncpg); an unsupported scheme raises qwatch.config.ConfigError.
    """
    text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    parsed = make_url(async_database_url(text))
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, echo=echo)
    return _postgres_engine(parsed, echo=echo)


def _sqlite_engine(url: URL, *, echo: bool) -> AsyncEngine:
    database = url.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
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


def _postgres_engine(url: URL, *, echo: bool) -> AsyncEngine:
    return create_async_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        connect_args={
            "timeout": PG_CONNECT_TIMEOUT_S,
            "command_timeout": PG_COMMAND_TIMEOUT_S,
            # date_trunc and casts to date follow the session zone; pin it to UTC.
            "server_settings": {"application_name": "qwatch", "timezone": "UTC"},
        },
    )


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
