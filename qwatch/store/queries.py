"""Read queries over the history, for `qwatch history`, `qwatch report` and the monitor.

Every function takes an open `AsyncConnection` (the caller decides how long to hold one)
and returns the plain values of `qwatch.timeline`. Time ranges are half-open [start, end).
Per-run reads go one run at a time through the (cluster_pk, time) primary keys, the one
index every table of measurements has.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Row, and_, exists, func, or_, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from qwatch.config import safe_url, sqlite_path
from qwatch.errors import SchemaError, Unavailable, UserError, one_line
from qwatch.fmt import when
from qwatch.store import migrate
from qwatch.store import models as m
from qwatch.store.engine import create_engine
from qwatch.values import STALE_AFTER, EventRow, GapKind, GapRow, Point, Run, Source, Span

MAX_CANDIDATES = 10  # listed in an "ambiguous" message


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
    return bool(await conn.scalar(select(exists().where(m.Cluster.id.is_not(None)))))


# --------------------------------------------------------------------------- clusters


def _run(row: Row[Any]) -> Run:
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
    )


def _order(run: Run) -> tuple[datetime, datetime, int]:
    return (run.first_seen, run.tob, run.pk)


async def host_runs(conn: AsyncConnection, host: str, site: str | None = None) -> list[Run]:
    """Every run on `host` (of `site`, when given), oldest first."""
    c = m.Cluster.__table__
    query = select(c).where(c.c.host == host)
    if site is not None:
        query = query.where(c.c.site == site)
    return sorted((_run(r) for r in await conn.execute(query)), key=_order)


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
    c = m.Cluster.__table__
    n = len(ref)
    length = func.length(c.c.cluster_id)
    query = select(c).where(
        or_(
            c.c.cluster_id == ref,
            c.c.host == ref,
            and_(
                length >= n,
                or_(
                    func.substr(c.c.cluster_id, 1, n) == ref,
                    # both engines read substr(x, k) as "from the k-th character on"
                    func.substr(c.c.cluster_id, length - n + 1) == ref,
                ),
            ),
        )
    )
    if site is not None:
        query = query.where(c.c.site == site)
    rows = sorted((_run(r) for r in await conn.execute(query)), key=_order)
    if exact := [r for r in rows if r.cluster_id == ref]:
        return Selection("cluster", ref, (_one(ref, exact, within),))
    if on_host := [r for r in rows if r.host == ref]:
        return Selection("host", ref, tuple(on_host))
    if rows:
        return Selection("cluster", ref, (_one(ref, rows, within),))
    raise UnknownCluster(await _unknown_message(conn, ref, site))


def _one(ref: str, runs: list[Run], within: Span | None) -> Run:
    if len(runs) == 1:
        return runs[0]
    if len({r.cluster_id for r in runs}) == 1 and within is not None:
        # One pid-style id reused by several runs: the one in the range is meant.
        inside = [r for r in runs if Span(r.first_seen, r.ended_at or r.last_seen).clip(within)]
        if len(inside) == 1:
            return inside[0]
        hint = "name the host, or narrow --since/--until to one of them"
    else:
        hint = "give more characters, or name the host"
    lines = [f"{ref!r} matches {len(runs)} clusters ({hint}):"]
    for r in runs[:MAX_CANDIDATES]:
        lines.append(
            f"  {r.cluster_id}  host {r.host}  first seen {when(r.first_seen)}"
            f"  last seen {when(r.ended_at or r.last_seen)}"
        )
    if len(runs) > MAX_CANDIDATES:
        lines.append(f"  … and {len(runs) - MAX_CANDIDATES} more")
    raise AmbiguousCluster("\n".join(lines), runs)


async def _unknown_message(conn: AsyncConnection, ref: str, site: str | None) -> str:
    c = m.Cluster.__table__
    query = select(c.c.host).distinct().order_by(c.c.host).limit(MAX_CANDIDATES + 1)
    if site is not None:
        query = query.where(c.c.site == site)
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
    read from the next finer table, when that has them.
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
        s = m.Sample.__table__
        query = (
            select(
                s.c.cluster_pk, s.c.sampled_at, s.c.status, s.c.pool, s.c.task_q_size,
                s.c.done_q_size, s.c.reincarnations, s.c.queued,
            )
            .where(s.c.cluster_pk == pk, s.c.sampled_at >= start, s.c.sampled_at < end)
            .order_by(s.c.sampled_at)
        )  # fmt: skip
        states: dict[str, frozenset[str]] = {}  # one set per status, not one per row
        return [_sample_point(tuple(r), states) for r in await conn.execute(query)]
    t = (m.RollupMinute if source is Source.MINUTES else m.RollupHour).__table__
    query = (
        select(t)
        .where(t.c.cluster_pk == pk, t.c.bucket >= start, t.c.bucket < end)
        .order_by(t.c.bucket)
    )
    return [_rollup_point(r) for r in await conn.execute(query)]


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


# --------------------------------------------------------------------------- events, gaps


async def events(
    conn: AsyncConnection, pks: Iterable[int], start: datetime, end: datetime
) -> list[EventRow]:
    """Events of runs `pks` in [start, end), in time order."""
    e, c = m.Event.__table__, m.Cluster.__table__
    keys = list(pks)
    if not keys:
        return []
    query = (
        select(e.c.at, e.c.cluster_pk, c.c.cluster_id, e.c.kind, e.c.detail)
        .join(c, c.c.id == e.c.cluster_pk)
        .where(e.c.cluster_pk.in_(keys), e.c.at >= start, e.c.at < end)
        .order_by(e.c.at, e.c.id)
    )
    return [
        EventRow(r.at, r.cluster_pk, r.cluster_id, r.kind, r.detail)
        for r in await conn.execute(query)
    ]


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
