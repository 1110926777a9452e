"""The writer, rollups and retention against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from qwatch.events import Event
from qwatch.rollup import MinuteRow
from qwatch.store import fence, migrate, reads
from qwatch.store import models as m
from qwatch.store.engine import create_engine, is_unavailable
from qwatch.store.maintenance import Retention, prune, roll_up_hours
from qwatch.store.writer import Batch, StoreUnavailable, Writer
from qwatch.values import Backlog, ClusterStat
from tests.helpers import cluster_stat, minute_row
from tests.plugins.postgres_server import PostgresServer

T0 = datetime(2025, 3, 1, 10, 58, tzinfo=UTC)
TOB = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
SITE = "shop"


def ev(
    at: datetime,
    cluster_id: str,
    kind: str,
    detail: dict[str, Any] | None = None,
    tob: datetime = TOB,
) -> Event:
    return Event(at, SITE, cluster_id, tob, "web-1", kind, detail or {})


def stat(cluster_id: str = "c-1", *, at: datetime = T0, **changes: Any) -> ClusterStat:
    base = cluster_stat(
        cluster_id, name=SITE, pid=4242, tq=3, rq=1, tob=TOB, timestamp=at, workers=(1, 2, 3, 4)
    )
    return replace(base, **changes)


def minute(cluster_id: str, bucket: datetime, n: int, tq_avg: float, **changes: Any) -> MinuteRow:
    row = minute_row(
        site=SITE,
        cluster_id=cluster_id,
        tob=TOB,
        bucket=bucket,
        n=n,
        tq_max=5,
        tq_avg=tq_avg,
        rq_max=2,
        rq_avg=1.0,
        rc_max=0,
        idle_s=float(n),
        observed_s=float(n),
    )
    return replace(row, **changes)


def poll(at: datetime, *stats: ClusterStat, **parts: Any) -> Batch:
    """A batch for one poll: every stat seen and sampled at `at`."""
    return Batch(site=SITE, at=at, seen=stats, samples=[(s, 7, at) for s in stats], **parts)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


async def count(engine: AsyncEngine, model: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(model)) or 0)


async def rows(engine: AsyncEngine, model: Any, *order: Any) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(select(model.__table__).order_by(*order))).all())


async def test_batch_written_and_replay_adds_nothing(engine: AsyncEngine) -> None:
    a, b = stat("c-1"), stat("c-2", host="web-2", pid=None, status="Working")
    batch = poll(
        T0,
        a,
        b,
        events=[
            ev(T0, "c-1", "appeared", {"host": "web-1"}),
            ev(T0, "c-2", "state_changed", {"from": "Idle", "to": "Working"}),
        ],
        minutes=[minute("c-1", T0, 2, 2.5), minute("c-2", T0, 2, 3.0)],
        gap_open=(T0 - timedelta(seconds=30), "redis timeout"),
    )
    writer = Writer(engine)
    for _ in range(2):  # the second time is a replay after an ambiguous failure
        writer.submit(batch)
        assert await writer.flush() == 1
        assert writer.pending == 0
        counts = [await count(engine, t) for t in (m.Cluster, m.Sample, m.Event, m.Gap)]
        assert counts == [2, 2, 2, 1]
        assert [r.n for r in await rows(engine, m.RollupMinute, "cluster_pk")] == [2, 2]

    clusters = await rows(engine, m.Cluster, "cluster_id")
    assert [(c.cluster_id, c.host, c.pid, c.last_status) for c in clusters] == [
        ("c-1", "web-1", 4242, "Idle"),
        ("c-2", "web-2", None, "Working"),
    ]
    assert clusters[0].tob == TOB and clusters[0].tob.tzinfo is not None
    assert clusters[0].first_seen == clusters[0].last_seen == T0
    sample = (await rows(engine, m.Sample, "cluster_pk"))[0]
    assert (sample.status, sample.pool, sample.task_q_size, sample.queued) == ("Idle", 4, 3, 7)
    assert sample.uptime_s == (T0 - TOB).total_seconds()
    events = await rows(engine, m.Event, "cluster_pk")
    assert [(e.kind, e.detail) for e in events] == [
        ("appeared", {"host": "web-1"}),
        ("state_changed", {"from": "Idle", "to": "Working"}),
    ]
    assert writer.rejected == 0 and writer.dropped == 0


async def test_replay_without_samples_is_recognised_by_its_events(engine: AsyncEngine) -> None:
    writer = Writer(engine)
    writer.submit(poll(T0, stat()))
    later = T0 + timedelta(minutes=1)
    batch = Batch(
        site=SITE,
        at=later,
        events=[ev(later, "c-1", "reincarnated", {"by": 1})],
        minutes=[minute("c-1", T0, 3, 2.0)],
    )
    writer.submit(batch)
    writer.submit(batch)  # replayed: its event is there, so its minute is not merged again
    assert await writer.flush() == 3
    assert [r.n for r in await rows(engine, m.RollupMinute)] == [3]
    assert await count(engine, m.Event) == 1


async def test_a_lost_commit_reply_merges_no_minute_twice(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A minutes-only batch has no sample or event to recognise it by: its watch mark does."""
    writer = Writer(engine)
    writer.submit(poll(T0, stat()))
    assert await writer.flush() == 1
    later = T0 + timedelta(minutes=1)
    writer.submit(Batch(site=SITE, at=later, minutes=[minute("c-1", T0, 3, 2.0)]))
    write = writer._write

    async def reply_lost(batch: Batch) -> Any:
        await write(batch)  # committed
        monkeypatch.setattr(writer, "_write", write)
        raise OSError("connection reset before the reply to COMMIT")

    monkeypatch.setattr(writer, "_write", reply_lost)
    with pytest.raises(StoreUnavailable):
        await writer.flush()
    assert writer.pending == 1
    assert await writer.flush() == 1  # the replay
    assert [r.n for r in await rows(engine, m.RollupMinute)] == [3]
    assert [w.watched_at for w in await rows(engine, m.Watch)] == [later]


