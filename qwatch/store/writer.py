"""The daemon's write side: one poll's rows as a `Batch`, written in order through a bounded
buffer that rides out a database that is down, locked or read-only.

Every statement is an upsert or an insert-if-absent on a natural key, so a batch replayed
after an ambiguous failure (the commit went through, the reply did not) adds nothing twice.
A batch carrying a fencing token is written only while it is still its site's
(`store.fence`); a SQLite history that ran out of disk gets its WAL cut back as it goes.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import ChainMap, deque
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from qwatch.alerts.rules import Alert
from qwatch.errors import Unavailable, one_line
from qwatch.events import Event
from qwatch.rollup import MinuteRow
from qwatch.store import models as m
from qwatch.store.dialect import Dialect
from qwatch.store.engine import is_disk_full, is_unavailable, truncate_wal
from qwatch.store.fence import current_token, holds
from qwatch.store.rollups import merge_pair
from qwatch.values import APPEARED, Backlog, ClusterStat, GapKind

log = logging.getLogger("qwatch.store")

ClusterKey = tuple[str, str, datetime]  # (site, cluster_id, tob)
UNWATCHED_REASON = "no qwatch daemon was sampling this site"
# Once the disk was full, the WAL is cut back whenever it passes this size from then on:
# catching up in bounded steps, and never again growing the WAL until it fills the space
# just freed (SQLite's own checkpoint only comes about 4 MB in). By size, not by a count of
# batches: what one batch adds grows with the fleet and the tables it writes.
TIGHT_WAL_BYTES = 256 * 1024


@dataclass(frozen=True)
class Batch:
    """Everything one poll of one site writes, applied in one transaction."""

    site: str
    at: datetime
    seen: Sequence[ClusterStat] = ()
    samples: Sequence[tuple[ClusterStat, int | None, datetime]] = ()  # (stat, queued, at)
    queues: Sequence[tuple[Backlog, datetime]] = ()  # every queue's backlog at a sample time
    events: Sequence[Event] = ()
    ended: Sequence[tuple[str, datetime, datetime]] = ()  # (cluster_id, tob, ended_at)
    minutes: Sequence[MinuteRow] = ()  # merged into what the minute already holds
    gap_open: tuple[datetime, str] | None = None  # (started_at, reason)
    gap_close: datetime | None = None  # ended_at of the site's open gap; applied first
    # (since, until): no daemon sampled the site in between, found on taking it over.
    unwatched: tuple[datetime, datetime] | None = None
    # Alerts that fired or resolved at this poll (rows of `alerts`: one per start), and
    # the notifications sent since: (alert, status sent, when).
    alerts_fired: Sequence[Alert] = ()
    alerts_resolved: Sequence[Alert] = ()
    notified: Sequence[tuple[Alert, str, datetime]] = ()
    # The fencing token its sampler took the site over with (store.fence); the batch is
    # written only while it is still the site's. None: unfenced (tools and tests).
    fence: int | None = None
    # Kept in the site's watch mark, so a replayed batch can tell it was committed.
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


class StoreUnavailable(Unavailable):
    """The database could not take a write; the batches stay queued, in order."""


class _Fenced(Exception):
    """A batch whose sampler lost the site: rolled back and dropped, never retried."""

    def __init__(self, current: int | None) -> None:
        super().__init__(current)
        self.current = current


class Writer:
    """Queue batches with `submit`; `flush` writes them in order, one transaction each.

    While the database is unavailable the queue holds up to `max_buffered` batches.
    Past that the newest are dropped, not the oldest: the history stays continuous up
    to the outage rather than gaining a hole in its middle.
    """

    def __init__(self, engine: AsyncEngine, *, max_buffered: int = 3600) -> None:
        if max_buffered < 1:
            raise ValueError("max_buffered must be at least 1")
        self._engine = engine
        self._max = max_buffered
        self._queue: deque[Batch] = deque()
        self._ids: dict[ClusterKey, int] = {}
        self._dropped = 0
        self._rejected = 0
        self._fenced = 0
        self._refused: set[tuple[str, int]] = set()  # (site, token): one line each
        self._down_since: float | None = None
        self._tight = False  # the disk was full once: cut the WAL back as we go
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        self._wal = Path(f"{database}-wal") if database and database != ":memory:" else None
        self._dropped_unreported = 0  # since the buffer last drained
        # Two flushes at once would write the head batch twice.
        self._lock = asyncio.Lock()

    @property
    def pending(self) -> int:
        return len(self._queue)

    @property
    def dropped(self) -> int:
        """Batches discarded because the buffer was full, since this writer started."""
        return self._dropped

    @property
    def rejected(self) -> int:
        """Batches the database refused as invalid (a bug, logged with its traceback)."""
        return self._rejected

    @property
    def fenced(self) -> int:
        """Batches refused or discarded because their sampler had lost the site."""
        return self._fenced

    def refused(self, site: str, token: int) -> bool:
        """Whether a batch of `site` with fencing `token` was refused: its sampler lost the
        site to another daemon and must take it over anew before writing again."""
        return (site, token) in self._refused

    def discard(self, site: str) -> int:
        """Drop the queued batches of `site`, whose sampler lost the lock; how many.

        While a flush is writing, the head batch stays (the flush pops it when done; the
        fence refuses it if the takeover came first).
        """
        queue = list(self._queue)
        head = queue[:1] if self._lock.locked() else []
        kept = head + [batch for batch in queue[len(head) :] if batch.site != site]
        self._queue = deque(kept)
        self._fenced += len(queue) - len(kept)
        return len(queue) - len(kept)

    def submit(self, batch: Batch) -> bool:
        """Queue `batch`; False when the buffer is full and it was dropped."""
        if len(self._queue) >= self._max:
            self._dropped += 1
            self._dropped_unreported += 1
            if self._dropped_unreported == 1:
                log.warning(
                    "history write buffer full (%d polls): dropping new polls until the "
                    "database catches up",
                    self._max,
                )
            return False
        self._queue.append(batch)
        return True

    async def flush(self) -> int:
        """Write the queued batches in order; the number written.

        Raises StoreUnavailable, keeping the failed batch at the head, when the database
        is down, locked, read-only or timing out, so the caller can back off and retry.
        """
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> int:
        written = 0
        while self._queue:
            if self._tight and self._wal_bytes() >= TIGHT_WAL_BYTES:
                await self._cut_wal()
            batch = self._queue[0]
            try:
                new_ids = await self._write(batch)
            except _Fenced as fenced:
                self._queue.popleft()
                self._refuse(batch, fenced.current)
                continue
            except Exception as error:
                self._ids.clear()  # a rolled-back insert may have left ids that never were
                if not is_unavailable(error):
                    self._queue.popleft()
                    self._rejected += 1
                    log.error(
                        "the database refused the poll of %s at %s; dropped it",
                        batch.site,
                        batch.at.isoformat(),
                        exc_info=True,
                    )
                    continue
                self._note_outage(error, written)
                if is_disk_full(error):
                    self._tight = True
                    await self._cut_wal()  # frees what the WAL holds, once space allows
                raise StoreUnavailable(
                    f"history database unavailable: {one_line(error, with_type=True)}"
                ) from error
            self._queue.popleft()
            self._ids.update(new_ids)
            # An ended cluster is rarely referenced again; a lookup finds it if it is.
            for cluster_id, tob, _ in batch.ended:
                self._ids.pop((batch.site, cluster_id, tob), None)
            written += 1
        self._note_recovered(written)
        return written

    async def _cut_wal(self) -> None:
        try:
            await truncate_wal(self._engine)
        except Exception as error:  # still full, or locked: the next write says so
            log.debug("could not cut the WAL back: %s", one_line(error, with_type=True))

    def _wal_bytes(self) -> int:
        try:
            return self._wal.stat().st_size if self._wal is not None else 0
        except OSError:  # no WAL yet, or already cut away
            return 0

    def _refuse(self, batch: Batch, current: int | None) -> None:
        self._fenced += 1
        assert batch.fence is not None
        if (batch.site, batch.fence) not in self._refused:
            self._refused.add((batch.site, batch.fence))
            log.warning(
                "site %r: refused a poll at %s with fencing token %d: another daemon took "
                "the site over (token %s); dropping this sampler's stale polls",
                batch.site,
                batch.at.isoformat(),
                batch.fence,
                current,
            )

    def _note_outage(self, error: BaseException, written: int) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "history database unavailable (%s): buffering up to %d polls (%d queued, "
                "%d written before the failure)",
                one_line(error, with_type=True),
                self._max,
                len(self._queue),
                written,
            )

    def _note_recovered(self, written: int) -> None:
        if self._down_since is not None:
            log.info(
                "history database back after %.0f s: wrote %d buffered polls, dropped %d",
                time.monotonic() - self._down_since,
                written,
                self._dropped_unreported,
            )
        elif self._dropped_unreported:
            log.warning(
                "history write buffer drained: wrote %d polls, dropped %d",
                written,
                self._dropped_unreported,
            )
        self._down_since = None
        self._dropped_unreported = 0

    async def _write(self, batch: Batch) -> dict[ClusterKey, int]:
        """Apply one batch in one transaction; the cluster ids it resolved, for the cache."""
        # New ids go to the front map and reach the cache only once the commit succeeds.
        new: dict[ClusterKey, int] = {}
        ids = ChainMap(new, self._ids)
        async with self._engine.begin() as conn:
            dialect = Dialect.of(conn)
            if batch.fence is not None and not await holds(conn, batch.site, batch.fence):
                raise _Fenced(await current_token(conn, batch.site))
            await self._upsert_clusters(conn, dialect, batch, ids)
            if batch.minutes and await _already_written(conn, batch):
                return new
            await self._write_rows(conn, dialect, batch, ids)
            await _write_alerts(conn, dialect, batch)
            await _mark_watched(conn, dialect, batch)
        return new

    async def _upsert_clusters(
        self,
        conn: AsyncConnection,
        dialect: Dialect,
        batch: Batch,
        ids: MutableMapping[ClusterKey, int],
    ) -> None:
        stats = {(s.cluster_id, s.tob): s for s in batch.seen}
        for stat, _, _ in batch.samples:
            stats.setdefault((stat.cluster_id, stat.tob), stat)
        if not stats:
            return
        # A run found late on a shared Redis appeared before this poll (events.appeared_at).
        born = {(e.cluster_id, e.tob): e.at for e in batch.events if e.kind == APPEARED}
        rows = [
            {
                "site": batch.site,
                "cluster_id": s.cluster_id,
                "tob": s.tob,
                "host": s.host,
                "pid": s.pid,
                "first_seen": born.get((s.cluster_id, s.tob), batch.at),
                "last_seen": batch.at,
                "last_status": s.status,
            }
            for s in stats.values()
        ]
        table = m.Cluster.__table__
        stmt = dialect.insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["site", "cluster_id", "tob"],
            set_={
                "host": stmt.excluded.host,
                "pid": stmt.excluded.pid,
                "last_seen": stmt.excluded.last_seen,
                "last_status": stmt.excluded.last_status,
                # Seen alive again (say after a Redis gap): it had not ended after all.
                "ended_at": None,
            },
        ).returning(table.c.id, table.c.cluster_id, table.c.tob)
        # Parameters apart ("insertmanyvalues"), not `stmt.values(rows)`: a VALUES list built
        # into the statement is a new statement to compile for every count of rows, which
        # was a tenth of the daemon's CPU at 1,000 clusters.
        for pk, cluster_id, tob in await conn.execute(stmt, rows):
            ids[(batch.site, cluster_id, tob)] = pk

    async def _write_rows(
        self,
        conn: AsyncConnection,
        dialect: Dialect,
        batch: Batch,
        ids: MutableMapping[ClusterKey, int],
    ) -> None:
        resolve = _Resolver(conn, ids)
        if batch.samples:
            table = m.Sample.__table__
            await conn.execute(
                dialect.insert(table).on_conflict_do_nothing(),
                [
                    _sample_row(ids[(batch.site, s.cluster_id, s.tob)], s, queued, at)
                    for s, queued, at in batch.samples
                ],
            )
        if batch.queues:
            await conn.execute(
                dialect.insert(m.QueueSample.__table__).on_conflict_do_nothing(),
                [_queue_row(batch.site, b, at) for b, at in batch.queues],
            )
        event_rows = []
        for e in batch.events:
            pk = await resolve(e.site, e.cluster_id, e.tob)
            if pk is not None:
                event_rows.append(
                    {"cluster_pk": pk, "at": e.at, "kind": e.kind, "detail": dict(e.detail)}
                )
        if event_rows:
            stmt = dialect.insert(m.Event.__table__).on_conflict_do_nothing(
                index_elements=["cluster_pk", "at", "kind"]
            )
            await conn.execute(stmt, event_rows)
        for cluster_id, tob, ended_at in batch.ended:
            if (pk := await resolve(batch.site, cluster_id, tob)) is not None:
                await conn.execute(
                    update(m.Cluster).where(m.Cluster.id == pk).values(ended_at=ended_at)
                )
        minute_rows = []
        for row in batch.minutes:
            if (pk := await resolve(row.site, row.cluster_id, row.tob)) is not None:
                values = {name: getattr(row, name) for name in m.ROLLUP_FIELDS}
                minute_rows.append({"cluster_pk": pk, "bucket": row.bucket, **values})
        if minute_rows:
            await conn.execute(_merge_minutes(dialect), minute_rows)
        if resolve.missing:
            log.warning(
                "poll of %s at %s: skipped rows for %d clusters never recorded",
                batch.site,
                batch.at.isoformat(),
                len(resolve.missing),
            )
        await _write_gaps(conn, dialect, batch)


async def _write_gaps(conn: AsyncConnection, dialect: Dialect, batch: Batch) -> None:
    gaps = m.Gap.__table__
    if batch.gap_close is not None:
        await conn.execute(
            update(m.Gap)
            .where(m.Gap.site == batch.site, m.Gap.ended_at.is_(None))
            # A gap left open by a daemon that died ends where that daemon's watch ended.
            .values(
                ended_at=dialect.greatest(
                    m.Gap.started_at, literal(batch.gap_close, m.Gap.started_at.type)
                )
            )
        )
    if batch.unwatched is not None:
        since, until = batch.unwatched
        await conn.execute(
            dialect.insert(gaps)
            .on_conflict_do_nothing(index_elements=["site", "started_at"])
            .values(
                site=batch.site,
                started_at=since,
                ended_at=until,
                reason=UNWATCHED_REASON,
                kind=GapKind.UNWATCHED,
            )
        )
    if batch.gap_open is not None:
        started_at, reason = batch.gap_open
        await conn.execute(
            dialect.insert(gaps)
            .on_conflict_do_nothing(index_elements=["site", "started_at"])
            .values(site=batch.site, started_at=started_at, reason=reason, kind=GapKind.REDIS)
        )


def _alert_is(alert: Alert) -> Any:
    a = m.Alert.__table__.c
    return (
        (a.rule == alert.rule)
        & (a.site == alert.site)
        & (a.subject == alert.subject)
        & (a.started_at == alert.started_at)
    )


async def _write_alerts(conn: AsyncConnection, dialect: Dialect, batch: Batch) -> None:
    """Alert starts inserted once (a replay adds nothing), ends and notifications set."""
    table = m.Alert.__table__
    if batch.alerts_fired:
        await conn.execute(
            dialect.insert(table).on_conflict_do_nothing(
                index_elements=["rule", "site", "subject", "started_at"]
            ),
            [
                {
                    "rule": alert.rule,
                    "site": alert.site,
                    "subject": alert.subject,
                    "host": alert.host,
                    "cluster_id": alert.cluster_id,
                    "severity": alert.severity,
                    "summary": alert.summary,
                    "details": dict(alert.details),
                    "started_at": alert.started_at,
                }
                for alert in batch.alerts_fired
            ],
        )
    for alert in batch.alerts_resolved:
        await conn.execute(
            update(m.Alert)
            .where(_alert_is(alert))
            .values(resolved_at=alert.ended_at, summary=alert.summary, details=dict(alert.details))
        )
    for alert, status, at in batch.notified:
        await conn.execute(
            update(m.Alert)
            .where(_alert_is(alert))
            .values(last_notified_at=at, last_notified_status=status)
        )


async def _already_written(conn: AsyncConnection, batch: Batch) -> bool:
    """Whether a replayed batch's commit had gone through after all (its reply was lost).

    Only the minute merge is additive, so only it needs this; every other row is an
    upsert or insert-if-absent on a natural key. Every batch leaves its id in its site's
    watch mark, and only the head of the queue is ever replayed, so finding this batch's id
    there means it committed. (If another daemon took the site over in between, the mark
    moved on and the minutes merge twice: a lost reply and a takeover at once.)
    """
    w = m.Watch.__table__
    last = await conn.scalar(select(w.c.batch).where(w.c.site == batch.site))
    return last == batch.id


async def _mark_watched(conn: AsyncConnection, dialect: Dialect, batch: Batch) -> None:
    w = m.Watch.__table__
    stmt = dialect.insert(w).values(site=batch.site, watched_at=batch.at, batch=batch.id)
    newest = dialect.greatest(w.c.watched_at, stmt.excluded.watched_at)
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["site"], set_={"watched_at": newest, "batch": stmt.excluded.batch}
        )
    )


class _Resolver:
    """Cluster natural key -> id, from the cache or the database."""

    def __init__(self, conn: AsyncConnection, ids: MutableMapping[ClusterKey, int]) -> None:
        self._conn = conn
        self._ids = ids
        self.missing: set[ClusterKey] = set()

    async def __call__(self, site: str, cluster_id: str, tob: datetime) -> int | None:
        key = (site, cluster_id, tob)
        if key in self._ids:
            return self._ids[key]
        if key in self.missing:
            return None
        c = m.Cluster.__table__
        pk = await self._conn.scalar(
            select(c.c.id).where(c.c.site == site, c.c.cluster_id == cluster_id, c.c.tob == tob)
        )
        if pk is None:
            self.missing.add(key)
            return None
        self._ids[key] = pk
        return int(pk)


def _merge_minutes(dialect: Dialect) -> Any:
    t = m.RollupMinute.__table__
    stmt = dialect.insert(t)
    return stmt.on_conflict_do_update(
        index_elements=["cluster_pk", "bucket"], set_=merge_pair(dialect, t.c, stmt.excluded)
    )


def _queue_row(site: str, backlog: Backlog, at: datetime) -> dict[str, Any]:
    return {
        "site": site,
        "queue": backlog.queue,
        "sampled_at": at,
        "broker": backlog.broker,
        "length": backlog.length,
        "oldest_age_s": backlog.oldest_age_s,
        "reason": backlog.reason,
    }


def _sample_row(pk: int, stat: ClusterStat, queued: int | None, at: datetime) -> dict[str, Any]:
    return {
        "cluster_pk": pk,
        "sampled_at": at,
        "status": stat.status,
        "pool": stat.pool,
        "task_q_size": stat.task_q_size,
        "done_q_size": stat.done_q_size,
        "reincarnations": stat.reincarnations,
        "uptime_s": stat.uptime_s,
        "queued": queued,
    }
