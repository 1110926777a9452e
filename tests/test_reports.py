"""The report views (migrations/versions/0002_report_views.py) and `qwatch report`, on the
generated story of tests/test_history.py, on SQLite and PostgreSQL; and the example queries
of docs/reporting.md, which must run as written."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from qwatch import reports
from qwatch import timeline as tl
from qwatch.store import migrate
from qwatch.store.engine import create_engine
from tests.test_history import PIDISH, A, B, C, D, Story, qwatch
from tests.test_history import story_db as _story_db

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reporting.md"
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
        tl.Run(i, "shop", r.cluster_id, r.host, r.pid, r.tob, r.first_seen,
               r.end, None if r.is_open else r.end, "Idle")
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


def test_cli_report_on_a_database_not_migrated(
    db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.split(":///", 1)[1]).touch()
    code, _, err = qwatch(capsys, "report", "restarts", "--db", db_url)
    assert code == 1 and "not migrated" in err and "Traceback" not in err


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
