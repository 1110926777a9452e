"""The report views (migrations/versions/0002_report_views.py, daily_availability replaced
by 0004_daily_availability_by_day.py) and `qwatch report`, on the generated story of
tests/test_history.py and on random histories, on SQLite and PostgreSQL; and the example
queries of docs/reporting.md, which must run as written."""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import json
import random
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import bindparam, insert, text

from qwatch import reports
from qwatch import timeline as tl
from qwatch.store import migrate
from qwatch.store.engine import create_engine
from qwatch.store.models import Alert, Cluster, Gap, UTCDateTime
from qwatch.store.writer import Batch, Writer
from qwatch.values import Backlog
from tests.helpers import cluster_stat, run_row
from tests.test_history import PIDISH, A, B, C, D, Story, qwatch
from tests.test_history import story_db as _story_db

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "reporting.md"
DAY = timedelta(days=1)

story_db = _story_db  # the same module-scoped story, written once more for this module


def report_rows(url: str, name: str, since: datetime, until: datetime) -> list[dict[str, Any]]:
    async def go() -> list[dict[str, Any]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await reports.rows(conn, reports.pick(name), since, until)
        finally:
            await engine.dispose()

    return asyncio.run(go())


def sql(url: str, statement: str) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in await conn.execute(text(statement))]
        finally:
            await engine.dispose()

    return asyncio.run(go())


def runs_of(s: Story, host: str) -> list[tl.Run]:
    return [
        run_row(i, cluster_id=r.cluster_id, host=r.host, pid=r.pid, tob=r.tob,
                first_seen=r.first_seen, last_seen=r.end, ended_at=None if r.is_open else r.end)
        for i, r in enumerate(s.runs.values())
        if r.host == host
    ]  # fmt: skip


