"""Realistic signed Django Q status records for the benchmarks, and the servers they need.

Records are made the way a django-q2 cluster makes them: a `django_q.status.Stat` (its
`__dict__` filled as `Stat.__init__` fills it from a live sentinel) signed with django_q's
own `SignedPackage.dumps(stat, True)` under a Django configured in this process. Hosts,
pids, worker lists, statuses, queue sizes and reincarnations vary from cluster to cluster.

A real cluster rewrites its record every 0.5 s with a fresh timestamp, so a reader never
sees the same bytes twice. `Rewriter` does the same for N records from a child process:
each cluster has `VARIANTS` precomputed signed values (timestamps 0.5 s apart, queue sizes
moving) and every round writes the next one, `SET … EX 3`, pipelined. Signing fresh values
every round would cost more CPU than the reader under test. With 1 s between polls (two
rounds) and 7 variants, the value a poll reads never equals the one the previous poll read
unless 7 rounds (3.5 s) separate them, so a decode cache keyed by the last poll's bytes
cannot hide the decoding cost.

Run on its own it seeds a Redis and prints one record:
    .venv/bin/python benchmarks/seed.py --redis-url redis://127.0.0.1:6379/0 -n 100
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SECRET_KEY = "benchmark-secret-key-0123456789abcdefghijklmnop"
SITE = "bench"
REWRITE_EVERY_S = 0.5  # Django Q's own rhythm
RECORD_TTL_S = 3  # and its expiry
VARIANTS = 7
# Realistic mix: most clusters idle, some busy, a few starting or stopping.
_STATUS_WEIGHTS = (("Idle", 70), ("Working", 24), ("Starting", 3), ("Stopping", 3))


def configure_django(redis_url: str, name: str = SITE) -> None:
    """Configure Django in this process as a django-q2 site: what both the signing and
    `django_q.status.Stat.get_all()` need. A second call with the same site is a no-op."""
    import django
    from django.conf import settings

    if settings.configured:
        q = settings.Q_CLUSTER
        if q["name"] != name or q["redis"] != redis_url:
            raise RuntimeError("Django is already configured for another site")
        return
    settings.configure(
        SECRET_KEY=SECRET_KEY,
        Q_CLUSTER={"name": name, "redis": redis_url, "workers": 4, "timeout": 60, "retry": 120},
        INSTALLED_APPS=["django_q"],
        USE_TZ=True,
        TIME_ZONE="UTC",
        DATABASES={},
    )
    django.setup()


def key_prefix(name: str = SITE) -> str:
    return f"django_q:{name}:cluster:"


@dataclass(frozen=True)
class ClusterSpec:
    """What stays fixed in one cluster's records; `state()` makes one record's __dict__."""

    cluster_id: str
    host: str
    pid: int
    sentinel: int
    monitor: int
    pusher: int
    workers: tuple[int, ...]
    status: str
    reincarnations: int
    tob: datetime

    @property
    def key(self) -> str:
        return key_prefix() + self.cluster_id

    def state(self, timestamp: datetime, variant: int, rng: random.Random) -> dict[str, Any]:
        from django_q.conf import Conf

        status = {
            "Starting": Conf.STARTING,
            "Idle": Conf.IDLE,
            "Working": Conf.WORKING,
            "Stopping": Conf.STOPPING,
            "Stopped": Conf.STOPPED,
        }[self.status]
        starting = self.status == "Starting"
        busy = self.status == "Working"
        # The attribute order of Status.__init__ then Stat.__init__, as a real pickle has it.
        return {
            "workers": [] if starting else list(self.workers),
            "tob": self.tob,
            "reincarnations": self.reincarnations,
            "pid": self.pid,
            "cluster_id": uuid.UUID(self.cluster_id),
            "sentinel": self.sentinel,
            "status": status,
            "done_q_size": rng.randrange(0, 3) if busy else 0,
            "host": self.host,
            "monitor": 0 if starting else self.monitor,
            "task_q_size": rng.randrange(1, 40) + variant if busy else 0,
            "pusher": 0 if starting else self.pusher,
            "timestamp": timestamp,
            "broker": None,  # dropped by Stat.__getstate__, as the live broker is
        }


def make_specs(
    n: int, seed: int = 1, status_weights: Sequence[tuple[str, int]] = _STATUS_WEIGHTS
) -> list[ClusterSpec]:
    """N clusters; `status_weights` [("Working", 1)] makes a fleet whose every record
    changes more than its timestamp from one rewrite to the next (queue sizes move)."""
    rng = random.Random(seed)
    hosts = [f"web-{i:03d}.prod.example.internal" for i in range(max(1, n // 4))]
    now = datetime.now(UTC)
    statuses = [s for s, _ in status_weights]
    weights = [w for _, w in status_weights]
    specs = []
    for _ in range(n):
        pid = rng.randrange(1000, 4_000_000)
        pool = rng.choice((1, 2, 4, 4, 8, 8, 16))
        specs.append(
            ClusterSpec(
                cluster_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                host=rng.choice(hosts),
                pid=pid,
                sentinel=pid + 1,
                monitor=pid + pool + 2,
                pusher=pid + pool + 3,
                workers=tuple(pid + 2 + w for w in range(pool)),
                status=rng.choices(statuses, weights)[0],
                reincarnations=rng.choice((0, 0, 0, 0, 1, 2, 5, 37)),
                tob=now - timedelta(seconds=rng.randrange(60, 30 * 86400)),
            )
        )
    return specs


def sign_stat(state: dict[str, Any]) -> bytes:
    """One record exactly as django-q2's `Stat.save()` writes it (Django must be configured)."""
    from django_q.signing import SignedPackage
    from django_q.status import Stat

    # Stat.__init__ needs a live sentinel; its __dict__ is all that is pickled.
    stat = Stat.__new__(Stat)
    stat.__dict__.update(state)
    return SignedPackage.dumps(stat, True).encode("ascii")


