"""The history tables as typed SQLAlchemy models.

Only Alembic revisions in `migrations/` create or change these tables; the models are
what the code and autogenerate compare against, so a revision must match them exactly
(tests/test_migrations.py checks that on SQLite and PostgreSQL).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from qwatch.store.dialect import naive_times
from qwatch.values import GapKind

# Predictable constraint names, so a later revision can drop or alter them by name
# (Alembic docs, "The Importance of Naming Constraints").
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime in, an aware UTC datetime out, on every engine.

    Naive values are refused rather than guessed at: a naive local time stored as UTC
    would silently shift every report by the host's offset. SQLite keeps no offset, so
    values are stored as naive UTC there and UTC is attached again on read.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: qwatch stores aware UTC times only")
        value = value.astimezone(UTC)
        if naive_times(dialect.name):
            return value.replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if not naive_times(dialect.name):
            return super().bind_processor(dialect)

        # One C call where the generic path formats each value field by field (6 % of the
        # daemon's CPU at 10,000 clusters). The text is SQLAlchemy's SQLite DATETIME format,
        # so stored rows and comparisons are the same as before.
        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"naive datetime {value!r}: qwatch stores aware UTC times only")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

        return process

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JSONText(TypeDecorator[dict[str, Any]]):
    """A JSON object kept as plain text, readable from sqlite3 and psql (`detail::jsonb`)."""

    impl = Text()
    cache_ok = True

    def process_bind_param(self, value: dict[str, Any] | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_json_default)

    def process_result_value(self, value: str | None, dialect: Dialect) -> dict[str, Any] | None:
        if value is None:
            return None
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {"value": loaded}


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Cluster(Base):
    """One row per cluster run: Django Q's id is fresh per start (or the pid, in old versions)."""

    __tablename__ = "clusters"
    __table_args__ = (
        # Old django-q uses the pid as the id, so an id alone can repeat; tob tells them apart.
        UniqueConstraint("site", "cluster_id", "tob"),
        Index(None, "host", "first_seen"),
        Index(None, "cluster_id"),
        Index(None, "last_seen"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String)
    cluster_id: Mapped[str] = mapped_column(String)
    host: Mapped[str] = mapped_column(String)
    pid: Mapped[int | None] = mapped_column(Integer)
    tob: Mapped[datetime] = mapped_column(UTCDateTime())
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[str | None] = mapped_column(String)


class Sample(Base):
    """One poll of one cluster. The primary key is the per-cluster time-range index."""

    __tablename__ = "samples"
    __table_args__ = (Index(None, "sampled_at"),)

    cluster_pk: Mapped[int] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True
    )
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    status: Mapped[str] = mapped_column(String)
    pool: Mapped[int] = mapped_column(Integer)
    task_q_size: Mapped[int] = mapped_column(Integer)
    done_q_size: Mapped[int] = mapped_column(Integer)
    reincarnations: Mapped[int] = mapped_column(Integer)
    uptime_s: Mapped[float] = mapped_column(Float)
    queued: Mapped[int | None] = mapped_column(Integer)  # broker backlog; None when unknown


class QueueSample(Base):
    """One queue's backlog at one sample time (qwatch.sources.backlog): every queue of a site,
    the main one and each ALT_CLUSTERS one. length is NULL when the broker's backlog cannot
    be read (SQS, MongoDB, an ORM database that did not answer); reason says why."""

    __tablename__ = "queue_samples"
    __table_args__ = (Index(None, "sampled_at"),)

    site: Mapped[str] = mapped_column(String, primary_key=True)
    queue: Mapped[str] = mapped_column(String, primary_key=True)
    sampled_at: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    broker: Mapped[str] = mapped_column(String)
    length: Mapped[int | None] = mapped_column(Integer)
    oldest_age_s: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)


