"""`qwatch monitor` as a user runs it: a real process on a pseudo-terminal, N live clusters.

benchmarks/monitor_frame.py times the drawing in-process; this times what a user of a big
fleet feels and pays: how long until the first rows appear, and how much of a core the
monitor uses while it sits open (every poll decoded, the rows rebuilt, a frame drawn).

For each fleet size a throwaway redis-server holds N records rewritten every 0.5 s by
benchmarks/seed.py's Rewriter (fresh bytes every poll, as real clusters give), and an empty
SQLite history. The monitor starts on a 160x45 pty; "rows" is the time from the spawn to
the first seeded host name on screen; "key to frame" is from writing "?" to the pty until
the help is drawn, for keys pressed at moments spread over the poll cycle. CPU is the
monitor's own user+system time (/proc/<pid>/stat, all its threads) over a window after
the rows appeared, as % of one core; RSS is its peak (VmHWM). The baseline, measured in
the same run, is the monitor with 0 clusters: the fixed cost of an open screen. Targets
(issue 15), at 10,000 clusters: rows within 1 s of start, keys answered within a frame,
at most 15 % of a core while open.

    .venv/bin/python benchmarks/monitor_live.py [--clusters 0,1000,10000] [--window 20]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import tempfile
import termios
import time
from collections.abc import Sequence
from pathlib import Path

import seed

ROWS, COLUMNS = 45, 160
TICKS = os.sysconf("SC_CLK_TCK")
KEY_PRESSES = 15


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Monitor:
    """`qwatch monitor` on a pty of ROWS x COLUMNS; output drained so it never blocks."""

    def __init__(self, env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the monitor
            os.execve(sys.executable, [sys.executable, "-m", "qwatch", "monitor"], env)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        os.kill(self.pid, signal.SIGWINCH)
        self.seen = b""

    def drain(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return b""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except OSError:
            return b""
        self.seen = (self.seen + chunk)[-(1 << 20) :]
        return chunk

    def wait_for(self, text: bytes, timeout: float) -> float | None:
        """Seconds until `text` is on screen, or None."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.drain(0.05)
            if text in self.seen:
                return time.monotonic() - started
        return None

    def key_latency(self, key: bytes, shows: bytes, timeout: float = 10.0) -> float:
        """Seconds from writing `key` until `shows` is drawn."""
        while self.drain(0.0):
            pass  # what was drawn before the key does not count
        self.seen = b""
        started = time.monotonic()
        os.write(self.fd, key)
        while time.monotonic() - started < timeout:
            self.drain(0.01)
            if shows in self.seen:
                return time.monotonic() - started
        return float("nan")

    def stop(self) -> None:
        try:
            os.write(self.fd, b"q")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                self.drain(0.1)
                done, _ = os.waitpid(self.pid, os.WNOHANG)
                if done:
                    break
            else:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
        finally:
            os.close(self.fd)


def measure(n: int, window: float, started_at: float) -> dict[str, float]:
    with seed.redis_server() as server, tempfile.TemporaryDirectory() as tmp:
        url = server.url
        env = {k: v for k, v in os.environ.items() if not k.startswith("QWATCH_")}
        env.update(
            QWATCH_REDIS_URL=url,
            QWATCH_NAME=seed.SITE,
            QWATCH_SECRET_KEY=seed.SECRET_KEY,
            QWATCH_DATABASE_URL=f"sqlite:///{tmp}/history.db",
            TERM="xterm-256color",
            PYTHONPATH=str(seed.ROOT),
        )
        rewriter = seed.Rewriter(url, n).start() if n else None
        try:
            marker = b"web-000" if n else b"q quit"  # 0: the first frame
            monitor = Monitor(env)
            try:
                rows = monitor.wait_for(marker, 60)
                if rows is None:
                    tail = monitor.seen[-400:].decode("utf-8", "replace")
                    raise RuntimeError(f"{n} clusters: no rows within 60 s: {tail!r}")
                before = cpu_seconds(monitor.pid)
                t0 = time.monotonic()
                while time.monotonic() - t0 < window:
                    monitor.drain(0.2)
                cpu = (cpu_seconds(monitor.pid) - before) / (time.monotonic() - t0)
                # Keys pressed at moments spread over the poll cycle: "?" opens the help.
                keys = []
                for i in range(KEY_PRESSES):
                    keys.append(monitor.key_latency(b"?", b"this help"))
                    os.write(monitor.fd, b"\x1b")  # Esc closes it (after the escape delay)
                    pause = time.monotonic() + 0.6 + 0.37 * (i % 5)
                    while time.monotonic() < pause:
                        monitor.drain(0.05)
                rss = peak_rss_mb(monitor.pid)
            finally:
                monitor.stop()
        finally:
            if rewriter is not None:
                rewriter.stop()
    print(f"  {n} clusters done ({time.monotonic() - started_at:.0f} s)", file=sys.stderr)
    keys.sort()
    return {
        "rows_s": rows,
        "cpu_pct": 100 * cpu,
        "rss_mb": rss,
        "key_median_ms": 1000 * keys[len(keys) // 2],
        "key_max_ms": 1000 * keys[-1],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", default="0,1000,10000")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of CPU sampling")
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.clusters.split(",")]
    if 0 not in counts:
        counts.insert(0, 0)
    print(f"machine: {seed.machine()}")
    started = time.monotonic()
    results = {n: measure(n, args.window, started) for n in counts}
    base = results[0]
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    window = f"{args.window:.0f} s"
    print(f"`qwatch monitor` on a {COLUMNS}x{ROWS} pty; CPU over {window} after the rows")
    print()
    print(
        "| clusters | rows after start (s) | CPU, % of a core | ratio to 0 | peak RSS (MB) "
        "| key to frame, median (ms) | max (ms) |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, r in results.items():
        ratio = r["cpu_pct"] / base["cpu_pct"] if base["cpu_pct"] else float("nan")
        print(
            f"| {n:,} | {r['rows_s']:.2f} | {r['cpu_pct']:.1f} | {ratio:.1f} | {r['rss_mb']:.0f} "
            f"| {r['key_median_ms']:.0f} | {r['key_max_ms']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