def make_values(
    specs: Sequence[ClusterSpec], variants: int = VARIANTS, seed: int = 2
) -> list[list[bytes]]:
    """`variants` signed values per cluster, their timestamps REWRITE_EVERY_S apart."""
    rng = random.Random(seed)
    start = datetime.now(UTC)
    return [
        [
            sign_stat(spec.state(start + timedelta(seconds=REWRITE_EVERY_S * v), v, rng))
            for v in range(variants)
        ]
        for spec in specs
    ]


def write_round(
    client: Any,
    specs: Sequence[ClusterSpec],
    values: Sequence[Sequence[bytes]],
    round_no: int,
    ttl_s: int = RECORD_TTL_S,
    batch: int = 1000,
) -> None:
    """SET every record to its variant for `round_no`, EX ttl, pipelined in batches."""
    for start in range(0, len(specs), batch):
        pipe = client.pipeline(transaction=False)
        for spec, vals in zip(
            specs[start : start + batch], values[start : start + batch], strict=True
        ):
            pipe.set(spec.key, vals[round_no % len(vals)], ex=ttl_s)
        pipe.execute()


# --------------------------------------------------------------------------- the rewriter


def rewrite_forever(redis_url: str, n: int, ready: Callable[[], None]) -> None:
    """Rewrite N records every REWRITE_EVERY_S until SIGTERM; `ready()` after the first round."""
    import redis

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    configure_django(redis_url)
    specs = make_specs(n)
    values = make_values(specs)
    with redis.Redis.from_url(redis_url, socket_timeout=30) as client:
        round_no = 0
        next_at = time.monotonic()
        while not stopping.is_set():
            write_round(client, specs, values, round_no)
            if round_no == 0:
                ready()
            round_no += 1
            next_at += REWRITE_EVERY_S
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (a loaded machine): keep the rhythm, skip lost rounds
                next_at = time.monotonic()
            else:
                stopping.wait(delay)


class Rewriter:
    """A child process (`seed.py --rewrite`) rewriting N records every 0.5 s, like N live
    clusters; stopped by its pid."""

    def __init__(self, redis_url: str, n: int) -> None:
        self._command = [
            sys.executable, str(Path(__file__).resolve()),
            "--redis-url", redis_url, "-n", str(n), "--rewrite",
        ]  # fmt: skip
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the rewriter is not running")
        return self._process.pid

    def start(self, timeout: float = 300.0) -> Rewriter:
        self._process = subprocess.Popen(self._command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        ready = threading.Event()

        def wait_ready() -> None:
            assert self._process is not None and self._process.stdout is not None
            if self._process.stdout.readline().strip() == "ready":
                ready.set()

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("the rewriter did not write its first round")
        return self

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> Rewriter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --------------------------------------------------------------------------- servers


@contextmanager
def redis_server() -> Iterator[Any]:
    """A throwaway redis-server (tests/plugins/redis_server.RedisServer), stopped by pid."""
    from tests.plugins.redis_server import RedisServer

    workdir = Path(tempfile.mkdtemp(prefix="qwatch-bench-redis-"))
    server = RedisServer(workdir)
    try:
        yield server.start()
    finally:
        server.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[Any]:
    """A throwaway PostgreSQL (tests/plugins/postgres_server.PostgresServer), removed after."""
    from tests.plugins.postgres_server import PostgresServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found (set QWATCH_PG_BIN)")
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def machine() -> str:
    import platform

    return (
        f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    import redis

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("-n", type=int, default=100)
    parser.add_argument(
        "--rewrite", action="store_true", help="rewrite every 0.5 s until SIGTERM (EX 3)"
    )
    args = parser.parse_args(argv)
    if args.rewrite:
        rewrite_forever(args.redis_url, args.n, lambda: print("ready", flush=True))
        return 0
    configure_django(args.redis_url)
    specs = make_specs(args.n)
    values = make_values(specs, variants=1)
    write_round(redis.Redis.from_url(args.redis_url), specs, values, 0, ttl_s=300)
    print(f"seeded {args.n} records under {key_prefix()}* (EX 300); one of them:")
    print(specs[0].key, values[0][0].decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
