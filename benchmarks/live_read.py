"""Live read: qwatch's `RedisSource.poll()` against django-q2's `Stat.get_all()`, same keys.

For each N a throwaway redis-server is seeded with N realistic signed django-q2 records
(benchmarks/seed.py), then, in this one process:

- `Stat.get_all(broker)`: django-q2's own reader (KEYS + MGET via redis-py, then
  `SignedPackage.loads` = TimestampSigner.unsign + zlib + plain pickle.loads), given a
  broker made once so its connection is reused, as in qmonitor's loop.
- qwatch cold: the first `poll()` of a fresh RedisSource (connection already open, decode
  cache empty): SCAN + MGET + verify + restricted decode + LLEN.
- qwatch changed: a poll after every record was rewritten with another signed value (as
  live clusters do every 0.5 s), so nothing in the decode cache matches.
- qwatch unchanged: a poll of the same bytes as the previous poll (the cache hits).
- floor: redis-py MGET of the same keys + HMAC-SHA256 + zlib + plain pickle.loads, inline:
  the least any Python reader of these records can do.

Every figure is the median of several repetitions, in microseconds per cluster.

    .venv/bin/python benchmarks/live_read.py [--quick] [--sizes 10,100,1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import pickle
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import seed

SIZES = (10, 100, 1000, 10_000)
TARGET_RATIO = 5.0  # at least 5x faster than Stat.get_all at N = 1,000 and 10,000


def repetitions(n: int, quick: bool) -> int:
    reps = max(5, min(41, 20_000 // n))
    return max(3, reps // 3) if quick else reps


def median_us(samples: Sequence[float], n: int) -> float:
    return statistics.median(samples) / n * 1e6


def floor_reader(client: Any, keys: list[bytes]) -> Callable[[], int]:
    """The irreducible work, inline: fetch, verify (same key derivation as Django's
    salted_hmac), base64, inflate, unpickle."""
    import base64

    from django.conf import settings

    # django.core.signing: salted_hmac(salt + "signer", value, SECRET_KEY, "sha256")
    key = hashlib.sha256((seed.SITE + "signer" + settings.SECRET_KEY).encode()).digest()

    def read() -> int:
        count = 0
        for raw in client.mget(keys):
            value, _, sig = raw.rpartition(b":")
            mac = hmac.new(key, value, hashlib.sha256).digest()
            if not hmac.compare_digest(base64.urlsafe_b64encode(mac).rstrip(b"="), sig):
                raise ValueError("bad signature")
            payload = value.rpartition(b":")[0][1:]
            data = zlib.decompress(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
            pickle.loads(data)
            count += 1
        return count

    return read


async def measure(server: Any, n: int, quick: bool) -> dict[str, float]:
    import redis
    from django_q.brokers import get_broker
    from django_q.status import Stat

    from qwatch.config import Site
    from qwatch.redis_source import RedisSource

    client = redis.Redis.from_url(server.url)
    client.flushdb()
    specs = seed.make_specs(n)
    values = seed.make_values(specs, variants=3)
    seed.write_round(client, specs, values, 0, ttl_s=600)
    keys = [spec.key.encode() for spec in specs]
    site = Site(name=seed.SITE, secret_key=seed.SECRET_KEY, redis=server.settings())
    reps = repetitions(n, quick)

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
    gc.collect()
    round_no = 0
    for _ in range(reps):
        start = time.perf_counter()
        Stat.get_all(broker)
        times["get_all"].append(time.perf_counter() - start)

        start = time.perf_counter()
        floor()
        times["floor"].append(time.perf_counter() - start)

        async with RedisSource(site) as source:
            await source.server_version()  # connected, nothing decoded yet
            start = time.perf_counter()
            poll = await source.poll()
            times["cold"].append(time.perf_counter() - start)
            if len(poll.clusters) != n or poll.skipped:
                raise RuntimeError(f"qwatch read {len(poll.clusters)} of {n}: {poll.skipped[:3]}")

            round_no += 1
            seed.write_round(client, specs, values, round_no, ttl_s=600)  # every value new
            start = time.perf_counter()
            poll = await source.poll()
            times["changed"].append(time.perf_counter() - start)
            if len(poll.clusters) != n:
                raise RuntimeError("qwatch lost records after the rewrite")

            start = time.perf_counter()
            await source.poll()
            times["same"].append(time.perf_counter() - start)
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
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"machine: {seed.machine()}")
    rows = []
    with seed.redis_server() as server:
        seed.configure_django(server.url)
        for n in sizes:
            result = asyncio.run(measure(server, n, args.quick))
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
