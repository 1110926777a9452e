"""Every place where SQLite and PostgreSQL need different SQL, behind one small class.

Everything else in the store writes portable SQLAlchemy and asks a `Dialect` (built from
the connection in hand) for the few expressions that differ: the upsert's INSERT, scalar
LEAST/GREATEST, an hour's truncation, whole seconds since a time, and a JSON field; and
`naive_times` says how a time is bound (models.UTCDateTime). (How an engine is opened per
backend, pragmas and timeouts, is `qwatch.store.engine`'s.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Text,
    cast,
    extract,
    func,
    literal_column,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection


def naive_times(name: str) -> bool:
    """Whether dialect `name` stores times without an offset: SQLite compares them as text,
    so they go in as naive UTC in one fixed format, which keeps their order."""
    return name == "sqlite"


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str  # SQLAlchemy's dialect name: "postgresql" or "sqlite"

    @classmethod
    def of(cls, conn: AsyncConnection) -> Dialect:
        return cls(conn.dialect.name)

    @property
    def postgresql(self) -> bool:
        return self.name == "postgresql"

    def insert(self, table: Any) -> Any:
        """An INSERT that takes ON CONFLICT clauses (both dialects spell them alike)."""
        return postgresql.insert(table) if self.postgresql else sqlite.insert(table)

    def least(self, a: Any, b: Any) -> ColumnElement[Any]:
        # SQLite's two-argument min()/max() are its scalar LEAST/GREATEST.
        return func.least(a, b) if self.postgresql else func.min(a, b)

    def greatest(self, a: Any, b: Any) -> ColumnElement[Any]:
        return func.greatest(a, b) if self.postgresql else func.max(a, b)

    def hour(self, column: Any) -> ColumnElement[Any]:
        """A time column truncated to its UTC hour.

        Literal SQL, not bind parameters: PostgreSQL only matches a GROUP BY expression
        with the select list when both are the same text.
        """
        if self.postgresql:
            return func.date_trunc(literal_column("'hour'"), column, literal_column("'UTC'"))
        # The text format SQLAlchemy stores SQLite datetimes in, truncated to the hour.
        return func.strftime(literal_column("'%Y-%m-%d %H:00:00.000000'"), column)

    def slot(self, column: Any, start: datetime, width: int) -> ColumnElement[int]:
        """Which `width`-second step after `start` a time column falls in (0, 1, …)."""
        seconds = extract("epoch", column) - int(start.timestamp())
        if self.postgresql:
            return cast(func.floor(seconds / width), Integer)
        # SQLite's epoch is a whole number of seconds; CAST truncates, and the times
        # read are >= start.
        return cast(seconds / width, Integer)

    def json_int(self, column: Any, key: str) -> ColumnElement[int]:
        """An integer field of a JSON object kept as text (the events' detail)."""
        text = type_coerce(column, Text)
        if self.postgresql:
            return cast(cast(text, JSONB)[key].astext, Integer)
        return cast(func.json_extract(text, f"$.{key}"), Integer)