async def test_watch_marks_and_unwatched_time(engine: AsyncEngine) -> None:
    writer = Writer(engine)
    stopped = T0 + timedelta(seconds=30)
    writer.submit(poll(T0, stat(), gap_open=(T0, "redis down")))  # never saw it end
    writer.submit(Batch(site=SITE, at=stopped))  # a heartbeat: the mark only
    assert await writer.flush() == 2
    assert [(w.site, w.watched_at) for w in await rows(engine, m.Watch)] == [(SITE, stopped)]

    # Readers: a mark older than STALE_AFTER at the end of the range is a stopped daemon.
    async with engine.connect() as conn:
        soon = await reads.gaps(conn, [SITE], T0, stopped + timedelta(minutes=1))
        later = await reads.gaps(conn, [SITE], T0, stopped + timedelta(hours=1))
    assert [(g.kind, g.started_at, g.ended_at) for g in soon] == [("redis", T0, None)]
    assert [(g.kind, g.started_at, g.ended_at) for g in later] == [
        ("redis", T0, stopped),  # its daemon stopped looking there
        ("unwatched", stopped, None),
    ]

    # The daemon taking over an hour later: the old gap ends where the last one stopped
    # looking, and the hour nobody sampled is a gap of its own.
    back = stopped + timedelta(hours=1)
    writer.submit(Batch(site=SITE, at=back, gap_close=stopped, unwatched=(stopped, back)))
    assert await writer.flush() == 1
    gaps = await rows(engine, m.Gap, m.Gap.started_at)
    assert [(g.kind, g.started_at, g.ended_at) for g in gaps] == [
        ("redis", T0, stopped),
        ("unwatched", stopped, back),
    ]
    async with engine.connect() as conn:
        now_gaps = await reads.gaps(conn, [SITE], T0, back + timedelta(seconds=1))
    assert [g.ended_at for g in now_gaps] == [stopped, back]  # no open one: watched again


