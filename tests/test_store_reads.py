"""qwatch/store/reads.py's shared reads (runs with their newest sample, slot peaks, events,
reincarnations) on real SQLite and PostgreSQL, over a small history the writer records."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from qwatch.events import Event
from qwatch.store import migrate, reads
from qwatch.store.engine import create_engine
from qwatch.store.writer import Batch, Writer
from qwatch.values import Latest, Source
from tests.test_store import SITE, TOB, stat  # the store tests' ClusterStat factory

T0 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[AsyncConnection]:
    """A history of three runs: `a-1` on web-1 sampled three times, `b-1` on web-2 with no
    sample, and `old` on web-1 that ended long ago."""
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    writer = Writer(engine)
    for i, (tq, status) in enumerate([(3, "Idle"), (9, "Working"), (5, "Working")]):
        at = T0 + timedelta(seconds=10 * i)
        a = stat("a-1", at=at, task_q_size=tq, done_q_size=0, status=status, reincarnations=i)
        events = []
        if i:
            events.append(Event(at, SITE, "a-1", TOB, "web-1", "reincarnated", {"by": i}))
        writer.submit(Batch(SITE, at, seen=[a], samples=[(a, None, at)], events=events))
    b = stat("b-1", host="web-2", at=T0)
    old = stat("old", at=T0 - timedelta(days=2), tob=TOB - timedelta(days=2))
    gone = T0 - timedelta(days=2)
    writer.submit(Batch(SITE, gone, seen=[old]))
    writer.submit(Batch(SITE, gone + timedelta(seconds=5), ended=[("old", old.tob, gone)]))
    writer.submit(Batch(SITE, T0 + timedelta(seconds=20), seen=[b]))
    await writer.flush()
    async with engine.connect() as conn:
        yield conn
    await engine.dispose()


async def test_runs_filters_orders_and_attaches_the_newest_sample(conn: AsyncConnection) -> None:
    everything = await reads.runs(conn, latest=True)
    assert [r.cluster_id for r in everything] == ["old", "a-1", "b-1"]  # oldest first
    by_id = {r.cluster_id: r for r in everything}
    assert by_id["a-1"].latest == Latest(T0 + timedelta(seconds=20), "Working", 4, 5, 0, 2, 3620.0)
    assert by_id["b-1"].latest is None
    assert (await reads.runs(conn))[1].latest is None  # only when asked for

    assert [r.cluster_id for r in await reads.runs(conn, order="host")] == ["old", "a-1", "b-1"]
    assert [r.cluster_id for r in await reads.runs(conn, host="web-1")] == ["old", "a-1"]
    assert [r.cluster_id for r in await reads.runs(conn, ref="-1")] == ["a-1", "b-1"]
    assert await reads.runs(conn, sites=["other"]) == []
    recent = await reads.runs(conn, ended_since=T0 - timedelta(days=1))
    assert [r.cluster_id for r in recent] == ["a-1", "b-1"]
    seen = await reads.runs(conn, seen_since=T0 + timedelta(seconds=15))
    assert [r.cluster_id for r in seen] == ["old", "a-1", "b-1"]  # ended runs pass seen_since
    late = await reads.runs(conn, seen_since=T0 + timedelta(seconds=25))
    assert [r.cluster_id for r in late] == ["old"]
    assert len(await reads.runs(conn, limit=2)) == 2


async def test_slot_peaks_reincarnations_events(conn: AsyncConnection) -> None:
    (a,) = await reads.runs(conn, ref="a-1")
    per_run = await reads.peaks(conn, Source.SAMPLES, ["tq"], T0, 15, per_run=True)
    assert sorted((p.cluster_pk, p.slot, p.peaks) for p in per_run) == [
        (a.pk, 0, (9.0,)),
        (a.pk, 1, (5.0,)),
    ]
    fleet = await reads.peaks(conn, Source.SAMPLES, ["tq", "rq", "queued"], T0, 15, pks=[a.pk])
    assert sorted((p.slot, p.peaks) for p in fleet) == [
        (0, (9.0, 0.0, None)),
        (1, (5.0, 0.0, None)),
    ]

    assert await reads.reincarnations(conn, T0) == {a.pk: 3}
    assert await reads.reincarnations(conn, T0, pks=[a.pk], slot_width=15) == {0: 1, 1: 2}
    assert await reads.reincarnations(conn, T0, pks=[a.pk + 99]) == {}

    newest = await reads.events(conn, [a.pk], T0, newest_first=True, limit=1)
    assert [(e.at, e.detail) for e in newest] == [(T0 + timedelta(seconds=20), {"by": 2})]
    in_range = await reads.events(conn, [a.pk], T0, T0 + timedelta(seconds=20))
    assert [e.detail for e in in_range] == [{"by": 1}]
    assert await reads.event_counts(conn, [a.pk], T0) == {"reincarnated": 2}
    assert await reads.newest_sample_at(conn) == T0 + timedelta(seconds=20)
    assert await reads.watched_at(conn, SITE) == T0 + timedelta(seconds=20)
