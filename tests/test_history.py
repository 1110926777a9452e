"""`qwatch history` on a generated history with known restarts, reincarnations and Redis
gaps (SQLite and PostgreSQL), on one recorded by the daemon from a real django-q2 cluster,
and on bad input.

The story (hours after T0, a midnight four days ago; the range is [T0, T0+72h)):
  web-1  A: up before T0 .. 30h (crash)        B: 30h03m .. 50h (deploy)   C: 50h00m30s ..
  web-2  D: up before T0 .. (open)
  web-3  two runs of old django-q, both with the pid-style id "4242": 1h..2h and 60h..61h
  Redis gaps: 20h00m .. 20h15m, and 30h01m .. 30h03m (B appears behind the second).
A's pool drops to 3 at 5h00m and it reincarnates 2 workers at 5h30m; B reincarnates one at
40h, D at 60h. Measurements are constant within an hour (apart from A's task queue in hour
10: 2, then 6 from 10h30m), so every source must give the same hourly buckets.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from qwatch import history
from qwatch import timeline as tl
from qwatch.cli import main
from qwatch.rollup import MinuteRow
from qwatch.store import maintenance, migrate, reads
from qwatch.store.engine import create_engine
from qwatch.store.writer import Batch, Writer
from qwatch.values import Backlog, ClusterStat
from tests.helpers import cluster_stat
from tests.plugins.postgres_server import PostgresServer

SITE = "shop"
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
STEP = timedelta(seconds=10)  # the model's poll step inside a minute rollup
A = "a1b2c3d4-0000-4000-8000-00000000a001"
B = "a1b2c3d4-0000-4000-8000-00000000b002"
C = "c9d8e7f6-0000-4000-8000-00000000c003"
D = "d4c3b2a1-0000-4000-8000-00000000d004"
PIDISH = "4242"


@dataclass(frozen=True)
class RunSpec:
    key: str  # A, B, …: the test's own name for the run
    cluster_id: str
    host: str
    tob: datetime
    first_seen: datetime
    end: datetime  # ended_at, or last_seen for an open run
    is_open: bool
    k: int  # shifts the task queue values, so runs differ
    rc_steps: tuple[tuple[datetime, int], ...] = ()  # (at, reincarnations from then on)
    pid: int | None = 1000


@dataclass
class Story:
    t0: datetime
    runs: dict[str, RunSpec] = field(default_factory=dict)
    gaps: list[tl.Span] = field(default_factory=list)

    def h(self, hours: float, minutes: float = 0, seconds: float = 0) -> datetime:
        return self.t0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)

    def hour(self, t: datetime) -> int:
        return (t - self.t0) // HOUR

    def in_gap(self, t: datetime) -> bool:
        return any(g.start <= t < g.end for g in self.gaps)

    # The model: what every run measured at any time.
    def status(self, run: RunSpec, t: datetime) -> str:
        if t < run.first_seen + MINUTE:
            return "Starting"
        return "Working" if self.hour(t) % 6 == 3 else "Idle"

    def tq(self, run: RunSpec, t: datetime) -> int:
        if run.key == "A" and self.hour(t) == 10:
            return 2 if t < self.h(10, 30) else 6
        return (self.hour(t) + run.k) % 5

    def rq(self, t: datetime) -> int:
        return self.hour(t) % 3

    def queued(self, t: datetime) -> int | None:
        return None if self.hour(t) == 65 else self.hour(t) % 7

    def pool(self, run: RunSpec, t: datetime) -> int:
        return 3 if run.key == "A" and self.h(5) <= t < self.h(5, 30) else 4

    def rc(self, run: RunSpec, t: datetime) -> int:
        return max([n for at, n in run.rc_steps if at <= t], default=0)

    def ticks(self, run: RunSpec) -> list[datetime]:
        """Sample times: first sight, then every whole minute, none inside a gap."""
        times = [run.first_seen]
        t = run.first_seen.replace(second=0, microsecond=0) + MINUTE
        while t < run.end or (run.is_open and t == run.end):
            if not self.in_gap(t):
                times.append(t)
            t += MINUTE
        return times


def make_story(t0: datetime) -> Story:
    s = Story(t0)
    s.gaps = [tl.Span(s.h(20), s.h(20, 15)), tl.Span(s.h(30, 1), s.h(30, 3))]
    for run in (
        RunSpec("A", A, "web-1", s.h(-2), s.h(-1), s.h(30), False, 0, ((s.h(5, 30), 2),)),
        RunSpec("B", B, "web-1", s.h(30, 2), s.h(30, 3), s.h(50), False, 1, ((s.h(40), 1),)),
        RunSpec("C", C, "web-1", s.h(50, 0, 10), s.h(50, 0, 30), s.h(72), True, 2),
        RunSpec("D", D, "web-2", s.h(-3), s.h(-1), s.h(72), True, 3, ((s.h(60), 1),)),
        RunSpec("E1", PIDISH, "web-3", s.h(1), s.h(1), s.h(2), False, 4, pid=None),
        RunSpec("E2", PIDISH, "web-3", s.h(60), s.h(60), s.h(61), False, 0, pid=None),
    ):
        s.runs[run.key] = run
    return s


def story_t0(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0) - 4 * DAY


# --------------------------------------------------------------------------- writing it


@dataclass(frozen=True)
class Ev:
    at: datetime
    site: str
    cluster_id: str
    tob: datetime
    kind: str
    detail: dict[str, Any]


def _stat(s: Story, run: RunSpec, t: datetime) -> ClusterStat:
    stat = cluster_stat(
        run.cluster_id,
        name=SITE,
        host=run.host,
        pid=None,
        pool=s.pool(run, t),
        status=s.status(run, t),
        tq=s.tq(run, t),
        rq=s.rq(t),
        rc=s.rc(run, t),
        tob=run.tob,
        timestamp=t,
    )
    return replace(stat, pid=run.pid)  # the run's pid, and no sentinel, monitor or pusher pids


def _minutes(s: Story, run: RunSpec) -> list[MinuteRow]:
    rows = []
    minute = run.first_seen.replace(second=0, microsecond=0)
    while minute < run.end:
        steps = [
            t
            for i in range(6)
            if run.first_seen <= (t := minute + i * STEP) < run.end and not s.in_gap(t)
        ]
        minute += MINUTE
        if not steps:
            continue
        t = steps[0]
        seconds = {st: 0.0 for st in ("Starting", "Idle", "Working", "Stopping", "Stopped")}
        for step in steps:
            seconds[s.status(run, step)] += STEP.total_seconds()
        q = s.queued(t)
        rows.append(
            MinuteRow(
                site=SITE, cluster_id=run.cluster_id, tob=run.tob, bucket=minute - MINUTE,
                n=len(steps), tq_min=s.tq(run, t), tq_max=s.tq(run, t), tq_avg=s.tq(run, t),
                rq_min=s.rq(t), rq_max=s.rq(t), rq_avg=s.rq(t),
                queued_min=q, queued_max=q, queued_avg=None if q is None else float(q),
                rc_max=s.rc(run, t), pool_min=s.pool(run, t),
                starting_s=seconds["Starting"], idle_s=seconds["Idle"],
                working_s=seconds["Working"], stopping_s=seconds["Stopping"],
                stopped_s=seconds["Stopped"], observed_s=sum(seconds.values()),
            )
        )  # fmt: skip
    return rows


def _events(s: Story, run: RunSpec) -> list[Ev]:
    def ev(at: datetime, kind: str, **detail: Any) -> Ev:
        return Ev(at, SITE, run.cluster_id, run.tob, kind, detail)

    found = [ev(run.first_seen, "appeared", status="Starting")]
    previous = {"B": ("A", 120.0), "C": ("B", 10.0)}.get(run.key)
    if previous:
        old = s.runs[previous[0]]
        found.append(
            ev(run.first_seen, "restarted", previous=old.cluster_id,
               previous_tob=old.tob.isoformat(), downtime_s=previous[1])
        )  # fmt: skip
    ticks = s.ticks(run)
    for before, t in itertools.pairwise(ticks):
        if s.status(run, t) != s.status(run, before):
            found.append(ev(t, "state_changed", **{"from": s.status(run, before)},
                            to=s.status(run, t)))  # fmt: skip
    total = 0
    for at, n in run.rc_steps:
        found.append(ev(at, "reincarnated", by=n - total, total=n))
        total = n
    if not run.is_open:
        found.append(ev(run.end, "vanished", last_status="Idle", last_seen=run.end.isoformat(),
                        during_gap=False))  # fmt: skip
    return found


def _batches(s: Story, run: RunSpec) -> list[Batch]:
    """One batch at first sight, one per hour of samples, one at the end; each event and
    minute row rides in the last batch at or before its time (the run exists by then)."""
    ticks = s.ticks(run)
    chunks: dict[int, list[datetime]] = {}
    for t in ticks[1:]:
        chunks.setdefault(s.hour(t), []).append(t)
    parts: list[dict[str, Any]] = [{"at": ticks[0], "ticks": [ticks[0]]}]
    parts += [{"at": chunk[-1], "ticks": chunk} for chunk in chunks.values()]
    if not run.is_open:
        parts.append({"at": run.end, "ticks": [], "ended": [(run.cluster_id, run.tob, run.end)]})

    def home(at: datetime) -> dict[str, Any]:
        return max((p for p in parts if p["at"] <= at), key=lambda p: p["at"], default=parts[0])

    for item in _events(s, run):
        home(item.at).setdefault("events", []).append(item)
    for row in _minutes(s, run):
        home(row.bucket).setdefault("minutes", []).append(row)
    batches = []
    for part in parts:
        stats = [(_stat(s, run, t), s.queued(t), t) for t in part.pop("ticks")]
        batches.append(Batch(SITE, seen=[st for st, _, _ in stats[-1:]], samples=stats, **part))
    return batches


async def write_story(url: str, s: Story) -> None:
    engine = create_engine(url)
    try:
        await migrate.upgrade(engine)
        writer = Writer(engine, max_buffered=100_000)
        batches = [b for run in s.runs.values() for b in _batches(s, run)]
        for gap in s.gaps:
            batches.append(Batch(SITE, gap.start, gap_open=(gap.start, "redis timeout")))
            batches.append(Batch(SITE, gap.end, gap_close=gap.end))
        for batch in sorted(batches, key=lambda b: b.at):
            writer.submit(batch)
        await writer.flush()
        await maintenance.roll_up_hours(engine, s.h(-4))
    finally:
        await engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def story_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Story]]:
    """The story, written once per engine for the module (tests only read it)."""
    story = make_story(story_t0(datetime.now(UTC)))
    name = None
    server: PostgresServer | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('story') / 'history.sqlite3'}"
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"story_{uuid.uuid4().hex[:12]}"
        url = server.create_database(name)
    asyncio.run(write_story(url, story))
    yield url, story
    if server is not None and name is not None and server.running:
        server.drop_database(name)


def read(url: str, ref: str, plan: tl.Plan, now: datetime | None = None) -> history.History:
    async def go() -> history.History:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await history.read(conn, ref, plan, now or datetime.now(UTC))
        finally:
            await engine.dispose()

    return asyncio.run(go())


def qwatch(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- the story


def test_host_summary_over_three_days(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    plan = tl.plan(s.h(0), s.h(72), datetime.now(UTC))
    assert plan.source is tl.Source.MINUTES and plan.every == 2 * HOUR
    h = read(url, "web-1", plan)
    assert h.selection.kind == "host"
    assert [r.cluster_id for r in h.runs] == [A, B, C]
    a = h.summary.availability
    assert a.range_s == 72 * 3600
    assert a.gap_s == 900 + 120
    # up: A 0..30h, B 30h03m..50h, C 50h00m30s..72h, less A's 900 s inside the first gap
    assert a.up_s == 108_000 + 71_820 + 79_170 - 900
    # down: 30h00m..30h01m (then the gap hides B's start) and 50h00m..50h00m30s
    assert a.down_s == 90
    assert a.unknown_s == 1020
    assert a.ratio == pytest.approx(258_090 / 258_180, abs=1e-12)
    assert h.summary.restarts == 2
    assert h.summary.reincarnations == 3
    assert h.summary.longest_downtime == tl.Span(s.h(30), s.h(30, 1))

    other = read(url, "web-2", plan).summary
    assert other.availability.ratio == 1.0 and other.availability.down_s == 0
    assert (other.restarts, other.reincarnations, other.longest_downtime) == (0, 1, None)


def _hourly(url: str, s: Story, source: tl.Source) -> list[tl.Bucket]:
    plan = tl.Plan(s.h(0), s.h(72), HOUR, source)
    return read(url, "web-1", plan).buckets


def test_hourly_buckets_are_exact_from_every_source(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    by_source = {source: _hourly(url, s, source) for source in tl.Source}
    samples = by_source[tl.Source.SAMPLES]
    assert len(samples) == 72
    for source, buckets in by_source.items():
        assert buckets == samples, source

    def at(hour: int) -> tl.Bucket:
        return samples[hour]

    five = at(5)  # A: a worker down, then two reincarnations
    assert (five.pool, five.rc, five.tq_max, five.tq_avg, five.rq_max) == (3, 2, 0, 0.0, 2)
    assert (five.states, five.queued_max, five.queued_avg) == (("Idle",), 5, 5.0)
    assert five.uptime_s == 8 * 3600  # born at -2h, the bucket ends at 6h
    assert at(3).states == ("Working",)
    assert (at(10).tq_max, at(10).tq_avg) == (6, 4.0)
    twenty = at(20)
    assert (twenty.up_s, twenty.down_s, twenty.unknown_s, twenty.gap_s) == (2700, 0, 900, 900)
    thirty = at(30)  # A gone at 30h, a gap, B seen from 30h03m (born at 30h02m)
    assert thirty.cluster_ids == (B,)
    assert thirty.states == ("Starting", "Idle")
    assert (thirty.up_s, thirty.down_s, thirty.gap_s) == (3420, 60, 120)
    assert (thirty.rc, thirty.tq_max, thirty.uptime_s) == (0, 1, 58 * 60)
    assert at(29).cluster_ids == (A,) and at(29).rc == 2
    assert at(40).rc == 1
    fifty = at(50)
    assert fifty.cluster_ids == (C,) and fifty.states == ("Starting", "Idle")
    assert (fifty.up_s, fifty.down_s, fifty.tq_max) == (3570, 30, 2)
    assert at(65).queued_max is None and at(65).queued_avg is None


def test_one_day_from_samples(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    plan = tl.plan(s.h(24), s.h(48), datetime.now(UTC))
    assert (plan.source, plan.every) == (tl.Source.SAMPLES, 30 * MINUTE)
    h = read(url, "web-1", plan)
    assert len(h.buckets) == 48
    ticks = [
        (run, t)
        for run in (s.runs["A"], s.runs["B"])
        for t in s.ticks(run)
        if s.h(24) <= t < s.h(48)
    ]
    mean = sum(s.tq(run, t) for run, t in ticks) / len(ticks)
    assert h.summary.tq_mean == pytest.approx(mean, abs=1e-9)
    assert h.summary.tq_max == 4
    assert [e.kind for e in h.events if e.kind != "state_changed"] == [
        "vanished", "appeared", "restarted", "reincarnated",
    ]  # fmt: skip


def test_eight_days_from_hour_rollups(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    plan = tl.plan(s.h(-120), s.h(72), datetime.now(UTC))
    assert (plan.source, plan.every) == (tl.Source.HOURS, 6 * HOUR)
    h = read(url, "web-1", plan)
    a = h.summary.availability
    assert a.observed == tl.Span(s.h(-1), s.h(72))  # nothing known before A was first seen
    assert a.up_s == 3600 + 258_090 and a.down_s == 90
    assert h.buckets[0].label == "-" and h.buckets[-1].cluster_ids == (C,)


def test_references(story_db: tuple[str, Story]) -> None:
    url, s = story_db
    plan = tl.plan(s.h(0), s.h(72), datetime.now(UTC))
    assert read(url, C[-8:], plan).selection.runs[0].cluster_id == C  # qmonitor's suffix
    assert read(url, "c9d8", plan).selection.runs[0].cluster_id == C  # a prefix
    assert read(url, D, plan).selection.kind == "cluster"
    with pytest.raises(reads.AmbiguousCluster) as ambiguous:
        read(url, "a1b2", plan)
    assert A in str(ambiguous.value) and B in str(ambiguous.value)
    assert "web-1" in str(ambiguous.value)
    with pytest.raises(reads.AmbiguousCluster, match="narrow --since"):
        read(url, PIDISH, plan)  # both old-style runs fall in the range
    late = tl.plan(s.h(59), s.h(62), datetime.now(UTC))
    [e2] = read(url, PIDISH, late).selection.runs
    assert e2.first_seen == s.h(60)
    with pytest.raises(reads.UnknownCluster, match="web-1, web-2, web-3"):
        read(url, "nope", plan)


# --------------------------------------------------------------------------- the command


def test_cli_table_csv_json(
    story_db: tuple[str, Story], capsys: pytest.CaptureFixture[str]
) -> None:
    url, s = story_db
    rng = ["--since", s.h(24).isoformat(), "--until", s.h(48).isoformat(), "--db", url]
    code, out, err = qwatch(capsys, "history", "web-1", *rng)
    assert (code, err) == (0, "")
    assert all(len(line) <= 80 for line in out.splitlines()), out
    assert "a1b2c3d4-0000-4000-8000-00000000b002" not in out  # short ids in the table
    assert "availability    99.93% (up 23:57:00 of 23:58:00)" in out
    assert "restarts        1" in out and "unknown         0:02:00 (0:02:00 in gaps)" in out

    code, out, _ = qwatch(capsys, "history", "web-1", *rng, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 48
    assert rows[12]["start"] == s.h(30).isoformat() and rows[12]["cluster_ids"] == B

    code, out, _ = qwatch(capsys, "history", "web-1", *rng, "--format", "json", "--every", "1h")
    doc = json.loads(out)
    assert code == 0 and set(doc) == {"clusters", "buckets", "events", "summary"}
    assert [c["cluster_id"] for c in doc["clusters"]] == [A, B]
    assert doc["summary"]["restarts"] == 1 and doc["summary"]["longest_downtime_s"] == 60
    assert doc["summary"]["availability"] == pytest.approx(86_220 / 86_280, abs=1e-6)
    assert doc["buckets"][6]["states"] == ["Starting", "Idle"]
    restart = next(e for e in doc["events"] if e["kind"] == "restarted")
    assert restart == {
        "at": s.h(30, 3).isoformat(),
        "cluster_id": B,
        "kind": "restarted",
        "detail": {"previous": A, "previous_tob": s.h(-2).isoformat(), "downtime_s": 120.0},
    }

    code, out, _ = qwatch(capsys, "history", C[-8:], *rng, "--events")
    assert code == 0 and "no events" in out
    code, out, _ = qwatch(capsys, "history", "web-1", *rng, "--events", "--format", "csv")
    assert code == 0 and out.splitlines()[0] == "at,cluster_id,kind,detail"


def test_cli_tables_say_their_zone_and_machine_output_stays_utc(
    story_db: tuple[str, Story], capsys: pytest.CaptureFixture[str]
) -> None:
    url, s = story_db
    rng = ["--since", s.h(24).isoformat(), "--until", s.h(48).isoformat(), "--db", url]
    code, out, _ = qwatch(capsys, "history", "web-1", *rng, "--every", "1h")
    lines = out.splitlines()
    assert code == 0 and lines[1].startswith(s.h(24).strftime("%Y-%m-%d %H:%M"))
    assert " UTC, every 1h" in lines[1] and lines[2].startswith("time (UTC)  ")
    assert lines[3].startswith(s.h(24).strftime("%m-%d %H:%M"))

    tokyo = ZoneInfo("Asia/Tokyo")
    code, out, _ = qwatch(capsys, "history", "web-1", *rng, "--every", "1h", "--tz", "Asia/Tokyo")
    lines = out.splitlines()
    assert code == 0 and lines[1].startswith(s.h(24).astimezone(tokyo).strftime("%Y-%m-%d %H:%M"))
    assert " Asia/Tokyo, every 1h" in lines[1] and lines[2].startswith("time (Asia/Tokyo)  ")
    assert lines[3].startswith(s.h(24).astimezone(tokyo).strftime("%m-%d %H:%M"))

    code, out, _ = qwatch(capsys, "history", "web-1", *rng, "--events", "--tz", "Asia/Tokyo")
    assert code == 0 and out.splitlines()[2].split()[:4] == [
        "time",
        "(Asia/Tokyo)",
        "cluster",
        "event",
    ]

    for fmt in ("csv", "json"):  # machine output is UTC whatever the display zone
        args = ["history", "web-1", *rng, "--format", fmt]
        assert qwatch(capsys, *args, "--tz", "Asia/Tokyo") == qwatch(capsys, *args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope"], "no cluster or host matches 'nope'"),
        (["a1b2"], "'a1b2' matches 2 clusters"),
        (["web-1", "--since", "2h", "--until", "3h"], "--since"),
        (["web-1", "--since", "3 days"], "--since: cannot read '3 days'"),
        (["web-1", "--every", "90"], "--every: '90' has no unit"),
        (["web-1", "--since", "30d", "--every", "10s"], "--every 10s"),
    ],
)
def test_cli_bad_input(
    story_db: tuple[str, Story], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    url, _ = story_db
    code, out, err = qwatch(capsys, "history", *args, "--db", url)
    assert code == 2 and out == ""
    assert err.startswith("qwatch: ") and message in err and "Traceback" not in err


def test_cli_empty_and_unmigrated_databases(
    db_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.split(":///", 1)[1]).touch()  # an empty file is an empty database
    code, _, err = qwatch(capsys, "history", "web-1", "--db", db_url)
    assert code == 2 and "not migrated: run `qwatch db upgrade`" in err

    async def upgrade() -> None:
        engine = create_engine(db_url)
        await migrate.upgrade(engine)
        await engine.dispose()

    asyncio.run(upgrade())
    code, _, err = qwatch(capsys, "history", "web-1", "--db", db_url)
    assert code == 1 and "no history yet in" in err and "start `qwatch daemon`" in err

    missing = tmp_path / "nowhere" / "history.sqlite3"
    code, _, err = qwatch(capsys, "history", "web-1", "--db", f"sqlite:///{missing}")
    assert code == 1 and "no history database at" in err
    assert not missing.parent.exists()  # reading created nothing


def test_cli_unreachable_database(capsys: pytest.CaptureFixture[str]) -> None:
    url = "postgresql://qwatch:s3cret@127.0.0.1:9/history"  # discard port: nothing listens
    code, _, err = qwatch(capsys, "history", "web-1", "--db", url)
    assert code == 1 and "cannot read the history database" in err
    assert "s3cret" not in err and "Traceback" not in err


# --------------------------------------------------------------------------- a real cluster


@pytest.mark.slow
def test_history_recorded_by_the_daemon(
    redis_server: Any,
    django_project_factory: Any,
    daemon_factory: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.helpers import wait_for
    from tests.plugins.qwatch_daemon import query

    name = "qwatchhist"
    db = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    project = django_project_factory(redis_server.url, name=name)
    project.start_cluster()
    daemon = daemon_factory(name=name, redis_url=redis_server.url, db_url=db)

    def kinds() -> list[str]:
        return [k for (k,) in query(db, "SELECT kind FROM events")]

    wait_for(lambda: "appeared" in kinds(), 30, "the cluster to appear")
    project.enqueue("nap:0.5", "die")
    wait_for(lambda: "reincarnated" in kinds(), 60, "a reincarnation")
    assert daemon.terminate() == 0
    [(cluster_id, host)] = query(db, "SELECT cluster_id, host FROM clusters")

    code, out, err = qwatch(capsys, "history", cluster_id[-8:], "--format", "json", "--db", db)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert [c["cluster_id"] for c in doc["clusters"]] == [cluster_id]
    assert {"appeared", "reincarnated"} <= {e["kind"] for e in doc["events"]}
    assert doc["summary"]["reincarnations"] >= 1
    assert any(b["states"] for b in doc["buckets"])

    code, out, _ = qwatch(capsys, "history", host, "--format", "csv", "--every", "1m", "--db", db)
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and any(cluster_id in r["cluster_ids"] for r in rows)
    code, out, _ = qwatch(capsys, "history", host, "--events", "--db", db)
    assert code == 0 and "reincarnated" in out


def test_events_list_alert_starts_and_ends_beside_the_events(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qwatch.alerts.rules import Alert
    from tests.helpers import write_small_history

    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    now = datetime.now(UTC).replace(microsecond=0)
    cluster_id = write_small_history(url, now)
    host = "web-1"
    down = Alert(
        "cluster_down", "shop", host, "critical", f"shop: no live cluster on {host} for 1m",
        now - timedelta(minutes=5), ended_at=now - timedelta(minutes=2), host=host,
    )  # fmt: skip
    elsewhere = Alert(
        "cluster_down", "shop", "web-9", "critical", "web-9", down.started_at, host="web-9"
    )

    async def write() -> None:
        engine = create_engine(url)
        writer = Writer(engine)
        writer.submit(Batch("shop", now, alerts_fired=[down, elsewhere], alerts_resolved=[down]))
        await writer.flush()
        await engine.dispose()

    asyncio.run(write())
    rng = ["--since", "1h", "--db", url]
    code, out, _ = qwatch(capsys, "history", cluster_id[-8:], *rng, "--events")
    lines = out.splitlines()[3:]
    assert code == 0 and [line.split()[3] for line in lines] == ["alert_fired", "alert_resolved"]
    assert "cluster_down (critical): shop: no live cluster on web-1" in lines[0]
    assert lines[1].endswith("cluster_down after 3m")
    code, out, _ = qwatch(capsys, "history", cluster_id[-8:], *rng, "--events", "--format", "json")
    [alert] = json.loads(out)["alerts"]
    assert (alert["subject"], alert["resolved_at"]) == (host, down.ended_at.isoformat())
    code, out, _ = qwatch(capsys, "history", cluster_id[-8:], *rng, "--events", "--format", "csv")
    assert [row["kind"] for row in csv.DictReader(io.StringIO(out))] == [
        "alert_fired",
        "alert_resolved",
    ]


def test_history_summarizes_each_queue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.helpers import write_small_history

    url = f"sqlite:///{tmp_path / 'history.sqlite3'}"
    now = datetime.now(UTC).replace(microsecond=0)
    cluster_id = write_small_history(url, now)
    samples = []
    for minutes, first, long in ((3, 2, None), (2, 6, 10), (1, 4, 20)):
        at = now - timedelta(minutes=minutes)
        samples += [(Backlog("shop", "redis", first), at)]
        reason = "" if long is not None else "broker key holds something other than a list"
        samples += [(Backlog("long", "redis", long, reason=reason), at)]

    async def write() -> None:
        engine = create_engine(url)
        writer = Writer(engine)
        writer.submit(Batch("shop", now, queues=samples))
        await writer.flush()
        await engine.dispose()

    asyncio.run(write())
    rng = ["--since", "1h", "--db", url]
    code, out, _ = qwatch(capsys, "history", cluster_id[-8:], *rng)
    assert code == 0
    assert "backlog long    max 20, mean 15.00 (3 samples, 1 unknown)" in out
    assert "backlog shop    max 6, mean 4.00 (3 samples)" in out
    code, out, _ = qwatch(capsys, "history", cluster_id[-8:], *rng, "--format", "json")
    queues = json.loads(out)["summary"]["queues"]
    assert [(q["queue"], q["known"], q["length_max"]) for q in queues] == [
        ("long", 2, 20),
        ("shop", 3, 6),
    ]