async def test_later_polls_update_clusters_and_close_gaps(engine: AsyncEngine) -> None:
    writer = Writer(engine)
    t1, t2, t3 = T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    writer.submit(poll(t1, stat(at=t1), gap_open=(t1, "redis down")))
    writer.submit(poll(t2, stat(at=t2, status="Working", pid=99), gap_close=t2))
    writer.submit(Batch(site=SITE, at=t3, ended=[("c-1", TOB, t3)]))
    assert await writer.flush() == 3

    (cluster,) = await rows(engine, m.Cluster)
    assert (cluster.first_seen, cluster.last_seen, cluster.ended_at) == (t1, t2, t3)
    assert (cluster.pid, cluster.last_status) == (99, "Working")
    (gap,) = await rows(engine, m.Gap)
    assert (gap.site, gap.started_at, gap.ended_at, gap.reason) == (SITE, t1, t2, "redis down")

    # Seen alive after all (its record was only hidden by a Redis gap): not ended.
    writer.submit(poll(t3 + timedelta(seconds=1), stat()))
    await writer.flush()
    (cluster,) = await rows(engine, m.Cluster)
    assert cluster.ended_at is None


async def test_a_run_found_late_is_first_seen_when_it_appeared(engine: AsyncEngine) -> None:
    """Shared Redis: the appeared event of a run discovered late carries its birth."""
    born = T0 - timedelta(seconds=40)
    writer = Writer(engine)
    writer.submit(poll(T0, stat("late"), stat("now"), events=[ev(born, "late", "appeared")]))
    await writer.flush()

    clusters = await rows(engine, m.Cluster, "cluster_id")
    assert [(c.cluster_id, c.first_seen, c.last_seen) for c in clusters] == [
        ("late", born, T0),
        ("now", T0, T0),
    ]


async def test_minute_rows_merge(engine: AsyncEngine) -> None:
    writer = Writer(engine)
    first = minute("c-1", T0, 2, 1.0, tq_min=1, tq_max=2, rc_max=1, pool_min=4, working_s=0.5)
    second = minute(
        "c-1",
        T0,
        3,
        6.0,
        tq_min=0,
        tq_max=9,
        rq_avg=2.0,
        rc_max=3,
        pool_min=3,
        queued_min=4,
        queued_max=8,
        queued_avg=6.0,
        working_s=1.5,
    )
    writer.submit(poll(T0, stat(), minutes=[first]))
    writer.submit(poll(T0 + timedelta(seconds=1), stat(), minutes=[second]))
    await writer.flush()

    (row,) = await rows(engine, m.RollupMinute)
    assert row.bucket == T0
    assert row.n == 5
    assert (row.tq_min, row.tq_max, row.tq_avg) == (0, 9, (2 * 1.0 + 3 * 6.0) / 5)
    assert row.rq_avg == pytest.approx((2 * 1.0 + 3 * 2.0) / 5)
    # The first part knew no backlog: the merge takes the known one, not a NULL.
    assert (row.queued_min, row.queued_max, row.queued_avg) == (4, 8, 6.0)
    assert (row.rc_max, row.pool_min) == (3, 3)
    assert (row.idle_s, row.working_s, row.observed_s) == (5.0, 2.0, 5.0)


async def test_roll_up_hours(engine: AsyncEngine) -> None:
    h10, h11 = T0.replace(minute=0), T0.replace(minute=0) + timedelta(hours=1)
    parts = [
        minute("c-1", h10 + timedelta(minutes=58), 2, 1.0, tq_max=4, queued_avg=2.0, queued_min=1),
        minute("c-1", h10 + timedelta(minutes=59), 6, 3.0, tq_min=0, rc_max=2, queued_max=9),
        minute("c-1", h11, 4, 5.0, pool_min=2, working_s=4.0),
    ]
    writer = Writer(engine)
    writer.submit(poll(T0, stat(), minutes=parts))
    await writer.flush()

    for _ in range(2):  # recomputing whole hours is idempotent
        await roll_up_hours(engine, since=h10 + timedelta(minutes=30))
        hours = await rows(engine, m.RollupHour, "bucket")
        assert [h.bucket for h in hours] == [h10, h11]
        ten, eleven = hours
        assert ten.n == 8
        assert (ten.tq_min, ten.tq_max, ten.tq_avg) == (0, 5, (2 * 1.0 + 6 * 3.0) / 8)
        assert (ten.queued_min, ten.queued_max) == (1, 9)
        assert ten.queued_avg == 2.0  # weighted over the minutes that knew the backlog
        assert (ten.rc_max, ten.pool_min, ten.idle_s, ten.observed_s) == (2, 4, 8.0, 8.0)
        assert (eleven.n, eleven.tq_avg, eleven.pool_min, eleven.working_s) == (4, 5.0, 2, 4.0)
        assert eleven.queued_avg is None

    writer.submit(poll(T0 + timedelta(minutes=3), stat(), minutes=[minute("c-1", h11, 4, 1.0)]))
    await writer.flush()
    await roll_up_hours(engine, since=h11)
    eleven = (await rows(engine, m.RollupHour, "bucket"))[1]
    assert (eleven.n, eleven.tq_avg) == (8, 3.0)


