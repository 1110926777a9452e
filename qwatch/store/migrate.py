"""Run qwatch's Alembic revisions from code: `qwatch db upgrade|current` and daemon start.

The Alembic `Config` is built here rather than read from alembic.ini, so `fileConfig`
never runs and never disables qwatch's own loggers. Migrations run on a connection the
caller's engine lends (Alembic cookbook, "Programmatic API use (connection sharing) With
Asyncio"), which works from inside a running event loop.

Checking a database's revision (`check`, `current`, `head`) does not load Alembic: every
read command checks the schema first, and Alembic with its Mako and SQL dialect modules
costs ~90 ms of imports, a third of `qwatch history`'s start-up. The revision ids are
the file names of the scripts (a test holds Alembic's own view to that).

qwatch keeps its revision in a table of its own, VERSION_TABLE, so another Alembic
user's `alembic_version` in the same database is never taken for qwatch's. Databases
made before that kept it in `alembic_version`: one holding only qwatch revisions is
recognised as qwatch's, and renamed on the next upgrade. A first migration into a
database that already holds tables qwatch did not create is refused unless allowed.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from qwatch.errors import SchemaError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger("qwatch.store")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../qwatch
VERSION_TABLE = "qwatch_alembic_version"  # migrations/env.py gives Alembic this name
LEGACY_VERSION_TABLE = "alembic_version"  # Alembic's default, which qwatch used before
# Made by 0001_initial: a legacy `alembic_version` is qwatch's only beside these (and
# holding qwatch revisions only), so another project's "0001_initial" is not taken for it.
_FIRST_TABLES = ("clusters", "samples", "events", "gaps")


class SchemaState(StrEnum):
    EMPTY = "empty"  # no revision recorded: a new database
    BEHIND = "behind"  # an older revision this code knows: upgrade
    CURRENT = "current"
    AHEAD = "ahead"  # a revision this code does not know: a newer qwatch wrote it


def script_location() -> Path:
    """The migrations directory, in an installed wheel or in a source checkout."""
    # pyproject.toml force-includes the top-level migrations/ as qwatch/_migrations.
    installed = _PACKAGE_DIR / "_migrations"
    if (installed / "env.py").is_file():
        return installed
    # Require alembic.ini beside it so an unrelated site-packages/migrations never matches.
    root = _PACKAGE_DIR.parent
    if (root / "migrations" / "env.py").is_file() and (root / "alembic.ini").is_file():
        return root / "migrations"
    raise SchemaError(f"qwatch's migration scripts are missing (looked in {installed})")


def make_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("path_separator", "os")
    return cfg


def revisions() -> tuple[str, ...]:
    """The revision ids these scripts define, oldest first: `0001_initial`, …"""
    found = sorted(path.stem for path in (script_location() / "versions").glob("[0-9]*.py"))
    if not found:
        raise SchemaError(f"no migration scripts in {script_location() / 'versions'}")
    return tuple(found)


def head() -> str:
    """The newest revision these scripts define."""
    return revisions()[-1]


async def upgrade(
    engine: AsyncEngine, revision: str = "head", *, allow_foreign_tables: bool = False
) -> None:
    """Upgrade to `revision`. A database qwatch has never migrated must hold no tables
    of others', unless `allow_foreign_tables`; a pre-VERSION_TABLE one is renamed first."""
    state = await check(engine)
    if state is SchemaState.AHEAD:
        raise SchemaError(await _ahead_message(engine))
    if state is SchemaState.EMPTY and not allow_foreign_tables:
        foreign = await _foreign_tables(engine)
        if foreign:
            raise SchemaError(_foreign_message(engine, foreign))
    await _adopt_legacy_version_table(engine)
    await _run(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _run(engine, "downgrade", revision)


async def _run(engine: AsyncEngine, action: str, revision: str) -> None:
    from alembic import command
    from alembic.util import CommandError

    cfg = make_config()

    def run(sync_conn: Connection) -> None:
        # env.py takes this connection instead of building an engine of its own.
        cfg.attributes["connection"] = sync_conn
        getattr(command, action)(cfg, revision)

    try:
        async with engine.begin() as conn:
            await conn.run_sync(run)
    except CommandError as error:  # an unknown revision and the like: say it in one line
        raise SchemaError(f"cannot {action} to {revision}: {error}") from error


async def current(engine: AsyncEngine) -> str | None:
    """The revision recorded in the database, or None for a database never migrated."""
    heads = await _db_heads(engine)
    return ",".join(sorted(heads)) if heads else None


async def _db_heads(engine: AsyncEngine) -> tuple[str, ...]:
    async with engine.connect() as conn:
        return await conn.run_sync(_read_heads)


def _read_heads(sync_conn: Connection) -> tuple[str, ...]:
    # What Alembic's MigrationContext.get_current_heads reads, from qwatch's version
    # table, or from a legacy `alembic_version` that holds qwatch revisions only.
    table = _version_table(sync_conn)
    if table is None:
        return ()
    return _versions_in(sync_conn, table)


def _versions_in(sync_conn: Connection, table: str) -> tuple[str, ...]:
    rows = sync_conn.execute(text(f"SELECT version_num FROM {table}"))  # one of the two names
    return tuple(row[0] for row in rows)


def _version_table(sync_conn: Connection) -> str | None:
    """The table holding qwatch's revision: VERSION_TABLE, a legacy one, or None."""
    inspector = inspect(sync_conn)
    if inspector.has_table(VERSION_TABLE):
        return VERSION_TABLE
    if inspector.has_table(LEGACY_VERSION_TABLE) and all(
        inspector.has_table(name) for name in _FIRST_TABLES
    ):
        legacy = _versions_in(sync_conn, LEGACY_VERSION_TABLE)
        if legacy and set(legacy) <= set(revisions()):  # else another Alembic user's
            return LEGACY_VERSION_TABLE
    return None


async def _adopt_legacy_version_table(engine: AsyncEngine) -> None:
    """Rename a pre-VERSION_TABLE qwatch database's `alembic_version` to VERSION_TABLE."""

    def rename(sync_conn: Connection) -> bool:
        if _version_table(sync_conn) != LEGACY_VERSION_TABLE:
            return False
        sync_conn.execute(text(f"ALTER TABLE {LEGACY_VERSION_TABLE} RENAME TO {VERSION_TABLE}"))
        if sync_conn.dialect.name == "postgresql":  # keep Alembic's constraint naming
            sync_conn.execute(
                text(
                    f"ALTER TABLE {VERSION_TABLE} RENAME CONSTRAINT "
                    f"{LEGACY_VERSION_TABLE}_pkc TO {VERSION_TABLE}_pkc"
                )
            )
        return True

    async with engine.begin() as conn:
        if await conn.run_sync(rename):
            log.info("renamed qwatch's revision table to %s", VERSION_TABLE)


async def _foreign_tables(engine: AsyncEngine) -> list[str]:
    """Tables in the database (its default schema) that qwatch's migrations do not make."""
    from qwatch.store.models import Base

    ours = {*Base.metadata.tables, VERSION_TABLE}

    def read(sync_conn: Connection) -> list[str]:
        return sorted(set(inspect(sync_conn).get_table_names()) - ours)

    async with engine.connect() as conn:
        return await conn.run_sync(read)


def _foreign_message(engine: AsyncEngine, foreign: list[str]) -> str:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    where = engine.url.render_as_string(hide_password=True)
    return (
        f"the database {where} already holds tables qwatch did not create ({shown}): "
        "give qwatch a database of its own (on PostgreSQL, or a schema: "
        "?options=-csearch_path%3Dqwatch), or pass --allow-foreign-tables"
    )


async def check(engine: AsyncEngine) -> SchemaState:
    db_heads = await _db_heads(engine)
    if not db_heads:
        return SchemaState.EMPTY
    known = revisions()
    if any(rev not in known for rev in db_heads):
        return SchemaState.AHEAD
    if db_heads == (known[-1],):
        return SchemaState.CURRENT
    return SchemaState.BEHIND


async def ensure(
    engine: AsyncEngine, *, migrate: bool = True, allow_foreign_tables: bool = False
) -> None:
    """On start: refuse a newer schema; upgrade an older one, or refuse if `migrate` is off."""
    state = await check(engine)
    if state is SchemaState.CURRENT:
        if migrate:
            await _adopt_legacy_version_table(engine)
        return
    if state is SchemaState.AHEAD:
        raise SchemaError(await _ahead_message(engine))
    found = await current(engine) or "none"
    wanted = head()
    if not migrate:
        raise SchemaError(
            f"the database schema is at revision {found}, this qwatch needs {wanted}: "
            "run `qwatch db upgrade`, or start without --no-migrate"
        )
    log.info("upgrading the database schema from %s to %s", found, wanted)
    await upgrade(engine, allow_foreign_tables=allow_foreign_tables)


async def _ahead_message(engine: AsyncEngine) -> str:
    return (
        f"the database schema is at revision {await current(engine)}, newer than this qwatch "
        f"knows (up to {head()}): upgrade qwatch, or point it at another database"
    )