class Event(Base):
    """appeared, state_changed, reincarnated, restarted, vanished — with a JSON detail."""

    __tablename__ = "events"
    __table_args__ = (
        # Makes a replayed batch idempotent; its index also serves (cluster_pk, at) ranges,
        # so a separate (cluster_pk, at) index would only cost writes.
        UniqueConstraint("cluster_pk", "at", "kind"),
        Index(None, "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster_pk: Mapped[int] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    kind: Mapped[str] = mapped_column(String)
    detail: Mapped[dict[str, Any]] = mapped_column(JSONText())


class Gap(Base):
    """Time a site's clusters went unseen for want of a look, not for want of clusters:
    Redis unreachable, or no daemon sampling. Readers count it as unknown, never as down.
    """

    __tablename__ = "gaps"
    # Unique rather than a plain index: a replayed batch must not open the same gap twice.
    __table_args__ = (UniqueConstraint("site", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    site: Mapped[str] = mapped_column(String)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None while open
    reason: Mapped[str] = mapped_column(String)
    kind: Mapped[str] = mapped_column(String, server_default=GapKind.REDIS.value)


class Watch(Base):
    """Per site, the time of the newest poll a daemon wrote: its sign of life.

    Written with every batch (the daemon writes one at least every 30 s), so readers can
    tell a stopped daemon from a fleet that stopped, and a replayed batch can tell that
    its first attempt was committed after all.
    """

    __tablename__ = "watches"

    site: Mapped[str] = mapped_column(String, primary_key=True)
    watched_at: Mapped[datetime] = mapped_column(UTCDateTime())
    batch: Mapped[str] = mapped_column(String)  # the id of the newest batch written


class Fence(Base):
    """Per site, the fencing token of its current sampler: bumped by every takeover.

    A batch carries the token its sampler took over with and is written only while the
    site's token is still that one, checked in the batch's own transaction, so a sampler
    that paused while another took over writes nothing after the takeover.
    """

    __tablename__ = "fences"

    site: Mapped[str] = mapped_column(String, primary_key=True)
    token: Mapped[int] = mapped_column(Integer)


class _Rollup:
    """Columns shared by the minute and hour rollups (a mixin, not a table)."""

    cluster_pk: Mapped[int] = mapped_column(
        ForeignKey("clusters.id", ondelete="CASCADE"), primary_key=True
    )
    bucket: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)  # bucket start
    n: Mapped[int] = mapped_column(Integer)  # polls aggregated
    tq_min: Mapped[int] = mapped_column(Integer)
    tq_max: Mapped[int] = mapped_column(Integer)
    tq_avg: Mapped[float] = mapped_column(Float)
    rq_min: Mapped[int] = mapped_column(Integer)
    rq_max: Mapped[int] = mapped_column(Integer)
    rq_avg: Mapped[float] = mapped_column(Float)
    queued_min: Mapped[int | None] = mapped_column(Integer)
    queued_max: Mapped[int | None] = mapped_column(Integer)
    queued_avg: Mapped[float | None] = mapped_column(Float)
    rc_max: Mapped[int] = mapped_column(Integer)
    pool_min: Mapped[int] = mapped_column(Integer)
    starting_s: Mapped[float] = mapped_column(Float)
    idle_s: Mapped[float] = mapped_column(Float)
    working_s: Mapped[float] = mapped_column(Float)
    stopping_s: Mapped[float] = mapped_column(Float)
    stopped_s: Mapped[float] = mapped_column(Float)
    observed_s: Mapped[float] = mapped_column(Float)


class RollupMinute(_Rollup, Base):
    __tablename__ = "rollup_minute"


class RollupHour(_Rollup, Base):
    __tablename__ = "rollup_hour"


# The rollup value columns, in table order: the writer and maintenance merge over these.
ROLLUP_FIELDS: tuple[str, ...] = tuple(
    c.name for c in RollupMinute.__table__.columns if c.name not in ("cluster_pk", "bucket")
)
STATE_SECONDS: dict[str, str] = {
    "Starting": "starting_s",
    "Idle": "idle_s",
    "Working": "working_s",
    "Stopping": "stopping_s",
    "Stopped": "stopped_s",
}


class Alert(Base):
    """One alert, from firing to resolved: its identity is (rule, site, subject).

    `subject` is the host, the cluster id or "" (site-wide rules); `host` and `cluster_id`
    are the labels a notification carries. A row with no resolved_at is firing. The
    notification columns let a restarted or taken-over daemon resume without sending
    again what was sent: the last status sent (firing or resolved) and when.
    """

    __tablename__ = "alerts"
    __table_args__ = (
        # One row per alert start; a replayed batch must not record it twice.
        UniqueConstraint("rule", "site", "subject", "started_at"),
        Index(None, "started_at"),
        Index(None, "resolved_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String)
    site: Mapped[str] = mapped_column(String)
    subject: Mapped[str] = mapped_column(String)
    host: Mapped[str | None] = mapped_column(String)
    cluster_id: Mapped[str | None] = mapped_column(String)
    severity: Mapped[str] = mapped_column(String)
    summary: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONText())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())  # None while firing
    last_notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_notified_status: Mapped[str | None] = mapped_column(String)  # firing | resolved


class Silence(Base):
    """Maintenance: alerts matching it still record, nothing is sent until `until`.

    `rule` is a rule name or "all"; a NULL site or host matches every site or host.
    """

    __tablename__ = "silences"
    __table_args__ = (Index(None, "until"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rule: Mapped[str] = mapped_column(String)
    site: Mapped[str | None] = mapped_column(String)
    host: Mapped[str | None] = mapped_column(String)
    until: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
