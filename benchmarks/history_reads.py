"""Time `qwatch history` and `qwatch report` on a year of history for 50 clusters.

The reads of issue 6: `qwatch history` for one cluster over a day and for one host over 30
days, and every report over 30 days, on a database built by benchmarks/build_history.py
(a year of 50 clusters at the default retention). Target: each under 200 ms on SQLite.

Three figures per read, each the median of --repeat runs after one untimed run:

- qwatch: the command's own function in-process (`history.run` / `reports.run`: open
  the database, check its schema, read, compute, render the table), in a fresh event
  loop each time as the CLI runs it; Python's start-up and imports are not in it
- bare SQL (the baseline): the very statements and parameters qwatch sent for that read
  (recorded from SQLAlchemy's cursor), replayed through the bare driver on a new
  connection — stdlib sqlite3 with qwatch's four PRAGMAs, or asyncpg — every row fetched
  and nothing done with it. What the database itself costs for qwatch's queries; the
  ratio is what qwatch adds on top (SQLAlchemy, aiosqlite's thread, the schema check,
  the arithmetic, rendering)
- process: `python -m qwatch history … --db URL` (or `report`) as a process, wall time
  including Python's start-up and imports: what someone at a shell waits for. Beside it,
  the same run of `python -c pass` and of `python -c "import <what the command imports>"`

By default it builds a SQLite file in a temp dir and a PostgreSQL database on a
throwaway server (tests/plugins/postgres_server.py, stopped by pid, its dir removed),
about a minute each, and removes both afterwards. --sqlite PATH or --postgresql URL time
an existing build instead.

    .venv/bin/python benchmarks/history_reads.py [--backends sqlite,postgresql]
        [--sqlite PATH] [--postgresql URL] [--repeat 7] [--processes 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import seed  # noqa: E402
from qwatch import history, reports  # noqa: E402
from qwatch.config import load_settings, safe_url  # noqa: E402
from qwatch.store.engine import SQLITE_BUSY_TIMEOUT_MS, create_engine  # noqa: E402

TARGET_MS = 200.0
BUILD = ROOT / "benchmarks" / "build_history.py"
# What `python -m qwatch history|report` imports before it reads (qwatch/cli.py's lazy
# imports for those commands, and the drivers its engine loads).
IMPORTS = "import qwatch.cli, qwatch.history, qwatch.reports, qwatch.store.reads, {driver}"


@dataclass(frozen=True)
class Case:
    name: str
    run: Callable[[], Awaitable[str]]
    argv: tuple[str, ...]


@dataclass
class Result:
    case: Case
    lines: int = 0
    statements: int = 0
    rows: int = 0
    qwatch: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    process: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- the reads


async def pick_targets(url: str) -> tuple[str, str]:
    """(the 8-character suffix of a run up for the whole last day, its host): the mid-fleet
    one of those, so "1 cluster, 1 day" reads a full day of raw samples."""
    engine = create_engine(url)
    day_ago = datetime.now(UTC) - timedelta(days=1, minutes=5)
    try:
        async with engine.connect() as conn:
            found = (
                await conn.execute(
                    text(
                        "SELECT cluster_id, host FROM clusters WHERE ended_at IS NULL"
                        " AND first_seen <= :day_ago ORDER BY host"
                    ),
                    {"day_ago": day_ago},
                )
            ).all()
    finally:
        await engine.dispose()
    if not found:
        raise SystemExit(f"{safe_url(url)} holds no run up for a day: run build_history.py")
    cluster_id, host = found[len(found) // 2]
    return str(cluster_id)[-8:], str(host)


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
            Case(
                f"report {name} (30 days)",
                lambda n=name: reports.run(settings, n, "30d"),
                ("report", name, "--since", "30d"),
            )
        )
    return found


# --------------------------------------------------------------------------- the baseline


@contextlib.contextmanager
def recording() -> Iterator[list[tuple[str, Any]]]:
    """Every statement any engine sends to its cursor meanwhile, with its parameters."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def bare_sqlite(path: Path, statements: list[tuple[str, Any]]) -> int:
    """Replay on a new sqlite3 connection with qwatch's PRAGMAs; rows fetched."""
    db = sqlite3.connect(path)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):
            db.execute(f"PRAGMA {pragma}")
        db.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        rows = 0
        for statement, parameters in statements:
            rows += len(db.execute(statement, parameters or ()).fetchall())
        return rows
    finally:
        db.close()


async def bare_postgres(url: str, statements: list[tuple[str, Any]]) -> int:
    """Replay on a new asyncpg connection (UTC, as qwatch's engine sets it); rows fetched."""
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, server_settings={"timezone": "UTC"})
    try:
        rows = 0
        for statement, parameters in statements:
            rows += len(await conn.fetch(statement, *(parameters or ())))
        return rows
    finally:
        await conn.close()


# --------------------------------------------------------------------------- timing


def ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def run_process(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return ms_since(started)


def bench(url: str, repeat: int, processes: int) -> tuple[list[Result], dict[str, list[float]]]:
    suffix, host = asyncio.run(pick_targets(url))
    path = Path(url.split(":///", 1)[1]) if url.startswith("sqlite") else None
    results = [Result(case) for case in cases(url, suffix, host)]
    for result in results:
        with recording() as sent:
            out = asyncio.run(result.case.run())  # untimed: warms the page cache
        result.lines = out.count("\n") + 1
        statements = [(s, p) for s, p in sent]
        result.statements = len(statements)

        def bare(statements: list[tuple[str, Any]] = statements) -> int:
            if path is not None:
                return bare_sqlite(path, statements)
            return asyncio.run(bare_postgres(url, statements))

        result.rows = bare()
        # Alternate the two, so load on the machine hits both alike.
        for _ in range(repeat):
            started = time.perf_counter()
            asyncio.run(result.case.run())
            result.qwatch.append(ms_since(started))
            started = time.perf_counter()
            bare()
            result.bare.append(ms_since(started))
        print(
            f"  {result.case.name}: qwatch {statistics.median(result.qwatch):.1f} ms, "
            f"bare SQL {statistics.median(result.bare):.1f} ms",
            flush=True,
        )
    driver = "aiosqlite" if path is not None else "asyncpg"
    baselines: dict[str, list[float]] = {
        "python -c pass": [],
        f'python -c "import qwatch.cli, …, {driver}"': [],
    }
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        f'python -c "import qwatch.cli, …, {driver}"': [
            sys.executable,
            "-c",
            IMPORTS.format(driver=driver),
        ],
    }
    for _ in range(processes):
        for name, argv in commands.items():
            baselines[name].append(run_process(argv))
        for result in results:
            argv = [sys.executable, "-m", "qwatch", *result.case.argv, "--db", url]
            result.process.append(run_process(argv))
    return results, baselines


# --------------------------------------------------------------------------- output


def table(backend: str, results: list[Result], baselines: dict[str, list[float]]) -> str:
    head = (
        "| read | lines out | SQL statements | rows fetched | bare SQL ms | **qwatch ms** "
        "| qwatch ÷ bare | target 200 ms | `qwatch …` process ms |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in results:
        q, b = statistics.median(r.qwatch), statistics.median(r.bare)
        if backend == "SQLite":
            verdict = "met" if q < TARGET_MS else "**missed**"
        else:
            verdict = "(SQLite only)"
        lines.append(
            f"| {r.case.name} | {r.lines:,} | {r.statements} | {r.rows:,} | {b:.1f} "
            f"| **{q:.1f}** | {q / b:.1f}x | {verdict} "
            f"| {statistics.median(r.process):.0f} |"
        )
    for name, times in baselines.items():
        lines.append(f"| {name} | | | | | | | | {statistics.median(times):.0f} |")
    return "\n".join(lines)


def profile(results: list[Result], url: str) -> None:
    """cProfile the read that adds most to its bare SQL, by own time. The SQL itself runs in
    aiosqlite's thread (or in PostgreSQL): the main thread waits for it in `epoll.poll`."""
    worst = max(results, key=lambda r: statistics.median(r.qwatch) - statistics.median(r.bare))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(5):
        asyncio.run(worst.case.run())
    profiler.disable()
    print(f"\ncProfile, 5 runs of {worst.case.name} on {safe_url(url)}, by own time:")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


# --------------------------------------------------------------------------- builds


def build(argv: list[str]) -> None:
    print(f"building: {' '.join(argv)}", flush=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, str(BUILD), *argv], check=True, stdout=subprocess.DEVNULL)
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)


@contextlib.contextmanager
def sqlite_database(given: str | None) -> Iterator[str]:
    if given:
        yield f"sqlite:///{Path(given).resolve()}"
        return
    workdir = Path(tempfile.mkdtemp(prefix="qwatch-bench-history-"))
    try:
        path = workdir / "history.sqlite3"
        build([str(path)])
        print(f"  {path.stat().st_size / 1e9:.2f} GB")
        yield f"sqlite:///{path}"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres_database(given: str | None) -> Iterator[str]:
    if given:
        yield given
        return
    with seed.postgres_server() as server:
        url = server.create_database("bench_history")
        build(["--db", url])
        size = server.psql("SELECT pg_database_size('bench_history')")
        print(f"  {int(size) / 1e9:.2f} GB")
        yield url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--sqlite", metavar="PATH", help="time this build instead of a new one")
    parser.add_argument("--postgresql", metavar="URL", help="time this build instead of a new one")
    parser.add_argument("--repeat", type=int, default=7, help="in-process runs per read")
    parser.add_argument("--processes", type=int, default=5, help="process runs per command")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the read qwatch adds most to"
    )
    args = parser.parse_args(argv)

    backends = args.backends.split(",")
    print(f"machine: {seed.machine()}")
    tables = []
    for backend in backends:
        opener = {"sqlite": sqlite_database, "postgresql": postgres_database}[backend]
        label = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[backend]
        with opener(args.sqlite if backend == "sqlite" else args.postgresql) as url:
            print(f"\n{label}: {safe_url(url)}", flush=True)
            results, baselines = bench(url, args.repeat, args.processes)
            tables.append((label, table(label, results, baselines)))
            if args.profile:
                profile(results, url)
    print(f"\nload average after: {seed.machine().rsplit('load average ', 1)[1]}")
    for label, text_table in tables:
        print(f"\n{label}, milliseconds, median\n")
        print(text_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
