"""Django's DatabaseCache read from outside: its table in the project's own database.

The table is Django's (`createcachetable`): cache_key, value (base64 of the pickle), expires.
qwatch reads it through a read-only engine (SQLite opened mode=ro, PostgreSQL and MySQL
read-only sessions), one SELECT for all the keys a poll wants, and never deletes what has expired
(Django's get_many would): that is the site's to do.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.expression import Executable

from qwatch.config.database_url import sqlite_path
from qwatch.config.settings import CacheSettings
from qwatch.errors import SourceUnavailable, one_line
from qwatch.sources.cache_reader import MAX_VALUE_BYTES, Refused
from qwatch.store.engine import create_read_only_engine

# Keys per SELECT: well under SQLite's and asyncpg's bound-parameter limits (32766).
SELECT_BATCH = 1000
# base64 text of a value at MAX_VALUE_BYTES: anything longer is refused before decoding.
_MAX_TEXT = (MAX_VALUE_BYTES + 2) // 3 * 4


def _zone(name: str) -> tzinfo:
    return UTC if name == "UTC" else ZoneInfo(name)


def expires_at(value: object, naive_zone: tzinfo) -> datetime | None:
    """A row's `expires` as an aware time; None when it is not a time at all.

    PostgreSQL's timestamptz comes back aware. SQLite (text) and MySQL keep it naive, in
    UTC under USE_TZ, else in TIME_ZONE: as Django wrote it (db.py's _base_set).
    """
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=naive_zone)


def unwrap(value: object) -> bytes | Refused:
    """A row's `value` (base64 text) as the pickle bytes Django's cache wrote."""
    if isinstance(value, bytes | memoryview):  # a binary column: not how Django stores it
        return Refused("value is not text")
    if not isinstance(value, str):
        return Refused("value is not text")
    if len(value) > _MAX_TEXT:
        return Refused("too large")
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        return Refused("value is not base64")


_VERSION_QUERIES = {"sqlite": "SELECT sqlite_version()", "mysql": "SELECT VERSION()"}


class DatabaseCacheReader:
    """`CacheReader` for `CacheSettings(backend="database")`."""

    def __init__(self, settings: CacheSettings) -> None:
        self._address = settings.address
        self._naive_zone = _zone(settings.time_zone)
        self._engine: AsyncEngine = create_read_only_engine(settings.location)
        # Held across polls (a connection per read cost more than the read at N = 100);
        # dropped on any error and made again by the next read.
        self._connection: AsyncConnection | None = None
        # Checked before each connect: aiosqlite's failed open leaves its worker thread to
        # report into a loop that may be gone by then.
        self._sqlite_file = sqlite_path(settings.location)
        quote = self._engine.dialect.identifier_preparer.quote
        self._select = text(
            f"SELECT cache_key, value, expires FROM {quote(settings.table)} "
            "WHERE cache_key IN :keys"
        ).bindparams(bindparam("keys", expanding=True))

    def _unavailable(self, error: BaseException) -> SourceUnavailable:
        return SourceUnavailable(f"{self._address}: {one_line(error)}")

    def _check_file(self) -> None:
        if self._sqlite_file is not None and not self._sqlite_file.expanduser().is_file():
            raise SourceUnavailable(f"{self._address}: unable to open database file (no such file)")

    async def _rows(self, statement: Executable, batches: list[dict[str, Any]]) -> list[Any]:
        self._check_file()
        rows: list[Any] = []
        try:
            if self._connection is None:
                self._connection = await self._engine.connect()
            try:
                for params in batches:
                    rows += (await self._connection.execute(statement, params)).all()
            finally:
                # End the read at once: an open SQLite read holds the SHARED lock that
                # keeps Django from writing, and a PostgreSQL one sits idle in transaction.
                await self._connection.rollback()
        except (SQLAlchemyError, OSError, TimeoutError) as error:
            await self._drop()
            raise self._unavailable(error) from None
        except BaseException:  # cancelled mid-read: the connection's state is unknown
            await self._drop()
            raise
        return rows

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def get_many(self, keys: list[str]) -> dict[str, bytes | Refused]:
        if not keys:
            return {}
        batches = [
            {"keys": keys[start : start + SELECT_BATCH]}
            for start in range(0, len(keys), SELECT_BATCH)
        ]
        rows = await self._rows(self._select, batches)
        now = datetime.now(UTC)
        found: dict[str, bytes | Refused] = {}
        for key, value, expires in rows:
            when = expires_at(expires, self._naive_zone)
            if when is None:
                found[key] = Refused("expires is not a time")
            elif when >= now:  # Django: expired when expires < now
                found[key] = unwrap(value)
        return found

    async def version(self) -> str:
        dialect = self._engine.dialect.name
        query = _VERSION_QUERIES.get(dialect, "SHOW server_version")
        [(version,)] = await self._rows(text(query), [{}])
        if dialect == "mysql":  # MariaDB says so in its version: '10.11.6-MariaDB-0+deb12u1'
            return f"{'MariaDB' if 'mariadb' in str(version).lower() else 'MySQL'} {version}"
        return f"{'SQLite' if dialect == 'sqlite' else 'PostgreSQL'} {version}"

    async def close(self) -> None:
        await self._drop()
        await self._engine.dispose()
