"""Pure arithmetic over a stored history: spans, availability, downtime, buckets, summary.

Shared by `qwatch history` and the monitor's history pane. No I/O and no clock: the
store's rows come in as the plain values below and `now` is an argument.

Values
- `Span`: a half-open [start, end) of aware UTC datetimes.
- `Run`: one cluster run (a `clusters` row). `Run.up(now)` is when it was up.
- `Point`: one stored row of measurements, normalised: a raw sample or a rollup row.
- `EventRow`: one stored event.
- `Plan`: the range, the bucket width and the table the buckets come from (`plan()`).
- `Bucket`: one row of the history table (`bucketize()`).
- `Summary`: the numbers under the table (`summarize()`), with its `Availability`.

Rules (docs/reporting.md says the same for the SQL views)
- A run is up from `first_seen` (the daemon's first sight of it) to `ended_at`. An open run
  (no `ended_at`) is up to `now` while the daemon still refreshes its `last_seen` (within
  STALE_AFTER), else to its `last_seen`: the daemon stopped watching then, because a
  watching daemon either refreshes a run or ends it. The rest of the range is unwatched.
- Time is *unknown*, neither up nor down, inside gaps (Redis unreachable, or no daemon
  sampling: see GapKind), before the selection was first seen, and after the daemon
  stopped watching. Availability = up / (range - unknown).
- Downtime is known time in which no run of the selection was up; restarts on one host
  leave downtime between one run's end and the next one's first sighting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from qwatch.errors import UserError
from qwatch.fmt import duration, when_in
from qwatch.retention import Retention
from qwatch.values import STATES, EventRow, Point, Run, Source, Span

MAX_ROWS = 50  # the default bucket width keeps the table to this many rows
MAX_BUCKETS = 10_000  # refuse an explicit width that would print more
# Buckets line up on multiples of their width from a Monday, so weeks start on Mondays
# and every width that divides a day starts at midnight UTC.
ORIGIN = datetime(1970, 1, 5, tzinfo=UTC)
NICE_WIDTHS = tuple(
    timedelta(seconds=s)
    for s in (10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200)
) + tuple(timedelta(days=d) for d in (1, 2, 7, 14, 28))


class PlanError(UserError, ValueError):
    """A range or bucket width that cannot be shown; the message says why."""


# --------------------------------------------------------------------------- spans


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, merged, without empty spans."""
    merged: list[Span] = []
    for span in sorted(s for s in spans if s.start < s.end):
        if merged and span.start <= merged[-1].end:
            if span.end > merged[-1].end:
                merged[-1] = Span(merged[-1].start, span.end)
        else:
            merged.append(span)
    return merged


def intersect(spans: Iterable[Span], window: Span) -> list[Span]:
    return [c for s in union(spans) if (c := s.clip(window)) is not None]


def subtract(spans: Iterable[Span], holes: Iterable[Span]) -> list[Span]:
    """`spans` with every hole cut out."""
    cut = union(holes)
    result: list[Span] = []
    for span in union(spans):
        start = span.start
        for hole in cut:
            if hole.end <= start or hole.start >= span.end:
                continue
            if hole.start > start:
                result.append(Span(start, hole.start))
            start = max(start, hole.end)
        if start < span.end:
            result.append(Span(start, span.end))
    return result


def total_s(spans: Iterable[Span]) -> float:
    return sum(s.seconds for s in union(spans))


# --------------------------------------------------------------------------- rows in


# --------------------------------------------------------------------------- plan


RESOLUTION = {
    Source.SAMPLES: timedelta(seconds=1),
    Source.MINUTES: timedelta(minutes=1),
    Source.HOURS: timedelta(hours=1),
}
# Up to these range lengths a source is preferred: finer is fresher and truer, coarser
# reads far fewer rows.
PREFERRED_UP_TO = {Source.SAMPLES: timedelta(days=1), Source.MINUTES: timedelta(days=7)}
_ORDER = (Source.SAMPLES, Source.MINUTES, Source.HOURS)


