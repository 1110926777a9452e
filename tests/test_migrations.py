"""The Alembic revisions against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from qwatch.store import migrate
from qwatch.store.engine import create_engine
from qwatch.store.migrate import SchemaError, SchemaState
from qwatch.store.models import Alert, Base, QueueSample, Silence

ROOT = Path(__file__).resolve().parent.parent
TABLES = {
    "clusters",
    "samples",
    "events",
    "gaps",
    "rollup_minute",
    "rollup_hour",
    "alerts",
    "silences",
    "queue_samples",
}


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    yield engine
    await engine.dispose()


async def _tables(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _diff(engine: AsyncEngine) -> list[Any]:
    def compare(conn: Connection) -> list[Any]:
        # As migrations/env.py configures it: the version table is Alembic's, not a model's.
        opts = {"compare_type": True, "version_table": migrate.VERSION_TABLE}
        context = MigrationContext.configure(conn, opts=opts)
        return list(compare_metadata(context, Base.metadata))

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


def test_one_linear_history_in_the_checkout() -> None:
    """qwatch reads revisions from file names without Alembic: hold Alembic to the same."""
    script = ScriptDirectory.from_config(migrate.make_config())
    assert script.get_heads() == [migrate.head()]
    oldest_first = list(reversed(list(script.walk_revisions())))
    assert [r.revision for r in oldest_first] == list(migrate.revisions())
    assert [Path(r.path).stem for r in oldest_first] == list(migrate.revisions())
    assert migrate.revisions()[0] == "0001_initial"
    assert migrate.script_location() == ROOT / "migrations"


def test_read_commands_load_neither_alembic_nor_redis() -> None:
    probe = (
        "import asyncio, sys; import qwatch.cli, qwatch.history, qwatch.reports\n"
        "from qwatch.store import migrate; from qwatch.store.engine import create_engine\n"
        "print(asyncio.run(migrate.check(create_engine('sqlite://'))), migrate.head())\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'alembic', 'asyncio_redis'}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"empty {migrate.head()}", "[]"]


async def test_upgrade_and_downgrade(engine: AsyncEngine) -> None:
    assert await migrate.current(engine) is None
    await migrate.upgrade(engine)
    assert await migrate.current(engine) == migrate.head()
    assert await _tables(engine) >= TABLES

    await migrate.downgrade(engine, "base")
    assert await migrate.current(engine) is None
    assert not TABLES & await _tables(engine)

    await migrate.upgrade(engine)  # and back: downgrade left nothing in the way
    assert await _tables(engine) >= TABLES


async def test_models_match_the_revisions(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    assert await _diff(engine) == []


async def test_queue_samples_and_their_hourly_view(engine: AsyncEngine) -> None:
    """0008: per-queue backlog rows and `hourly_queue_backlog`; down to 0007 and up again."""
    await migrate.upgrade(engine)
    hour = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    rows = [
        {"queue": "default", "at": hour + timedelta(minutes=1), "length": 3, "age": 2.0},
        {"queue": "default", "at": hour + timedelta(minutes=2), "length": 9, "age": 8.0},
        {"queue": "default", "at": hour + timedelta(minutes=3), "length": None, "age": None},
        {"queue": "long", "at": hour + timedelta(minutes=1), "length": 0, "age": None},
        {"queue": "default", "at": hour + timedelta(hours=1), "length": 1, "age": None},
    ]
    async with AsyncSession(engine) as session:
        for row in rows:
            session.add(
                QueueSample(
                    site="shop",
                    queue=row["queue"],
                    sampled_at=row["at"],
                    broker="orm",
                    length=row["length"],
                    oldest_age_s=row["age"],
                    reason="" if row["length"] is not None else "ORM database: down",
                )
            )
        await session.commit()
    async with engine.connect() as conn:
        got = (
            await conn.execute(
                text(
                    "SELECT queue, samples, known, length_min, length_max, length_avg,"
                    " oldest_age_max_s FROM hourly_queue_backlog ORDER BY queue, hour"
                )
            )
        ).all()
    assert [tuple(r) for r in got] == [
        ("default", 3, 2, 3, 9, 6.0, 8.0),
        ("default", 1, 1, 1, 1, 1.0, None),
        ("long", 1, 1, 0, 0, 0.0, None),
    ]
    await migrate.downgrade(engine, "0007_alerts_view")
    assert "queue_samples" not in await _tables(engine)
    await migrate.upgrade(engine)
    assert "queue_samples" in await _tables(engine)


async def test_alerts_and_silences_tables(engine: AsyncEngine) -> None:
    """0005: the alerts and silences tables, up and down, and a row of each through the models."""
    await migrate.upgrade(engine, "0004_daily_availability_by_day")
    assert not {"alerts", "silences"} & await _tables(engine)
    await migrate.upgrade(engine)
    assert {"alerts", "silences"} <= await _tables(engine)

    started = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    alert = {
        "rule": "cluster_down",
        "site": "shop",
        "subject": "web1",
        "host": "web1",
        "cluster_id": None,
        "severity": "critical",
        "summary": "shop: no live cluster on web1 for 1m; start qcluster there",
        "details": {"held_s": 60.0, "since": "2026-12-01T08:59:00+00:00"},
        "started_at": started,
    }
    async with AsyncSession(engine) as session:
        session.add(Alert(**alert, last_notified_at=started, last_notified_status="firing"))
        session.add(
            Silence(
                rule="all",
                site="shop",
                host=None,
                until=started + timedelta(hours=2),
                reason="kernel upgrade",
                created_at=started,
            )
        )
        await session.commit()
    async with AsyncSession(engine) as session:
        [row] = (await session.scalars(select(Alert))).all()
        assert (row.rule, row.site, row.subject, row.resolved_at) == (
            "cluster_down",
            "shop",
            "web1",
            None,
        )
        assert row.details == alert["details"] and row.started_at == started
        assert row.last_notified_status == "firing"
        [silence] = (await session.scalars(select(Silence))).all()
        assert silence.until == started + timedelta(hours=2) and silence.site == "shop"
    async with AsyncSession(engine) as session:
        session.add(Alert(**alert))  # the same alert start again: refused
        with pytest.raises(IntegrityError):
            await session.commit()

    await migrate.downgrade(engine, "0004_daily_availability_by_day")
    tables = await _tables(engine)
    assert not {"alerts", "silences"} & tables and {"clusters", "events", "gaps"} <= tables
    await migrate.upgrade(engine)
    assert await _diff(engine) == []


async def test_check_states(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await migrate.check(engine) is SchemaState.EMPTY
    await migrate.upgrade(engine)
    assert await migrate.check(engine) is SchemaState.CURRENT

    # A newer qwatch's scripts: one more revision on top of ours.
    newer = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", newer, ignore=shutil.ignore_patterns("__pycache__"))
    (newer / "versions" / "9999_test.py").write_text(
        f'revision = "9999_test"\ndown_revision = "{migrate.head()}"\n'
        "branch_labels = None\ndepends_on = None\n\n\n"
        "def upgrade() -> None:\n    pass\n\n\ndef downgrade() -> None:\n    pass\n"
    )
    monkeypatch.setattr(migrate, "script_location", lambda: newer)
    assert migrate.head() == "9999_test"
    assert await migrate.check(engine) is SchemaState.BEHIND
    with pytest.raises(SchemaError, match="qwatch db upgrade"):
        await migrate.ensure(engine, migrate=False)
    await migrate.ensure(engine)
    assert await migrate.current(engine) == "9999_test"
    assert await migrate.check(engine) is SchemaState.CURRENT

    monkeypatch.undo()  # back to this qwatch's scripts: the database is now ahead of them
    assert await migrate.check(engine) is SchemaState.AHEAD
    with pytest.raises(SchemaError, match="newer than this qwatch"):
        await migrate.ensure(engine)


async def test_unknown_revision_is_ahead(engine: AsyncEngine) -> None:
    await migrate.upgrade(engine)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE qwatch_alembic_version SET version_num = 'ffff_future'"))
    assert await migrate.check(engine) is SchemaState.AHEAD
    assert await migrate.current(engine) == "ffff_future"
    with pytest.raises(SchemaError, match="ffff_future, newer than this qwatch"):
        await migrate.upgrade(engine)
    with pytest.raises(SchemaError, match="cannot downgrade"):
        await migrate.downgrade(engine, "base")


async def test_ensure_upgrades_an_empty_database(engine: AsyncEngine) -> None:
    with pytest.raises(SchemaError):
        await migrate.ensure(engine, migrate=False)
    await migrate.ensure(engine)
    assert await migrate.check(engine) is SchemaState.CURRENT


def test_alembic_cli_from_checkout(tmp_path: Path) -> None:
    database = tmp_path / "cli" / "history.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "QWATCH_DATABASE_URL"}
    done = _alembic(env, "-x", f"url=sqlite:///{database}", "upgrade", "head")
    assert done.returncode == 0, done.stderr
    with sqlite3.connect(database) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        (version,) = conn.execute("SELECT version_num FROM qwatch_alembic_version").fetchone()
    assert names >= TABLES
    assert version == migrate.head()

    env["QWATCH_DATABASE_URL"] = f"sqlite:///{database}"
    done = _alembic(env, "current")
    assert done.returncode == 0, done.stderr
    assert migrate.head() in done.stdout


def test_alembic_cli_defaults_to_qwatchs_database(tmp_path: Path) -> None:
    """With no URL anywhere, the same SQLite file qwatch itself uses by default."""
    env = {k: v for k, v in os.environ.items() if k != "QWATCH_DATABASE_URL"}
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    done = _alembic(env, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "data" / "qwatch" / "history.sqlite3").is_file()


def test_installed_layout_finds_packaged_migrations(tmp_path: Path) -> None:
    """As a wheel installs it (pyproject force-includes migrations/ as qwatch/_migrations),
    with no checkout and no alembic.ini anywhere near."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "qwatch", site / "qwatch", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "migrations",
        site / "qwatch" / "_migrations",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    database = tmp_path / "history.sqlite3"
    script = (
        "import asyncio, qwatch\n"
        "from qwatch.store import migrate\n"
        "from qwatch.store.engine import create_engine\n"
        "async def main():\n"
        f"    engine = create_engine('sqlite:///{database}')\n"
        "    await migrate.upgrade(engine)\n"
        "    print(qwatch.__file__, migrate.script_location(), await migrate.current(engine))\n"
        "    await engine.dispose()\n"
        "asyncio.run(main())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    module, location, revision = done.stdout.split()
    assert Path(module).is_relative_to(site)
    assert Path(location) == site / "qwatch" / "_migrations"
    assert revision == migrate.head()


def test_a_built_wheel_carries_its_migrations(tmp_path):
    """`qwatch db upgrade` from a real wheel, imported from outside the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("qwatch-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    assert (site / "qwatch" / "_migrations" / "versions").is_dir()
    db = tmp_path / "from-wheel.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "qwatch", "db", "upgrade", "--db", f"sqlite:///{db}"],
        cwd=tmp_path,  # not the checkout: only the wheel's copy of the migrations is in reach
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "(current;" in done.stdout
    located = subprocess.run(
        [sys.executable, "-c", "from qwatch.store.migrate import script_location as s; print(s())"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert located.stdout.strip().startswith(str(site))


def _alembic(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The plain `alembic` command line, run from the checkout as a user would."""
    alembic = Path(sys.executable).with_name("alembic")
    return subprocess.run(
        [str(alembic), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
