"""Per-minute rollups of one cluster's polls (pure: time is passed in).

Rows are additive, so partial rows for the same (site, cluster_id, tob, bucket) — say one
drained at shutdown and one after the restart — combine. How each column combines is
`MERGE_RULES`, defined once here: `merge()` and `hour_of()` apply it in Python, and the
store generates its SQL from it (qwatch/store/rollups.py: the minute upsert and the hour
roll-up; tests/test_store_rollups.py holds that SQL to `combine()` on both engines). n and
every *_s add, mins take the min, maxes the max, and averages weight by n over the rows
that know the value. The queued_* columns cover the polls that knew the broker backlog and
are None when none did; an unknown backlog yields to a known one. That makes queued_avg
the one column whose merge depends on grouping when known and unknown rows mix: a merged
row carries no count of the polls that knew it, so its n (all polls) weighs it.

Seconds in state: the time between a cluster's consecutive polls goes to the status of the
earlier poll, split at minute boundaries. A step longer than `max_step_s` counts for nothing:
the daemon was not looking (stalled, Redis down, record lapsed), so it is not observed time.
A cluster's last poll before it vanishes therefore adds no seconds either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from qwatch.values import STATES, ClusterStat

MINUTE = timedelta(minutes=1)
_ZERO = timedelta(0)

_RowKey = tuple[str, str, datetime]  # (site, cluster_id, tob)


@dataclass(frozen=True, slots=True)
class MinuteRow:
    site: str
    cluster_id: str
    tob: datetime
    bucket: datetime  # aware UTC start of the minute (of the hour, from hour_of)
    n: int  # polls
    tq_min: int  # task queue (task_q_size)
    tq_max: int
    tq_avg: float
    rq_min: int  # result queue (done_q_size)
    rq_max: int
    rq_avg: float
    queued_min: int | None  # broker backlog over the polls that knew it; None if none did
    queued_max: int | None
    queued_avg: float | None
    rc_max: int
    pool_min: int
    starting_s: float
    idle_s: float
    working_s: float
    stopping_s: float
    stopped_s: float
    observed_s: float  # the sum of the five above


_STATE_FIELD = {
    "Starting": "starting_s",
    "Idle": "idle_s",
    "Working": "working_s",
    "Stopping": "stopping_s",
    "Stopped": "stopped_s",
}
assert set(_STATE_FIELD) == set(STATES)


def minute_of(at: datetime) -> datetime:
    return _utc(at).replace(second=0, microsecond=0)


def hour_start(at: datetime) -> datetime:
    return _utc(at).replace(minute=0, second=0, microsecond=0)


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: qwatch keeps aware UTC times")
    return at.astimezone(UTC)


class Merge(StrEnum):
    """How one rollup column combines over rows of the same cluster and bucket."""

    SUM = "sum"  # counts and seconds add
    MIN = "min"
    MAX = "max"
    MEAN = "mean"  # averages, weighted by each row's n


@dataclass(frozen=True, slots=True)
class Rule:
    how: Merge
    nullable: bool = False  # None means "no poll knew": ignored, and None if every row is


# Every value column of a rollup row (MinuteRow's, and the store's rollup tables'), in
# table order. The one definition of the merge; see the module docstring.
MERGE_RULES: dict[str, Rule] = {
    "n": Rule(Merge.SUM),
    "tq_min": Rule(Merge.MIN),
    "tq_max": Rule(Merge.MAX),
    "tq_avg": Rule(Merge.MEAN),
    "rq_min": Rule(Merge.MIN),
    "rq_max": Rule(Merge.MAX),
    "rq_avg": Rule(Merge.MEAN),
    "queued_min": Rule(Merge.MIN, nullable=True),
    "queued_max": Rule(Merge.MAX, nullable=True),
    "queued_avg": Rule(Merge.MEAN, nullable=True),
    "rc_max": Rule(Merge.MAX),
    "pool_min": Rule(Merge.MIN),
    "starting_s": Rule(Merge.SUM),
    "idle_s": Rule(Merge.SUM),
    "working_s": Rule(Merge.SUM),
    "stopping_s": Rule(Merge.SUM),
    "stopped_s": Rule(Merge.SUM),
    "observed_s": Rule(Merge.SUM),
}
assert list(MERGE_RULES) == [f.name for f in fields(MinuteRow)][4:]


def combine(rows: Sequence[MinuteRow]) -> MinuteRow:
    """Rows of one cluster and bucket as one row, by MERGE_RULES (the first row's keys)."""
    first = rows[0]
    key = (first.site, first.cluster_id, first.tob, first.bucket)
    if any((r.site, r.cluster_id, r.tob, r.bucket) != key for r in rows):
        raise ValueError("merge needs rows of the same site, cluster, tob and bucket")
    values: dict[str, Any] = {}
    for name, rule in MERGE_RULES.items():
        known = [(getattr(r, name), r.n) for r in rows if getattr(r, name) is not None]
        if not known:
            values[name] = None
        elif rule.how is Merge.SUM:
            values[name] = sum(v for v, _ in known)
        elif rule.how is Merge.MIN:
            values[name] = min(v for v, _ in known)
        elif rule.how is Merge.MAX:
            values[name] = max(v for v, _ in known)
        else:
            values[name] = sum(v * n for v, n in known) / sum(n for _, n in known)
    return replace(first, **values)


def merge(a: MinuteRow, b: MinuteRow) -> MinuteRow:
    """Combine two partial rows of the same cluster and bucket (see the module docstring)."""
    return combine((a, b))


def _row_order(row: MinuteRow) -> tuple[datetime, str, str, datetime]:
    return (row.bucket, row.site, row.cluster_id, row.tob)


def hour_of(rows: Iterable[MinuteRow]) -> list[MinuteRow]:
    """Merge minute rows into one row per cluster and hour (bucket = start of the hour)."""
    groups: dict[tuple[str, str, datetime, datetime], list[MinuteRow]] = {}
    for row in rows:
        row = replace(row, bucket=hour_start(row.bucket))
        groups.setdefault((row.site, row.cluster_id, row.tob, row.bucket), []).append(row)
    return sorted((combine(group) for group in groups.values()), key=_row_order)


class _Span:
    """min, max and total of the values seen."""

    __slots__ = ("count", "high", "low", "total")

    def __init__(self) -> None:
        self.count = 0
        self.low: int | None = None
        self.high: int | None = None
        self.total = 0

    def add(self, value: int) -> None:
        self.count += 1
        self.total += value
        self.low = value if self.low is None else min(self.low, value)
        self.high = value if self.high is None else max(self.high, value)

    @property
    def avg(self) -> float | None:
        return self.total / self.count if self.count else None


class _Bucket:
    """One cluster's minute while it fills. Seconds stay timedeltas (exact) until the row."""

    __slots__ = ("n", "pool_min", "queued", "rc_max", "rq", "states", "tq")

    def __init__(self) -> None:
        self.n = 0
        self.tq = _Span()
        self.rq = _Span()
        self.queued = _Span()
        self.rc_max = 0
        self.pool_min: int | None = None
        self.states = dict.fromkeys(_STATE_FIELD.values(), _ZERO)

    def add_poll(self, stat: ClusterStat, queued: int | None) -> None:
        self.n += 1
        self.tq.add(stat.task_q_size)
        self.rq.add(stat.done_q_size)
        if queued is not None:
            self.queued.add(queued)
        self.rc_max = max(self.rc_max, stat.reincarnations)
        self.pool_min = stat.pool if self.pool_min is None else min(self.pool_min, stat.pool)

    def add_state(self, field: str, span: timedelta) -> None:
        self.states[field] += span

    def row(self, key: _RowKey, bucket: datetime) -> MinuteRow:
        # Every bucket holds at least one poll: a step lands only in its own poll's minute
        # or the next poll's (max_step_s <= 60), and the first is never drained before it.
        assert self.n and self.pool_min is not None
        assert self.tq.low is not None and self.tq.high is not None and self.tq.avg is not None
        assert self.rq.low is not None and self.rq.high is not None and self.rq.avg is not None
        states = self.states
        queued = self.queued
        site, cluster_id, tob = key
        return MinuteRow(
            site=site,
            cluster_id=cluster_id,
            tob=tob,
            bucket=bucket,
            n=self.n,
            tq_min=self.tq.low,
            tq_max=self.tq.high,
            tq_avg=self.tq.avg,
            rq_min=self.rq.low,
            rq_max=self.rq.high,
            rq_avg=self.rq.avg,
            queued_min=queued.low,
            queued_max=queued.high,
            queued_avg=queued.avg,
            rc_max=self.rc_max,
            pool_min=self.pool_min,
            starting_s=states["starting_s"].total_seconds(),
            idle_s=states["idle_s"].total_seconds(),
            working_s=states["working_s"].total_seconds(),
            stopping_s=states["stopping_s"].total_seconds(),
            stopped_s=states["stopped_s"].total_seconds(),
            observed_s=sum(states.values(), _ZERO).total_seconds(),
        )


class MinuteAccumulator:
    """Collects polls into per-minute rows, bucketed by the poll time `at`.

    Feed `add()` in time order and call `drain(before)` with a time no later than the next
    poll's. A poll older than an earlier drain's `before` still counts, as an extra partial
    row for its minute: harmless, since rows merge.
    """

    def __init__(self, max_step_s: float = 5.0) -> None:
        # Up to a minute, a step touches at most its two ends' minutes, both holding a poll.
        if not 0 < max_step_s <= 60:
            raise ValueError("max_step_s must be in (0, 60]")
        self._max_step = timedelta(seconds=max_step_s)
        self._last: dict[_RowKey, tuple[datetime, str]] = {}  # last poll's time and status
        self._buckets: dict[tuple[_RowKey, datetime], _Bucket] = {}

    def add(self, stat: ClusterStat, queued: int | None, at: datetime) -> None:
        """One poll of one cluster; `queued` is the site's broker backlog, None if unknown."""
        self.add_poll((stat,), queued, at)

    def add_poll(self, stats: Iterable[ClusterStat], queued: int | None, at: datetime) -> None:
        """One poll of many clusters, as `add` of each: the poll's minute is worked out once
        and a step that stays inside it skips the general split (10,000 clusters a second)."""
        at = _utc(at)
        minute = minute_of(at)
        buckets, last_seen, max_step = self._buckets, self._last, self._max_step
        for stat in stats:
            key = (stat.name, stat.cluster_id, stat.tob)
            last = last_seen.get(key)
            bucket = buckets.get((key, minute))
            if bucket is None:
                bucket = buckets[(key, minute)] = _Bucket()
            if last is not None:
                start, status = last
                step = at - start
                if start >= minute and _ZERO < step <= max_step and status in _STATE_FIELD:
                    bucket.states[_STATE_FIELD[status]] += step
                else:
                    self._attribute(key, start, at, status)
            last_seen[key] = (at, stat.status)
            bucket.add_poll(stat, queued)

    def drain(self, before: datetime) -> list[MinuteRow]:
        """Return and forget the complete minutes: those ending at or before `before`.

        A minute is held back while a pending step of its cluster could still land in it,
        at most max_step_s after that cluster's last poll.
        """
        before = _utc(before)
        for key, (at, _status) in list(self._last.items()):
            if before - at > self._max_step:  # its next step, if any, is too long to count
                del self._last[key]
        rows = []
        for (key, bucket), acc in list(self._buckets.items()):
            end = bucket + MINUTE
            last = self._last.get(key)
            if end > before or (last is not None and last[0] < end):
                continue
            rows.append(acc.row(key, bucket))
            del self._buckets[(key, bucket)]
        return sorted(rows, key=_row_order)

    def drain_all(self) -> list[MinuteRow]:
        """Every row, partial minutes included (shutdown); the accumulator starts afresh."""
        rows = [acc.row(key, bucket) for (key, bucket), acc in self._buckets.items()]
        self._buckets.clear()
        self._last.clear()
        return sorted(rows, key=_row_order)

    def _bucket(self, key: _RowKey, bucket: datetime) -> _Bucket:
        acc = self._buckets.get((key, bucket))
        if acc is None:
            acc = self._buckets[(key, bucket)] = _Bucket()
        return acc

    def _attribute(self, key: _RowKey, start: datetime, end: datetime, status: str) -> None:
        field = _STATE_FIELD.get(status)
        step = end - start
        # A backwards step (clock stepped back) or a duplicate poll adds nothing.
        if field is None or step <= _ZERO or step > self._max_step:
            return
        while start < end:
            bucket = minute_of(start)
            stop = min(end, bucket + MINUTE)
            self._bucket(key, bucket).add_state(field, stop - start)
            start = stop
