"""Per-minute rollups of one cluster's polls (pure: time is passed in).

Rows are additive, so partial rows for the same (site, cluster_id, tob, bucket) — say one
drained at shutdown and one after the restart — combine by `merge()`, which the store
repeats in SQL on upsert: n and every *_s add, mins take the min, maxes the max, and
averages weight by n. The queued_* columns cover the polls that knew the broker backlog and
are None when none did; an unknown backlog yields to a known one. That is the store's SQL
(qwatch/store/writer.py, _merge_rollup), and it makes queued_avg the one column whose merge
depends on grouping when known and unknown rows mix: the rows carry no count of the polls
that knew it. hour_of() weights by the known rows only, as the store's hour rollup does.

Seconds in state: the time between a cluster's consecutive polls goes to the status of the
earlier poll, split at minute boundaries. A step longer than `max_step_s` counts for nothing:
the daemon was not looking (stalled, Redis down, record lapsed), so it is not observed time.
A cluster's last poll before it vanishes therefore adds no seconds either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import reduce

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


def merge(a: MinuteRow, b: MinuteRow) -> MinuteRow:
    """Combine two partial rows of the same cluster and bucket (see the module docstring)."""
    if (a.site, a.cluster_id, a.tob, a.bucket) != (b.site, b.cluster_id, b.tob, b.bucket):
        raise ValueError("merge needs rows of the same site, cluster, tob and bucket")
    n = a.n + b.n
    queued_min, queued_max, queued_avg = _merge_queued(a, b)
    return replace(
        a,
        n=n,
        tq_min=min(a.tq_min, b.tq_min),
        tq_max=max(a.tq_max, b.tq_max),
        tq_avg=(a.tq_avg * a.n + b.tq_avg * b.n) / n,
        rq_min=min(a.rq_min, b.rq_min),
        rq_max=max(a.rq_max, b.rq_max),
        rq_avg=(a.rq_avg * a.n + b.rq_avg * b.n) / n,
        queued_min=queued_min,
        queued_max=queued_max,
        queued_avg=queued_avg,
        rc_max=max(a.rc_max, b.rc_max),
        pool_min=min(a.pool_min, b.pool_min),
        starting_s=a.starting_s + b.starting_s,
        idle_s=a.idle_s + b.idle_s,
        working_s=a.working_s + b.working_s,
        stopping_s=a.stopping_s + b.stopping_s,
        stopped_s=a.stopped_s + b.stopped_s,
        observed_s=a.observed_s + b.observed_s,
    )


def _merge_queued(a: MinuteRow, b: MinuteRow) -> tuple[int | None, int | None, float | None]:
    if a.queued_min is None or a.queued_max is None or a.queued_avg is None:
        return (b.queued_min, b.queued_max, b.queued_avg)
    if b.queued_min is None or b.queued_max is None or b.queued_avg is None:
        return (a.queued_min, a.queued_max, a.queued_avg)
    return (
        min(a.queued_min, b.queued_min),
        max(a.queued_max, b.queued_max),
        (a.queued_avg * a.n + b.queued_avg * b.n) / (a.n + b.n),
    )


def _row_order(row: MinuteRow) -> tuple[datetime, str, str, datetime]:
    return (row.bucket, row.site, row.cluster_id, row.tob)


def hour_of(rows: Iterable[MinuteRow]) -> list[MinuteRow]:
    """Merge minute rows into one row per cluster and hour (bucket = start of the hour)."""
    groups: dict[tuple[str, str, datetime, datetime], list[MinuteRow]] = {}
    for row in rows:
        row = replace(row, bucket=hour_start(row.bucket))
        groups.setdefault((row.site, row.cluster_id, row.tob, row.bucket), []).append(row)
    hours = []
    for group in groups.values():
        hour = reduce(merge, group)
        known = [(r.queued_avg, r.n) for r in group if r.queued_avg is not None]
        if known:
            avg = sum(value * n for value, n in known) / sum(n for _, n in known)
            hour = replace(hour, queued_avg=avg)
        hours.append(hour)
    return sorted(hours, key=_row_order)


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
        at = _utc(at)
        key = (stat.name, stat.cluster_id, stat.tob)
        last = self._last.get(key)
        if last is not None:
            self._attribute(key, last[0], at, last[1])
        self._last[key] = (at, stat.status)
        self._bucket(key, minute_of(at)).add_poll(stat, queued)

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
