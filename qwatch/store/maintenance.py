"""Housekeeping the daemon runs now and then: minute rollups into hours, and retention.

Both work in bounded steps (a day of hours, or `chunk` rows, per transaction) so neither
holds a lock long enough to stall the writer or a reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Delete, exists, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine

from qwatch.retention import Retention
from qwatch.rollup import hour_start
from qwatch.store import models as m
from qwatch.store.dialect import Dialect
from qwatch.store.rollups import merge_group

HOURS_PER_STEP = 24
DELETE_CHUNK = 10_000


async def roll_up_hours(engine: AsyncEngine, since: datetime) -> int:
    """Recompute every hour from `since`'s hour on from the minute rollups; rows written.

    Whole hours are recomputed and upserted, so running it again (or over an hour still
    filling up) is harmless.
    """
    minute = m.RollupMinute.__table__
    async with engine.connect() as conn:
        span = (
            await conn.execute(
                select(func.min(minute.c.bucket), func.max(minute.c.bucket)).where(
                    minute.c.bucket >= hour_start(since)
                )
            )
        ).one()
    oldest, newest = span
    if oldest is None or newest is None:
        return 0
    start = hour_start(oldest)  # skip empty days when `since` is far back
    written = 0
    while start <= newest:
        stop = start + timedelta(hours=HOURS_PER_STEP)
        async with engine.begin() as conn:
            result = await conn.execute(_hours_statement(Dialect.of(conn), start, stop))
            written += max(result.rowcount, 0)
        start = stop
    return written


def _hours_statement(dialect: Dialect, start: datetime, stop: datetime) -> Any:
    minute, hour = m.RollupMinute.__table__, m.RollupHour.__table__
    c = minute.c
    bucket = dialect.hour(c.bucket)
    columns: dict[str, Any] = {"cluster_pk": c.cluster_pk, "bucket": bucket, **merge_group(c)}
    query = (
        select(*(expr.label(name) for name, expr in columns.items()))
        .where(c.bucket >= start, c.bucket < stop)
        .group_by(c.cluster_pk, bucket)
    )
    stmt = dialect.insert(hour).from_select(list(columns), query)
    return stmt.on_conflict_do_update(
        index_elements=["cluster_pk", "bucket"],
        set_={
            name: stmt.excluded[name] for name in columns if name not in ("cluster_pk", "bucket")
        },
    )


async def prune(
    engine: AsyncEngine, now: datetime, keep: Retention | None = None, *, chunk: int = DELETE_CHUNK
) -> dict[str, int]:
    """Delete rows past their retention, `chunk` rows per transaction; counts per table."""
    keep = keep or Retention()
    s, e, g = m.Sample.__table__, m.Event.__table__, m.Gap.__table__
    mins, hours, c = m.RollupMinute.__table__, m.RollupHour.__table__, m.Cluster.__table__
    q: Any = m.QueueSample.__table__

    def by_key(table: Any, *where: Any) -> Callable[[], Delete]:
        key = tuple_(
            table.c.cluster_pk, table.c.bucket if "bucket" in table.c else table.c.sampled_at
        )
        return lambda: table.delete().where(
            key.in_(select(*key.clauses).where(*where).limit(chunk))
        )

    def by_id(table: Any, *where: Any) -> Callable[[], Delete]:
        return lambda: table.delete().where(
            table.c.id.in_(select(table.c.id).where(*where).limit(chunk))
        )

    def unreferenced(table: Any) -> Any:
        return ~exists().where(table.c.cluster_pk == c.c.id)

    jobs: dict[str, Callable[[], Delete]] = {
        "samples": by_key(s, s.c.sampled_at < now - keep.samples),
        # per-queue backlog rows live as long as the samples
        "queue_samples": lambda: q.delete().where(
            tuple_(q.c.site, q.c.queue, q.c.sampled_at).in_(
                select(q.c.site, q.c.queue, q.c.sampled_at)
                .where(q.c.sampled_at < now - keep.samples)
                .limit(chunk)
            )
        ),
        "rollup_minute": by_key(mins, mins.c.bucket < now - keep.minutes),
        "rollup_hour": by_key(hours, hours.c.bucket < now - keep.hours),
        "events": by_id(e, e.c.at < now - keep.events),
        "gaps": by_id(g, g.c.ended_at < now - keep.events),
        # Last, so a cluster whose history just went is swept in the same pass.
        "clusters": by_id(
            c,
            c.c.last_seen < now - keep.longest,
            *(unreferenced(t) for t in (s, e, mins, hours)),
        ),
    }
    return {name: await _delete_in_chunks(engine, make, chunk) for name, make in jobs.items()}


async def _delete_in_chunks(engine: AsyncEngine, make: Callable[[], Delete], chunk: int) -> int:
    total = 0
    while True:
        async with engine.begin() as conn:
            deleted = max((await conn.execute(make())).rowcount, 0)
        total += deleted
        if deleted < chunk:
            return total
        await asyncio.sleep(0)  # let the writer and readers in between chunks
