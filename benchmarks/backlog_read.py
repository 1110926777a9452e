"""Backlog read: the per-poll cost of qwatch.sources.backlog.

- Redis: LLEN of 1 and 10 queues' lists, issued together (`redis_backlogs`: one round trip)
  against one LLEN per queue awaited in turn (the baseline), on one open connection to a
  throwaway redis-server.
- ORM: 10,000 `django_q_ormq` rows over 10 queues (a tenth of them locked ahead, as pulled
  tasks are), counted as ORM.queue_size() counts them (`lock <= now`): one grouped scan
  (`orm_due`, what qwatch runs) against one count per queue (django-q2's queue_size() per
  queue, the baseline), through qwatch's read-only engine; SQLite file and PostgreSQL.

Redis is read directly and through a loopback proxy that adds --rtt-ms of round trip, as a
network would. Medians of --repeat reads, in microseconds per read.

    .venv/bin/python benchmarks/backlog_read.py [--repeat 200] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text

from benchmarks import seed
from qwatch.config import RedisSettings
from qwatch.sources.backlog import orm_due, redis_backlogs, redis_list_key
from qwatch.sources.redis import open_connection
from qwatch.store.engine import create_read_only_engine

ROWS = 10_000
QUEUES = [f"q{i}" for i in range(10)]
# Django's table on each engine (sqlmigrate django_q 0001 … as of django-q2 1.11).
DDL = {
    "sqlite": 'CREATE TABLE django_q_ormq (id integer NOT NULL PRIMARY KEY AUTOINCREMENT, "key" '
    'varchar(100) NOT NULL, payload text NOT NULL, "lock" datetime NULL)',
    "postgresql": 'CREATE TABLE django_q_ormq (id serial PRIMARY KEY, "key" varchar(100) NOT '
    'NULL, payload text NOT NULL, "lock" timestamp with time zone NULL)',
}
ONE_QUEUE = text('SELECT count(*) FROM django_q_ormq WHERE "key" = :key AND "lock" <= :now')


async def median_us(read: Callable[[], Awaitable[object]], repeat: int) -> float:
    await read()  # warm: connection, statement cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await read()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e6


async def delayed_proxy(port: int, delay_s: float) -> asyncio.Server:
    """A loopback TCP proxy to `port` that holds each chunk `delay_s` each way: a network's
    round trip (2 x delay_s) without leaving the machine."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            await asyncio.sleep(delay_s)
            writer.write(data)
        writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def redis_rows(repeat: int, rtt_ms: float) -> list[tuple[str, float, float]]:
    rows = []
    with seed.redis_server() as server:
        await redis_on(server.settings(), "", repeat, rows)
        if rtt_ms > 0:
            proxy = await delayed_proxy(server.settings().port, rtt_ms / 2000)
            port = proxy.sockets[0].getsockname()[1]
            far = replace(server.settings(), host="127.0.0.1", port=port)
            await redis_on(far, f", {rtt_ms:g} ms RTT", max(20, repeat // 10), rows)
            proxy.close()
    return rows


async def redis_on(
    settings: RedisSettings, label: str, repeat: int, rows: list[tuple[str, float, float]]
) -> None:
    connection = await open_connection(settings)
    try:
        for i, queue in enumerate(QUEUES):
            await connection.call("RPUSH", redis_list_key(queue), *[b"task"] * (i + 1))
        for n in (1, 10):
            queues = QUEUES[:n]

            async def sequential(queues: list[str] = queues) -> None:
                for q in queues:
                    await connection.call("LLEN", redis_list_key(q))

            async def pipelined(queues: list[str] = queues) -> None:
                await redis_backlogs(connection, queues)

            base = await median_us(sequential, repeat)
            ours = await median_us(pipelined, repeat)
            rows.append((f"Redis LLEN, {n} queue{'s' if n > 1 else ''}{label}", base, ours))
    finally:
        await connection.close()


def orm_values(now: datetime) -> list[tuple[str, str, datetime]]:
    out = []
    for i in range(ROWS):
        # most rows due (enqueued in the last hour), every tenth pulled: locked ahead
        ahead = i % 10 == 0
        lock = now + timedelta(seconds=60) if ahead else now - timedelta(seconds=i % 3600)
        out.append((QUEUES[i % len(QUEUES)], "x" * 200, lock))
    return out


async def orm_row(url: str, repeat: int) -> tuple[float, float]:
    engine = create_read_only_engine(url)
    sqlite = engine.dialect.name == "sqlite"
    try:

        async def per_queue() -> None:
            now = datetime.now(UTC)
            bound: object = now.replace(tzinfo=None).isoformat(" ") if sqlite else now
            async with engine.connect() as conn:
                for q in QUEUES:
                    (await conn.execute(ONE_QUEUE, {"key": q, "now": bound})).scalar_one()

        async def grouped() -> None:
            await orm_due(engine, datetime.now(UTC))

        base = await median_us(per_queue, repeat)
        ours = await median_us(grouped, repeat)
        counts = await orm_due(engine, datetime.now(UTC))
        assert sum(c.length for c in counts.values()) == ROWS - ROWS // 10, counts
        return base, ours
    finally:
        await engine.dispose()


async def sqlite_row(repeat: int) -> tuple[str, float, float]:
    with tempfile.TemporaryDirectory(prefix="qwatch-bench-ormq-") as tmp:
        path = Path(tmp) / "db.sqlite3"
        now = datetime.now(UTC)
        with sqlite3.connect(path) as db:
            db.execute(DDL["sqlite"])
            db.executemany(
                'INSERT INTO django_q_ormq ("key", payload, "lock") VALUES (?, ?, ?)',
                # Django's SQLite text: naive UTC, 'YYYY-MM-DD HH:MM:SS.ffffff'
                [
                    (k, p, lock.replace(tzinfo=None).isoformat(" "))
                    for k, p, lock in orm_values(now)
                ],
            )
        base, ours = await orm_row(f"sqlite:///{path}", repeat)
    return (f"ORM count, {ROWS:,} rows, 10 queues, SQLite", base, ours)


async def postgres_row(repeat: int) -> tuple[str, float, float]:
    import asyncpg

    with seed.postgres_server() as server:
        url = server.create_database("ormq")
        now = datetime.now(UTC)
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
        try:
            await conn.execute(DDL["postgresql"])
            await conn.copy_records_to_table(
                "django_q_ormq", records=orm_values(now), columns=["key", "payload", "lock"]
            )
            await conn.execute("ANALYZE django_q_ormq")
        finally:
            await conn.close()
        base, ours = await orm_row(url, repeat)
    return (f"ORM count, {ROWS:,} rows, 10 queues, PostgreSQL", base, ours)


async def main_async(repeat: int, backends: list[str], rtt_ms: float) -> None:
    rows = await redis_rows(repeat, rtt_ms)
    if "sqlite" in backends:
        rows.append(await sqlite_row(max(20, repeat // 5)))
    if "postgresql" in backends:
        rows.append(await postgres_row(max(20, repeat // 5)))
    print(seed.machine())
    print()
    print("| read | baseline µs | qwatch µs | baseline / qwatch |")
    print("|---|---:|---:|---:|")
    for name, base, ours in rows:
        print(f"| {name} | {base:,.0f} | {ours:,.0f} | {base / ours:.1f}x |")
    print()
    print("baseline: Redis, one LLEN per queue awaited in turn; ORM, one count per queue")
    print("(ORM.queue_size() for each). qwatch: LLENs pipelined; one grouped scan.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rtt-ms", type=float, default=1.0, help="proxied Redis round trip")
    args = parser.parse_args()
    asyncio.run(main_async(args.repeat, args.backends.split(","), args.rtt_ms))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
