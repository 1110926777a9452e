"""Shared Redis: what watching 100 clusters costs when their database holds M other keys.

One throwaway redis-server (DEBUG allowed, to fill it fast with `DEBUG POPULATE`), 100 real
signed django-q2 records (benchmarks/seed.py) among M = 0, 100 k, 1 M (and 10 M with --big)
other keys. For each M, in this one process against the same Redis:

- `Stat.get_all()`: django-q2's own reader (KEYS + MGET), its broker made once.
- one-shot: the first poll of a fresh RedisSource, what `qwatch status` does: a full SCAN
  sweep (COUNT 10,000) + MGET + decode.
- old poll: the poll before incremental discovery: a full sweep with COUNT 1,000 every
  poll (forced on a long-lived source).
- poll: the daemon's steady poll at a 1 s interval: MGET of the known keys + the
  incremental SCAN under its budget (1 % of a Redis core by default).
- discovery: seconds from writing a new cluster's record to the poll that reads it, polling
  every second; without and with keyspace notifications (`notify-keyspace-events K$` set
  by this script on its own server; qwatch never sets it).

Wall times are medians; Redis CPU is the server's `used_cpu_user + used_cpu_sys` (INFO cpu)
over the repetitions, per read. The discovery bound is a pass over the keyspace at the
budget: M x (SCAN's cost per key, from INFO commandstats) / share.

    .venv/bin/python benchmarks/shared_redis.py [--others 0,100000,1000000] [--big]
        [--repeat 3] [--polls 8] [--no-latency]
    .venv/bin/python benchmarks/shared_redis.py --sweeps [--others …]   # SCAN COUNT vs KEYS
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import seed

CLUSTERS = 100
INTERVAL_S = 1.0
LATENCY_LIMIT_S = 300.0  # give up measuring beyond this; the bound column still tells
IDLE_S = 3.0


@contextmanager
def debug_redis() -> Iterator[Any]:
    from tests.plugins.redis_server import RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="qwatch-bench-shared-"))
    server = RedisServer(workdir, extra_args=("--enable-debug-command", "yes"))
    try:
        yield server.start()
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


def populate(client: Any, others: int) -> None:
    """`others` keys, a million per DEBUG POPULATE (one call of 10 M outlasts a timeout)."""
    for chunk, start in enumerate(range(0, others, 1_000_000)):
        client.execute_command("DEBUG", "POPULATE", min(1_000_000, others - start), f"other{chunk}")


def redis_cpu(client: Any) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def scan_stats(client: Any) -> tuple[int, int]:
    stats = client.info("commandstats").get("cmdstat_scan", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def measure_sync(client: Any, fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median wall s, Redis CPU s per call)."""
    walls = []
    cpu0 = redis_cpu(client)
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), (redis_cpu(client) - cpu0) / repeat


