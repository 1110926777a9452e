"""Time the read side on a database built by benchmarks/build_history.py.

Times, each the best of --repeat runs, in-process (the query and rendering, not Python's
start-up): `qwatch history` for one cluster over a day and for one host over 30 days, and
every report over 30 days. Then the same two history commands once more as whole `qwatch`
processes, start-up included. A benchmark that prints a table, not a test that asserts.

    .venv/bin/python benchmarks/history_reads.py bench-history.sqlite3
    .venv/bin/python benchmarks/history_reads.py bench-history.sqlite3 \\
        --postgresql postgresql://user@host/bench
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from qwatch import history, reports
from qwatch.config import load_settings, safe_url
from qwatch.fmt import table
from qwatch.store.engine import create_engine


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[], Awaitable[str]]
    argv: tuple[str, ...] | None = None  # for the whole-process timing


async def pick_targets(url: str) -> tuple[str, str]:
    """(the 8-character suffix of a run on a mid-fleet host, that host)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            hosts = list(await conn.scalars(text("SELECT DISTINCT host FROM clusters")))
            host = sorted(hosts)[len(hosts) // 2] if hosts else None
            # A run up for the whole last day, so the day is a full day of samples.
            cluster = await conn.scalar(
                text(
                    "SELECT cluster_id FROM clusters WHERE host = :h ORDER BY"
                    " CASE WHEN first_seen <= :day_ago THEN 0 ELSE 1 END, first_seen DESC"
                ),
                {"h": host, "day_ago": datetime.now(UTC) - timedelta(days=1, minutes=5)},
            )
    finally:
        await engine.dispose()
    if host is None or cluster is None:
        raise SystemExit(f"{safe_url(url)} holds no clusters: run build_history.py first")
    return str(cluster)[-8:], str(host)


def cases(url: str, suffix: str, host: str) -> list[Case]:
    settings = load_settings(database_url=url, environ={})
    found: list[Case] = [
        Case(
            f"history {suffix} (1 cluster, 1 day)",
            lambda: history.run(settings, history.Request(suffix, since="24h")),
            ("history", suffix, "--since", "24h"),
        ),
        Case(
            f"history {host} (1 host, 30 days)",
            lambda: history.run(settings, history.Request(host, since="30d")),
            ("history", host, "--since", "30d"),
        ),
    ]
    for name in reports.REPORTS:
        found.append(
            Case(f"report {name} (30 days)", lambda n=name: reports.run(settings, n, "30d"))
        )
    return found


def best_of(repeat: int, run: Callable[[], Awaitable[str]]) -> tuple[float, int]:
    """(the fastest of `repeat` runs in seconds, the lines the output had)."""
    times, lines = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        out = asyncio.run(run())
        times.append(time.perf_counter() - started)
        lines = out.count("\n") + 1
    return min(times), lines


def whole_process(url: str, argv: tuple[str, ...]) -> float:
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "qwatch", *argv, "--db", url],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return time.perf_counter() - started


def bench(url: str, repeat: int) -> list[tuple[str, str, str, str]]:
    suffix, host = asyncio.run(pick_targets(url))
    rows = []
    for case in cases(url, suffix, host):
        seconds, lines = best_of(repeat, case.run)
        process = f"{whole_process(url, case.argv):.3f}" if case.argv else ""
        rows.append((case.name, f"{seconds:.3f}", process, str(lines)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="SQLite file from build_history.py")
    parser.add_argument("--postgresql", metavar="URL", help="also time this PostgreSQL copy")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    path = Path(args.path).resolve()
    targets = [f"sqlite:///{path}"] + ([args.postgresql] if args.postgresql else [])
    for url in targets:
        print(f"\n{safe_url(url)}")
        rows = bench(url, args.repeat)
        headers = ("read", "in-process s", "qwatch process s", "lines out")
        print(table(headers, rows, right={1, 2, 3}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
