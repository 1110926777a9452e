"""Live read: qwatch's `RedisSource.poll()` against django-q2's `Stat.get_all()`, same keys.

For each N a throwaway redis-server is seeded with N realistic signed django-q2 records
(benchmarks/seed.py), then, in this one process:

- `Stat.get_all(broker)`: django-q2's own reader (KEYS + MGET via redis-py, then
  `SignedPackage.loads` = TimestampSigner.unsign + zlib + plain pickle.loads), given a
  broker made once so its connection is reused, as in qmonitor's loop.
- qwatch cold: the first `poll()` of a fresh RedisSource (connection already open, decode
  cache empty): SCAN + MGET + verify + restricted decode + LLEN.
- qwatch changed: a long-lived RedisSource (as in the daemon and the monitor) polling after
  every record was rewritten with another signed value (as live clusters do every 0.5 s),
  its pickle never one read before, so nothing in its decode cache matches: the steady
  state of a poll loop.
- qwatch unchanged: a poll of the same bytes as the previous poll (the cache hits).
- floor: redis-py MGET of the same keys + HMAC-SHA256 (key derived once) + base64 + zlib +
  an unpickle restricted to stand-ins, inline, with no checks and no result objects: about
  the least any Python reader of these records can do.

Every figure is the median of several repetitions, in microseconds per cluster.

    .venv/bin/python benchmarks/live_read.py [--quick] [--sizes 10,100,1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import floor, seed

SIZES = (10, 100, 1000, 10_000)
TARGET_RATIO = 5.0  # at least 5x faster than Stat.get_all at N = 1,000 and 10,000


def repetitions(n: int, quick: bool) -> int:
    reps = max(9, min(41, 20_000 // n))
    return max(3, reps // 3) if quick else reps


def median_us(samples: Sequence[float], n: int) -> float:
    return statistics.median(samples) / n * 1e6


def floor_reader(client: Any, keys: list[bytes]) -> Callable[[], int]:
    """The least any Python reader of these records can do, inline: redis-py MGET, HMAC
    with the key derived once, base64, inflate, and an unpickle restricted to stand-ins
    (no opcode allowlist, no field checks, no result objects)."""
    from django.conf import settings

    key = floor.signing_key(seed.SITE, settings.SECRET_KEY)

    def read() -> int:
        count = 0
        for raw in client.mget(keys):
            floor.decode(raw, key)
            count += 1
        return count

    return read


async def measure(server: Any, n: int, quick: bool, busy: bool = False) -> dict[str, float]:
    import redis
    from django_q.brokers import get_broker
    from django_q.status import Stat

    from qwatch.config import Site
    from qwatch.sources.redis import RedisSource

    client = redis.Redis.from_url(server.url)
    client.flushdb()
    specs = seed.make_specs(n, status_weights=[("Working", 1)]) if busy else seed.make_specs(n)
    reps = repetitions(n, quick)
    # A variant per round (3 warm-up rounds, then one per repetition): as with live clusters,
    # whose timestamps always move, no poll reads a pickle any earlier poll read.
    values = seed.make_values(specs, variants=reps + 4)
    seed.write_round(client, specs, values, 0, ttl_s=600)
    keys = [spec.key.encode() for spec in specs]
    site = Site(name=seed.SITE, secret_key=seed.SECRET_KEY, redis=server.settings())

    broker = get_broker()
    got = Stat.get_all(broker)
    if len(got) != n:
        raise RuntimeError(f"Stat.get_all read {len(got)} records, not {n}")
    if {f"{seed.key_prefix()}{s.cluster_id}" for s in got} != {spec.key for spec in specs}:
        raise RuntimeError("Stat.get_all read other keys than qwatch")
    floor = floor_reader(client, keys)
    if floor() != n:
        raise RuntimeError("floor reader miscounted")

    times: dict[str, list[float]] = {k: [] for k in ("get_all", "cold", "changed", "same", "floor")}
    round_no = 0

    def timed(name: str, start: float) -> None:
        times[name].append(time.perf_counter() - start)

    async with RedisSource(site) as steady:
        # A long-lived source, as in the daemon or the monitor: a few polls of rewritten
        # records first, so it is measured as it runs, not as it starts.
        for _ in range(3):
            round_no += 1
            seed.write_round(client, specs, values, round_no, ttl_s=600)
            await steady.poll()
        for _ in range(reps):
            # Each timing starts from a collected heap: Stat.get_all leaves cyclic garbage
            # (a class per lazy status) that would otherwise be collected on another's time.
            gc.collect()
            start = time.perf_counter()
            Stat.get_all(broker)
            timed("get_all", start)

            gc.collect()
            start = time.perf_counter()
            floor()
            timed("floor", start)

            async with RedisSource(site) as fresh:
                await fresh.server_version()  # connected, nothing decoded yet
                gc.collect()
                start = time.perf_counter()
                poll = await fresh.poll()
                timed("cold", start)
            if len(poll.clusters) != n or poll.skipped:
                raise RuntimeError(f"qwatch read {len(poll.clusters)} of {n}: {poll.skipped[:3]}")

            round_no += 1
            seed.write_round(client, specs, values, round_no, ttl_s=600)  # every value new
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
    client.flushdb()
    client.close()
    return {name: median_us(samples, n) for name, samples in times.items()} | {"reps": reps}


def table(rows: list[tuple[int, dict[str, float]]]) -> str:
    head = (
        "| N | Stat.get_all µs/cluster | qwatch cold | qwatch changed | qwatch unchanged "
        "| get_all ÷ cold | get_all ÷ changed | get_all ÷ unchanged | floor µs/cluster | reps |"
    )
    lines = [head, "|" + "---|" * 10]
    for n, r in rows:
        lines.append(
            f"| {n:,} | {r['get_all']:.1f} | {r['cold']:.1f} | {r['changed']:.1f} "
            f"| {r['same']:.1f} | {r['get_all'] / r['cold']:.1f}x "
            f"| {r['get_all'] / r['changed']:.1f}x | {r['get_all'] / r['same']:.1f}x "
            f"| {r['floor']:.1f} | {int(r['reps'])} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qwatch RedisSource.poll vs Stat.get_all")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument(
        "--busy",
        action="store_true",
        help="every cluster Working, its queue sizes moving: no record differs from the "
        "last only in its timestamp (the default fleet is 70 %% idle)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {seed.machine()}")
    print("fleet: every cluster Working" if args.busy else "fleet: benchmarks/seed.py's mix")
    rows = []
    with seed.redis_server() as server:
        seed.configure_django(server.url)
        for n in sizes:
            result = asyncio.run(measure(server, n, args.quick, args.busy))
            rows.append((n, result))
            print(
                f"N={n:>6,}: get_all {result['get_all']:.1f} µs/cluster, "
                f"qwatch changed {result['changed']:.1f} µs/cluster",
                flush=True,
            )
    print()
    print(table(rows))
    print(f"\nload average after: {seed.machine().rsplit('load average ', 1)[1]}")
    missed = [n for n, r in rows if n >= 1000 and r["get_all"] / r["changed"] < TARGET_RATIO]
    if missed:
        print(
            f"target missed (at least {TARGET_RATIO:.0f}x Stat.get_all when records change) at N = "
            + ", ".join(f"{n:,}" for n in missed)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
