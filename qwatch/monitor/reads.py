"""The SQL the monitor runs: SELECTs only, each returning plain records.

Runs, gaps and the opening checks are `qwatch.store.queries`' (shared with `qwatch
history`). What is the monitor's own: grouping into sparkline slots in SQL, so a week of a
fleet's rows comes back as a few hundred numbers (short ranges read the samples, fresh to
the last one; long ones the minute rollups), the table's runs with their newest sample,
and the newest events first, a screenful at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Text,
    and_,
    cast,
    extract,
    func,
    or_,
    select,
    type_coerce,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from qwatch.monitor.records import (
    PANE_SLOTS,
    TABLE_SLOTS,
    HostRaw,
    Range,
    RunInfo,
    StoreInfo,
    StoreKind,
    TableHistory,
)
from qwatch.store import models as m
from qwatch.store import queries
from qwatch.values import EventRow, Span

MAX_EVENTS = 300  # newest events fetched for the pane; flips fold, so this is plenty
C = m.Cluster.__table__.c
S = m.Sample.__table__.c
E = m.Event.__table__.c
R = m.RollupMinute.__table__.c


async def freshness(engine: AsyncEngine) -> StoreInfo:
    async with engine.connect() as conn:
        newest = await conn.scalar(select(func.max(S.sampled_at)))
    if newest is None:
        return StoreInfo(StoreKind.EMPTY, "No history recorded yet: start `qwatch daemon`.")
    return StoreInfo(StoreKind.OK, "", newest_sample=_aware(newest))


async def table_history(
    engine: AsyncEngine, sites: Sequence[str], rng: Range, now: datetime
) -> TableHistory:
    """The runs listed in the range, a TQ sparkline each, and their last hour's reincarnations."""
    start, _end, width = rng.window(now, TABLE_SLOTS)
    async with engine.connect() as conn:
        runs = await _runs(conn, C.site.in_(list(sites)), start)
        pks = {run.pk for run in runs}
        tq: dict[int, list[float | None]] = {}
        time_col, value = (
            (S.sampled_at, S.task_q_size) if rng.from_samples else (R.bucket, R.tq_max)
        )
        slot = _slot(conn, time_col, start, width)
        query = (
            select(time_col.table.c.cluster_pk, slot, func.max(value))
            .where(time_col >= start)
            .group_by(time_col.table.c.cluster_pk, slot)
        )
        for pk, index, peak in await conn.execute(query):
            if pk in pks and peak is not None and 0 <= index < TABLE_SLOTS:
                tq.setdefault(pk, [None] * TABLE_SLOTS)[index] = float(peak)
        by = _json_int(conn, E.detail, "by")
        rc_query = (
            select(E.cluster_pk, func.sum(by))
            .where(E.kind == "reincarnated", E.at >= now - timedelta(hours=1))
            .group_by(E.cluster_pk)
        )
        rc_hour = {pk: int(n or 0) for pk, n in await conn.execute(rc_query) if pk in pks}
    return TableHistory(rng.label, now, tuple(runs), tq, rc_hour)


