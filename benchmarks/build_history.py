"""Build a year of history for 50 clusters, fast, for benchmarks/history_reads.py.

What the daemon would leave behind at the default sampling and retention, ending now:
raw samples every `DaemonSettings().sample_every_s` (10 s), minute rollups, hour rollups
and events, each kept as long as `qwatch.retention.Retention()` keeps it by default (read
from the code, not repeated here: 7, 14, 1,095 and 1,095 days when this was written, so
the year's hour rollups and events are all there). Events: appeared, restarted, vanished,
state changes every few hours, a reincarnation or so a day; clusters restart every 1 to 6
days with 5 to 120 s of downtime; and twenty Redis gaps.

Rows go in with bulk inserts (sqlite3 executemany, or asyncpg COPY), not the daemon's path:
the schema comes from the real migrations, the rows from a deterministic generator.

    .venv/bin/python benchmarks/build_history.py /tmp/bench-history.sqlite3   # ~0.65 GB
    .venv/bin/python benchmarks/build_history.py --db postgresql://user@host/bench
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from qwatch.config import DaemonSettings
from qwatch.retention import Retention
from qwatch.store import migrate
from qwatch.store.engine import create_engine

SITE = "shop"
SAMPLE_EVERY = timedelta(seconds=DaemonSettings().sample_every_s)  # the daemon's default
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
KEPT = Retention()  # the daemon's default retention, as maintenance.prune applies it
STATES = ("Starting", "Idle", "Working", "Stopping", "Stopped")
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Run:
    pk: int
    host_index: int
    host: str
    cluster_id: str
    pid: int
    tob: datetime
    first_seen: datetime
    end: datetime  # ended_at, or now for the open run
    is_open: bool
    reincarnations: tuple[datetime, ...]  # whole hours at which one worker was replaced


def plan_runs(clusters: int, days: int, now: datetime, rng: random.Random) -> list[Run]:
    start = now - days * DAY
    runs: list[Run] = []
    for h in range(clusters):
        host = f"web-{h + 1:02d}"
        at = start - timedelta(seconds=rng.randrange(86400))
        while at < now:
            end = at + timedelta(seconds=rng.randrange(86400, 6 * 86400))
            is_open = end >= now
            end = min(end, now)
            hours = int((end - at) / HOUR)
            first_hour = at.replace(minute=0, second=0, microsecond=0) + HOUR
            rcs = tuple(sorted({first_hour + rng.randrange(max(hours, 1)) * HOUR
                                for _ in range(max(1, hours // 24))}))  # fmt: skip
            runs.append(
                Run(len(runs) + 1, h, host, str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    rng.randrange(1000, 60000), at - timedelta(seconds=2), at, end, is_open,
                    rcs)
            )  # fmt: skip
            at = end + timedelta(seconds=rng.randrange(5, 121))
    return runs


def working(run: Run, hour: datetime) -> bool:
    """About one hour in three is busy, differently per host."""
    return (int(hour.timestamp()) // 3600 * 2654435761 + run.host_index * 97) % 3 == 0


def status(run: Run, at: datetime) -> str:
    if at < run.first_seen + MINUTE:
        return "Starting"
    return "Working" if working(run, at.replace(minute=0, second=0, microsecond=0)) else "Idle"


def tq(run: Run, at: datetime) -> int:
    return (int(at.timestamp()) // 60 + run.host_index) % (9 if status(run, at) == "Working" else 3)


def rc(run: Run, at: datetime) -> int:
    return sum(1 for r in run.reincarnations if r <= at)


def queued(at: datetime) -> int:
    return int(at.timestamp()) // 3600 * 7 % 50


def grid(start: datetime, end: datetime, step: timedelta) -> Iterator[datetime]:
    """Times on the `step` grid in [start, end)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    at = epoch + -(-(start - epoch) // step) * step
    while at < end:
        yield at
        at += step


def cluster_rows(runs: list[Run]) -> Iterator[Row]:
    for r in runs:
        last = "Idle" if r.is_open else "Stopped"
        yield (r.pk, SITE, r.cluster_id, r.host, r.pid, r.tob, r.first_seen, r.end,
               None if r.is_open else r.end, last)  # fmt: skip


def sample_rows(runs: list[Run], now: datetime) -> Iterator[Row]:
    since = now - KEPT.samples
    steps = [i * SAMPLE_EVERY for i in range(MINUTE // SAMPLE_EVERY)]
    for r in runs:
        if r.end <= since:
            continue
        lo = max(r.first_seen, since)
        for minute in grid(lo - lo.second * timedelta(seconds=1), r.end, MINUTE):
            # Values change by the minute: work them out once for its six samples.
            st, t, n, q = status(r, minute), tq(r, minute), rc(r, minute), queued(minute)
            for step in steps:
                at = minute + step
                if lo <= at < r.end:
                    yield (r.pk, at, st, 4, t, t % 2, n, (at - r.tob).total_seconds(), q)


def _rollup(r: Run, bucket: datetime, lo: datetime, hi: datetime) -> Row:
    """One rollup row for [lo, hi) of `bucket`; an hour's task queue spread is its pattern's."""
    seconds = dict.fromkeys(STATES, 0.0)
    starting_until = min(hi, r.first_seen + MINUTE)
    if lo < starting_until:
        seconds["Starting"] = (starting_until - lo).total_seconds()
    main = "Working" if working(r, bucket.replace(minute=0)) else "Idle"
    seconds[main] += (hi - max(lo, starting_until)).total_seconds()
    if hi - lo <= MINUTE:
        low = high = avg = tq(r, lo)
    else:
        low, high = 0, (8 if main == "Working" else 2)
        avg = high / 2
    n = int((hi - lo).total_seconds())
    q = queued(bucket)
    return (r.pk, bucket, n, low, high, avg, 0, 1, 0.5, q, q, float(q),
            rc(r, hi - timedelta(microseconds=1)), 4, *seconds.values(),
            sum(seconds.values()))  # fmt: skip


def rollup_rows(runs: list[Run], now: datetime, width: timedelta, keep: timedelta) -> Iterator[Row]:
    since = now - keep
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    for r in runs:
        if r.end <= since:
            continue
        lo = max(r.first_seen, since)
        for bucket in grid(lo - (lo - epoch) % width, r.end, width):
            start, stop = max(bucket, lo), min(bucket + width, r.end)
            if start < stop:
                yield _rollup(r, bucket, start, stop)


def event_rows(runs: list[Run], now: datetime) -> Iterator[Row]:
    since = now - KEPT.events
    return (row for row in _all_events(runs) if row[2] >= since)


def _all_events(runs: list[Run]) -> Iterator[Row]:
    pk = 0
    previous: dict[int, Run] = {}

    def event(r: Run, at: datetime, kind: str, detail: dict[str, Any]) -> Row:
        nonlocal pk
        pk += 1
        return (pk, r.pk, at, kind, json.dumps(detail, sort_keys=True, separators=(",", ":")))

    for r in runs:
        yield event(r, r.first_seen, "appeared", {"status": "Starting"})
        old = previous.get(r.host_index)
        if old is not None:
            yield event(r, r.first_seen, "restarted", {
                "previous": old.cluster_id, "previous_tob": old.tob.isoformat(),
                "downtime_s": (r.tob - old.end).total_seconds()})  # fmt: skip
        was = "Starting"
        for hour in grid(r.first_seen + MINUTE, r.end, HOUR):
            now_is = status(r, hour)
            if now_is != was:
                yield event(r, hour, "state_changed", {"from": was, "to": now_is})
                was = now_is
        for i, at in enumerate(r.reincarnations, 1):
            yield event(r, at + timedelta(seconds=1), "reincarnated", {"by": 1, "total": i})
        if not r.is_open:
            yield event(r, r.end, "vanished", {"last_status": was, "last_seen": r.end.isoformat(),
                                               "during_gap": False})  # fmt: skip
        previous[r.host_index] = r


def gap_rows(now: datetime, days: int, rng: random.Random) -> Iterator[Row]:
    for i in range(20):
        start = now - timedelta(seconds=rng.randrange(days * 86400))
        yield (i + 1, SITE, start, start + timedelta(seconds=rng.randrange(30, 600)),
               "redis timeout")  # fmt: skip


TABLES: dict[str, tuple[str, ...]] = {
    "clusters": ("id", "site", "cluster_id", "host", "pid", "tob", "first_seen", "last_seen",
                 "ended_at", "last_status"),
    "samples": ("cluster_pk", "sampled_at", "status", "pool", "task_q_size", "done_q_size",
                "reincarnations", "uptime_s", "queued"),
    "rollup_minute": ("cluster_pk", "bucket", "n", "tq_min", "tq_max", "tq_avg", "rq_min",
                      "rq_max", "rq_avg", "queued_min", "queued_max", "queued_avg", "rc_max",
                      "pool_min", "starting_s", "idle_s", "working_s", "stopping_s",
                      "stopped_s", "observed_s"),
    "events": ("id", "cluster_pk", "at", "kind", "detail"),
    "gaps": ("id", "site", "started_at", "ended_at", "reason"),
}  # fmt: skip
TABLES["rollup_hour"] = TABLES["rollup_minute"]


def all_rows(
    clusters: int, days: int, now: datetime, seed: int
) -> dict[str, Callable[[], Iterator[Row]]]:
    rng = random.Random(seed)
    runs = plan_runs(clusters, days, now, rng)
    return {
        "clusters": lambda: cluster_rows(runs),
        "samples": lambda: sample_rows(runs, now),
        "rollup_minute": lambda: rollup_rows(runs, now, MINUTE, KEPT.minutes),
        # Runs start up to a day before the first day: keep theirs too, unless pruned.
        "rollup_hour": lambda: rollup_rows(runs, now, HOUR, min(KEPT.hours, days * DAY + DAY)),
        "events": lambda: event_rows(runs, now),
        "gaps": lambda: gap_rows(now, days, random.Random(seed + 1)),
    }


# --------------------------------------------------------------------------- sinks


def _sqlite_text(value: Any, cache: dict[datetime, str]) -> Any:
    if not isinstance(value, datetime):
        return value
    text = cache.get(value)
    if text is None:
        # SQLAlchemy's SQLite format for naive UTC: what UTCDateTime stores.
        text = cache[value] = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text


def load_sqlite(path: Path, rows: dict[str, Callable[[], Iterator[Row]]]) -> dict[str, int]:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=MEMORY")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    counts = {}
    cache: dict[datetime, str] = {}
    for table, make in rows.items():
        columns = TABLES[table]
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        counter = [0]

        def converted(make: Callable[[], Iterator[Row]] = make, counter: list[int] = counter):
            for row in make():
                counter[0] += 1
                yield tuple(_sqlite_text(v, cache) for v in row)

        started = time.perf_counter()
        with db:
            db.executemany(sql, converted())
        counts[table] = counter[0]
        print(f"  {table:<14} {counter[0]:>10,} rows  {time.perf_counter() - started:6.1f} s")
        if len(cache) > 2_000_000:
            cache.clear()
    db.execute("ANALYZE")
    db.execute("PRAGMA journal_mode=WAL")  # as qwatch opens it
    db.close()
    return counts


async def load_postgres(url: str, rows: dict[str, Callable[[], Iterator[Row]]]) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    counts = {}
    try:
        for table, make in rows.items():
            started = time.perf_counter()
            batch: list[Row] = []
            total = 0
            for row in make():
                batch.append(row)
                if len(batch) >= 100_000:
                    await conn.copy_records_to_table(table, records=batch, columns=TABLES[table])
                    total += len(batch)
                    batch = []
            if batch:
                await conn.copy_records_to_table(table, records=batch, columns=TABLES[table])
                total += len(batch)
            counts[table] = total
            print(f"  {table:<14} {total:>10,} rows  {time.perf_counter() - started:6.1f} s")
        for table in ("clusters", "events", "gaps"):  # explicit ids: move the sequences on
            await conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return counts


async def migrate_empty(url: str) -> None:
    engine = create_engine(url)
    try:
        if await migrate.current(engine) is not None:
            raise SystemExit(f"{url} already holds a schema: give a new file or database")
        await migrate.upgrade(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "path",
        nargs="?",
        default="bench-history.sqlite3",
        help="SQLite file to create (default bench-history.sqlite3)",
    )
    parser.add_argument("--db", metavar="URL", help="an empty PostgreSQL database instead")
    parser.add_argument("--clusters", type=int, default=50)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=4)
    args = parser.parse_args(argv)  # fmt: skip

    now = datetime.now(UTC).replace(microsecond=0)
    now -= timedelta(seconds=now.second % 10)
    rows = all_rows(args.clusters, args.days, now, args.seed)
    kept = "kept: " + ", ".join(
        f"{name} {getattr(KEPT, name).days} d" for name in ("samples", "minutes", "hours", "events")
    )
    started = time.perf_counter()
    if args.db:
        print(f"building {args.days} days of {args.clusters} clusters in PostgreSQL, {kept}")
        asyncio.run(migrate_empty(args.db))
        asyncio.run(load_postgres(args.db, rows))
    else:
        path = Path(args.path)
        if path.exists():
            raise SystemExit(f"{path} exists: remove it or give another path")
        print(f"building {args.days} days of {args.clusters} clusters in {path}, {kept}")
        asyncio.run(migrate_empty(f"sqlite:///{path.resolve()}"))
        load_sqlite(path, rows)
        print(f"  {path.stat().st_size / 1e9:.2f} GB")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
