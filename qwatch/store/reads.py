"""Every SQL read of the history: `qwatch history`, `qwatch report`, the monitor and the
daemon's resume all read through here.

Opening: `open_reader` (an engine on a current schema, never creating a file) and
`reader` (one connection for one command). Every query then takes an `AsyncConnection`, so
the caller decides how long to hold one, and returns the plain values of `qwatch.values`.
Runs, measurements, events and gaps are each read by one function (`runs`, `points`,
`events`, `gaps`) whose filters, order and limit are parameters; `peaks`,
`reincarnations` and `event_counts` are the monitor's aggregates, grouped in SQL so a
week of a fleet comes back as a few hundred numbers. Time ranges are half-open
[start, end). What differs between SQLite and PostgreSQL is `qwatch.store.dialect`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Row, and_, bindparam, exists, func, or_, select, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from qwatch.alerts.rules import Alert
from qwatch.alerts.silences import Silence
from qwatch.config import safe_url, sqlite_path
from qwatch.errors import SchemaError, Unavailable, UserError, one_line
from qwatch.fmt import when
from qwatch.store import migrate
from qwatch.store import models as m
from qwatch.store.dialect import Dialect
from qwatch.store.engine import create_engine
from qwatch.values import (
    REINCARNATED,
    STALE_AFTER,
    EventRow,
    GapKind,
    GapRow,
    Latest,
    Point,
    QueueSummary,
    Run,
    Source,
    Span,
)

MAX_CANDIDATES = 10  # listed in an "ambiguous" message
C = m.Cluster.__table__.c
S = m.Sample.__table__.c
E = m.Event.__table__.c


class NotReadable(Unavailable):
    """No history to read: no database, not migrated, or unreachable. One line, no secret."""


class BadReference(UserError, LookupError):
    """A cluster reference that names no cluster, or more than one."""


class UnknownCluster(BadReference):
    pass


class AmbiguousCluster(BadReference):
    def __init__(self, message: str, candidates: Sequence[Run]) -> None:
        super().__init__(message)
        self.candidates = tuple(candidates)


@dataclass(frozen=True)
class Selection:
    """What a reference names: one run, or every run on a host (oldest first)."""

    kind: Literal["cluster", "host"]
    ref: str
    runs: tuple[Run, ...]

    @property
    def pks(self) -> list[int]:
        return [r.pk for r in self.runs]

    @property
    def sites(self) -> list[str]:
        return sorted({r.site for r in self.runs})


# --------------------------------------------------------------------------- opening


async def open_reader(url: str) -> AsyncEngine:
    """An engine on a current history database; NotReadable (no database, unreachable) or
    SchemaError (not migrated, older or newer) say what to do.

    A SQLite file that does not exist is reported, not created: reading never writes.
    """
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise NotReadable(f"no history database at {path}: start `qwatch daemon`, or pass --db")
    engine = create_engine(url)
    try:
        state = await migrate.check(engine)
    except BaseException as error:
        await engine.dispose()
        if _unreachable(error):
            raise NotReadable(
                f"cannot read the history database {safe_url(url)}: {one_line(error)}"
            ) from None
        raise
    if state is migrate.SchemaState.CURRENT:
        return engine
    await engine.dispose()
    if state is migrate.SchemaState.EMPTY:
        raise SchemaError(f"the database {safe_url(url)} is not migrated: run `qwatch db upgrade`")
    if state is migrate.SchemaState.BEHIND:
        raise SchemaError(
            f"the database {safe_url(url)} has an older schema: run `qwatch db upgrade`"
        )
    raise SchemaError(
        f"the database {safe_url(url)} has a schema newer than this qwatch: upgrade qwatch"
    )


@asynccontextmanager
async def reader(url: str) -> AsyncIterator[AsyncConnection]:
    """A connection to read the history at `url` with; a lost server becomes NotReadable."""
    engine = await open_reader(url)
    try:
        async with engine.connect() as conn:
            yield conn
    except (OSError, TimeoutError, sa_exc.OperationalError, sa_exc.InterfaceError) as error:
        raise NotReadable(f"lost the history database {safe_url(url)}: {one_line(error)}") from None
    finally:
        await engine.dispose()


def _unreachable(error: BaseException) -> bool:
    if isinstance(error, OSError | TimeoutError):
        return True
    # Any driver error on first contact: refused, no such database, bad password, a file
    # that is not a SQLite database.
    if isinstance(error, sa_exc.DBAPIError):
        return True
    # asyncpg raises its own errors (bad database name, password) while connecting.
    return type(error).__module__.startswith("asyncpg")


async def has_history(conn: AsyncConnection) -> bool:
    return bool(await conn.scalar(select(exists().where(C.id.is_not(None)))))


async def newest_sample_at(conn: AsyncConnection) -> datetime | None:
    """When the newest sample of any run was taken; None while there are none."""
    newest: object = await conn.scalar(select(func.max(S.sampled_at)))
    if isinstance(newest, str):  # an aggregate may come back as SQLite's bare text
        newest = datetime.fromisoformat(newest)
    if not isinstance(newest, datetime):
        return None
    return newest if newest.tzinfo is not None else newest.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- runs

RunOrder = Literal["first_seen", "host"]
_RUN_ORDER = {
    "first_seen": (C.first_seen, C.tob, C.id),  # oldest first: restarts read as one story
    "host": (C.host, C.tob, C.id),  # the monitor's table
}


async def runs(
    conn: AsyncConnection,
    *,
    sites: Iterable[str] | None = None,
    host: str | None = None,
    ref: str | None = None,
    ended_since: datetime | None = None,
    seen_since: datetime | None = None,
    latest: bool = False,
    order: RunOrder = "first_seen",
    limit: int | None = None,
) -> list[Run]:
    """Runs (rows of `clusters`) that pass every filter given:

    - `sites`: of one of these sites; `host`: on this host;
    - `ref`: whose cluster id is `ref`, starts or ends with it, or on host `ref`;
    - `ended_since`: still open, or ended at or after it;
    - `seen_since`: ended, or still open and seen at or after it (an open run not seen
      since belongs to a daemon that stopped long ago).

    `latest` attaches each run's newest sample (`Run.latest`, None when it has none).
    """
    query = select(m.Cluster.__table__)
    if sites is not None:
        query = query.where(C.site.in_(list(sites)))
    if host is not None:
        query = query.where(C.host == host)
    if ref is not None:
        query = query.where(_names(ref))
    if ended_since is not None:
        query = query.where(or_(C.ended_at.is_(None), C.ended_at >= ended_since))
    if seen_since is not None:
        query = query.where(or_(C.ended_at.is_not(None), C.last_seen >= seen_since))
    if latest:
        inner = m.Sample.__table__.alias("newest")
        # Per run, one index seek on the samples' (cluster_pk, sampled_at) key.
        newest = (
            select(func.max(inner.c.sampled_at))
            .where(inner.c.cluster_pk == C.id)
            .correlate(m.Cluster.__table__)
            .scalar_subquery()
        )
        query = query.add_columns(
            S.sampled_at, S.status, S.pool, S.task_q_size, S.done_q_size, S.reincarnations,
            S.uptime_s,
        ).outerjoin_from(
            m.Cluster.__table__,
            m.Sample.__table__,
            and_(S.cluster_pk == C.id, S.sampled_at == newest),
        )  # fmt: skip
    query = query.order_by(*_RUN_ORDER[order]).limit(limit)
    return [_run(row, latest) for row in await conn.execute(query)]


def _names(ref: str) -> ColumnElement[bool]:
    """The runs `ref` may name: by id, by host, by a prefix or suffix of the id."""
    n = len(ref)
    length = func.length(C.cluster_id)
    return or_(
        C.cluster_id == ref,
        C.host == ref,
        and_(
            length >= n,
            or_(
                func.substr(C.cluster_id, 1, n) == ref,
                # both engines read substr(x, k) as "from the k-th character on"
                func.substr(C.cluster_id, length - n + 1) == ref,
            ),
        ),
    )


def _run(row: Row[Any], latest: bool) -> Run:
    newest = None
    if latest and row.sampled_at is not None:
        newest = Latest(
            at=row.sampled_at,
            status=row.status,
            pool=row.pool,
            tq=row.task_q_size,
            rq=row.done_q_size,
            rc=row.reincarnations,
            uptime_s=row.uptime_s,
        )
    return Run(
        pk=row.id,
        site=row.site,
        cluster_id=row.cluster_id,
        host=row.host,
        pid=row.pid,
        tob=row.tob,
        first_seen=row.first_seen,
        last_seen=row.last_seen,
        ended_at=row.ended_at,
        last_status=row.last_status,
        latest=newest,
    )


async def resolve(
    conn: AsyncConnection, ref: str, *, site: str | None = None, within: Span | None = None
) -> Selection:
    """The run(s) `ref` names, tried in this order:

    1. a full cluster id (old django-q's pid-style ids repeat: runs overlapping `within`
       settle which one);
    2. a host name: every run on that host, oldest first, so restarts read as one story;
    3. a unique prefix or suffix of a cluster id (qmonitor shows the last 8 characters).
    Raises UnknownCluster or AmbiguousCluster with a message for people.
    """
    ref = ref.strip()
    if not ref:
        raise UnknownCluster("give a cluster id, an id prefix or suffix, or a host name")
    found = await runs(conn, ref=ref, sites=None if site is None else [site])
    if exact := [r for r in found if r.cluster_id == ref]:
        return Selection("cluster", ref, (_one(ref, exact, within),))
    if on_host := [r for r in found if r.host == ref]:
        return Selection("host", ref, tuple(on_host))
    if found:
        return Selection("cluster", ref, (_one(ref, found, within),))
    raise UnknownCluster(await _unknown_message(conn, ref, site))


def _one(ref: str, found: list[Run], within: Span | None) -> Run:
    if len(found) == 1:
        return found[0]
    if len({r.cluster_id for r in found}) == 1 and within is not None:
        # One pid-style id reused by several runs: the one in the range is meant.
        inside = [r for r in found if Span(r.first_seen, r.ended_at or r.last_seen).clip(within)]
        if len(inside) == 1:
            return inside[0]
        hint = "name the host, or narrow --since/--until to one of them"
    else:
        hint = "give more characters, or name the host"
    lines = [f"{ref!r} matches {len(found)} clusters ({hint}):"]
    for r in found[:MAX_CANDIDATES]:
        lines.append(
            f"  {r.cluster_id}  host {r.host}  first seen {when(r.first_seen)}"
            f"  last seen {when(r.ended_at or r.last_seen)}"
        )
    if len(found) > MAX_CANDIDATES:
        lines.append(f"  … and {len(found) - MAX_CANDIDATES} more")
    raise AmbiguousCluster("\n".join(lines), found)


async def _unknown_message(conn: AsyncConnection, ref: str, site: str | None) -> str:
    query = select(C.host).distinct().order_by(C.host).limit(MAX_CANDIDATES + 1)
    if site is not None:
        query = query.where(C.site == site)
    hosts = list(await conn.scalars(query))
    where = f" of site {site!r}" if site is not None else ""
    if not hosts:
        return f"no cluster or host matches {ref!r}: the history holds no clusters{where}"
    shown = ", ".join(hosts[:MAX_CANDIDATES]) + (", …" if len(hosts) > MAX_CANDIDATES else "")
    return f"no cluster{where} or host matches {ref!r} (hosts: {shown})"


# --------------------------------------------------------------------------- measurements

_FINER = {Source.HOURS: Source.MINUTES, Source.MINUTES: Source.SAMPLES}


async def points(
    conn: AsyncConnection, pks: Iterable[int], source: Source, start: datetime, end: datetime
) -> list[Point]:
    """The measurements of runs `pks` in [start, end) from `source`, time-ordered per run.

    Rollups trail: the daemon writes a minute when it is complete and the hours now and
    then. So each run's newest rollup row (possibly partial) and everything after it are
    read from the next finer table, when that has them. Per-run reads go one run at a time
    through the (cluster_pk, time) primary keys, the one index every table of measurements
    has.
    """
    result: list[Point] = []
    for pk in pks:
        result.extend(await _stitched(conn, pk, source, start, end))
    return result


async def _stitched(
    conn: AsyncConnection, pk: int, source: Source, start: datetime, end: datetime
) -> list[Point]:
    rows = await _read(conn, pk, source, start, end)
    finer = _FINER.get(source)
    if finer is None:
        return rows
    cut = rows[-1].at if rows else start
    fresh = await _stitched(conn, pk, finer, cut, end)
    if not fresh:  # the finer rows are gone (retention) or never were: keep the coarse ones
        return rows
    return [p for p in rows if p.at < cut] + fresh


async def _read(
    conn: AsyncConnection, pk: int, source: Source, start: datetime, end: datetime
) -> list[Point]:
    if source is Source.SAMPLES:
        query = (
            select(
                S.cluster_pk, S.sampled_at, S.status, S.pool, S.task_q_size, S.done_q_size,
                S.reincarnations, S.queued,
            )
            .where(S.cluster_pk == pk, S.sampled_at >= start, S.sampled_at < end)
            .order_by(S.sampled_at)
        )  # fmt: skip
        states: dict[str, frozenset[str]] = {}  # one set per status, not one per row
        return [_sample_point(tuple(r), states) for r in await conn.execute(query)]
    t = _ROLLUPS[source]
    rollup = (
        select(t)
        .where(t.c.cluster_pk == pk, t.c.bucket >= start, t.c.bucket < end)
        .order_by(t.c.bucket)
    )
    return [_rollup_point(r) for r in await conn.execute(rollup)]


_ROLLUPS = {Source.MINUTES: m.RollupMinute.__table__, Source.HOURS: m.RollupHour.__table__}


def _sample_point(row: tuple[Any, ...], states: dict[str, frozenset[str]]) -> Point:
    # A day of one cluster is 8,640 rows: plain tuples, not Row attribute lookups, keep
    # this loop a small part of `qwatch history` (benchmarks/history_reads.py).
    pk, at, status, pool, tq, rq, rc, queued = row
    known = queued is not None
    return Point(
        cluster_pk=pk,
        at=at,
        n=1,
        states=states.get(status) or states.setdefault(status, frozenset((status,))),
        pool=pool,
        tq_max=tq,
        tq_sum=float(tq),
        rq_max=rq,
        rq_sum=float(rq),
        rc=rc,
        queued_max=queued,
        queued_sum=float(queued) if known else 0.0,
        queued_n=1 if known else 0,
    )


def _rollup_point(r: Row[Any]) -> Point:
    known = r.queued_avg is not None
    return Point(
        cluster_pk=r.cluster_pk,
        at=r.bucket,
        n=r.n,
        states=frozenset(s for s, col in m.STATE_SECONDS.items() if getattr(r, col) > 0),
        pool=r.pool_min,
        tq_max=r.tq_max,
        tq_sum=r.tq_avg * r.n,
        rq_max=r.rq_max,
        rq_sum=r.rq_avg * r.n,
        rc=r.rc_max,
        queued_max=r.queued_max,
        # The rollup keeps no count of the polls that knew the backlog; n stands in.
        queued_sum=r.queued_avg * r.n if known else 0.0,
        queued_n=r.n if known else 0,
    )


Measure = Literal["tq", "rq", "queued"]
# The column whose maximum is a measure's peak: a sample's value, a minute's max.
_PEAK_OF: dict[Source, dict[Measure, Any]] = {
    Source.SAMPLES: {"tq": S.task_q_size, "rq": S.done_q_size, "queued": S.queued},
    Source.MINUTES: {
        "tq": _ROLLUPS[Source.MINUTES].c.tq_max,
        "rq": _ROLLUPS[Source.MINUTES].c.rq_max,
        "queued": _ROLLUPS[Source.MINUTES].c.queued_max,
    },
}


@dataclass(frozen=True, slots=True)
class SlotPeaks:
    """The highest value of each measure asked for in one time slot (None: no value)."""

    slot: int  # whole slot widths after the start
    peaks: tuple[float | None, ...]  # in the order the measures were asked for
    cluster_pk: int | None = None  # the run, when read per run


async def peaks(
    conn: AsyncConnection,
    source: Source,
    measures: Sequence[Measure],
    start: datetime,
    width: int,
    *,
    pks: Collection[int] | None = None,
    per_run: bool = False,
) -> list[SlotPeaks]:
    """Maxima per `width`-second slot from `start` on, of runs `pks` (None: every run):
    the highest of all those runs, or (`per_run`) one row per run and slot. `source` is the samples
    (fresh to the last one) or the minute rollups (few over days)."""
    columns = _PEAK_OF[source]
    time_col = S.sampled_at if source is Source.SAMPLES else _ROLLUPS[source].c.bucket
    run_col = time_col.table.c.cluster_pk
    slot = Dialect.of(conn).slot(time_col, start, width)
    keys = [run_col, slot] if per_run else [slot]
    query = (
        select(*keys, *(func.max(columns[name]) for name in measures))
        .where(time_col >= start)
        .group_by(*keys)
    )
    if pks is not None:
        query = query.where(run_col.in_(list(pks)))
    found = []
    for row in await conn.execute(query):
        pk, index, *values = row if per_run else (None, *row)
        found.append(SlotPeaks(index, tuple(None if v is None else float(v) for v in values), pk))
    return found


# --------------------------------------------------------------------------- events, gaps


async def events(
    conn: AsyncConnection,
    pks: Iterable[int],
    start: datetime,
    end: datetime | None = None,
    *,
    newest_first: bool = False,
    limit: int | None = None,
) -> list[EventRow]:
    """Events of runs `pks` in [start, end) (no end: up to now), in time order or newest
    first, at most `limit` of them."""
    keys = list(pks)
    if not keys:
        return []
    query = (
        select(E.at, E.cluster_pk, C.cluster_id, E.kind, E.detail)
        .join_from(m.Event.__table__, m.Cluster.__table__, E.cluster_pk == C.id)
        .where(E.cluster_pk.in_(keys), E.at >= start)
        .order_by(*((E.at.desc(), E.id.desc()) if newest_first else (E.at, E.id)))
        .limit(limit)
    )
    if end is not None:
        query = query.where(E.at < end)
    return [
        EventRow(at, pk, cluster_id, kind, detail or {})
        for at, pk, cluster_id, kind, detail in await conn.execute(query)
    ]


async def event_counts(
    conn: AsyncConnection, pks: Iterable[int], start: datetime
) -> dict[str, int]:
    """How many events of each kind runs `pks` had since `start`."""
    query = (
        select(E.kind, func.count())
        .where(E.cluster_pk.in_(list(pks)), E.at >= start)
        .group_by(E.kind)
    )
    return {kind: int(n) for kind, n in await conn.execute(query)}


async def reincarnations(
    conn: AsyncConnection,
    start: datetime,
    *,
    pks: Collection[int] | None = None,
    slot_width: int | None = None,
) -> dict[int, int]:
    """Workers reincarnated since `start` (the `by` of each reincarnated event), of runs
    `pks` (None: every run): per run pk, or per `slot_width`-second slot when given."""
    dialect = Dialect.of(conn)
    key = E.cluster_pk if slot_width is None else dialect.slot(E.at, start, slot_width)
    query = (
        select(key, func.sum(dialect.json_int(E.detail, "by")))
        .where(E.kind == REINCARNATED, E.at >= start)
        .group_by(key)
    )
    if pks is not None:
        query = query.where(E.cluster_pk.in_(list(pks)))
    return {int(k): int(n or 0) for k, n in await conn.execute(query)}


NOT_WATCHED_REASON = "no qwatch daemon is sampling this site"


async def gaps(
    conn: AsyncConnection, sites: Iterable[str], start: datetime, end: datetime
) -> list[GapRow]:
    """Time `sites` went unseen overlapping [start, end), oldest first: Redis outages,
    time no daemon sampled, and, open, the time since the watch mark of a site whose
    daemon stopped (no mark for STALE_AFTER before `end`, which is at most now)."""
    g, w = m.Gap.__table__, m.Watch.__table__
    names = list(sites)
    if not names:
        return []
    query = (
        select(g.c.site, g.c.started_at, g.c.ended_at, g.c.reason, g.c.kind)
        .where(
            g.c.site.in_(names),
            g.c.started_at < end,
            or_(g.c.ended_at.is_(None), g.c.ended_at > start),
        )
        .order_by(g.c.started_at)
    )
    rows = [GapRow(*row) for row in await conn.execute(query)]
    stopped_query = select(w.c.site, w.c.watched_at).where(
        w.c.site.in_(names), w.c.watched_at < end - STALE_AFTER
    )
    stopped = {site: since for site, since in await conn.execute(stopped_query)}
    if stopped:
        # An open gap ends where its daemon stopped looking; the unwatched one takes over.
        rows = [
            replace(gap, ended_at=max(gap.started_at, stopped[gap.site]))
            if gap.ended_at is None and gap.site in stopped
            else gap
            for gap in rows
        ]
        rows += [
            GapRow(site, since, None, NOT_WATCHED_REASON, GapKind.UNWATCHED)
            for site, since in stopped.items()
        ]
        rows.sort(key=lambda gap: gap.started_at)
    return rows


async def watched_at(conn: AsyncConnection, site: str) -> datetime | None:
    """When a daemon last wrote a poll of `site`, or None if none ever did."""
    w = m.Watch.__table__
    mark: datetime | None = await conn.scalar(select(w.c.watched_at).where(w.c.site == site))
    return mark


# --------------------------------------------------------------------------- alerts, silences

A = m.Alert.__table__.c
SL = m.Silence.__table__.c


@dataclass(frozen=True, slots=True)
class AlertRow:
    """A row of `alerts`: the alert, and the last notification sent for it."""

    id: int
    alert: Alert
    last_notified_at: datetime | None
    last_notified_status: str | None


async def queue_backlogs(
    conn: AsyncConnection, sites: Iterable[str], start: datetime, end: datetime
) -> list[QueueSummary]:
    """Each queue of `sites` over [start, end) from queue_samples, by site and queue."""
    q = m.QueueSample.__table__.c
    names = list(sites)
    if not names:
        return []
    query = (
        select(
            q.site,
            q.queue,
            q.broker,
            func.count(),
            func.count(q.length),
            func.max(q.length),
            func.avg(q.length),
        )
        .where(q.site.in_(names), q.sampled_at >= start, q.sampled_at < end)
        .group_by(q.site, q.queue, q.broker)
        .order_by(q.site, q.queue, q.broker)
    )
    return [
        QueueSummary(
            site, queue, broker, int(n), int(known), top, None if mean is None else float(mean)
        )
        for site, queue, broker, n, known, top, mean in await conn.execute(query)
    ]


async def alerts(
    conn: AsyncConnection,
    *,
    sites: Iterable[str] | None = None,
    since: datetime | None = None,
) -> list[AlertRow]:
    """Alerts firing now (no `since`), or also those that ended at or after `since`;
    oldest start first."""
    query = select(m.Alert.__table__).order_by(A.started_at, A.id)
    if sites is not None:
        query = query.where(A.site.in_(list(sites)))
    if since is None:
        query = query.where(A.resolved_at.is_(None))
    else:
        query = query.where(or_(A.resolved_at.is_(None), A.resolved_at >= since))
    found = []
    for row in await conn.execute(query):
        alert = Alert(
            rule=row.rule,
            site=row.site,
            subject=row.subject,
            severity=row.severity,
            summary=row.summary,
            started_at=row.started_at,
            ended_at=row.resolved_at,
            host=row.host,
            cluster_id=row.cluster_id,
            details=row.details or {},
        )
        found.append(AlertRow(row.id, alert, row.last_notified_at, row.last_notified_status))
    return found


@dataclass(frozen=True, slots=True)
class HostEvent:
    """An event with its run's host: what the alert rules count (qwatch.alerts.rules)."""

    at: datetime
    host: str
    kind: str
    detail: Mapping[str, Any]


