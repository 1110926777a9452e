"""Cache read: qwatch's `CacheSource.poll()` on Django's DatabaseCache against Django's own read.

For each backend (a SQLite file, a throwaway PostgreSQL) and each N, Django's own
DatabaseCache (configured in this process, the ORM broker's usual set-up) is given N
realistic signed django-q2 records (benchmarks/seed.py) and the index key, then:

- Django get_many: what a reader inside the app does at best: `cache.get(Q_STAT)`, then
  `cache.get_many(keys)` (one SELECT, base64, plain pickle.loads) and
  `SignedPackage.loads` of each (TimestampSigner.unsign + zlib + pickle.loads): the baseline.
- Stat.get_all: django-q2's own reader (qmonitor's): one `cache.get` per record, then it
  writes the index back.
- qwatch cold: the first `poll()` of a fresh CacheSource (engine made, nothing decoded).
- qwatch changed: a long-lived CacheSource polling after every record was rewritten with
  another signed value, as live clusters do every 0.5 s: the poll loop's steady state.
- qwatch unchanged: a poll of the same rows as the previous poll.

Every figure is the median of several repetitions, in microseconds per cluster.

    .venv/bin/python benchmarks/cache_read.py [--sizes 100,1000] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import seed

SIZES = (100, 1000)
TABLE = "qwatch_bench_cache"


def configure(database: dict[str, Any]) -> None:
    import django

    # Django's reads are timed inside the same event loop as qwatch's; they are plain
    # blocking calls either way, so its guard against that is lifted.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from django.conf import settings

    settings.configure(
        SECRET_KEY=seed.SECRET_KEY,
        Q_CLUSTER={"name": seed.SITE, "orm": "default", "workers": 4, "timeout": 60},
        INSTALLED_APPS=["django_q"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        DATABASES={"default": database},
        CACHES={
            "default": {
                "BACKEND": "django.core.cache.backends.db.DatabaseCache",
                "LOCATION": TABLE,
                "OPTIONS": {"MAX_ENTRIES": 1_000_000},  # Django culls at 300 by default
            }
        },
    )
    django.setup()
    from django.core.management import call_command

    call_command("createcachetable", verbosity=0)


def write(specs: Sequence[seed.ClusterSpec], values: Sequence[Sequence[bytes]], rnd: int) -> None:
    from django.core.cache import cache

    cache.set_many(
        {s.key: v[rnd % len(v)].decode() for s, v in zip(specs, values, strict=True)}, 600
    )


def django_get_many() -> int:
    from django.core.cache import cache
    from django_q.conf import Conf
    from django_q.signing import SignedPackage

    keys = cache.get(Conf.Q_STAT)
    return len([SignedPackage.loads(value) for value in cache.get_many(keys).values()])


async def measure(n: int, url: str, reps: int) -> dict[str, float]:
    from django.core.cache import cache
    from django.db import connection
    from django_q.brokers import get_broker
    from django_q.conf import Conf
    from django_q.status import Stat

    from qwatch.config.settings import CacheSettings, Site
    from qwatch.sources.cache import CacheSource

    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {TABLE}")
    specs = seed.make_specs(n)
    values = seed.make_values(specs, variants=reps + 4)
    write(specs, values, 0)
    cache.set(Conf.Q_STAT, [s.key for s in specs], None)
    site = Site(
        name=seed.SITE,
        secret_key=seed.SECRET_KEY,
        cache=CacheSettings("database", url, table=TABLE),
    )
    broker = get_broker()
    if django_get_many() != n or len(Stat.get_all(broker)) != n:
        raise RuntimeError("Django did not read every record")
    times: dict[str, list[float]] = {
        k: [] for k in ("get_many", "get_all", "cold", "changed", "same")
    }

    def timed(name: str, start: float) -> None:
        times[name].append(time.perf_counter() - start)

    async with CacheSource(site) as steady:
        for rnd in range(1, 4):  # measured as it runs, not as it starts
            write(specs, values, rnd)
            await steady.poll()
        for rep in range(reps):
            gc.collect()
            start = time.perf_counter()
            django_get_many()
            timed("get_many", start)

            gc.collect()
            start = time.perf_counter()
            Stat.get_all(broker)
            timed("get_all", start)

            async with CacheSource(site) as fresh:
                await fresh.server_version()  # the engine connected once
                gc.collect()
                start = time.perf_counter()
                poll = await fresh.poll()
                timed("cold", start)
            if len(poll.clusters) != n or poll.skipped:
                raise RuntimeError(f"qwatch read {len(poll.clusters)} of {n}: {poll.skipped[:3]}")

            write(specs, values, rep + 4)  # every value new
            gc.collect()
            start = time.perf_counter()
            poll = await steady.poll()
            timed("changed", start)
            if len(poll.clusters) != n:
                raise RuntimeError("qwatch lost records after the rewrite")

            gc.collect()
            start = time.perf_counter()
            await steady.poll()
            timed("same", start)
    result = {name: statistics.median(s) / n * 1e6 for name, s in times.items()}
    return result | {"reps": reps}


def run_backend(backend: str, sizes: list[int], pg_port: int | None) -> list[dict[str, Any]]:
    """In this process (Django can be configured once): every size on one backend."""
    if backend == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="qwatch-bench-cache-")) / "db.sqlite3"
        configure({"ENGINE": "django.db.backends.sqlite3", "NAME": str(path)})
        url = f"sqlite:///{path}"
    else:
        configure(
            {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": "postgres",
                "HOST": "127.0.0.1",
                "PORT": pg_port,
                "USER": "postgres",
            }
        )
        url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
    rows = []
    for n in sizes:
        reps = max(5, min(15, 3000 // n))
        rows.append({"backend": backend, "n": n, **asyncio.run(measure(n, url, reps))})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| backend | N | Django get_many µs/cluster | Stat.get_all | qwatch cold | qwatch changed "
        "| qwatch unchanged | get_many ÷ changed | get_all ÷ changed | reps |"
    )
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['n']:,} | {r['get_many']:.1f} | {r['get_all']:.1f} "
            f"| {r['cold']:.1f} | {r['changed']:.1f} | {r['same']:.1f} "
            f"| {r['get_many'] / r['changed']:.1f}x | {r['get_all'] / r['changed']:.1f}x "
            f"| {int(r['reps'])} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qwatch CacheSource.poll vs Django's own read")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child run: one backend, JSON out
    parser.add_argument("--pg-port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.one:
        print(json.dumps(run_backend(args.one, sizes, args.pg_port)))
        return 0
    print(f"machine: {seed.machine()}")
    rows: list[dict[str, Any]] = []
    for backend in args.backends.split(","):
        command = [sys.executable, __file__, "--one", backend, "--sizes", args.sizes]
        if backend == "postgresql":
            with seed.postgres_server() as server:
                done = subprocess.run(
                    [*command, "--pg-port", str(server.port)],
                    check=True,
                    capture_output=True,
                    text=True,
                )
        else:
            done = subprocess.run(command, check=True, capture_output=True, text=True)
        rows += json.loads(done.stdout.splitlines()[-1])
    print()
    print(table(rows))
    print(f"\nload average after: {seed.machine().rsplit('load average ', 1)[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