async def host_history(
    engine: AsyncEngine, site: str, host: str, rng: Range, now: datetime
) -> HostRaw:
    """One host's runs, sparklines, event counts, newest events and Redis gaps in the range."""
    start, end, width = rng.window(now, PANE_SLOTS)
    async with engine.connect() as conn:
        window = Span(start, now)
        runs = [r for r in await queries.host_runs(conn, host, site) if r.up(now).clip(window)]
        pks = [run.pk for run in runs]
        raw = HostRaw(site, host, rng.label, start, end, now, PANE_SLOTS, tuple(runs))
        if not pks:
            return raw
        if rng.from_samples:
            time_col, values = S.sampled_at, (S.task_q_size, S.done_q_size, S.queued)
        else:
            time_col, values = R.bucket, (R.tq_max, R.rq_max, R.queued_max)
        table = time_col.table.c
        slot = _slot(conn, time_col, start, width)
        query = (
            select(slot, *(func.max(v) for v in values))
            .where(table.cluster_pk.in_(pks), time_col >= start)
            .group_by(slot)
        )
        series: list[list[float | None]] = [[None] * PANE_SLOTS for _ in range(3)]
        for index, *peaks in await conn.execute(query):
            if 0 <= index < PANE_SLOTS:
                for values_of, peak in zip(series, peaks, strict=True):
                    values_of[index] = None if peak is None else float(peak)
        in_range = and_(E.cluster_pk.in_(pks), E.at >= start)
        event_slot = _slot(conn, E.at, start, width)
        rc: list[float | None] = [None] * PANE_SLOTS
        rc_query = (
            select(event_slot, func.sum(_json_int(conn, E.detail, "by")))
            .where(in_range, E.kind == "reincarnated")
            .group_by(event_slot)
        )
        for index, n in await conn.execute(rc_query):
            if 0 <= index < PANE_SLOTS:
                rc[index] = float(n or 0)
        kinds_query = select(E.kind, func.count()).where(in_range).group_by(E.kind)
        kinds = {kind: int(n) for kind, n in await conn.execute(kinds_query)}
        events_query = (
            select(E.at, E.cluster_pk, C.cluster_id, E.kind, E.detail)
            .join_from(m.Event.__table__, m.Cluster.__table__, E.cluster_pk == C.id)
            .where(in_range)
            .order_by(E.at.desc(), E.id.desc())
            .limit(MAX_EVENTS)
        )
        events = tuple(
            EventRow(_aware(at), pk, cluster_id, kind, detail or {})
            for at, pk, cluster_id, kind, detail in await conn.execute(events_query)
        )
        gaps = tuple(await queries.gaps(conn, [site], start, now))
    return HostRaw(
        site,
        host,
        rng.label,
        start,
        end,
        now,
        PANE_SLOTS,
        tuple(runs),
        tq=series[0],
        rq=series[1],
        backlog=series[2],
        rc=rc,
        kinds=kinds,
        events=events,
        gaps=gaps,
    )


async def _runs(
    conn: AsyncConnection, where: ColumnElement[bool], start: datetime
) -> list[RunInfo]:
    """Runs alive in the range: open and seen since `start`, or ended since `start`.

    An open run not seen in the range belongs to a daemon that stopped long ago; listing it
    as live (or as gone "now") would be a guess.
    """
    inner = m.Sample.__table__.alias("newest")
    # Per run, one index seek on the samples' (cluster_pk, sampled_at) key.
    newest = (
        select(func.max(inner.c.sampled_at))
        .where(inner.c.cluster_pk == C.id)
        .correlate(m.Cluster.__table__)
        .scalar_subquery()
    )
    query = (
        select(
            C.id,
            C.site,
            C.cluster_id,
            C.host,
            C.tob,
            C.first_seen,
            C.last_seen,
            C.ended_at,
            C.last_status,
            S.status,
            S.pool,
            S.task_q_size,
            S.done_q_size,
            S.reincarnations,
            S.uptime_s,
        )
        .select_from(m.Cluster.__table__)
        .outerjoin(m.Sample.__table__, and_(S.cluster_pk == C.id, S.sampled_at == newest))
        .where(
            where,
            or_(and_(C.ended_at.is_(None), C.last_seen >= start), C.ended_at >= start),
        )
        .order_by(C.host, C.tob)
    )
    return [
        RunInfo(
            pk=row.id,
            site=row.site,
            cluster_id=row.cluster_id,
            host=row.host,
            tob=_aware(row.tob),
            first_seen=_aware(row.first_seen),
            last_seen=_aware(row.last_seen),
            ended_at=_aware(row.ended_at) if row.ended_at else None,
            status=row.status or row.last_status,
            pool=row.pool,
            tq=row.task_q_size,
            rq=row.done_q_size,
            rc=row.reincarnations,
            uptime_s=row.uptime_s,
        )
        for row in await conn.execute(query)
    ]


def _slot(conn: AsyncConnection, column: Any, start: datetime, width: int) -> ColumnElement[int]:
    """Which sparkline slot a time falls in: whole `width`-second steps after `start`."""
    seconds = extract("epoch", column) - int(start.timestamp())
    if conn.dialect.name == "postgresql":
        return cast(func.floor(seconds / width), Integer)
    # SQLite's epoch is a whole number of seconds; CAST truncates, and times here are >= start.
    return cast(seconds / width, Integer)


def _json_int(conn: AsyncConnection, column: Any, key: str) -> ColumnElement[int]:
    """An integer field of a JSON text column (the events' detail)."""
    text = type_coerce(column, Text)
    if conn.dialect.name == "postgresql":
        return cast(cast(text, JSONB)[key].astext, Integer)
    return cast(func.json_extract(text, f"$.{key}"), Integer)


def _aware(value: datetime) -> datetime:
    """UTCDateTime already attaches UTC; raw aggregates (max) come back bare on SQLite."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
