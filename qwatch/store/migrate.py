"""Run qwatch's Alembic revisions from code: `qwatch db upgrade|current` and daemon start.

The Alembic `Config` is built here rather than read from alembic.ini, so `fileConfig`
never runs and never disables qwatch's own loggers. Migrations run on a connection the
caller's engine lends (Alembic cookbook, "Programmatic API use (connection sharing) With
Asyncio"), which works from inside a running event loop.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("qwatch.store")

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../qwatch


class SchemaState(StrEnum):
    EMPTY = "empty"  # no revision recorded: a new database
    BEHIND = "behind"  # an older revision this code knows: upgrade
    CURRENT = "current"
    AHEAD = "ahead"  # a revision this code does not know: a newer qwatch wrote it


class SchemaError(Exception):
    """The database schema does not fit this qwatch; the message says what to do."""


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
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location()))
    cfg.set_main_option("path_separator", "os")
    return cfg


def head() -> str:
    """The newest revision these scripts define."""
    heads = ScriptDirectory.from_config(make_config()).get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migration scripts have {len(heads)} heads, expected one")
    return heads[0]


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    if await check(engine) is SchemaState.AHEAD:
        raise SchemaError(await _ahead_message(engine))
    await _run(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _run(engine, "downgrade", revision)


async def _run(engine: AsyncEngine, action: str, revision: str) -> None:
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
    def read(sync_conn: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(sync_conn).get_current_heads())

    async with engine.connect() as conn:
        return await conn.run_sync(read)


async def check(engine: AsyncEngine) -> SchemaState:
    db_heads = await _db_heads(engine)
    if not db_heads:
        return SchemaState.EMPTY
    script = ScriptDirectory.from_config(make_config())
    for rev in db_heads:
        try:
            known = script.get_revision(rev)
        except CommandError:
            known = None
        # Alembic resolves id prefixes; only an exact match means this code knows it.
        if known is None or known.revision != rev:
            return SchemaState.AHEAD
    if set(db_heads) == set(script.get_heads()):
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
