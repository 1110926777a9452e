"""Cache reads: qwatch's cache readers against the clients Django itself reads with, same keys.

N real signed django-q2 records (benchmarks/seed.py) are written by Django's own
PyMemcacheCache (to a throwaway memcached, tests/plugins/memcached_server.py) and
FileBasedCache (to a temp dir); then, in this one process, each store is read N keys at a
time:

- memcached: pymemcache's `HashClient.get_many` (what Django's PyMemcacheCache.get_many
  calls, deserializing with pickle_serde) against `MemcachedReader.get_many` (one asyncio
  `get` of the N keys, flags unwrapped, bounded).
- file: Django's `FileBasedCache.get_many` (open, unpickle the expiry, inflate, plain
  `pickle.loads` per key) against `FileCacheReader.get_many` (one worker thread for the
  batch, strict expiry parse, bounded inflate: the value pickle's bytes), and the same
  followed by qwatch's restricted unpickle of each value (what the cache source adds).

Medians of several repetitions, milliseconds per read of N keys; ratio = baseline / qwatch
(above 1: qwatch is faster).

    .venv/bin/python benchmarks/cache_reads.py [--sizes 100,1000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import seed

SIZES = (100, 1000)


def repetitions(n: int) -> int:
    return max(9, min(51, 5000 // n))


def median_ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1e3


def time_sync(call: Callable[[], object], reps: int) -> float:
    call()  # warm: connections open, files in the page cache
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


async def time_async(call: Callable[[], Awaitable[object]], reps: int) -> float:
    await call()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return median_ms(samples)


def records(n: int) -> dict[str, str]:
    """N signed records under the keys Django Q gives them (unmade)."""
    specs = seed.make_specs(n)
    values = seed.make_values(specs, variants=1)
    return {
        f"django_q:{seed.SITE}:cluster:{spec.cluster_id}": value[0].decode("ascii")
        for spec, value in zip(specs, values, strict=True)
    }


def bench_memcached(n: int, rows: list[tuple[str, int, float, float]]) -> None:
    from django.core.cache.backends.memcached import PyMemcacheCache

    from qwatch.config.settings import CacheSettings
    from qwatch.sources.cache_memcached import MemcachedReader
    from tests.plugins.memcached_server import MemcachedServer

    server = MemcachedServer().start()
    try:
        django_cache = PyMemcacheCache(server.address, {})
        data = records(n)
        django_cache.set_many(data, 600)
        keys = [django_cache.make_key(key) for key in data]
        client: Any = django_cache._cache  # the HashClient Django reads with
        assert len(client.get_many(keys)) == n
        reps = repetitions(n)
        theirs = time_sync(lambda: client.get_many(keys), reps)
        reader = MemcachedReader(CacheSettings(backend="memcached", location=server.address))

        async def ours() -> float:
            found = await reader.get_many(keys)
            assert len(found) == n and all(isinstance(v, bytes) for v in found.values())
            try:
                return await time_async(lambda: reader.get_many(keys), reps)
            finally:
                await reader.close()

        rows.append(("memcached: pymemcache HashClient.get_many", n, theirs, asyncio.run(ours())))
        django_cache.close()
    finally:
        server.stop()


def bench_file(n: int, rows: list[tuple[str, int, float, float]]) -> None:
    from django.core.cache.backends.filebased import FileBasedCache

    from qwatch.config.settings import CacheSettings
    from qwatch.decode.safe_pickle import CacheUnpickler, load
    from qwatch.sources.cache_file import FileCacheReader

    with tempfile.TemporaryDirectory(prefix="qw-bench-file-") as directory:
        django_cache = FileBasedCache(directory, {"OPTIONS": {"MAX_ENTRIES": 10 * n}})
        data = records(n)
        django_cache.set_many(data, 600)
        keys = list(data)
        made = [django_cache.make_key(key) for key in keys]
        assert len(django_cache.get_many(keys)) == n
        reps = repetitions(n)
        theirs = time_sync(lambda: django_cache.get_many(keys), reps)
        reader = FileCacheReader(CacheSettings(backend="file", location=directory))

        async def unpickled() -> list[object]:
            found = await reader.get_many(made)
            return [load(value, CacheUnpickler) for value in found.values()]  # type: ignore[arg-type]

        async def ours() -> tuple[float, float]:
            assert await unpickled() == list(data.values())
            bare = await time_async(lambda: reader.get_many(made), reps)
            return bare, await time_async(unpickled, reps)

        bare, with_unpickle = asyncio.run(ours())
        rows.append(("file: Django FileBasedCache.get_many", n, theirs, bare))
        rows.append(("file: same, qwatch + restricted unpickle", n, theirs, with_unpickle))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    seed.configure_django("redis://127.0.0.1:9/0")  # signing only: no Redis is used
    rows: list[tuple[str, int, float, float]] = []
    for n in sizes:
        bench_memcached(n, rows)
        bench_file(n, rows)
    print(seed.machine())
    print(f"{'store: baseline':<45} {'N':>6} {'baseline ms':>12} {'qwatch ms':>10} {'ratio':>6}")
    for name, n, theirs, ours in rows:
        print(f"{name:<45} {n:>6} {theirs:>12.2f} {ours:>10.2f} {theirs / ours:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
