"""Storage: bytes on disk per cluster per day, and at steady state under default retention.

For each backend (a SQLite file, a throwaway PostgreSQL) this migrates a fresh history
database to head and fills it, in the daemon's write order (time-major, every cluster per
tick), with K clusters' worth of realistic rows:

- samples: one per cluster every 10 s (the daemon's --sample-every) for one day;
- minute rollups: one per cluster per minute for one day;
- hour rollups: one per cluster per hour for HOUR_DAYS days (enough rows to size them);
- events: EVENTS_PER_DAY per cluster per day (state changes, reincarnations, ...) for
  HOUR_DAYS days.

Values follow benchmarks/seed.py's fleet: 70 % idle (zero queues), 24 % working (moving
queues, fractional averages), a few starting or stopping. Each table's size (SQLite:
`dbstat`, pages of the table and its indexes; PostgreSQL: pg_total_relation_size after a
VACUUM) divided by its rows gives bytes per row, and from those:

- per cluster per day: what one day of one cluster adds to each table;
- steady state per cluster: the default retention (qwatch.retention.Retention) of each table
  and events (the default retention; after that, pruning deletes as much as is added);
- the steady-state total for 50 clusters, against the README's "well under 1 GB forever".

    .venv/bin/python benchmarks/storage.py [--quick] [--clusters 20] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import seed
from qwatch.retention import Retention

SAMPLE_EVERY_S = 10
HOUR_DAYS = 30
EVENTS_PER_DAY = 10  # state changes every few hours, a reincarnation or two a day
_KEEP = Retention()  # qwatch's defaults, so this measures what a new install keeps
KEEP_DAYS = {
    "samples": _KEEP.samples.days,
    "rollup_minute": _KEEP.minutes.days,
    "rollup_hour": _KEEP.hours.days,
    "events": _KEEP.events.days,
}
ROWS_PER_DAY = {
    "samples": 86400 // SAMPLE_EVERY_S,
    "rollup_minute": 1440,
    "rollup_hour": 24,
    "events": EVENTS_PER_DAY,
}
FLEET = 50
PROMISE_BYTES = 10**9  # the README says "1 GB"
CHUNK = 5000


@dataclass
class Cluster:
    pk: int
    status: str
    pool: int
    reincarnations: int
    tob: datetime


def fleet(k: int, start: datetime) -> list[Cluster]:
    specs = seed.make_specs(k)
    return [
        Cluster(
            pk=i + 1,
            status=spec.status,
            pool=len(spec.workers),
            reincarnations=spec.reincarnations,
            tob=start - (datetime.now(UTC) - spec.tob),
        )
        for i, spec in enumerate(specs)
    ]


def cluster_rows(clusters: Sequence[Cluster], start: datetime) -> list[dict[str, Any]]:
    specs = seed.make_specs(len(clusters))
    return [
        {
            "id": c.pk,
            "site": seed.SITE,
            "cluster_id": spec.cluster_id,
            "host": spec.host,
            "pid": spec.pid,
            "tob": c.tob,
            "first_seen": start,
            "last_seen": start + timedelta(days=1),
            "ended_at": None,
            "last_status": c.status,
        }
        for c, spec in zip(clusters, specs, strict=True)
    ]


def _queue(rng: random.Random, c: Cluster) -> int:
    return rng.randrange(1, 40) if c.status == "Working" else 0


def sample_rows(
    clusters: Sequence[Cluster], start: datetime, rng: random.Random
) -> Iterator[dict[str, Any]]:
    for tick in range(ROWS_PER_DAY["samples"]):
        at = start + timedelta(seconds=tick * SAMPLE_EVERY_S, microseconds=rng.randrange(10**6))
        queued = rng.randrange(0, 500)
        for c in clusters:
            busy = c.status == "Working"
            yield {
                "cluster_pk": c.pk,
                "sampled_at": at,
                "status": c.status,
                "pool": c.pool,
                "task_q_size": _queue(rng, c),
                "done_q_size": rng.randrange(0, 3) if busy else 0,
                "reincarnations": c.reincarnations,
                "uptime_s": (at - c.tob).total_seconds(),
                "queued": queued,
            }


def rollup_row(c: Cluster, bucket: datetime, seconds: float, rng: random.Random) -> dict[str, Any]:
    polls = int(seconds)  # a 1 s poll
    busy = c.status == "Working"
    tq = sorted(rng.randrange(0, 60) for _ in range(3)) if busy else [0, 0, 0]
    rq = sorted(rng.randrange(0, 3) for _ in range(3)) if busy else [0, 0, 0]
    queued = sorted(rng.randrange(0, 500) for _ in range(3))
    states = {"starting_s": 0.0, "idle_s": 0.0, "working_s": 0.0, "stopping_s": 0.0}
    if busy:  # a working cluster dips into Idle now and then
        idle = round(rng.uniform(0, seconds / 3), 6)
        states["working_s"], states["idle_s"] = round(seconds - idle, 6), idle
    else:
        states[f"{c.status.lower()}_s"] = float(seconds)
    return {
        "cluster_pk": c.pk,
        "bucket": bucket,
        "n": polls,
        "tq_min": tq[0],
        "tq_max": tq[2],
        "tq_avg": rng.uniform(tq[0], tq[2]) if busy else 0.0,
        "rq_min": rq[0],
        "rq_max": rq[2],
        "rq_avg": rng.uniform(rq[0], rq[2]) if busy else 0.0,
        "queued_min": queued[0],
        "queued_max": queued[2],
        "queued_avg": rng.uniform(queued[0], queued[2]),
        "rc_max": c.reincarnations,
        "pool_min": c.pool,
        **states,
        "stopped_s": 0.0,
        "observed_s": float(seconds),
    }


def minute_rows(
    clusters: Sequence[Cluster], start: datetime, rng: random.Random
) -> Iterator[dict[str, Any]]:
    for minute in range(ROWS_PER_DAY["rollup_minute"]):
        bucket = start + timedelta(minutes=minute)
        for c in clusters:
            yield rollup_row(c, bucket, 60.0, rng)


def hour_rows(
    clusters: Sequence[Cluster], start: datetime, rng: random.Random
) -> Iterator[dict[str, Any]]:
    for hour in range(24 * HOUR_DAYS):
        bucket = start - timedelta(days=HOUR_DAYS) + timedelta(hours=hour)
        for c in clusters:
            yield rollup_row(c, bucket, 3600.0, rng)


def event_rows(
    clusters: Sequence[Cluster], start: datetime, rng: random.Random
) -> Iterator[dict[str, Any]]:
    every = 86400 / EVENTS_PER_DAY
    for i in range(EVENTS_PER_DAY * HOUR_DAYS):
        at = start - timedelta(days=HOUR_DAYS) + timedelta(seconds=(i + rng.random()) * every)
        for c in clusters:
            if i % 4 == 3:
                kind = "reincarnated"
                detail: dict[str, Any] = {"by": 1, "total": c.reincarnations + i}
            else:
                kind = "state_changed"
                pair = ("Idle", "Working") if i % 2 else ("Working", "Idle")
                detail = {"from": pair[0], "to": pair[1]}
            yield {"cluster_pk": c.pk, "at": at, "kind": kind, "detail": detail}


def chunks(rows: Iterator[dict[str, Any]], size: int = CHUNK) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def fill(url: str, k: int) -> dict[str, int]:
    from qwatch.store import migrate
    from qwatch.store import models as m
    from qwatch.store.engine import create_engine

    engine = create_engine(url)
    rng = random.Random(3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clusters = fleet(k, start)
    counts: dict[str, int] = {}
    try:
        await migrate.upgrade(engine)
        async with engine.begin() as conn:
            await conn.execute(m.Cluster.__table__.insert(), cluster_rows(clusters, start))
        tables = (
            ("samples", m.Sample.__table__, sample_rows),
            ("rollup_minute", m.RollupMinute.__table__, minute_rows),
            ("rollup_hour", m.RollupHour.__table__, hour_rows),
            ("events", m.Event.__table__, event_rows),
        )
        for name, table, make in tables:
            counts[name] = 0
            for batch in chunks(make(clusters, start, rng)):
                async with engine.begin() as conn:
                    await conn.execute(table.insert(), batch)
                counts[name] += len(batch)
    finally:
        await engine.dispose()
    return counts


Parts = dict[str, dict[str, int]]  # table -> {its btree or index: bytes}


def sqlite_sizes(path: Path) -> Parts:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        owner = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master"))
        parts: Parts = {}
        for name, size in conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            parts.setdefault(owner.get(name, name), {})[name] = int(size)
        return parts
    finally:
        conn.close()


def postgres_sizes(server: Any, database: str) -> Parts:
    server.psql("VACUUM ANALYZE", database=database)
    out = server.psql(
        "SELECT json_agg(row) FROM ("
        " SELECT json_build_array(relname, relname || ' heap', pg_table_size(oid)) AS row"
        " FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        " UNION ALL"
        " SELECT json_build_array(tablename, indexname,"
        "  pg_relation_size(quote_ident(indexname)::regclass))"
        " FROM pg_indexes WHERE schemaname = 'public') AS parts",
        database=database,
    )
    parts: Parts = {}
    for table, name, size in json.loads(out):
        parts.setdefault(str(table), {})[str(name)] = int(size)
    return parts


@dataclass
class Result:
    backend: str
    k: int
    rows: dict[str, int]
    parts: Parts
    file_bytes: int | None = None  # SQLite: the whole file, free pages and all

    def size(self, table: str) -> int:
        return sum(self.parts.get(table, {}).values())

    def bytes_per_row(self, table: str) -> float:
        return self.size(table) / max(1, self.rows[table])

    def per_cluster_day(self, table: str) -> float:
        return self.bytes_per_row(table) * ROWS_PER_DAY[table]

    def steady_per_cluster(self, table: str) -> float:
        return self.per_cluster_day(table) * KEEP_DAYS[table]

    @property
    def clusters_row(self) -> float:
        return self.size("clusters") / self.k

    def steady_total(self, clusters: int) -> float:
        per = sum(self.steady_per_cluster(t) for t in ROWS_PER_DAY) + self.clusters_row
        return per * clusters


def run(backend: str, k: int) -> Result:
    if backend == "sqlite":
        workdir = Path(tempfile.mkdtemp(prefix="qwatch-bench-storage-"))
        try:
            path = workdir / "history.sqlite3"
            rows = asyncio.run(fill(f"sqlite:///{path}", k))
            parts = sqlite_sizes(path)
            return Result(backend, k, rows, parts, path.stat().st_size)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    with seed.postgres_server() as server:
        url = server.create_database("qwatch")
        rows = asyncio.run(fill(url, k))
        return Result(backend, k, rows, postgres_sizes(server, "qwatch"))


def mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def report(results: Sequence[Result]) -> str:
    lines = [
        "| backend | table | rows measured | bytes/row | per cluster per day "
        "| retention | steady state per cluster |",
        "|" + "---|" * 7,
    ]
    for r in results:
        for table in ROWS_PER_DAY:
            lines.append(
                f"| {r.backend} | {table} | {r.rows[table]:,} | {r.bytes_per_row(table):.0f} "
                f"| {r.per_cluster_day(table) / 1e3:,.1f} kB | {KEEP_DAYS[table]} d "
                f"| {mb(r.steady_per_cluster(table))} |"
            )
        day = sum(r.per_cluster_day(t) for t in ROWS_PER_DAY)
        steady = r.steady_total(1)
        lines.append(
            f"| {r.backend} | **all** | | | **{day / 1e3:,.0f} kB** | | **{mb(steady)}** |"
        )
    lines += ["", "Where the bytes of each row go (bytes per row, by b-tree / relation):", ""]
    for r in results:
        for table in ROWS_PER_DAY:
            split = ", ".join(
                f"{name} {size / max(1, r.rows[table]):.0f}"
                for name, size in sorted(r.parts.get(table, {}).items())
            )
            lines.append(f"- {r.backend} {table}: {split}")
    lines += [
        "",
        f"| backend | steady state, {FLEET} clusters, {EVENTS_PER_DAY} events/cluster/day "
        "| README promise | verdict | with 0 / 100 events/cluster/day |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        total = r.steady_total(FLEET)
        verdict = "under" if total < PROMISE_BYTES else "OVER"
        per_event = r.bytes_per_row("events") * KEEP_DAYS["events"] * FLEET
        low = total - per_event * EVENTS_PER_DAY
        high = low + per_event * 100
        lines.append(
            f"| {r.backend} | {total / 1e9:.2f} GB | < 1 GB | {verdict} "
            f"| {low / 1e9:.2f} / {high / 1e9:.2f} GB |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qwatch history bytes on disk")
    parser.add_argument("--quick", action="store_true", help="5 clusters instead of 20")
    parser.add_argument("--clusters", type=int, default=None)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    k = args.clusters or (5 if args.quick else 20)
    print(f"machine: {seed.machine()}")
    print(
        f"{k} clusters: 1 day of samples (every {SAMPLE_EVERY_S} s), 1 day of minute rollups, "
        f"{HOUR_DAYS} days of hour rollups, {EVENTS_PER_DAY} events per cluster per day"
    )
    results = []
    for backend in args.backends.split(","):
        began = time.monotonic()
        result = run(backend, k)
        results.append(result)
        extra = f", file {mb(result.file_bytes)}" if result.file_bytes is not None else ""
        print(f"{backend}: filled and measured in {time.monotonic() - began:.0f} s{extra}")
    print()
    print(report(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