@dataclass(frozen=True)
class Plan:
    since: datetime
    until: datetime
    every: timedelta
    source: Source

    @property
    def range(self) -> Span:
        return Span(self.since, self.until)

    def bucket_of(self, at: datetime) -> datetime:
        return floor(at, self.every)

    def grid(self) -> list[Span]:
        """The buckets, clipped to the range: the first and last may be partial."""
        spans = []
        start = floor(self.since, self.every)
        while start < self.until:
            end = start + self.every
            spans.append(Span(max(start, self.since), min(end, self.until)))
            start = end
        return spans


def floor(at: datetime, every: timedelta) -> datetime:
    """The start of the bucket of width `every` holding `at`."""
    steps = (at - ORIGIN) // every
    return ORIGIN + steps * every


def default_every(length: timedelta) -> timedelta:
    """The narrowest nice width that keeps `length` to MAX_ROWS buckets."""
    for width in NICE_WIDTHS:
        if length / width <= MAX_ROWS:
            return width
    return timedelta(seconds=math.ceil(length.total_seconds() / MAX_ROWS))


def plan(
    since: datetime,
    until: datetime,
    now: datetime,
    every: timedelta | None = None,
    kept: Retention | None = None,
) -> Plan:
    """Check the range and pick the bucket width (when not given) and source.

    The source is the finest whose rows still reach back to `since` and into whose
    resolution `every` divides, preferring samples up to a day, minute rollups up to a
    week and hour rollups beyond. `until` past `now` is cut to now.
    """
    kept = kept or Retention()
    if since >= until:
        raise PlanError(f"--since ({when_in(since)}) must be before --until ({when_in(until)})")
    if since >= now:
        raise PlanError(f"the range starts in the future ({when_in(since)}, now is {when_in(now)})")
    until = min(until, now)
    length = until - since
    reach = {
        Source.SAMPLES: since >= now - kept.samples,
        Source.MINUTES: since >= now - kept.minutes,
        Source.HOURS: True,
    }
    preferred = next((s for s, limit in PREFERRED_UP_TO.items() if length <= limit), Source.HOURS)
    first = _ORDER.index(preferred)
    order = [*_ORDER[first:], *reversed(_ORDER[:first])]
    if every is None:
        source = next(s for s in order if reach[s])
        width = _round_up(default_every(length), RESOLUTION[source])
        return Plan(since, until, width, source)
    if every < RESOLUTION[Source.SAMPLES] or every % RESOLUTION[Source.SAMPLES]:
        raise PlanError("--every must be a whole number of seconds, 1s or more")
    if length / every > MAX_BUCKETS:
        raise PlanError(
            f"--every {duration(every)} over {duration(length)} makes {math.ceil(length / every)} "
            f"rows; use a width that makes at most {MAX_BUCKETS}"
        )
    for source in order:
        if reach[source] and every % RESOLUTION[source] == timedelta(0):
            return Plan(since, until, every, source)
    kept_for = kept.minutes if every % RESOLUTION[Source.MINUTES] == timedelta(0) else kept.samples
    coarsest = next(s for s in _ORDER if reach[s])
    raise PlanError(
        f"--every {duration(every)}: rows that fine are kept for {duration(kept_for)} and this "
        f"range starts before that; use a multiple of {duration(RESOLUTION[coarsest])}"
    )