async def test_prune_removes_only_old_rows(engine: AsyncEngine) -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    keep = Retention(
        samples=timedelta(days=1),
        minutes=timedelta(days=2),
        hours=timedelta(days=3),
        events=timedelta(days=4),
    )
    writer = Writer(engine)
    # An old cluster whose whole history is past every retention.
    gone = now - timedelta(days=10)
    writer.submit(
        poll(
            gone,
            stat("old", tob=gone, at=gone),
            events=[ev(gone, "old", "appeared", tob=gone)],
            minutes=[minute("old", gone, 1, 1.0, tob=gone)],
            gap_open=(gone, "redis down"),
            gap_close=None,
        )
    )
    writer.submit(Batch(site=SITE, at=gone, gap_close=gone + timedelta(minutes=1)))
    # A live cluster with rows on both sides of each cutoff.
    ages = [timedelta(hours=h) for h in (1, 30, 60, 90, 120)]
    for age in sorted(ages, reverse=True):
        at = now - age
        writer.submit(
            poll(
                at,
                stat("live", at=at),
                events=[ev(at, "live", "state_changed")],
                minutes=[minute("live", at.replace(second=0, microsecond=0), 1, 1.0)],
            )
        )
        queues = [Backlog(SITE, "orm", 3, 4.5), Backlog("long", "orm", None, reason="db down")]
        writer.submit(Batch(site=SITE, at=at, queues=[(b, at) for b in queues]))
    await writer.flush()
    assert writer.rejected == 0
    await roll_up_hours(engine, since=gone)
    newest = max(await rows(engine, m.QueueSample), key=lambda r: (r.sampled_at, r.queue))
    assert (newest.queue, newest.broker, newest.length, newest.oldest_age_s, newest.reason) == (
        SITE,
        "orm",
        3,
        4.5,
        "",
    )

    deleted = await prune(engine, now, keep, chunk=2)  # small chunks: the loop must run

    assert deleted == {
        "samples": 5,  # old + 30 h, 60 h, 90 h, 120 h
        "queue_samples": 8,  # two queues at 30 h, 60 h, 90 h, 120 h
        "rollup_minute": 4,  # old + 60 h, 90 h, 120 h
        "rollup_hour": 3,  # old + 90 h, 120 h
        "events": 2,  # old + 120 h
        "gaps": 1,
        "clusters": 1,
    }
    assert [c.cluster_id for c in await rows(engine, m.Cluster)] == ["live"]
    assert await count(engine, m.Sample) == 1
    assert await count(engine, m.QueueSample) == 2
    assert await count(engine, m.RollupMinute) == 2
    assert await count(engine, m.RollupHour) == 3
    assert await count(engine, m.Event) == 4
    assert await prune(engine, now, keep) == dict.fromkeys(deleted, 0)


