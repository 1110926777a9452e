"""Plain values that the write side (decode, events, store) and the read side (history,
reports, monitor) share: the cluster record, states, event and gap kinds, and the rows
read back from the history. Import-light on purpose: nothing here pulls in Django, the
decoder, SQLAlchemy or a terminal library, so every layer can import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from qwatch.fmt import short_id

STATES = ("Starting", "Idle", "Working", "Stopping", "Stopped")


# Not frozen, but never assigned after it is made: a frozen dataclass's __init__ costs 3 us
# (an object.__setattr__ per field), as much as the rest of rebuilding a record from its
# changed bytes (qwatch.decode.memo), for every record of every poll. So not hashable
# either; nothing keys by one.
@dataclass(slots=True)
class ClusterStat:
    name: str  # the site: Q_CLUSTER['name'], the signing salt
    cluster_id: str  # uuid4 text, or the pid as text for django-q < 1.2
    host: str
    pid: int | None  # qcluster main pid; None before django-q 1.2
    sentinel: int | None
    monitor: int | None
    pusher: int | None
    workers: tuple[int, ...]
    status: str  # one of STATES
    task_q_size: int
    done_q_size: int
    reincarnations: int
    tob: datetime  # aware, UTC
    timestamp: datetime  # aware, UTC

    @property
    def pool(self) -> int:
        return len(self.workers)

    @property
    def uptime_s(self) -> float:
        return (self.timestamp - self.tob).total_seconds()

    @property
    def short_id(self) -> str:
        """The last 8 characters, as Django Q's qmonitor shows the id."""
        return short_id(self.cluster_id)


# Event kinds, as stored in events.kind.
APPEARED = "appeared"
RESTARTED = "restarted"
STATE_CHANGED = "state_changed"
REINCARNATED = "reincarnated"
VANISHED = "vanished"

# Events of one cluster in one poll come out in this order.
KINDS = (APPEARED, RESTARTED, STATE_CHANGED, REINCARNATED, VANISHED)


STALE_AFTER = timedelta(minutes=2)  # the daemon refreshes a live run's last_seen far faster


class GapKind(StrEnum):
    """Why a site went unseen for a while (the `kind` of a row in the gaps table)."""

    REDIS = "redis"  # the daemon ran but could not read Redis
    UNWATCHED = "unwatched"  # no daemon sampled the site (its watch mark went stale)


class Source(StrEnum):
    SAMPLES = "samples"
    MINUTES = "rollup_minute"
    HOURS = "rollup_hour"


@dataclass(frozen=True, slots=True, order=True)
class Span:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return max(0.0, (self.end - self.start).total_seconds())

    def clip(self, window: Span) -> Span | None:
        """The part inside `window`, or None when nothing of positive length is."""
        start, end = max(self.start, window.start), min(self.end, window.end)
        return Span(start, end) if start < end else None


@dataclass(frozen=True, slots=True)
class Latest:
    """A run's newest sample: what the monitor shows of a run no longer in Redis, and what
    the daemon resumes its event tracker from."""

    at: datetime
    status: str
    pool: int
    tq: int  # task queue (task_q_size)
    rq: int  # result queue (done_q_size)
    rc: int  # reincarnations so far
    uptime_s: float


@dataclass(frozen=True, slots=True)
class Run:
    """One cluster run: a row of the `clusters` table (with its newest sample, when read)."""

    pk: int
    site: str
    cluster_id: str
    host: str
    pid: int | None
    tob: datetime  # the cluster's time of birth, by its own clock
    first_seen: datetime
    last_seen: datetime
    ended_at: datetime | None
    last_status: str | None
    latest: Latest | None = None  # read only when asked for (store.reads.runs(latest=True))

    @property
    def short_id(self) -> str:
        """The last 8 characters, as qmonitor shows the id."""
        return short_id(self.cluster_id)

    @property
    def key(self) -> tuple[str, str, datetime]:
        """(site, cluster_id, tob): the run's natural key, as Redis names it too."""
        return (self.site, self.cluster_id, self.tob)

    def stale(self, now: datetime) -> bool:
        """Open, and no longer refreshed: the daemon stopped watching at its last_seen."""
        return self.ended_at is None and now - self.last_seen > STALE_AFTER

    def up(self, now: datetime) -> Span:
        if self.ended_at is not None:
            end = self.ended_at
        else:
            end = self.last_seen if self.stale(now) else max(now, self.last_seen)
        return Span(self.first_seen, max(end, self.first_seen))


@dataclass(frozen=True, slots=True)
class Point:
    """Measurements of one run at one time: a sample (n=1) or a rollup row (n polls).

    Sums rather than averages, so points add up: avg = sum / n.
    """

    cluster_pk: int
    at: datetime  # the sample's time, or the rollup bucket's start
    n: int
    states: frozenset[str]  # the sample's status; a rollup's states with seconds > 0
    pool: int  # smallest pool seen
    tq_max: int
    tq_sum: float
    rq_max: int
    rq_sum: float
    rc: int  # reincarnations so far (the highest seen)
    queued_max: int | None = None  # broker backlog; None when the daemon could not tell
    queued_sum: float = 0.0
    queued_n: int = 0  # polls that knew the backlog


@dataclass(frozen=True, slots=True)
class EventRow:
    at: datetime
    cluster_pk: int
    cluster_id: str
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GapRow:
    site: str
    started_at: datetime
    ended_at: datetime | None  # None while still open
    reason: str
    kind: str = GapKind.REDIS

    def span(self, now: datetime) -> Span:
        return Span(self.started_at, self.ended_at or max(now, self.started_at))


@dataclass(frozen=True, slots=True)
class Skipped:
    """A record a poll refused: its key and a short reason (safe to print)."""

    key: str
    reason: str


@dataclass(frozen=True, slots=True)
class Backlog:
    """One Django Q queue's backlog as its broker tells it, read without side effects."""

    queue: str  # the cluster name serving it: Q_CLUSTER name/cluster_name, or an ALT_CLUSTERS key
    broker: str  # "redis", "orm", "sqs", "mongo", …
    length: int | None  # tasks waiting; None: this broker's backlog cannot be read from outside
    oldest_age_s: float | None = None  # the oldest waiting task's age, where the broker tells it
    reason: str = ""  # why length is None (safe to print)


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One queue's backlog over a range, from the stored per-queue samples."""

    site: str
    queue: str
    broker: str
    samples: int
    known: int  # samples whose length was known
    length_max: int | None
    length_mean: float | None


def backlog_total(backlogs: Sequence[Backlog]) -> int | None:
    """The sum of the lengths known; None when none is."""
    known = [b.length for b in backlogs if b.length is not None]
    return sum(known) if known else None


@dataclass(frozen=True)
class Poll:
    """One read of a site: every live cluster, the broker backlog, and what was refused."""

    site: str
    at: datetime  # aware UTC, when the read finished
    clusters: tuple[ClusterStat, ...]
    skipped: tuple[Skipped, ...] = ()
    # Every queue of the site, in Site.queues order: the main one, then each ALT_CLUSTERS one.
    backlogs: tuple[Backlog, ...] = ()
    # cluster_id -> since when it may have been there unseen, for the clusters a shared
    # keyspace's incremental discovery found late (sources.discovery); their `appeared`
    # events are dated by their time of birth within [since, at].
    late: dict[str, datetime] = field(default_factory=dict)