def _round_up(width: timedelta, resolution: timedelta) -> timedelta:
    return -(-width // resolution) * resolution


# --------------------------------------------------------------------------- availability


@dataclass(frozen=True)
class Availability:
    range_s: float  # the whole range
    observed: Span | None  # from the first sighting to the end of watching, within the range
    unknown_s: float  # range time in gaps, before the first sighting or after watching ended
    gap_s: float  # of which in gaps
    up_s: float  # known time with some run of the selection up
    down_s: float  # known time with none up

    @property
    def known_s(self) -> float:
        return self.up_s + self.down_s

    @property
    def ratio(self) -> float | None:
        """up / known, or None when no time of the range is known."""
        return self.up_s / self.known_s if self.known_s > 0 else None


def observed(runs: Sequence[Run], window: Span, now: datetime) -> Span | None:
    """The part of `window` the history speaks for: from the selection's first sighting to
    the end of the window, or to where the daemon stopped watching a run it never ended."""
    if not runs:
        return None
    start = min(r.first_seen for r in runs)
    end = window.end
    if any(r.stale(now) for r in runs) and not any(
        r.ended_at is None and not r.stale(now) for r in runs
    ):
        # The daemon's last sign of life in this selection: nothing after it was watched.
        end = max(r.ended_at or r.last_seen for r in runs)
    return Span(start, end).clip(window)


def known_spans(
    runs: Sequence[Run], gaps: Sequence[Span], window: Span, now: datetime
) -> list[Span]:
    seen = observed(runs, window, now)
    return subtract([seen], gaps) if seen else []


def up_spans(runs: Sequence[Run], now: datetime) -> list[Span]:
    """When some run of the selection was up (merged: overlapping runs count once)."""
    return union(r.up(now) for r in runs)


def availability(
    runs: Sequence[Run], gaps: Sequence[Span], window: Span, now: datetime
) -> Availability:
    known = known_spans(runs, gaps, window, now)
    up = total_s(s for k in known for s in intersect(up_spans(runs, now), k))
    known_s = total_s(known)
    return Availability(
        range_s=window.seconds,
        observed=observed(runs, window, now),
        unknown_s=window.seconds - known_s,
        gap_s=total_s(intersect(gaps, window)),
        up_s=up,
        down_s=known_s - up,
    )


def downtimes(runs: Sequence[Run], gaps: Sequence[Span], window: Span, now: datetime) -> list[Span]:
    """Known stretches with no run up, in time order (a gap splits a stretch in two)."""
    return subtract(known_spans(runs, gaps, window, now), up_spans(runs, now))


# --------------------------------------------------------------------------- buckets


@dataclass(frozen=True)
class Bucket:
    span: Span  # clipped to the range
    cluster_ids: tuple[str, ...]  # runs up in the bucket, oldest first
    states: tuple[str, ...]  # in STATES order
    pool: int | None
    tq_max: int | None
    tq_avg: float | None
    rq_max: int | None
    rq_avg: float | None
    queued_max: int | None
    queued_avg: float | None
    rc: int | None  # reincarnations so far of the newest run in the bucket
    uptime_s: float | None  # the newest run's uptime at the end of the bucket (or of the run)
    up_s: float  # known time with some run up
    down_s: float  # known time with none up
    unknown_s: float  # gaps, before the first sighting, after watching stopped
    gap_s: float  # of which in gaps

    @property
    def label(self) -> str:
        """What the bucket says at a glance: its states, "down", "gap" or "-" (no history)."""
        if self.states:
            return "+".join(self.states)
        if self.up_s > 0:
            return "up"
        if self.down_s > 0:
            return "down"
        return "gap" if self.gap_s > 0 else "-"


class _Acc:
    """One bucket's points while they add up."""

    def __init__(self) -> None:
        self.n = 0
        self.states: set[str] = set()
        self.pool: int | None = None
        self.tq_max = self.rq_max = 0
        self.tq_sum = self.rq_sum = self.queued_sum = 0.0
        self.queued_max: int | None = None
        self.queued_n = 0
        self.rc: dict[int, int] = {}

    def add(self, p: Point) -> None:
        self.n += p.n
        self.states |= p.states
        self.pool = p.pool if self.pool is None else min(self.pool, p.pool)
        self.tq_max = max(self.tq_max, p.tq_max)
        self.rq_max = max(self.rq_max, p.rq_max)
        self.tq_sum += p.tq_sum
        self.rq_sum += p.rq_sum
        if p.queued_max is not None:
            self.queued_max = max(self.queued_max or 0, p.queued_max)
            self.queued_sum += p.queued_sum
            self.queued_n += p.queued_n
        self.rc[p.cluster_pk] = max(self.rc.get(p.cluster_pk, 0), p.rc)


def bucketize(
    plan: Plan, runs: Sequence[Run], points: Iterable[Point], gaps: Sequence[Span], now: datetime
) -> list[Bucket]:
    """One bucket per width of the range, oldest first, empty ones included."""
    grid = plan.grid()
    if not grid:
        return []
    first = floor(plan.since, plan.every)
    accs = [_Acc() for _ in grid]
    for p in points:
        if plan.since <= p.at < plan.until:
            accs[(p.at - first) // plan.every].add(p)
    ups = {r.pk: r.up(now) for r in runs}
    merged_up = union(ups.values())
    buckets = []
    for span, acc in zip(grid, accs, strict=True):
        known = known_spans(runs, gaps, span, now)
        up_s = total_s(s for k in known for s in intersect(merged_up, k))
        known_s = total_s(known)
        present = sorted(
            (r for r in runs if ups[r.pk].clip(span) is not None), key=lambda r: (r.tob, r.pk)
        )
        newest = present[-1] if present else None
        # the newest run that left points here: a restart resets the count
        rc_pk = next((r.pk for r in reversed(present) if r.pk in acc.rc), None)
        buckets.append(
            Bucket(
                span=span,
                cluster_ids=tuple(r.cluster_id for r in present),
                states=tuple(s for s in STATES if s in acc.states),
                pool=acc.pool,
                tq_max=acc.tq_max if acc.n else None,
                tq_avg=acc.tq_sum / acc.n if acc.n else None,
                rq_max=acc.rq_max if acc.n else None,
                rq_avg=acc.rq_sum / acc.n if acc.n else None,
                queued_max=acc.queued_max,
                queued_avg=acc.queued_sum / acc.queued_n if acc.queued_n else None,
                rc=acc.rc[rc_pk] if rc_pk is not None else None,
                uptime_s=_uptime(newest, ups, span),
                up_s=up_s,
                down_s=known_s - up_s,
                unknown_s=span.seconds - known_s,
                gap_s=total_s(intersect(gaps, span)),
            )
        )
    return buckets


def _uptime(run: Run | None, ups: dict[int, Span], span: Span) -> float | None:
    if run is None:
        return None
    end = min(span.end, ups[run.pk].end)
    return max(0.0, (end - run.tob).total_seconds())


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class Summary:
    availability: Availability
    restarts: int  # `restarted` events in the range
    reincarnations: int  # workers reincarnated in the range (sum of the events' `by`)
    longest_downtime: Span | None
    tq_mean: float | None  # over the polls the points stand for
    tq_max: int | None


def summarize(
    plan: Plan,
    runs: Sequence[Run],
    points: Iterable[Point],
    gaps: Sequence[Span],
    events: Iterable[EventRow],
    now: datetime,
) -> Summary:
    window = plan.range
    down = downtimes(runs, gaps, window, now)
    n, tq_sum, tq_max = 0, 0.0, None
    for p in points:
        if plan.since <= p.at < plan.until:
            n += p.n
            tq_sum += p.tq_sum
            tq_max = p.tq_max if tq_max is None else max(tq_max, p.tq_max)
    restarts = reincarnations = 0
    for e in events:
        if not plan.since <= e.at < plan.until:
            continue
        if e.kind == "restarted":
            restarts += 1
        elif e.kind == "reincarnated":
            reincarnations += int(e.detail.get("by", 1))
    return Summary(
        availability=availability(runs, gaps, window, now),
        restarts=restarts,
        reincarnations=reincarnations,
        # the earliest of the longest, so the answer does not depend on the sort
        longest_downtime=max(down, key=lambda s: (s.seconds, -s.start.timestamp()), default=None),
        tq_mean=tq_sum / n if n else None,
        tq_max=tq_max,
    )