async def measure_async(client: Any, fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    walls = []
    cpu0 = redis_cpu(client)
    for _ in range(repeat):
        start = time.perf_counter()
        await fn()
        walls.append(time.perf_counter() - start)
    return statistics.median(walls), (redis_cpu(client) - cpu0) / repeat


async def discovery_latency(
    source: Any, client: Any, key: str, value: bytes, limit_s: float = LATENCY_LIMIT_S
) -> float | None:
    """Write a record, poll every INTERVAL_S until a poll reads it: the seconds it took."""
    cluster_id = key.rsplit(":", 1)[1]
    client.set(key, value, ex=7200)
    written = time.monotonic()
    while time.monotonic() - written < limit_s:
        poll = await source.poll()
        if any(stat.cluster_id == cluster_id for stat in poll.clusters):
            return time.monotonic() - written
        await asyncio.sleep(INTERVAL_S)
    return None


async def one_size(
    server: Any, others: int, repeat: int, polls: int, latency: bool
) -> dict[str, Any]:
    import redis
    from django_q.brokers import get_broker
    from django_q.status import Stat

    import qwatch.sources.redis as redis_source
    from qwatch.config import Site
    from qwatch.sources.redis import RedisSource

    client = redis.Redis.from_url(server.url, socket_timeout=600)
    client.flushdb()
    client.config_set("notify-keyspace-events", "")
    populate(client, others)
    specs = seed.make_specs(CLUSTERS + 2)
    values = seed.make_values(specs, variants=1)
    seed.write_round(client, specs[:CLUSTERS], values[:CLUSTERS], 0, ttl_s=3600)
    site = Site(name=seed.SITE, secret_key=seed.SECRET_KEY, redis=server.settings())
    row: dict[str, Any] = {"others": others}

    broker = get_broker()
    if len(Stat.get_all(broker)) != CLUSTERS:
        raise RuntimeError("Stat.get_all did not read every record")
    row["get_all"] = measure_sync(client, lambda: Stat.get_all(broker), repeat)

    async def one_shot() -> None:
        async with RedisSource(site) as source:
            poll = await source.poll()
        if len(poll.clusters) != CLUSTERS:
            raise RuntimeError(f"one-shot read {len(poll.clusters)} clusters")

    row["one_shot"] = await measure_async(client, one_shot, repeat)

    async with RedisSource(site) as source:
        await source.poll()
        saved = redis_source.SCAN_COUNT
        redis_source.SCAN_COUNT = 1000  # the poll as it was: a COUNT 1000 sweep every time

        async def old_poll() -> None:
            source._discovery.reset()
            await source.poll()

        try:
            row["old_poll"] = await measure_async(client, old_poll, repeat)
        finally:
            redis_source.SCAN_COUNT = saved

    # What Redis spends with nobody asking (serverCron, expiry), per second: taken off the
    # steady polls, which are spread over seconds of wall time unlike the reads above.
    idle0 = redis_cpu(client)
    await asyncio.sleep(IDLE_S)
    idle_per_s = (redis_cpu(client) - idle0) / IDLE_S
    async with RedisSource(site) as source:
        await source.poll()  # the sweep
        calls0, usec0 = scan_stats(client)
        counted0 = source.scan_counted
        cpu0 = redis_cpu(client)
        walls = []
        started = time.monotonic()
        for _ in range(polls):
            await asyncio.sleep(INTERVAL_S)
            t0 = time.perf_counter()
            poll = await source.poll()
            walls.append(time.perf_counter() - t0)
            if len(poll.clusters) != CLUSTERS:
                raise RuntimeError("the steady poll lost a cluster")
        elapsed = time.monotonic() - started
        calls, usec = scan_stats(client)
        busy = redis_cpu(client) - cpu0 - idle_per_s * elapsed
        row["poll"] = (statistics.median(walls), max(0.0, busy) / polls)
        row["idle_per_s"] = idle_per_s
        row["scan_share"] = (usec - usec0) / 1e6 / elapsed
        row["scan_calls"] = (calls - calls0) / polls
        # A pass over the keyspace at the budget: SCAN's real cost per unit of COUNT.
        per_count = (usec - usec0) / 1e6 / max(1, source.scan_counted - counted0)
        row["bound_s"] = (others + CLUSTERS) * per_count / source._discovery.budget.share
        row["pass_s"] = (others + CLUSTERS) / max(1, source.scan_counted - counted0) * elapsed
        if latency:
            row["latency"] = await discovery_latency(
                source, client, specs[CLUSTERS].key, values[CLUSTERS][0], 1.5 * row["pass_s"] + 10
            )

    if latency:
        client.config_set("notify-keyspace-events", "K$")
        async with RedisSource(site) as source:
            await source.poll()
            await source.poll()  # the second poll subscribes
            if source.notifications is None:
                raise RuntimeError("notifications not used though enabled")
            row["latency_notify"] = await discovery_latency(
                source, client, specs[CLUSTERS + 1].key, values[CLUSTERS + 1][0]
            )
        client.config_set("notify-keyspace-events", "")
    client.close()
    return row


def sweep_costs(server: Any, others: int, repeat: int) -> list[tuple[str, int, float, float]]:
    """The one-shot's choice: a full SCAN by COUNT, against one KEYS. For each: round trips,
    median wall, and Redis CPU (INFO cpu) per sweep; the longest one command holds Redis is
    about a sweep's CPU over its round trips."""
    import redis

    client = redis.Redis.from_url(server.url, socket_timeout=600)
    client.flushdb()
    populate(client, others)
    specs = seed.make_specs(CLUSTERS)
    seed.write_round(client, specs, seed.make_values(specs, variants=1), 0, ttl_s=3600)
    match = seed.key_prefix() + "*"
    out = []
    for count in (1_000, 10_000, 100_000):
        calls = 0

        def sweep(count: int = count) -> None:
            nonlocal calls
            cursor, found = 0, 0
            while True:
                cursor, batch = client.scan(cursor, match=match, count=count)
                calls += 1
                found += len(batch)
                if cursor == 0:
                    break
            if found < CLUSTERS:
                raise RuntimeError("the sweep missed records")

        wall, cpu = measure_sync(client, sweep, repeat)
        out.append((f"SCAN COUNT {count:,}", calls // repeat, wall, cpu))
    wall, cpu = measure_sync(client, lambda: client.keys(match), repeat)
    out.append(("KEYS", 1, wall, cpu))
    client.close()
    return out


def fmt_s(value: float | None) -> str:
    if value is None:
        return "not found"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.1f} s"


def table(rows: Sequence[dict[str, Any]]) -> str:
    lines = [
        "| other keys | Stat.get_all wall / Redis CPU | one-shot wall / Redis CPU (ratio "
        "to get_all) | old poll wall / Redis CPU | poll wall / Redis CPU (ratio to old poll) | "
        "SCAN share of a core | discovery (pass at this poll's pace; at 1 % of real SCAN cost) "
        "| with notifications |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ga, one, old, poll = r["get_all"], r["one_shot"], r["old_poll"], r["poll"]
        lines.append(
            f"| {r['others']:,} "
            f"| {fmt_s(ga[0])} / {fmt_s(ga[1])} "
            f"| {fmt_s(one[0])} / {fmt_s(one[1])} "
            f"({one[0] / ga[0]:.2f}x, {one[1] / max(ga[1], 1e-6):.2f}x) "
            f"| {fmt_s(old[0])} / {fmt_s(old[1])} "
            f"| {fmt_s(poll[0])} / {fmt_s(poll[1])} ({poll[0] / old[0]:.2g}x, "
            f"{poll[1] / max(old[1], 1e-6):.2g}x) "
            f"| {r['scan_share'] * 100:.2f} % ({r['scan_calls']:.1f} calls/poll) "
            f"| {fmt_s(r.get('latency')) if 'latency' in r else '-'} "
            f"({fmt_s(r['pass_s'])}; {fmt_s(r['bound_s'])}) "
            f"| {fmt_s(r.get('latency_notify')) if 'latency_notify' in r else '-'} |"
        )
    return "\n".join(lines)


async def run(others: Sequence[int], repeat: int, polls: int, latency: bool, sweeps: bool) -> None:
    with debug_redis() as server:
        seed.configure_django(server.url)  # the records are signed by django-q2 itself
        if sweeps:
            print(f"{CLUSTERS} clusters; {seed.machine()}")
            print("| other keys | sweep | round trips | wall | Redis CPU | per round trip |")
            print("|---|---|---|---|---|---|")
            for count in others:
                for name, calls, wall, cpu in sweep_costs(server, count, repeat):
                    print(
                        f"| {count:,} | {name} | {calls:,} | {fmt_s(wall)} | {fmt_s(cpu)} "
                        f"| {fmt_s(cpu / calls)} |"
                    )
            return
        rows = []
        for count in others:
            rows.append(await one_size(server, count, repeat, polls, latency))
            print(f"  done: {count:,} other keys", file=sys.stderr, flush=True)
    print(f"{CLUSTERS} clusters; {seed.machine()}")
    print(table(rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--others", default="0,100000,1000000")
    parser.add_argument("--big", action="store_true", help="also 10,000,000 other keys")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--polls", type=int, default=8)
    parser.add_argument("--no-latency", action="store_true")
    parser.add_argument(
        "--sweeps", action="store_true", help="only the one-shot sweep: SCAN COUNTs vs KEYS"
    )
    args = parser.parse_args(argv)
    others = [int(n) for n in args.others.split(",") if n]
    if args.big:
        others.append(10_000_000)
    asyncio.run(run(others, args.repeat, args.polls, not args.no_latency, args.sweeps))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
