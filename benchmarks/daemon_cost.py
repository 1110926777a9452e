"""Daemon cost: CPU and peak RSS of a real `qwatch daemon` watching N live clusters.

For each backend (SQLite file, throwaway PostgreSQL) and each N, this starts a throwaway
redis-server, a rewriter process that rewrites N signed django-q2 records every 0.5 s
(benchmarks/seed.py: like N live clusters, so no two polls read the same bytes), and
`python -m qwatch daemon` at its defaults (1 s poll, a sample every 10 s). After a warm-up
(the first poll's `appeared` events, the schema, the first samples) it reads the daemon's
utime + stime from /proc/<pid>/stat over a fixed window, and its VmHWM (peak RSS) from
/proc/<pid>/status at the end. The window is 60 s by default so that it holds one minute
flush and one maintenance round, as every minute of a real run does.

The rewriter and redis-server run on the same 2 cores: their CPU is printed beside, since it
is load the daemon competes with, not part of its cost.

    .venv/bin/python benchmarks/daemon_cost.py [--quick] [--sizes 10,100,1000]
        [--backends sqlite,postgresql] [--window 60] [--warmup 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import seed  # noqa: E402

SIZES = (10, 100, 1000)
BACKENDS = ("sqlite", "postgresql")
# Issue 15, on SQLite and PostgreSQL at a 1 s poll: clusters -> % of one core
TARGET_CORE_PCT = {1000: 5.0, 10_000: 40.0}
TARGET_RSS_MB = 150.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@dataclass
class Result:
    backend: str
    n: int
    window_s: float
    cpu_s: float
    hwm_mb: float
    rss_mb: float
    rewriter_pct: float
    redis_pct: float
    samples: int
    minutes: int
    log_errors: int

    @property
    def core_pct(self) -> float:
        return self.cpu_s / self.window_s * 100

    @property
    def cpu_s_per_hour(self) -> float:
        return self.cpu_s / self.window_s * 3600


def count_rows(db_url: str) -> tuple[int, int]:
    from sqlalchemy import text

    from qwatch.store.engine import create_engine

    async def run() -> tuple[int, int]:
        engine = create_engine(db_url)
        try:
            async with engine.connect() as conn:
                samples = (await conn.execute(text("SELECT count(*) FROM samples"))).scalar()
                minutes = (await conn.execute(text("SELECT count(*) FROM rollup_minute"))).scalar()
                return int(samples or 0), int(minutes or 0)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def run_one(
    backend: str, n: int, redis_server: object, db_url: str, warmup: float, window: float
) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix="qwatch-bench-daemon-"))
    log_path = workdir / "daemon.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWATCH_")}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(
        QWATCH_SECRET_KEY=seed.SECRET_KEY,
        QWATCH_NAME=seed.SITE,
        QWATCH_REDIS_URL=redis_server.url,  # type: ignore[attr-defined]
        QWATCH_DATABASE_URL=db_url,
        PYTHONPATH=str(ROOT),
    )
    rewriter = seed.Rewriter(redis_server.url, n).start()  # type: ignore[attr-defined]
    daemon: subprocess.Popen[bytes] | None = None
    try:
        with log_path.open("wb") as out:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "qwatch", "daemon"],
                env=env,
                cwd=workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while "qwatch daemon:" not in log_path.read_text(errors="replace"):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"daemon did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        time.sleep(warmup)
        redis_pid = redis_server.pid  # type: ignore[attr-defined]
        assert rewriter.pid is not None
        start = time.monotonic()
        cpu0 = cpu_seconds(daemon.pid)
        rw0, rd0 = cpu_seconds(rewriter.pid), cpu_seconds(redis_pid)
        time.sleep(window)
        elapsed = time.monotonic() - start
        cpu = cpu_seconds(daemon.pid) - cpu0
        rw = cpu_seconds(rewriter.pid) - rw0
        rd = cpu_seconds(redis_pid) - rd0
        hwm = status_kb(daemon.pid, "VmHWM") / 1024
        rss = status_kb(daemon.pid, "VmRSS") / 1024
        if daemon.poll() is not None:
            raise RuntimeError(f"daemon exited:\n{log_path.read_text()[-2000:]}")
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        log = log_path.read_text(errors="replace")
        errors = sum(1 for line in log.splitlines() if "ERROR" in line or "Traceback" in line)
        samples, minutes = count_rows(db_url)
        return Result(
            backend, n, elapsed, cpu, hwm, rss, rw / elapsed * 100, rd / elapsed * 100,
            samples, minutes, errors,
        )  # fmt: skip
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(10)
        rewriter.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def table(results: Sequence[Result]) -> str:
    lines = [
        "| backend | N | CPU s/hour | % of one core | peak RSS (VmHWM) MB | target "
        "| rewriter % core | redis % core | samples, minute rows written |",
        "|" + "---|" * 9,
    ]
    for r in results:
        target = ""
        core = TARGET_CORE_PCT.get(r.n)
        if core is not None:
            ok = r.core_pct <= core and r.hwm_mb <= TARGET_RSS_MB
            target = f"≤ {core:.0f} %, ≤ {TARGET_RSS_MB:.0f} MB: {'met' if ok else 'MISSED'}"
        lines.append(
            f"| {r.backend} | {r.n:,} | {r.cpu_s_per_hour:.0f} | {r.core_pct:.1f} "
            f"| {r.hwm_mb:.0f} | {target} | {r.rewriter_pct:.0f} | {r.redis_pct:.0f} "
            f"| {r.samples:,}, {r.minutes:,} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="CPU and RSS of qwatch daemon")
    parser.add_argument("--quick", action="store_true", help="30 s windows, 10 s warm-up")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--window", type=float, default=None, help="seconds measured (60)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before (20)")
    args = parser.parse_args(argv)
    window = args.window or (30.0 if args.quick else 60.0)
    warmup = args.warmup or (10.0 if args.quick else 20.0)
    sizes = [int(s) for s in args.sizes.split(",")]
    backends = args.backends.split(",")
    print(f"machine: {seed.machine()}")
    print(f"window {window:.0f} s after a {warmup:.0f} s warm-up; daemon at its defaults")
    results: list[Result] = []
    with seed.redis_server() as redis_server:
        for backend in backends:
            for n in sizes:
                if backend == "sqlite":
                    dbdir = Path(tempfile.mkdtemp(prefix="qwatch-bench-sqlite-"))
                    try:
                        url = f"sqlite:///{dbdir / 'history.sqlite3'}"
                        result = run_one(backend, n, redis_server, url, warmup, window)
                    finally:
                        shutil.rmtree(dbdir, ignore_errors=True)
                else:
                    with seed.postgres_server() as pg:
                        url = pg.create_database("qwatch")
                        result = run_one(backend, n, redis_server, url, warmup, window)
                results.append(result)
                print(
                    f"{backend:>10} N={n:>6,}: {result.core_pct:5.1f} % of a core, "
                    f"peak RSS {result.hwm_mb:.0f} MB, errors in log: {result.log_errors}",
                    flush=True,
                )
                flushdb(redis_server.url)
    print()
    print(table(results))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


def flushdb(url: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        client.flushdb()


if __name__ == "__main__":
    raise SystemExit(main())