async def test_a_refused_batch_is_rolled_back_and_dropped(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer(engine)
    naive = T0.replace(tzinfo=None)
    writer.submit(poll(T0, stat("bad"), events=[ev(naive, "bad", "appeared")]))
    writer.submit(poll(T0, stat("good")))
    with caplog.at_level(logging.ERROR, logger="qwatch.store"):
        assert await writer.flush() == 1
    assert writer.rejected == 1 and writer.pending == 0
    # One transaction per batch: the refused batch's cluster row went with it.
    assert [c.cluster_id for c in await rows(engine, m.Cluster)] == ["good"]
    assert "refused the poll of shop" in caplog.text


async def take_over(engine: AsyncEngine) -> int:
    async with engine.begin() as conn:
        return await fence.take_over(conn, SITE)


async def test_a_batch_fenced_by_a_takeover_is_refused(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    writer = Writer(engine)
    first = await take_over(engine)
    writer.submit(poll(T0, stat(), fence=first))
    assert await writer.flush() == 1
    second = await take_over(engine)  # another daemon took the site over
    assert second == first + 1
    later = [T0 + timedelta(seconds=i) for i in (10, 20)]
    for at in later:
        writer.submit(poll(at, stat(at=at), ended=[("c-1", TOB, at)], fence=first))
    with caplog.at_level(logging.WARNING, logger="qwatch.store"):
        assert await writer.flush() == 0
    # Nothing of the stale sampler's: no sample, the cluster not ended by it, no mark.
    assert [s.sampled_at for s in await rows(engine, m.Sample)] == [T0]
    assert [c.ended_at for c in await rows(engine, m.Cluster)] == [None]
    assert [w.watched_at for w in await rows(engine, m.Watch)] == [T0]
    assert (writer.fenced, writer.pending) == (2, 0)
    assert writer.refused(SITE, first) and not writer.refused(SITE, second)
    assert caplog.text.count("refused a poll") == 1  # one line per stale sampler
    writer.submit(poll(later[1], stat(at=later[1]), fence=second))
    assert await writer.flush() == 1


async def test_discard_drops_one_sites_queued_batches(engine: AsyncEngine) -> None:
    writer = Writer(engine)
    writer.submit(poll(T0, stat()))
    writer.submit(replace(poll(T0, stat()), site="other"))
    writer.submit(poll(T0 + timedelta(seconds=1), stat()))
    assert writer.discard(SITE) == 2
    assert (writer.pending, writer.fenced) == (1, 2)


async def test_full_buffer_drops_the_newest(engine: AsyncEngine) -> None:
    writer = Writer(engine, max_buffered=3)
    times = [T0 + timedelta(seconds=i) for i in range(5)]
    accepted = [writer.submit(poll(t, stat(at=t))) for t in times]
    assert accepted == [True, True, True, False, False]
    assert (writer.pending, writer.dropped) == (3, 2)
    assert await writer.flush() == 3
    assert [s.sampled_at for s in await rows(engine, m.Sample, "sampled_at")] == times[:3]


async def test_postgres_outage_buffers_and_writes_in_order(
    postgres_server_factory: Callable[[], PostgresServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = postgres_server_factory()
    engine = create_engine(server.create_database("history"))
    try:
        await migrate.upgrade(engine)
        writer = Writer(engine, max_buffered=3)
        times = [T0 + timedelta(seconds=i) for i in range(6)]
        writer.submit(poll(times[0], stat(at=times[0])))
        assert await writer.flush() == 1

        server.stop()
        caplog.set_level(logging.INFO, logger="qwatch.store")
        for t in times[1:]:
            writer.submit(poll(t, stat(at=t), events=[ev(t, "c-1", "tick")]))
        with pytest.raises(StoreUnavailable):
            await writer.flush()
        with pytest.raises(StoreUnavailable):  # still down: same batch at the head
            await writer.flush()
        assert (writer.pending, writer.dropped) == (3, 2)

        server.start()
        assert await writer.flush() == 3
        assert writer.pending == 0
        kept = times[:4]  # the oldest three of the outage, then the newest were dropped
        assert [s.sampled_at for s in await rows(engine, m.Sample, "sampled_at")] == kept
        assert [e.at for e in await rows(engine, m.Event, "id")] == kept[1:]
        (cluster,) = await rows(engine, m.Cluster)
        assert cluster.last_seen == kept[-1]

        messages = [r.getMessage() for r in caplog.records if r.name == "qwatch.store"]
        assert sum("unavailable" in msg for msg in messages) == 1
        assert sum("buffer full" in msg for msg in messages) == 1
        assert any("back after" in msg and "dropped 2" in msg for msg in messages)
    finally:
        await engine.dispose()


async def test_sqlite_locked_then_released(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    try:
        await migrate.upgrade(engine)
        writer = Writer(engine)
        writer.submit(poll(T0, stat()))
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past busy_timeout
            with pytest.raises(StoreUnavailable, match="locked"):
                await writer.flush()
            assert writer.pending == 1
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await writer.flush() == 1
        assert await count(engine, m.Sample) == 1
    finally:
        await engine.dispose()


class _PgError(Exception):
    """Stands in for the asyncpg dialect's error: it carries a SQLSTATE."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        (ConnectionRefusedError(111, "refused"), True),
        (TimeoutError(), True),
        (sa_exc.OperationalError("INSERT", {}, Exception("database is locked")), True),
        (
            sa_exc.OperationalError(
                "INSERT", {}, Exception("attempt to write a readonly database")
            ),
            True,
        ),
        (sa_exc.DBAPIError("INSERT", {}, _PgError("57P01")), True),  # admin shutdown
        (sa_exc.DBAPIError("INSERT", {}, _PgError("25006")), True),  # read-only transaction
        (sa_exc.DBAPIError("INSERT", {}, _PgError("08006")), True),  # connection failure
        (sa_exc.DBAPIError("INSERT", {}, _PgError("22003")), False),  # numeric out of range
        (sa_exc.IntegrityError("INSERT", {}, _PgError("23503")), False),  # foreign key
        (sa_exc.IntegrityError("INSERT", {}, Exception("FOREIGN KEY constraint failed")), False),
        (sa_exc.StatementError("naive datetime", "INSERT", {}, ValueError("naive")), False),
        (ValueError("a bug"), False),
    ],
)
def test_is_unavailable(error: BaseException, unavailable: bool) -> None:
    assert is_unavailable(error) is unavailable


async def test_alert_starts_ends_and_notifications_are_written_once(engine: AsyncEngine) -> None:
    from qwatch.alerts.rules import Alert

    fired = Alert(
        "cluster_down", SITE, "web-1", "critical", "down", T0, host="web-1", details={"held_s": 60}
    )
    other = Alert("stuck", SITE, "", "critical", "stuck", T0, details={"queued": 5})
    writer = Writer(engine)
    first = poll(T0, stat(), alerts_fired=[fired, other])
    writer.submit(first)
    writer.submit(first)  # replayed: nothing twice
    writer.submit(Batch(SITE, T0, notified=[(fired, "firing", T0)]))
    ended = replace(fired, ended_at=T0 + timedelta(minutes=5), details={"held_s": 360})
    writer.submit(Batch(SITE, ended.ended_at, alerts_resolved=[ended]))
    await writer.flush()
    async with engine.connect() as conn:
        firing = await reads.alerts(conn)
        past = await reads.alerts(conn, since=T0)
        events = await reads.site_events(conn, SITE, ("appeared",), T0)
    assert [row.alert for row in firing] == [other]
    assert [row.alert for row in past] == [ended, other]
    assert (past[0].last_notified_status, past[0].last_notified_at) == ("firing", T0)
    assert (past[1].last_notified_status, past[1].last_notified_at) == (None, None)
    assert events == []


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
    )
)
def test_sqlite_times_are_stored_as_sqlalchemys_own_format(value: datetime) -> None:
    """The one-call bind of UTCDateTime on SQLite gives the text the generic path gave."""
    from sqlalchemy.dialects import sqlite

    from qwatch.store.models import UTCDateTime

    dialect = sqlite.dialect()
    fast = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    formats = sqlite.DATETIME().bind_processor(dialect)
    assert fast is not None and formats is not None

    def generic(value: datetime) -> str:
        return formats(UTCDateTime().process_bind_param(value, dialect))

    assume(value.utcoffset() is not None)
    assert fast(value) == generic(value)
    with pytest.raises(ValueError, match="naive"):
        fast(value.replace(tzinfo=None))
