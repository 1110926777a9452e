"""A real django-q2 cluster on the ORM broker, its Stats in a Django cache (no Redis
anywhere), seen by `qwatch status` and `qwatch check`, recorded by the daemon (and served on
its /metrics), and shown by the monitor: DatabaseCache on SQLite, PostgreSQL and MariaDB,
memcached (PyMemcacheCache, a real memcached) and the file cache."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output

from qwatch.config import load_settings
from qwatch.monitor.app import create_monitor
from tests.helpers import free_port, wait_for, wait_for_async
from tests.plugins.memcached_server import MemcachedServerFactory
from tests.plugins.postgres_server import PostgresServer
from tests.plugins.qcluster import DjangoProject
from tests.plugins.qwatch_daemon import DaemonProcess, query
from tests.test_sources_cache import mysql_databases

pytestmark = pytest.mark.slow

NAME = "qwatchcache"
CACHES = (
    "CACHES = {'default': {'BACKEND': 'django.core.cache.backends.db.DatabaseCache', "
    "'LOCATION': 'qwatch_cache', 'KEY_PREFIX': 'shop'}}\n"
)
# No Redis: a URL nothing listens on, so a read of it would fail the test.
NO_REDIS = "redis://127.0.0.1:9/0"


def _qwatch(project: DjangoProject, *args: str) -> subprocess.CompletedProcess[str]:
    env = project.env()
    env.pop("DJANGO_SETTINGS_MODULE")
    return subprocess.run(
        [sys.executable, "-m", "qwatch", *args, "--django-settings", project.settings_module],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _status(project: DjangoProject) -> dict | None:
    """`status --json`; None on exit 1: the cache is not there yet (the file cache's
    directory is made by the cluster's first write)."""
    done = _qwatch(project, "status", "--json")
    if done.returncode == 1:
        return None
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class _Terminal(io.StringIO):
    encoding = "utf-8"


async def _monitor_shows(project: DjangoProject, db_url: str, cluster_id: str) -> None:
    settings = load_settings(
        django_settings=project.settings_module, database_url=db_url, environ={}, cwd=project.root
    )
    with create_pipe_input() as pipe:
        output = Vt100_Output(_Terminal(), lambda: Size(rows=30, columns=120), term="xterm")
        monitor = create_monitor(settings, input=pipe, output=output)
        task = asyncio.create_task(monitor.run(handle_signals=False))

        def screen() -> str:
            last = monitor.app.renderer.last_rendered_screen
            if last is None:
                return ""
            return "\n".join(
                "".join(last.data_buffer[y][x].char for x in range(120)) for y in range(30)
            )

        try:
            await wait_for_async(
                lambda: any(
                    line.startswith(f" {socket.gethostname()} ") and cluster_id[-8:] in line
                    for line in screen().splitlines()
                ),
                30,
                "the cluster's row in the monitor",
                detail=screen,
            )
        finally:
            monitor.quit()
            async with asyncio.timeout(10):
                assert await task == 0


def _watch(
    project: DjangoProject, daemon_factory: Callable[..., DaemonProcess], tmp_path: Path
) -> None:
    cluster = project.start_cluster()

    def seen() -> dict | None:
        clusters = (_status(project) or {}).get("clusters")
        return clusters[0] if clusters and clusters[0]["pid"] == cluster.pid else None

    record = wait_for(seen, 60, "the cluster in qwatch status", detail=cluster.log.read_text)
    assert record["name"] == NAME and record["host"] == socket.gethostname()
    status = _status(project) or {}
    assert status.get("skipped") == []
    # The ORM broker's backlog is read from its own table, beside the cache's Stats.
    assert [(b["queue"], b["broker"], b["length"]) for b in status["backlogs"]] == [
        (NAME, "orm", 0)
    ]

    check = _qwatch(project, "check", "--min-clusters", "1")
    assert check.returncode == 0, check.stdout + check.stderr

    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    port = free_port()
    daemon = daemon_factory(
        db_url=db,
        args=["--django-settings", project.settings_module, "--listen", f"127.0.0.1:{port}"],
        env={"PYTHONPATH": str(project.root)},
    )
    wait_for(
        lambda: query(db, "SELECT cluster_id FROM clusters") == [(record["cluster_id"],)],
        30,
        "the daemon to record the cluster",
        detail=lambda: daemon.log,
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert f'cluster_id="{record["cluster_id"]}"' in metrics

    asyncio.run(_monitor_shows(project, db, record["cluster_id"]))
    assert daemon.terminate() == 0
    cluster.stop()
    wait_for(lambda: (_status(project) or {}).get("clusters") == [], 20, "the record to expire")


def test_orm_broker_with_database_cache_on_sqlite(
    django_project_factory: Callable[..., DjangoProject],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    project = django_project_factory(NO_REDIS, NAME, more_settings=CACHES, orm="default")
    project.manage("createcachetable")
    _watch(project, daemon_factory, tmp_path)


def test_orm_broker_with_database_cache_on_postgres(
    django_project_factory: Callable[..., DjangoProject],
    daemon_factory: Callable[..., DaemonProcess],
    postgres_server: PostgresServer,
    pg_url: str,
    tmp_path: Path,
) -> None:
    databases = (
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.postgresql', "
        f"'NAME': {pg_url.rsplit('/', 1)[1]!r}, 'HOST': '127.0.0.1', "
        f"'PORT': {postgres_server.port}, 'USER': 'postgres'}}}}\n"
    )
    project = django_project_factory(
        NO_REDIS, NAME, more_settings=CACHES + databases, own_database=True, orm="default"
    )
    project.manage("createcachetable")
    _watch(project, daemon_factory, tmp_path)


def test_orm_broker_with_database_cache_on_mysql(
    django_project_factory: Callable[..., DjangoProject],
    daemon_factory: Callable[..., DaemonProcess],
    mysql_url: str,
    tmp_path: Path,
) -> None:
    # The ORM broker's queue and the cache table both in MariaDB, Django through PyMySQL.
    project = django_project_factory(
        NO_REDIS,
        NAME,
        more_settings=CACHES + mysql_databases(mysql_url),
        own_database=True,
        orm="default",
    )
    project.manage("createcachetable")
    _watch(project, daemon_factory, tmp_path)


def _cache(backend: str, location: str) -> str:
    caches = {"default": {"BACKEND": backend, "LOCATION": location, "KEY_PREFIX": "shop"}}
    return f"CACHES = {caches!r}\n"


def test_orm_broker_with_memcached(
    django_project_factory: Callable[..., DjangoProject],
    daemon_factory: Callable[..., DaemonProcess],
    memcached_server_factory: MemcachedServerFactory,
    tmp_path: Path,
) -> None:
    backend = "django.core.cache.backends.memcached.PyMemcacheCache"
    caches = _cache(backend, memcached_server_factory().address)
    project = django_project_factory(NO_REDIS, NAME, more_settings=caches, orm="default")
    _watch(project, daemon_factory, tmp_path)


def test_orm_broker_with_the_file_cache(
    django_project_factory: Callable[..., DjangoProject],
    daemon_factory: Callable[..., DaemonProcess],
    tmp_path: Path,
) -> None:
    backend = "django.core.cache.backends.filebased.FileBasedCache"
    caches = _cache(backend, "django-cache")  # relative: to the project, as Django takes it
    project = django_project_factory(NO_REDIS, NAME, more_settings=caches, orm="default")
    _watch(project, daemon_factory, tmp_path)
