"""Scrape cost: the daemon's /metrics at N clusters, and the daemon's CPU with a 15 s scrape.

Part 1, in one process, N synthetic clusters over 20 hosts (the decoder is not what is
measured here): the per-poll hook (`ListenerState.observe`), the frozen view, the
Prometheus text (`qwatch.serve.metrics.render`), a whole HTTP GET /metrics through the real
aiohttp listener on loopback, and, as the baseline measured in the same run, `qwatch status
--json`'s rendering of the same poll (`qwatch.live.as_json`). Medians of the repetitions.

Part 2 (`--cpu`), real processes: a rewriter keeps N signed django-q2 records live
(benchmarks/seed.py), and two `qwatch daemon`s watch them at the same time, each on its own
SQLite file: one without the listener, one with `--listen` scraped every 15 s. Their
utime + stime over the same windows (benchmarks/daemon_cost.py's reading of /proc) gives
the listener's share of a core, with load from elsewhere falling on both alike.

    .venv/bin/python benchmarks/scrape.py [--sizes 1000,10000] [--repeat 15]
    .venv/bin/python benchmarks/scrape.py --cpu [--cpu-clusters 1000] [--window 60] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import seed  # noqa: E402
from benchmarks.daemon_cost import cpu_seconds  # noqa: E402
from qwatch import live  # noqa: E402
from qwatch.config import ListenAddress  # noqa: E402
from qwatch.serve.metrics import Renderer, render  # noqa: E402
from qwatch.serve.server import Listener  # noqa: E402
from qwatch.serve.state import ListenerState, SiteSnapshot, Snapshot  # noqa: E402
from qwatch.sources.redis import Poll  # noqa: E402
from qwatch.values import STATES, Backlog, ClusterStat  # noqa: E402

SIZES = (1000, 10000)
TARGET_MS_AT_1000 = 50.0
TARGET_CPU_PCT = 1.0
SCRAPE_EVERY_S = 15.0


def fleet(n: int, at: datetime) -> Poll:
    clusters = tuple(
        ClusterStat(
            name="bench",
            cluster_id=f"{i:08x}-0000-4000-8000-{i:012x}",
            host=f"web{i % 20:02d}",
            pid=1000 + i,
            sentinel=2000 + i,
            monitor=3000 + i,
            pusher=4000 + i,
            workers=tuple(range(4)),
            status=STATES[i % len(STATES)],
            task_q_size=i % 7,
            done_q_size=i % 3,
            reincarnations=i % 5,
            tob=at - timedelta(hours=1, seconds=i),
            timestamp=at,
        )
        for i in range(n)
    )
    return Poll("bench", at, clusters, backlogs=(Backlog("bench", "redis", 12),))


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def scrape_over_http(state: ListenerState, repeat: int) -> tuple[float, int]:
    """Median ms of GET /metrics from a client thread while the listener's loop runs."""
    port = seed_free_port()
    ready, done = threading.Event(), threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        listener = Listener(state, ListenAddress("127.0.0.1", port), None)
        await listener.start()
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        await listener.stop()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    ready.wait(10)
    size = 0

    def get() -> None:
        nonlocal size
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
            size = len(answer.read())

    try:
        get()  # warm: the first request builds aiohttp's machinery
        return median_ms(get, repeat), size
    finally:
        done.set()
        thread.join(10)
        loop.close()


def seed_free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(n: int, repeat: int) -> tuple[float, float, float, float, float, float, int, float]:
    at = datetime.now(UTC)
    poll = fleet(n, at)
    state = ListenerState(1.0, "bench")
    moment = [at]

    def observe() -> None:
        moment[0] += timedelta(seconds=1)
        part = SiteSnapshot("bench", True, 0.01, poll, None, {"state_changed": 1})
        state.observe(Snapshot(moment[0], (part,), 0, 0, 3600))

    observe()
    observe_ms = median_ms(observe, repeat)
    capture_ms = median_ms(state.capture, repeat)
    view_ms = median_ms(state.view, repeat)
    view = state.view()
    render_ms = median_ms(lambda: render(view), repeat)  # every cluster's lines made anew
    renderer = Renderer()
    renderer(view)
    kept_ms = median_ms(lambda: renderer(view), repeat)  # no cluster changed since the last
    http_ms, size = scrape_over_http(state, repeat)
    json_ms = median_ms(lambda: live.as_json([poll]), repeat)
    return observe_ms, capture_ms, view_ms, render_ms, kept_ms, http_ms, size, json_ms