async def site_events(
    conn: AsyncConnection, site: str, kinds: Collection[str], start: datetime
) -> list[HostEvent]:
    """Events of `kinds` on `site` since `start`, oldest first, with their run's host."""
    query = (
        select(E.at, C.host, E.kind, E.detail)
        .join_from(m.Event.__table__, m.Cluster.__table__, E.cluster_pk == C.id)
        .where(C.site == site, E.kind.in_(list(kinds)), E.at >= start)
        .order_by(E.at, E.id)
    )
    return [
        HostEvent(at, host, kind, detail or {})
        for at, host, kind, detail in await conn.execute(query)
    ]


async def silences(conn: AsyncConnection, *, active_at: datetime | None = None) -> list[Silence]:
    """Every silence (newest first), or those in force at `active_at`."""
    query = select(m.Silence.__table__).order_by(SL.created_at.desc(), SL.id.desc())
    if active_at is not None:
        query = query.where(SL.until > active_at, SL.created_at <= active_at)
    return [
        Silence(row.id, row.rule, row.site, row.host, row.until, row.reason, row.created_at)
        for row in await conn.execute(query)
    ]


# --------------------------------------------------------------------------- report views


async def view_rows(
    conn: AsyncConnection,
    view: str,
    columns: Mapping[str, Any],
    where: str,
    order: str,
    since: datetime,
    until: datetime,
) -> list[dict[str, Any]]:
    """Rows of the SQL view `view` (`columns`: name -> SQLAlchemy type, `where` selecting
    by :since and :until, `order` an ORDER BY list), as dicts with aware UTC datetimes."""
    query = (
        text(f"SELECT {', '.join(columns)} FROM {view} WHERE {where} ORDER BY {order}")
        .bindparams(
            bindparam("since", since, type_=m.UTCDateTime()),
            bindparam("until", until, type_=m.UTCDateTime()),
        )
        .columns(**columns)
    )
    return [dict(r._mapping) for r in await conn.execute(query)]
