"""qwatch.timeline and qwatch.durations: pure, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qwatch import timeline as tl
from qwatch.durations import DurationError, parse_duration, parse_time
from tests.helpers import run_row

T0 = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday
NOW = T0 + timedelta(days=10)
S, M, H, D = (timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1),
              timedelta(days=1))  # fmt: skip


def t(hours: float = 0, minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def span(a: float, b: float) -> tl.Span:
    """Hours after T0."""
    return tl.Span(t(a), t(b))


def run(
    pk: int,
    first: float,
    last: float,
    ended: float | None = None,
    *,
    host: str = "web-1",
    tob: float | None = None,
) -> tl.Run:
    return run_row(
        pk,
        host=host,
        tob=t(first if tob is None else tob),
        first_seen=t(first),
        last_seen=t(last),
        ended_at=None if ended is None else t(ended),
    )


def point(pk: int, at: datetime, tq: int = 1, *, n: int = 1, **changes: object) -> tl.Point:
    fields: dict[str, object] = dict(
        cluster_pk=pk, at=at, n=n, states=frozenset({"Idle"}), pool=4, tq_max=tq,
        tq_sum=float(tq * n), rq_max=0, rq_sum=0.0, rc=0,
    )  # fmt: skip
    fields.update(changes)
    return tl.Point(**fields)  # type: ignore[arg-type]


def test_states_are_the_decoders() -> None:
    # Kept apart so the read side never imports the decoder (and Django with it).
    from qwatch.values import STATES

    assert tl.STATES == STATES


# --------------------------------------------------------------------------- spans


@pytest.mark.parametrize(
    ("spans", "merged"),
    [
        ([], []),
        ([span(0, 1), span(2, 3)], [span(0, 1), span(2, 3)]),
        ([span(2, 3), span(0, 1), span(0.5, 2)], [span(0, 3)]),
        ([span(0, 1), span(1, 2)], [span(0, 2)]),  # touching spans merge
        ([span(0, 4), span(1, 2)], [span(0, 4)]),  # a span inside another
        ([span(1, 1), span(2, 1)], []),  # empty and reversed spans drop out
    ],
)
def test_union(spans: list[tl.Span], merged: list[tl.Span]) -> None:
    assert tl.union(spans) == merged


@pytest.mark.parametrize(
    ("spans", "holes", "left"),
    [
        ([span(0, 10)], [], [span(0, 10)]),
        ([span(0, 10)], [span(2, 3), span(5, 6)], [span(0, 2), span(3, 5), span(6, 10)]),
        ([span(0, 10)], [span(-1, 1), span(9, 11)], [span(1, 9)]),
        ([span(0, 2), span(4, 6)], [span(1, 5)], [span(0, 1), span(5, 6)]),
        ([span(0, 2)], [span(0, 2)], []),
    ],
)
def test_subtract(spans: list[tl.Span], holes: list[tl.Span], left: list[tl.Span]) -> None:
    assert tl.subtract(spans, holes) == left


def test_intersect_and_total() -> None:
    assert tl.intersect([span(0, 3), span(5, 8)], span(2, 6)) == [span(2, 3), span(5, 6)]
    assert tl.total_s([span(0, 1), span(0.5, 1.5)]) == 1.5 * 3600


# --------------------------------------------------------------------------- runs


def test_a_run_is_up_from_first_sight_to_its_end() -> None:
    assert run(1, 0, 5, ended=6).up(NOW) == span(0, 6)  # ended: to ended_at
    fresh = run(2, 0, 0)
    assert fresh.up(t(0, 1)) == tl.Span(t(0), t(0, 1))  # refreshed a minute ago: to now
    assert run(3, 0, 5).up(NOW) == span(0, 5)  # not refreshed for days: to last_seen
    assert run(3, 0, 5).stale(NOW) and not run(3, 0, 5).stale(t(5, 1))


def test_observed_starts_at_first_sight_and_ends_where_watching_stopped() -> None:
    window = span(-10, 100)
    assert tl.observed([], window, NOW) is None
    assert tl.observed([run(1, 0, 5, ended=6)], window, NOW) == span(0, 100)
    # An open run the daemon stopped refreshing: nothing after its last sighting is known.
    assert tl.observed([run(1, 0, 4, ended=4), run(2, 5, 50)], window, NOW) == span(0, 50)
    # But a run still refreshed says the daemon is watching.
    live = run(3, 60, 99.99)
    assert tl.observed([run(2, 5, 50), live], window, t(100)) == span(5, 100)


# --------------------------------------------------------------------------- availability


def test_restarts_on_a_host() -> None:
    # Three runs: ended at 10h, the next seen 5 min later, then a crash and a 1 h hole.
    runs = [run(1, -5, 10, ended=10), run(2, 10 + 5 / 60, 20, ended=20), run(3, 21, 30)]
    window = span(0, 30)
    a = tl.availability(runs, [], window, t(30))  # run 3 refreshed just now
    assert (a.range_s, a.unknown_s, a.gap_s) == (30 * 3600, 0, 0)
    assert a.down_s == 300 + 3600 and a.up_s == 30 * 3600 - 3900
    assert a.ratio == pytest.approx(1 - 3900 / (30 * 3600))
    assert tl.downtimes(runs, [], window, t(30)) == [tl.Span(t(10), t(10, 5)), span(20, 21)]


def test_gaps_are_unknown_not_down() -> None:
    runs = [run(1, 0, 10, ended=10), run(2, 11, 30)]
    gaps = [span(10.5, 11.5), span(2, 3)]  # one over the restart, one while up
    a = tl.availability(runs, gaps, span(0, 30), t(30))
    assert a.gap_s == a.unknown_s == 2 * 3600
    assert a.down_s == 0.5 * 3600  # 10h..10h30 only: the rest of the hole is in a gap
    assert a.up_s == 28 * 3600 - a.down_s
    assert tl.downtimes(runs, gaps, span(0, 30), t(30)) == [span(10, 10.5)]


def test_overlapping_runs_count_once_and_a_run_before_the_range_is_clipped() -> None:
    runs = [run(1, -100, 5, ended=5), run(2, 4, 8, ended=8), run(3, 7, 12, ended=12)]
    a = tl.availability(runs, [], span(0, 10), NOW)
    assert (a.up_s, a.down_s, a.unknown_s) == (10 * 3600, 0, 0)


def test_nothing_known() -> None:
    a = tl.availability([run(1, 50, 60, ended=60)], [], span(0, 10), NOW)
    assert a.observed is None and a.ratio is None and a.unknown_s == 10 * 3600
    assert tl.availability([], [], span(0, 10), NOW).ratio is None


# --------------------------------------------------------------------------- plan


@pytest.mark.parametrize(
    ("length", "every"),
    [(H, 2 * M), (D, 30 * M), (2 * D, H), (7 * D, 6 * H), (30 * D, D), (365 * D, 14 * D)],
)
def test_default_every_keeps_to_50_rows(length: timedelta, every: timedelta) -> None:
    assert tl.default_every(length) == every
    assert length / every <= tl.MAX_ROWS


@pytest.mark.parametrize(
    ("back", "length", "every", "source", "width"),
    [
        (D, D, None, tl.Source.SAMPLES, 30 * M),
        (3 * D, 3 * D, None, tl.Source.MINUTES, 2 * H),
        (30 * D, 30 * D, None, tl.Source.HOURS, D),
        (10 * D, H, None, tl.Source.MINUTES, 2 * M),  # samples are gone that far back
        (40 * D, H, None, tl.Source.HOURS, H),  # minutes too: the width grows to an hour
        (D, D, 10 * S, tl.Source.SAMPLES, 10 * S),
        (3 * D, 3 * D, 30 * S, tl.Source.SAMPLES, 30 * S),  # finer than minutes: samples
        (12 * D, 3 * D, 5 * M, tl.Source.MINUTES, 5 * M),
        (12 * D, 12 * D, 90 * M, tl.Source.MINUTES, 90 * M),  # not whole hours
        (D, D, H, tl.Source.SAMPLES, H),
    ],
)
def test_plan_picks_the_source(
    back: timedelta,
    length: timedelta,
    every: timedelta | None,
    source: tl.Source,
    width: timedelta,
) -> None:
    since = NOW - back
    plan = tl.plan(since, since + length, NOW, every)
    assert (plan.source, plan.every) == (source, width)


def test_plan_cuts_until_to_now() -> None:
    assert tl.plan(NOW - H, NOW + D, NOW).until == NOW


@pytest.mark.parametrize(
    ("since", "until", "every", "message"),
    [
        (NOW - H, NOW - 2 * H, None, "must be before --until"),
        (NOW - H, NOW - H, None, "must be before --until"),
        (NOW + H, NOW + 2 * H, None, "starts in the future"),
        (NOW - 30 * D, NOW, S, "makes 2592000 rows"),
        (NOW - 40 * D, NOW - 39 * D, 5 * M, "use a multiple of 1h"),
        (NOW - 20 * D, NOW - 19 * D, 30 * S, "kept for 7d"),
        (NOW - H, NOW, timedelta(milliseconds=1500), "whole number of seconds"),
    ],
)
def test_plan_refuses(
    since: datetime, until: datetime, every: timedelta | None, message: str
) -> None:
    with pytest.raises(tl.PlanError, match=message):
        tl.plan(since, until, NOW, every)


def test_buckets_line_up_on_midnight_and_mondays() -> None:
    assert tl.floor(t(13, 47, 12), 15 * M) == t(13, 45)
    assert tl.floor(t(13, 47), D) == T0
    assert tl.floor(T0 + 3 * D, 7 * D) == T0  # T0 is a Monday
    plan = tl.Plan(t(0, 10), t(2, 5), H, tl.Source.SAMPLES)
    assert plan.grid() == [tl.Span(t(0, 10), t(1)), span(1, 2), tl.Span(t(2), t(2, 5))]


# --------------------------------------------------------------------------- buckets


def test_bucketize() -> None:
    plan = tl.Plan(t(0), t(4), H, tl.Source.SAMPLES)
    runs = [run(1, -1, 2, ended=2, tob=-2), run(2, 2.5, 4, ended=4, tob=2.4)]
    points = [
        point(1, t(0, 10), 2),
        point(1, t(0, 40), 6, states=frozenset({"Working"}), queued_max=9, queued_sum=9.0,
              queued_n=1),
        point(1, t(1, 30), 1, pool=3, rc=2),
        point(2, t(2, 40), 5, states=frozenset({"Starting"})),
        point(2, t(2, 50), 0, rc=1),
        point(1, t(4), 99),  # at the range's end: outside it
    ]  # fmt: skip
    gaps = [span(3, 3.25)]
    b = tl.bucketize(plan, runs, points, gaps, NOW)
    assert [x.span for x in b] == [span(0, 1), span(1, 2), span(2, 3), span(3, 4)]
    zero, one, two, three = b
    assert zero.states == ("Idle", "Working") and zero.label == "Idle+Working"
    assert (zero.tq_max, zero.tq_avg, zero.queued_max, zero.queued_avg) == (6, 4.0, 9, 9.0)
    assert (zero.uptime_s, zero.rc, zero.cluster_ids) == (3 * 3600, 0, ("cluster-0001",))
    assert (one.pool, one.rc, one.queued_max) == (3, 2, None)
    # Run 1 ended at 2h; run 2 seen from 2h30: down for half an hour, and its counts.
    assert two.cluster_ids == ("cluster-0002",)
    assert (two.up_s, two.down_s, two.rc, two.states) == (1800, 1800, 1, ("Starting", "Idle"))
    assert two.uptime_s == 0.6 * 3600  # born at 2h24
    assert (three.up_s, three.unknown_s, three.gap_s) == (2700, 900, 900)
    assert three.states == () and three.label == "up" and three.tq_max is None


def test_bucket_labels() -> None:
    plan = tl.Plan(t(0), t(3), H, tl.Source.SAMPLES)
    runs = [run(1, 1, 2, ended=2)]
    b = tl.bucketize(plan, runs, [], [span(2, 3)], NOW)
    assert [x.label for x in b] == ["-", "up", "gap"]  # before first sight: no history
    b = tl.bucketize(tl.Plan(t(0), t(4), H, tl.Source.SAMPLES), runs, [], [], NOW)
    assert [x.label for x in b] == ["-", "up", "down", "down"]


def test_a_restart_inside_a_bucket_shows_the_newest_run() -> None:
    plan = tl.Plan(t(0), t(1), H, tl.Source.SAMPLES)
    runs = [run(1, -5, 0.25, ended=0.25), run(2, 0.5, 1, ended=1)]
    points = [point(1, t(0, 5), rc=7), point(2, t(0, 40), rc=0)]
    [b] = tl.bucketize(plan, runs, points, [], NOW)
    assert b.cluster_ids == ("cluster-0001", "cluster-0002")
    assert (b.rc, b.uptime_s, b.down_s) == (0, 1800, 900)


def test_summarize() -> None:
    plan = tl.Plan(t(0), t(10), 2 * H, tl.Source.MINUTES)
    runs = [run(1, 0, 3, ended=3), run(2, 4, 10, ended=10)]
    points = [point(1, t(1), 2, n=3), point(2, t(5), 6, n=1), point(2, t(11), 50)]
    events = [
        tl.EventRow(t(4), 2, "cluster-0002", "restarted", {"previous": "cluster-0001"}),
        tl.EventRow(t(5), 2, "cluster-0002", "reincarnated", {"by": 2, "total": 2}),
        tl.EventRow(t(6), 2, "cluster-0002", "reincarnated", {"by": 1, "total": 3}),
        tl.EventRow(t(10), 2, "cluster-0002", "restarted", {}),  # the range's end: outside
    ]
    s = tl.summarize(plan, runs, points, [], events, NOW)
    assert (s.restarts, s.reincarnations) == (1, 3)
    assert s.longest_downtime == span(3, 4)
    assert (s.tq_mean, s.tq_max) == ((2 * 3 + 6) / 4, 6)
    assert s.availability.ratio == pytest.approx(0.9)


def test_the_first_of_equal_downtimes_is_the_longest() -> None:
    plan = tl.Plan(t(0), t(10), H, tl.Source.SAMPLES)
    runs = [run(1, 1, 2, ended=2), run(2, 3, 4, ended=4), run(3, 5, 10, ended=10)]
    assert tl.summarize(plan, runs, [], [], [], NOW).longest_downtime == span(2, 3)


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90m", 5400), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1h30m", 5400),
     ("45s", 45), (" 2H ", 7200)],
)  # fmt: skip
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [("90", "no unit"), ("2 h", "cannot read"), ("1.5h", "cannot read"), ("", "cannot read"),
     ("-2h", "cannot read"), ("2y", "cannot read")],
)  # fmt: skip
def test_parse_duration_refuses(text: str, message: str) -> None:
    with pytest.raises(DurationError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2h", NOW - 2 * H),
        ("now", NOW),
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025-03-01T10:00", datetime(2025, 3, 1, 10, tzinfo=UTC)),  # naive is UTC
        ("2025-03-01 10:00:30Z", datetime(2025, 3, 1, 10, 0, 30, tzinfo=UTC)),
        ("2025-03-01T12:00+02:00", datetime(2025, 3, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_time(text: str, moment: datetime) -> None:
    parsed = parse_time(text, NOW)
    assert parsed == moment and parsed.tzinfo is UTC


def test_parse_time_refuses() -> None:
    with pytest.raises(DurationError, match="ISO time like"):
        parse_time("yesterday", NOW)