def in_process(sizes: Sequence[int], repeat: int) -> None:
    print("| N clusters | observe (per poll) ms | capture (on the loop) ms | view ms "
          "| render, all changed ms | render, none changed ms "
          "| HTTP GET /metrics ms "
          "| body KB | baseline: status --json render ms | target |")  # fmt: skip
    print("|" + "---|" * 10)
    for n in sizes:
        row = measure(n, repeat)
        observe_ms, capture_ms, view_ms, render_ms, kept_ms, http_ms, size, json_ms = row
        target = ""
        if n == 1000:
            verdict = "met" if http_ms <= TARGET_MS_AT_1000 else "MISSED"
            target = f"≤ {TARGET_MS_AT_1000:.0f} ms: {verdict}"
        print(
            f"| {n:,} | {observe_ms:.2f} | {capture_ms:.2f} | {view_ms:.2f} | {render_ms:.1f} "
            f"| {kept_ms:.1f} "
            f"| {http_ms:.1f} "
            f"| {size / 1024:.0f} | {json_ms:.1f} | {target} |",
            flush=True,
        )


def daemon_cpu(n: int, warmup: float, window: float, rounds: int) -> None:
    """Both daemons at once, each with its own SQLite history (so each samples: the lock
    is per database), measured over the same windows: load from elsewhere hits them alike."""
    rows = []
    with (
        seed.redis_server() as redis_server,
        seed.Rewriter(redis_server.url, n),
        Daemon(redis_server.url, listen=False) as plain,
        Daemon(redis_server.url, listen=True) as listened,
    ):
        time.sleep(warmup)
        for _ in range(rounds):
            a0, b0, t0 = plain.cpu(), listened.cpu(), time.monotonic()
            time.sleep(window)
            elapsed = time.monotonic() - t0
            base = (plain.cpu() - a0) / elapsed * 100
            extra = (listened.cpu() - b0) / elapsed * 100
            rows.append((base, extra))
            print(f"window: {base:.2f} % vs {extra:.2f} % of a core", flush=True)
        assert listened.scrapes > 0, "the scraper never got an answer"
    base = statistics.median(r[0] for r in rows)
    with_listener = statistics.median(r[1] for r in rows)
    extra = statistics.median(r[1] - r[0] for r in rows)  # per window: the same load
    verdict = "met" if extra < TARGET_CPU_PCT else "MISSED"
    print()
    print("| N clusters | daemon % core, no listener | with listener, 15 s scrape | extra "
          "(median of windows) | windows | target |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    print(
        f"| {n:,} | {base:.2f} | {with_listener:.2f} | {extra:+.2f} | {len(rows)} x {window:.0f} s "
        f"| < {TARGET_CPU_PCT:.0f} %: {verdict} |"
    )


class Daemon:
    """`qwatch daemon` at its defaults on its own SQLite file, optionally scraped every 15 s."""

    def __init__(self, redis_url: str, *, listen: bool) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="qwatch-bench-scrape-"))
        self.log_path = self.workdir / "daemon.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("QWATCH_")}
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.env.update(
            QWATCH_SECRET_KEY=seed.SECRET_KEY,
            QWATCH_NAME=seed.SITE,
            QWATCH_REDIS_URL=redis_url,
            QWATCH_DATABASE_URL=f"sqlite:///{self.workdir / 'history.sqlite3'}",
            PYTHONPATH=str(ROOT),
        )
        self.port = seed_free_port()
        self.args = ["--listen", f"127.0.0.1:{self.port}"] if listen else []
        self.listen = listen
        self.stop = threading.Event()
        self.scrapes = 0
        self.process: subprocess.Popen[bytes] | None = None

    def cpu(self) -> float:
        assert self.process is not None
        return cpu_seconds(self.process.pid)

    def _scrape(self) -> None:
        while not self.stop.wait(SCRAPE_EVERY_S):
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                answer.read()
            self.scrapes += 1

    def __enter__(self) -> Daemon:
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "qwatch", "daemon", *self.args],
                env=self.env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while "qwatch daemon:" not in self.log_path.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text()[-2000:]
                self.__exit__()
                raise RuntimeError(f"daemon did not start:\n{log}")
            time.sleep(0.1)
        if self.listen:
            threading.Thread(target=self._scrape, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="cost of the daemon's /metrics")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--cpu", action="store_true", help="also the daemon's CPU (real processes)")
    parser.add_argument("--cpu-clusters", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=20.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds per window")
    parser.add_argument("--rounds", type=int, default=3, help="windows measured")
    args = parser.parse_args(argv)
    print(f"machine: {seed.machine()}")
    in_process([int(s) for s in args.sizes.split(",")], args.repeat)
    if args.cpu:
        print()
        daemon_cpu(args.cpu_clusters, args.warmup, args.window, args.rounds)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
