"""Alembic environment for qwatch's history database.

Two ways in:
- from code (`qwatch db upgrade`, the daemon): qwatch.store.migrate lends a connection in
  `config.attributes["connection"]`, already inside the caller's event loop;
- the `alembic` CLI from a checkout: no loop runs yet, so this builds its own engine from
  `-x url=…`, QWATCH_DATABASE_URL, `sqlalchemy.url` in alembic.ini or else qwatch's default
  SQLite file, and uses asyncio.run.
Kept generic: later revisions (views, new columns) need nothing here. The revision is
kept in qwatch's own table (qwatch.store.migrate.VERSION_TABLE), never another Alembic
user's `alembic_version`.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig
from typing import Any

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

from qwatch.config import default_database_url
from qwatch.store.engine import create_engine
from qwatch.store.migrate import VERSION_TABLE
from qwatch.store.models import Base

config = context.config
target_metadata = Base.metadata


def _render_item(kind: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    # A revision is frozen history: render qwatch's column types as their plain SQL
    # types so an old revision never imports model code that has moved on since.
    if kind == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl_instance!r}"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=True,
        render_item=_render_item,
        version_table=VERSION_TABLE,
        **kwargs,
    )


def _url() -> str:
    # The URL qwatch itself would use when nothing names one: its default SQLite file.
    return (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("QWATCH_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
        or default_database_url()
    )


def _run_on(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_own_engine() -> None:
    engine = create_engine(_url())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
    finally:
        await engine.dispose()


def main() -> None:
    lent = config.attributes.get("connection")
    if lent is not None:
        _run_on(lent)
        return
    if config.config_file_name is not None:
        # Only the CLI reads alembic.ini's logging; keep any loggers already set up.
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    if context.is_offline_mode():
        _configure(url=_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_run_own_engine())


main()
