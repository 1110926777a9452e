"""The rollup merge's SQL (qwatch/store/rollups.py) held to its one definition, the rules in
qwatch.rollup applied in Python, on real SQLite and PostgreSQL.

Random partial minute rows go through the writer's upsert (one batch each, so every row
after the first of a minute is merged in SQL) and then through the hour roll-up; what the
tables hold must equal `merge` folded in the same order, and `hour_of` of those minutes.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from qwatch.rollup import MERGE_RULES, MinuteRow, hour_of, merge
from qwatch.store import migrate
from qwatch.store import models as m
from qwatch.store.engine import create_engine
from qwatch.store.maintenance import roll_up_hours
from qwatch.store.writer import Batch, Writer
from tests.test_store import SITE, TOB, stat  # the store tests' ClusterStat factory

H10 = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def random_row(rnd: random.Random, bucket: datetime) -> MinuteRow:
    n = rnd.randint(1, 12)
    tq = sorted(rnd.randint(0, 50) for _ in range(2))
    rq = sorted(rnd.randint(0, 9) for _ in range(2))
    known = rnd.random() < 0.6  # mix rows that knew the backlog with rows that did not
    queued = sorted(rnd.randint(0, 900) for _ in range(2))
    seconds = [round(rnd.uniform(0, 12), 3) for _ in range(5)]
    return MinuteRow(
        site=SITE,
        cluster_id="c-1",
        tob=TOB,
        bucket=bucket,
        n=n,
        tq_min=tq[0],
        tq_max=tq[1],
        tq_avg=rnd.uniform(tq[0], tq[1]),
        rq_min=rq[0],
        rq_max=rq[1],
        rq_avg=rnd.uniform(rq[0], rq[1]),
        queued_min=queued[0] if known else None,
        queued_max=queued[1] if known else None,
        queued_avg=rnd.uniform(queued[0], queued[1]) if known else None,
        rc_max=rnd.randint(0, 7),
        pool_min=rnd.randint(1, 8),
        starting_s=seconds[0],
        idle_s=seconds[1],
        working_s=seconds[2],
        stopping_s=seconds[3],
        stopped_s=seconds[4],
        observed_s=sum(seconds),
    )


def assert_same(stored: Any, expected: MinuteRow) -> None:
    assert stored.bucket == expected.bucket
    for name in MERGE_RULES:
        want, got = getattr(expected, name), getattr(stored, name)
        if want is None or isinstance(want, int):
            assert got == want, name
        else:
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), name


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    await migrate.upgrade(engine)
    yield engine
    await engine.dispose()


async def table(engine: AsyncEngine, model: Any) -> list[Any]:
    t = model.__table__
    async with engine.connect() as conn:
        return list((await conn.execute(select(t).order_by(t.c.bucket))).all())


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_sql_merges_as_the_rules_in_python(engine: AsyncEngine, seed: int) -> None:
    rnd = random.Random(seed)
    # Minutes of two hours, several with two to four partial rows (a drain at shutdown,
    # another daemon's part after a takeover), written in a shuffled order.
    buckets = [H10 + timedelta(minutes=k) for k in (0, 1, 7, 59, 60, 61, 95)]
    parts = [random_row(rnd, b) for b in buckets for _ in range(rnd.randint(1, 4))]
    rnd.shuffle(parts)

    writer = Writer(engine)
    for i, part in enumerate(parts):  # one batch each: every later part is an upsert merge
        at = H10 + timedelta(seconds=i)
        writer.submit(Batch(site=SITE, at=at, seen=[stat(at=at)], minutes=[part]))
    assert await writer.flush() == len(parts)
    await roll_up_hours(engine, since=H10)

    by_minute: dict[datetime, list[MinuteRow]] = {}
    for part in parts:
        by_minute.setdefault(part.bucket, []).append(part)
    minutes = [reduce(merge, by_minute[b]) for b in sorted(by_minute)]
    stored_minutes = await table(engine, m.RollupMinute)
    assert len(stored_minutes) == len(minutes)
    for stored, expected in zip(stored_minutes, minutes, strict=True):
        assert_same(stored, expected)

    hours = hour_of(minutes)
    stored_hours = await table(engine, m.RollupHour)
    assert [h.bucket for h in stored_hours] == [H10, H10 + timedelta(hours=1)]
    for stored, expected in zip(stored_hours, hours, strict=True):
        assert_same(stored, expected)
