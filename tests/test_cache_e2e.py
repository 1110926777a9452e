"""End to end: a real django-q2 cluster on the ORM broker writes its Stats through Django's
memcached (PyMemcacheCache) or file cache, and qwatch reads them from outside the app.

The reader tests run the chain the cache source runs (index key, then the records in one
batch, restricted unpickling, signature check) on the cache readers alone; the `qwatch
status` tests need the cache source (qwatch.sources.cache) and skip until it is there.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qwatch.config.settings import CacheSettings
from qwatch.decode import Decoder
from qwatch.decode.safe_pickle import CacheUnpickler, load
from qwatch.errors import SourceUnavailable
from qwatch.sources.cache_file import FileCacheReader
from qwatch.sources.cache_memcached import MemcachedReader
from qwatch.sources.cache_reader import CacheReader
from tests.helpers import wait_for, wait_for_async
from tests.plugins.memcached_server import MemcachedServerFactory
from tests.plugins.qcluster import SECRET_KEY, DjangoProject

pytestmark = pytest.mark.slow

NAME = "cachesite"
UNUSED_REDIS = "redis://127.0.0.1:9/0"  # Q_CLUSTER's redis: with `orm` set it is never used
needs_cache_source = pytest.mark.skipif(
    importlib.util.find_spec("qwatch.sources.cache") is None,
    reason="the cache source (qwatch.sources.cache) is not merged yet",
)


def cache_project(
    backend: str,
    django_project_factory: Callable[..., DjangoProject],
    memcached_server_factory: MemcachedServerFactory,
    tmp_path: Path,
) -> tuple[DjangoProject, CacheSettings]:
    """A project on the ORM broker whose default cache is `backend`, and that cache's
    settings as qwatch takes them."""
    if backend == "memcached":
        location = memcached_server_factory().address
        django_backend = "django.core.cache.backends.memcached.PyMemcacheCache"
        settings = CacheSettings(backend="memcached", location=location, client="pymemcache")
    else:
        location = str(tmp_path / "django-cache")
        django_backend = "django.core.cache.backends.filebased.FileBasedCache"
        settings = CacheSettings(backend="file", location=location)
    caches = {"default": {"BACKEND": django_backend, "LOCATION": location}}
    project = django_project_factory(
        UNUSED_REDIS, name=NAME, more_settings=f"CACHES = {caches!r}\n", orm="default"
    )
    return project, settings


async def read_stats(reader: CacheReader, settings: CacheSettings) -> list[Any]:
    """What the cache source does: the index of record keys, then the records."""
    index_key = settings.make_key(f"django_q:{NAME}:cluster")
    index = (await reader.get_many([index_key])).get(index_key)
    if not isinstance(index, bytes):
        return []
    keys = load(index, CacheUnpickler)
    assert type(keys) is list and all(type(key) is str for key in keys)
    decoder = Decoder(NAME, SECRET_KEY)
    records = await reader.get_many([settings.make_key(key) for key in keys])
    return [decoder.decode(raw) for raw in records.values() if isinstance(raw, bytes)]


@pytest.mark.parametrize("backend", ["memcached", "file"])
async def test_a_real_cluster_is_read_through_the_cache_reader(
    backend: str,
    django_project_factory: Callable[..., DjangoProject],
    memcached_server_factory: MemcachedServerFactory,
    tmp_path: Path,
) -> None:
    project, settings = cache_project(
        backend, django_project_factory, memcached_server_factory, tmp_path
    )
    reader: CacheReader = (
        MemcachedReader(settings) if backend == "memcached" else FileCacheReader(settings)
    )
    cluster = project.start_cluster()
    try:

        async def idle() -> list[Any]:
            try:
                return [s for s in await read_stats(reader, settings) if s.status == "Idle"]
            except SourceUnavailable:  # the file cache's directory: made at the first write
                return []

        found = await wait_for_async(
            idle, 40, f"an Idle record in the {backend} cache", detail=cluster.log.read_text
        )
        assert [stat.pid for stat in found] == [cluster.pid]
        assert found[0].name == NAME and found[0].workers
    finally:
        cluster.stop()
        await reader.close()


def status_json(project: DjangoProject) -> dict[str, Any] | None:
    """`qwatch status --json --django-settings`, run as a user would; None on exit 1 (the
    cache not there yet: the file cache's directory is made at the first write)."""
    env = {k: v for k, v in project.env().items() if not k.startswith("QWATCH_")}
    command = ["status", "--json", "--django-settings", project.settings_module]
    done = subprocess.run(
        [sys.executable, "-m", "qwatch", *command],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode == 1:
        return None
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@needs_cache_source
@pytest.mark.parametrize("backend", ["memcached", "file"])
def test_status_lists_a_cluster_whose_stats_are_in_the_cache(
    backend: str,
    django_project_factory: Callable[..., DjangoProject],
    memcached_server_factory: MemcachedServerFactory,
    tmp_path: Path,
) -> None:
    project, _settings = cache_project(
        backend, django_project_factory, memcached_server_factory, tmp_path
    )
    cluster = project.start_cluster()

    def idle() -> dict[str, Any] | None:
        found = status_json(project)
        if found is None or not any(c["status"] == "Idle" for c in found["clusters"]):
            return None
        return found

    seen = wait_for(idle, 40, f"the cluster in `qwatch status` ({backend} cache)")
    assert [c["pid"] for c in seen["clusters"]] == [cluster.pid]
    assert seen["clusters"][0]["host"] == socket.gethostname()
    assert seen["skipped"] == []

    cluster.stop()
    wait_for(lambda: (status_json(project) or {}).get("clusters") == [], 20, "the record to expire")
