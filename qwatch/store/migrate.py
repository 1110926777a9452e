"""Run qwatch's Alembic revisions from code: `qwatch db upgrade|current` and daemon start.

The Alembic `Config` is built here rather than read from alembic.ini, so `fileConfig`
never runs and never disables qwatch's own loggers. Migrations run on a connection the
caller's engine lends (Alembic cookbook, "Programmatic API use (connection sharing) With
Asyncio"), which works from inside a running event loop.

Checking a database's revision (`check`, `current`, `head`) does not load Alembic: every
read command checks the schema first, and Alembic with its Mako and SQL dialect modules
costs ~90 ms of imports, a third of `qwatch history`'s start-up. The revision ids are
the file names of the scripts (a test holds Alembic's own view to that).
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


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    if await check(engine) is SchemaState.AHEAD:
        raise SchemaError(await _ahead_message(engine))
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
    # What Alembic's MigrationContext.get_current_heads reads, from its default table.
    def read(sync_conn: Connection) -> tuple[str, ...]:
        if not inspect(sync_conn).has_table("alembic_version"):
            return ()
        rows = sync_conn.execute(text("SELECT version_num FROM alembic_version"))
        return tuple(row[0] for row in rows)

    async with engine.connect() as conn:
        return await conn.run_sync(read)


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


async def ensure(engine: AsyncEngine, *, migrate: bool = True) -> None:
    """On start: refuse a newer schema; upgrade an older one, or refuse if `migrate` is off."""
    state = await check(engine)
    if state is SchemaState.CURRENT:
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
    await upgrade(engine)


async def _ahead_message(engine: AsyncEngine) -> str:
    return (
        f"the database schema is at revision {await current(engine)}, newer than this qwatch "
        f"knows (up to {head()}): upgrade qwatch, or point it at another database"
    )