def test_daily_availability_matches_the_timeline(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    rows = report_rows(url, "daily_availability", s.h(-48), s.h(96))
    now = datetime.now(UTC)
    assert {(r["host"], r["day"]) for r in rows} == {
        *(("web-1", s.h(24 * d)) for d in (-1, 0, 1, 2)),  # A seen from -1h, C up to 72h
        *(("web-2", s.h(24 * d)) for d in (-1, 0, 1, 2)),
        *(("web-3", s.h(24 * d)) for d in (0, 1, 2)),
    }
    gaps = s.gaps
    for row in rows:
        window = tl.Span(row["day"], min(row["day"] + DAY, now))
        want = tl.availability(runs_of(s, row["host"]), gaps, window, now)
        got = (row["up_s"], row["down_s"], row["unknown_s"])
        assert got == pytest.approx((want.up_s, want.down_s, want.unknown_s), abs=1e-3), row
        assert row["availability"] == pytest.approx(want.ratio, abs=1e-9)

    day1 = next(r for r in rows if r["host"] == "web-1" and r["day"] == s.h(24))
    # A up to 30h, then the second gap (120 s), then B from 30h03m: 60 s down.
    assert day1["up_s"] == pytest.approx(86_220, abs=1e-3)
    assert day1["down_s"] == pytest.approx(60, abs=1e-3)
    assert day1["unknown_s"] == pytest.approx(120, abs=1e-3)
    first = next(r for r in rows if r["host"] == "web-1" and r["day"] == s.h(-24))
    assert first["unknown_s"] == pytest.approx(23 * 3600, abs=1e-3)  # before A was seen
    assert first["availability"] == pytest.approx(1.0)


# ------------------------------------------- daily_availability as 0002 defined it


def revision_script(stem: str) -> ModuleType:
    """A migration script as a module, loaded by path as Alembic loads it."""
    path = ROOT / "migrations" / "versions" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"revision_{stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def daily_availability_0002(url: str) -> str:
    """The view as 0002 defined it (whole history first), before 0004 replaced it."""
    r0002 = revision_script("0002_report_views")
    return r0002.daily_availability(r0002.POSTGRESQL if "postgresql" in url else r0002.SQLITE)


def assert_as_0002(url: str, where: str, **times: datetime) -> int:
    """The rows of daily_availability that `where` selects are 0002's: the same host-days,
    the same seconds (up to float rounding). Returns how many."""

    async def go(statement: str) -> list[tuple[Any, ...]]:
        query = text(statement).bindparams(
            *(bindparam(name, t, type_=UTCDateTime()) for name, t in times.items())
        )
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return [tuple(r) for r in await conn.execute(query)]
        finally:
            await engine.dispose()

    old = f"({daily_availability_0002(url)}) AS o"
    keys = "SELECT site, host, day FROM {} WHERE " + where + " ORDER BY site, host, day"
    found = asyncio.run(go(keys.format("daily_availability")))
    assert found == asyncio.run(go(keys.format(old)))
    columns = ("up_s", "down_s", "unknown_s", "availability")
    pairs = asyncio.run(  # one statement, so both read the same now
        go(
            f"SELECT n.site, n.host, n.day, {', '.join(f'n.{c}, o.{c}' for c in columns)} "
            f"FROM (SELECT * FROM daily_availability WHERE {where}) AS n "
            f"JOIN {old} ON o.site = n.site AND o.host = n.host AND o.day = n.day"
        )
    )
    assert len(pairs) == len(found)
    for row in pairs:
        new, was = row[3::2], row[4::2]
        assert (new[-1] is None) == (was[-1] is None), row
        assert [v or 0.0 for v in new] == pytest.approx([v or 0.0 for v in was], abs=1e-6), row
    return len(found)


def test_daily_availability_as_0002_on_the_story(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    assert assert_as_0002(url, "TRUE") == 11
    assert assert_as_0002(url, "day >= :since AND day < :until", since=s.h(24), until=s.h(48)) == 3


def random_history(seed: int, now: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(clusters rows, gaps rows) over the last 20 days, on two sites that share a host
    name: runs from nothing to 12 days long that overlap, nest, touch or leave downtime,
    some starting at midnight; hosts whose last run ended, is up, or went stale, one with
    two open runs; gaps that overlap, span days, one still open."""
    rng = random.Random(seed)
    start = now.replace(hour=0, minute=0, second=0, microsecond=0) - 20 * DAY
    lengths = [timedelta(0), timedelta(seconds=5), timedelta(minutes=10), timedelta(hours=5),
               timedelta(hours=36), 4 * DAY]  # fmt: skip
    clusters: list[dict[str, Any]] = []

    def run(site: str, host: str, first: datetime, last: datetime, ended: bool) -> None:
        clusters.append(
            {"site": site, "cluster_id": f"{host}-{len(clusters)}", "host": host, "pid": 1,
             "tob": first - timedelta(seconds=1), "first_seen": first,
             "last_seen": last - timedelta(seconds=rng.uniform(0, 10)) if ended else last,
             "ended_at": last if ended else None, "last_status": "Idle"}
        )  # fmt: skip

    hosts = [("shop", f"web-{i}") for i in (1, 2, 3, 4)] + [("blog", "web-1"), ("blog", "web-5")]
    for n, (site, host) in enumerate(hosts):
        t = start + timedelta(seconds=rng.uniform(0, 2 * 86400))
        while t < now - 2 * DAY:
            length = rng.choice(lengths) * rng.uniform(0.5, 1.5)
            if rng.random() < 0.05:
                length = 12 * DAY
            end = min(t + length, now - timedelta(hours=1))
            run(site, host, t, end, ended=True)
            t = t + length * rng.choice([0.3, 1.0, 1.0 + rng.random()])
            if rng.random() < 0.1:  # the next one starts on a midnight
                t = t.replace(hour=0, minute=0, second=0, microsecond=0) + DAY
        t = max(t, now - DAY)
        if n % 3 == 0:  # up: the daemon refreshed it seconds ago
            run(site, host, t, now - timedelta(seconds=5), ended=False)
        if n % 3 == 1 or n == 3:  # stale: the daemon stopped watching an hour ago
            run(site, host, t, now - timedelta(hours=1), ended=False)
    gaps: list[dict[str, Any]] = []
    for site in ("shop", "blog"):
        starts = [start + timedelta(seconds=rng.uniform(0, 19 * 86400)) for _ in range(6)]
        for at in [*starts, starts[0] + timedelta(minutes=5)]:  # the last overlaps the first
            length = rng.choice([timedelta(seconds=30), timedelta(minutes=20), timedelta(hours=30)])
            gaps.append({"site": site, "started_at": at, "ended_at": at + length, "reason": "x"})
    gaps.append({"site": "shop", "started_at": now - timedelta(hours=2), "ended_at": None,
                 "reason": "redis timeout"})  # fmt: skip
    return clusters, gaps


@pytest.mark.parametrize("seed", [1, 2])
def test_daily_availability_as_0002_on_random_histories(db_url: str, seed: int) -> None:
    now = datetime.now(UTC)
    clusters, gaps = random_history(seed, now)

    async def write() -> None:
        engine = create_engine(db_url)
        try:
            await migrate.upgrade(engine)
            async with engine.begin() as conn:
                await conn.execute(insert(Cluster), clusters)
                await conn.execute(insert(Gap), gaps)
        finally:
            await engine.dispose()

    asyncio.run(write())
    assert assert_as_0002(db_url, "TRUE") >= 6 * 18
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    in_range = "day >= :since AND day < :until"
    assert assert_as_0002(db_url, in_range, since=today - 12 * DAY, until=today - 7 * DAY) == 30
    assert assert_as_0002(db_url, in_range, since=today - DAY, until=now) >= 5
    assert assert_as_0002(db_url, "day >= :since", since=today - 3 * DAY) >= 5
    assert assert_as_0002(db_url, "host = 'web-1'") >= 2 * 18


def test_restarts_reincarnations_backlog_runs_gaps(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    since, until = s.h(0), s.h(72)
    restarts = report_rows(url, "restarts", since, until)
    assert [(r["host"], r["at"], r["cluster_id"], r["previous_cluster_id"], r["downtime_s"])
            for r in restarts] == [
        ("web-1", s.h(30, 3), B, A, 120.0),
        ("web-1", s.h(50, 0, 30), C, B, 10.0),
    ]  # fmt: skip

    reincarnations = report_rows(url, "hourly_reincarnations", since, until)
    assert [(r["cluster_id"], r["hour"], r["reincarnations"], r["total"])
            for r in reincarnations] == [
        (A, s.h(5), 2, 2),
        (B, s.h(40), 1, 1),
        (D, s.h(60), 1, 1),
    ]  # fmt: skip

    backlog = {r["hour"]: r for r in report_rows(url, "hourly_backlog", since, until)}
    assert len(backlog) == 72
    five = backlog[s.h(5)]  # A and D up; the broker held 5 tasks all hour
    assert (five["clusters"], five["queued_max"], five["task_q_max"]) == (2, 5, 3)
    assert five["queued_avg"] == pytest.approx(5.0)
    assert five["task_q_avg"] == pytest.approx(0 + 3)  # A's 0 plus D's 3
    assert backlog[s.h(65)]["queued_avg"] is None  # the daemon could not read the backlog

    runs = report_rows(url, "cluster_runs", s.h(59), s.h(62))
    assert [(r["cluster_id"], r["host"]) for r in runs] == [(C, "web-1"), (D, "web-2"),
                                                           (PIDISH, "web-3")]  # fmt: skip
    assert runs[2]["seen_s"] == pytest.approx(3600, abs=1e-3) and runs[2]["pid"] is None

    gaps = report_rows(url, "redis_gaps", since, until)
    assert [(g["started_at"], g["duration_s"]) for g in gaps] == [
        (s.h(20), pytest.approx(900, abs=1e-3)),
        (s.h(30, 1), pytest.approx(120, abs=1e-3)),
    ]


def test_cli_lists_and_runs_reports(
    story_db: tuple[str, Story], capsys: pytest.CaptureFixture[str]
) -> None:
    url, s = story_db
    code, out, _ = qwatch(capsys, "report")
    assert code == 0 and all(name in out for name in reports.REPORTS)

    rng = ["--since", s.h(0).isoformat(), "--until", s.h(72).isoformat(), "--db", url]
    code, out, err = qwatch(capsys, "report", "restarts", *rng)
    assert (code, err) == (0, "") and "0:02:00" in out and B in out

    code, out, _ = qwatch(capsys, "report", "daily_availability", *rng, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 3 * 2 + 3  # web-1, web-2 on 3 days; web-3 on 3 days
    assert rows[0]["day"] == s.h(0).isoformat()

    code, out, _ = qwatch(capsys, "report", "hourly_reincarnations", *rng, "--format", "json")
    doc = json.loads(out)
    assert code == 0 and doc["report"] == "hourly_reincarnations"
    assert [r["reincarnations"] for r in doc["rows"]] == [2, 1, 1]
    assert doc["rows"][0]["hour"] == s.h(5).isoformat()

    code, out, err = qwatch(capsys, "report", "nope", "--db", url)
    assert code == 2 and "no report named 'nope'" in err and out == ""
    code, _, err = qwatch(capsys, "report", "restarts", "--since", "soon", "--db", url)
    assert code == 2 and "--since: cannot read 'soon'" in err


def test_cli_report_tables_say_their_zone(
    story_db: tuple[str, Story], capsys: pytest.CaptureFixture[str]
) -> None:
    url, s = story_db
    rng = ["--since", s.h(0).isoformat(), "--until", s.h(72).isoformat(), "--db", url]
    code, out, _ = qwatch(capsys, "report", "hourly_reincarnations", *rng)
    head, header, first = out.splitlines()[:3]
    assert code == 0 and head.endswith(" UTC") and "hour (UTC)" in header
    assert s.h(5).strftime("%Y-%m-%d %H:%M:%S") in first

    tokyo = ZoneInfo("Asia/Tokyo")
    code, out, _ = qwatch(capsys, "report", "hourly_reincarnations", *rng, "--tz", "Asia/Tokyo")
    head, header, first = out.splitlines()[:3]
    assert code == 0 and head.endswith(" Asia/Tokyo") and "hour (Asia/Tokyo)" in header
    assert s.h(5).astimezone(tokyo).strftime("%Y-%m-%d %H:%M:%S") in first

    # A daily report's days are UTC days: shown as such whatever the display zone.
    code, out, _ = qwatch(capsys, "report", "daily_availability", *rng, "--tz", "Asia/Tokyo")
    assert code == 0 and "day (UTC)" in out.splitlines()[1]
    assert s.h(0).strftime("%Y-%m-%d") in out.splitlines()[2]

    args = ["report", "restarts", *rng, "--format", "json"]
    assert qwatch(capsys, *args, "--tz", "Asia/Tokyo") == qwatch(capsys, *args)


def test_cli_report_on_a_database_not_migrated(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.split(":///", 1)[1]).touch()
    code, _, err = qwatch(capsys, "report", "restarts", "--db", db_url)
    assert code == 2 and "not migrated" in err and "Traceback" not in err


def test_views_go_with_a_downgrade(db_url: str) -> None:
    async def go() -> None:
        engine = create_engine(db_url)
        try:
            await migrate.upgrade(engine)
            await migrate.downgrade(engine, "0001_initial")
            await migrate.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(go())
    assert sql(db_url, "SELECT COUNT(*) FROM restarts") == [(0,)]


def test_0004_downgrade_restores_0002s_daily_availability(db_url: str) -> None:
    def definition() -> str:
        query = (
            "SELECT pg_get_viewdef('daily_availability')"
            if "postgresql" in db_url
            else "SELECT sql FROM sqlite_master WHERE name = 'daily_availability'"
        )
        [(found,)] = sql(db_url, query)
        return str(found)

    async def go(action: str, revision: str = "head") -> None:
        engine = create_engine(db_url)
        try:
            await getattr(migrate, action)(engine, revision)
        finally:
            await engine.dispose()

    asyncio.run(go("upgrade"))
    assert "longest_run" in definition() and "island_days" not in definition()
    asyncio.run(go("downgrade", "0003_watch_marks"))
    assert "island_days" in definition() and "longest_run" not in definition()
    asyncio.run(go("upgrade"))
    assert "longest_run" in definition()


def test_alerts_report(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`qwatch report alerts` reads 0007's view `alert_history`: the alerts that fired in
    the range, resolved ones with their duration, firing ones with none."""
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(hours=2)
    cluster = cluster_stat("c-1", timestamp=t0, tob=t0, host="web-9", name="shop")

    def alert(rule: str, subject: str, start: datetime, end: datetime | None) -> dict[str, Any]:
        return {
            "rule": rule, "site": "shop", "subject": subject, "host": subject or None,
            "cluster_id": None, "severity": "critical", "summary": f"{rule} on {subject}",
            "details": {"for_s": 60}, "started_at": start, "resolved_at": end,
            "last_notified_at": end or start,
            "last_notified_status": "resolved" if end else "firing",
        }  # fmt: skip

    async def write() -> None:
        engine = create_engine(db_url)
        try:
            await migrate.upgrade(engine)
            writer = Writer(engine)
            writer.submit(Batch("shop", t0, seen=[cluster], samples=[(cluster, None, t0)]))
            assert await writer.flush() == 1
            async with engine.begin() as conn:
                await conn.execute(insert(Alert), [
                    alert("cluster_down", "web-9", t0 - DAY, t0 - DAY + timedelta(minutes=5)),
                    alert("cluster_down", "web-9", t0, t0 + timedelta(minutes=3)),
                    alert("stuck", "", t0 + timedelta(minutes=30), None),
                ])  # fmt: skip
        finally:
            await engine.dispose()

    asyncio.run(write())
    found = report_rows(db_url, "alerts", t0 - timedelta(hours=1), now)
    assert [(r["rule"], r["subject"], r["started_at"], r["resolved_at"], r["duration_s"],
             r["last_notified_status"]) for r in found] == [
        ("cluster_down", "web-9", t0, t0 + timedelta(minutes=3), pytest.approx(180, abs=1e-3),
         "resolved"),
        ("stuck", "", t0 + timedelta(minutes=30), None, None, "firing"),
    ]  # fmt: skip
    assert sql(db_url, "SELECT COUNT(*) FROM alert_history") == [(3,)]

    rng = ["--since", (t0 - timedelta(hours=1)).isoformat(), "--db", db_url]
    code, out, err = qwatch(capsys, "report", "alerts", *rng)
    assert (code, err) == (0, "") and "cluster_down on web-9" in out and "stuck on" in out
    assert re.search(r"0:0(2:59|3:00) ", out)  # julianday arithmetic can fall a hair short
    code, out, _ = qwatch(capsys, "report", "alerts", *rng, "--format", "json")
    assert code == 0 and [r["rule"] for r in json.loads(out)["rows"]] == ["cluster_down", "stuck"]


def doc_examples(engine: str) -> Iterator[tuple[str, str]]:
    """(title, query) for each ```sql block in docs/reporting.md marked for `engine` or
    for both (a first line `-- sqlite`, `-- postgresql` or `-- both`)."""
    for block in re.findall(r"```sql\n(.*?)```", DOCS.read_text(), flags=re.S):
        first, _, body = block.partition("\n")
        marks = first.removeprefix("--").split()
        if marks and (marks[0] == engine or marks[0] == "both"):
            yield " ".join(marks[1:]), body


def test_docs_examples_run(story_db: tuple[str, Story]) -> None:
    url, _ = story_db
    engine = "postgresql" if url.startswith("postgresql") else "sqlite"
    examples = list(doc_examples(engine))
    assert len(examples) >= 6
    for title, query in examples:
        try:
            sql(url, query)
        except Exception as error:  # pragma: no cover - the message names the example
            raise AssertionError(f"docs example {title!r} failed on {engine}: {error}") from None


# --------------------------------------------------------------- time no daemon sampled


def test_views_and_history_count_time_without_a_daemon_as_unknown(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cluster up 10 minutes, ended; 10 minutes later Redis fails, 10 more and the daemon
    stops (its last mark) and nobody watches for 2.5 h. Down is only the 10 minutes between
    the end and the outage: not the outage, not the time since the daemon stopped."""
    now = datetime.now(UTC).replace(microsecond=0)
    t0 = now - timedelta(hours=3)
    tob = t0 - timedelta(minutes=1)
    cluster = cluster_stat("c-1", timestamp=t0, tob=tob, host="web-9", name="shop")
    t1, t2, t3 = (t0 + timedelta(minutes=m) for m in (10, 20, 30))

    async def write() -> None:
        engine = create_engine(db_url)
        try:
            await migrate.upgrade(engine)
            writer = Writer(engine)
            for batch in (
                Batch("shop", t0, seen=[cluster], samples=[(cluster, None, t0)]),
                Batch("shop", t1, ended=[("c-1", tob, t1)]),
                Batch("shop", t2, gap_open=(t2, "redis down")),  # never closed
                Batch("shop", t3),  # the daemon's last mark
            ):
                writer.submit(batch)
            assert await writer.flush() == 4
        finally:
            await engine.dispose()

    asyncio.run(write())
    days = report_rows(db_url, "daily_availability", t0 - DAY, now + DAY)
    assert [(r["site"], r["host"]) for r in days] == [("shop", "web-9")] * len(days)
    assert sum(r["up_s"] for r in days) == pytest.approx(600)
    assert sum(r["down_s"] for r in days) == pytest.approx(600)
    gaps = report_rows(db_url, "redis_gaps", t0, now)
    assert [(g["reason"], g["ended_at"]) for g in gaps] == [("redis down", None)]

    since = (t0 - timedelta(minutes=5)).isoformat()
    code, out, err = qwatch(capsys, "history", "web-9", "--since", since, "--format", "json",
                            "--db", db_url)  # fmt: skip
    assert (code, err) == (0, "")
    history = json.loads(out)
    summary = history["summary"]
    assert (summary["up_s"], summary["down_s"]) == (600, 600)
    assert [(g["kind"], g["started_at"], g["ended_at"]) for g in history["summary"]["gaps"]] == [
        ("redis", t2.isoformat(), t3.isoformat()),  # ends where the daemon stopped looking
        ("unwatched", t3.isoformat(), None),
    ]


def test_hourly_queue_backlog_report(db_url: str) -> None:
    """`hourly_queue_backlog` through the report layer (its hour filter and types), both
    engines: the daemon's per-queue rows, one queue unknown part of the hour."""
    hour = datetime(2026, 12, 3, 9, tzinfo=UTC)
    queues = []
    for minute, main, long in ((1, 3, 7), (2, 9, None), (61, 1, 0)):
        at = hour + timedelta(minutes=minute)
        queues += [(Backlog("shop", "redis", main), at), (Backlog("long", "redis", long), at)]

    async def write() -> None:
        engine = create_engine(db_url)
        try:
            await migrate.upgrade(engine)
            writer = Writer(engine)
            writer.submit(Batch("shop", hour, queues=queues))
            await writer.flush()
        finally:
            await engine.dispose()

    asyncio.run(write())
    got = report_rows(db_url, "hourly_queue_backlog", hour, hour + timedelta(hours=1))
    assert [
        (r["queue"], r["hour"], r["samples"], r["known"], r["length_max"], r["length_avg"])
        for r in got
    ] == [("long", hour, 2, 1, 7, 7.0), ("shop", hour, 2, 2, 9, 6.0)]
