"""`qwatch daemon`: sample every site's live Stats into the history, on a fixed schedule.

The loop only wires and times: Redis reads are `sources.redis`, the diff into events is
`events`, per-minute rollups are `rollup`, the alert rules and their delivery `alerts`, and
SQL is `store`. Each site polls in a task of its own, writing happens in another behind a
bounded buffer, hour rollups and pruning in a third, and alert delivery in a fourth, so
neither a slow database, maintenance, a slow alert target nor another site's stuck Redis
ever delays a poll. A site's sampler holds a Redis lock, checked before and after each
poll, and writes under a fencing token the history keeps per site (`store.fence`), so one
that paused while another took over writes nothing after the takeover. Stopping shares one
budget (SHUTDOWN_BUDGET_S) among every site's last poll, final flush, lock release and
connection close, run side by side; what is left when it runs out is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import socket
import uuid
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from qwatch.alerts import rules
from qwatch.alerts.dispatch import Dispatcher, SiteAlerts
from qwatch.alerts.rules import Alert, Evaluator
from qwatch.alerts.silences import Silence
from qwatch.alerts.thresholds import DEFAULTS, REINCARNATION_STORM, RESTART_LOOP, Threshold
from qwatch.config import Settings, Site, safe_url
from qwatch.errors import SourceUnavailable, Unavailable, one_line
from qwatch.events import SampleClock, Tracker, key_of
from qwatch.retry import backoff
from qwatch.rollup import MinuteAccumulator
from qwatch.serve.state import SiteSnapshot, Snapshot
from qwatch.sources import StatSource, open_source
from qwatch.store import fence, maintenance, migrate, reads
from qwatch.store.engine import create_engine
from qwatch.store.writer import Batch, StoreUnavailable, Writer
from qwatch.values import (
    REINCARNATED,
    RESTARTED,
    STALE_AFTER,
    ClusterStat,
    Poll,
    Run,
    backlog_total,
)

log = logging.getLogger("qwatch.daemon")

LOCK_PREFIX = "qwatch:daemon"
LOCK_TTL_INTERVALS = 3  # the standby takes over this many intervals after the sampler dies
REDIS_BACKOFF_MAX_S = 30.0
DB_BACKOFF_MAX_S = 30.0
MAINTENANCE_EVERY_S = 60.0
OUTAGE_REMINDER_S = 60.0
# What a supervisor is promised between the first SIGTERM and the exit. Every step shares
# it, each ending this long before it does at the latest, so that one step running late
# still leaves the later ones their turn: the final flush, then each site's lock release
# and Redis close, then the database's close, then the process's own exit.
SHUTDOWN_BUDGET_S = 5.0
# The sample clock's key for a site's per-queue backlog rows (clusters use (id, tob)).
QUEUES_KEY = ("queues",)
FLUSH_ENDS_BEFORE_S = 2.0
SITES_END_BEFORE_S = 1.0
ENGINE_ENDS_BEFORE_S = 0.5
SHUTDOWN_CANCEL_WAIT_S = 0.2  # for a cancelled task to unwind
RESEED_ENDED_WITHIN = timedelta(hours=24)
WRITE_BUFFER_POLLS = 3600  # an hour of polls at 1 s bridges a database outage
# A batch at least this often, even with nothing to write: the site's watch mark is how
# readers tell a stopped daemon (after STALE_AFTER without a mark) from a stopped fleet.
HEARTBEAT = timedelta(seconds=30)
assert HEARTBEAT * 3 <= STALE_AFTER


def utcnow() -> datetime:
    return datetime.now(UTC)


def lock_key(site: Site, database_url: str) -> str:
    """One sampler per site and database: two daemons writing elsewhere don't compete."""
    digest = hashlib.sha256(safe_url(database_url).encode()).hexdigest()[:12]
    return f"{LOCK_PREFIX}:{site.name}:{digest}"


@dataclass
class SiteLoop:
    """One site: its Redis, its sampler lock, and what it remembers between polls."""

    site: Site
    source: StatSource
    lock: str
    token: str
    interval_s: float
    sample_every_s: float
    retries: bool = True  # False for `--once`: a failed read is reported, not retried
    leader: bool = False
    standby_logged: bool = False
    tracker: Tracker | None = None  # None until seeded from the history after a takeover
    fence: int | None = None  # the fencing token of this takeover (store.fence)
    # Polls read while leader but not yet seeded (the database is down): written, through
    # the tracker, once the history can be read, so no cluster is announced twice.
    held: deque[Poll] = field(default_factory=lambda: deque(maxlen=WRITE_BUFFER_POLLS))
    seed_failures: int = 0
    seed_at: float = 0.0  # loop time before which a failed seed is not tried again
    # The previous sampler's last watch mark, until the first batch records the time since.
    resumed_from: datetime | None = None
    last_batch_at: datetime | None = None
    clock: SampleClock = field(init=False)
    minutes: MinuteAccumulator = field(default_factory=MinuteAccumulator)
    outage_since: datetime | None = None
    # When the last poll that read Redis finished: a gap starts there, so the time a failing
    # command spent waiting for its timeout counts as unknown, not as watched.
    last_good_at: datetime | None = None
    error: SourceUnavailable | None = None  # why the last poll failed; None after a good one
    failures: int = 0
    retry_at: float = 0.0  # loop time before which a failed Redis is not tried again
    # What the last tick read, for the listener: the poll, or why Redis was not read.
    last_poll: Poll | None = None
    alert_rules: Mapping[str, Threshold] = field(default_factory=lambda: DEFAULTS)
    alerts: SiteAlerts | None = None  # while sampling: resumed from the alerts table

    def __post_init__(self) -> None:
        self.clock = self._new_clock()

    def _new_clock(self) -> SampleClock:
        # Polls end a little early or late on their grid; half an interval absorbs that.
        return SampleClock(self.sample_every_s, slack_s=self.interval_s / 2)

    @property
    def address(self) -> str:
        return self.site.stats_address

    async def tick(self, engine_seed: SeedFn) -> list[Batch]:
        """One poll: the batches to write (none as standby or with nothing new; several
        when polls held during a database outage can be written at last)."""
        loop = asyncio.get_running_loop()
        self.last_poll = None
        if loop.time() < self.retry_at:  # backing off a failed Redis
            if not self.leader:
                return []
            at = utcnow()
            return self._fenced(self._with_watch(self._evaluate(None, at, None), at))
        started = utcnow()
        try:
            if not await self._hold_lock():
                self.error = None  # Redis answered: a standby is not failing
                return []
            poll = await self.source.poll()
            # Again after the poll: a pause in the middle of it (SIGSTOP, a VM freeze) may
            # have cost the lock; the fence refuses what slips past this check.
            if not await self._hold_lock():
                return []
        except SourceUnavailable as exc:
            batch = self._failed(exc, loop.time(), started)
            at = batch.at if batch is not None else utcnow()
            if not self.leader:
                return []
            return self._fenced(self._with_watch(self._evaluate(batch, at, None), at))
        self.last_poll = poll
        if self.tracker is None:
            self.held.append(poll)
            if not await self._seed(engine_seed, loop.time()):
                return []
            polls = list(self.held)
            self.held.clear()
            if len(polls) > 1:
                log.info("site %r: writing %d polls held until now", self.site.name, len(polls))
        else:
            polls = [poll]
        batches = [self._with_watch(self._evaluate(self._batch(p), p.at, p), p.at) for p in polls]
        return self._fenced(*batches)

    def _evaluate(self, batch: Batch | None, at: datetime, poll: Poll | None) -> Batch | None:
        """The site's alert rules after this poll (None: Redis was not read); the alerts
        that fired or resolved ride in the poll's batch, written in its transaction."""
        if self.alerts is None:
            return batch
        if poll is not None:
            queued = backlog_total(poll.backlogs)
            seen = rules.Poll(
                self.site.name,
                poll.at,
                poll.clusters,
                queued=queued,
                queue_limit=self.site.task_queue_limit,
            )
        else:
            reason = "" if self.error is None else str(self.error)
            seen = rules.Poll(self.site.name, at, redis_ok=False, reason=reason)
        change = self.alerts.evaluate(seen, batch.events if batch is not None else ())
        for alert in change.fired:
            log.warning("alert %s firing: %s", alert.rule, alert.summary)
        for alert in change.resolved:
            log.info("alert %s resolved: %s", alert.rule, alert.summary)
        if not (change.fired or change.resolved):
            return batch
        batch = batch or Batch(self.site.name, at)
        return replace(batch, alerts_fired=change.fired, alerts_resolved=change.resolved)

    def _fenced(self, *batches: Batch | None) -> list[Batch]:
        """The batches of a seeded leader, each carrying this takeover's fencing token."""
        if not self.leader or self.tracker is None:
            return []
        return [replace(b, fence=self.fence) for b in batches if b is not None]

    async def _seed(self, engine_seed: SeedFn, now: float) -> bool:
        """Take the site over in the history (bump its fence) and resume from it."""
        if now < self.seed_at:
            return False
        seed = await engine_seed(self.site.name)
        if seed is None:
            self.seed_failures += 1
            self.seed_at = now + backoff(self.seed_failures, self.interval_s, DB_BACKOFF_MAX_S)
            return False
        if self.seed_failures:
            log.info("site %r: resumed from its history at last", self.site.name)
        self.seed_failures, self.seed_at = 0, 0.0
        self.tracker, self.resumed_from, self.fence = seed.tracker, seed.mark, seed.fence
        self.alerts = await engine_seed.alerts(self.site.name, self.alert_rules)
        return True

    def resign(self) -> None:
        """Stop sampling until the lock is taken anew: the history says another daemon
        took the site over since (its fence moved on)."""
        log.info("site %r: another daemon took it over; standing by", self.site.name)
        self.leader, self.standby_logged, self.tracker, self.fence = False, True, None, None
        self.alerts = None  # the sampler evaluates and sends; a standby does neither

    def _with_watch(self, batch: Batch | None, at: datetime) -> Batch | None:
        """The batch, carrying what the watch needs: the time no daemon sampled the site
        before this one took over, and a heartbeat when there is nothing else to write."""
        if self.resumed_from is not None:
            since, self.resumed_from = self.resumed_from, None
            batch = batch or Batch(self.site.name, at)
            # Closes a gap the last sampler left open; it stopped looking at `since`.
            batch = replace(batch, gap_close=batch.gap_close or since)
            if at - since > STALE_AFTER:
                batch = replace(batch, unwatched=(since, at))
        if batch is None and (self.last_batch_at is None or at - self.last_batch_at >= HEARTBEAT):
            batch = Batch(self.site.name, at)
        if batch is not None:
            self.last_batch_at = batch.at
        return batch

    async def _hold_lock(self) -> bool:
        held = await self.source.acquire_lock(
            self.lock, self.token, LOCK_TTL_INTERVALS * self.interval_s
        )
        if held and not self.leader:
            log.info("sampling site %r from %s", self.site.name, self.address)
            # Resumed from the history (tick seeds it): a takeover or restart must not
            # re-announce clusters.
            self.tracker, self.fence, self.resumed_from = None, None, None
            self.held.clear()
            self.seed_failures, self.seed_at = 0, 0.0
            self.minutes = MinuteAccumulator()
            self.clock = self._new_clock()
            self.last_good_at = None  # polled before standing by: not this watch's start
        elif not held and (self.leader or not self.standby_logged):
            log.info("site %r: another daemon is sampling it; standing by", self.site.name)
            self.tracker, self.fence = None, None
            self.held.clear()
        self.standby_logged = not held
        self.leader = held
        if not held:
            self.alerts = None  # the sampler evaluates and sends; a standby does neither
        return held

    def _failed(self, exc: SourceUnavailable, now: float, started: datetime) -> Batch | None:
        self.error = exc
        self.failures += 1
        delay = backoff(self.failures, self.interval_s, REDIS_BACKOFF_MAX_S)
        self.retry_at = now + delay
        if self.outage_since is not None:
            return None
        # Nothing is known after the last good poll (or, without one, this poll's start).
        self.outage_since = self.last_good_at or started
        if self.retries:
            log.warning(
                "%s; recording a gap, retrying every %.0f s at most", exc, REDIS_BACKOFF_MAX_S
            )
        if not self.leader or self.tracker is None:
            return None
        self.tracker.gap(self.outage_since)
        return Batch(self.site.name, utcnow(), gap_open=(self.outage_since, str(exc)))

    def _batch(self, poll: Poll) -> Batch | None:
        assert self.tracker is not None
        gap_close = None
        if self.outage_since is not None:
            log.info(
                "Redis %s is back after %.0f s",
                self.address,
                (poll.at - self.outage_since).total_seconds(),
            )
            gap_close, self.outage_since = poll.at, None
        self.failures, self.retry_at, self.error = 0, 0.0, None
        self.last_good_at = poll.at

        events = self.tracker.observe(poll.clusters, poll.at, poll.late)
        for event in events:
            log.info("%s %s on %s: %s", event.kind, event.cluster_id, event.host, event.detail)
        evented = {event.key for event in events}
        queued = backlog_total(poll.backlogs)
        self.minutes.add_poll(poll.clusters, queued, poll.at)
        samples = []
        for stat in poll.clusters:
            key = key_of(stat)
            if key in evented or self.clock.due(key, poll.at):
                self.clock.mark(key, poll.at)
                samples.append((stat, queued, poll.at))
        queues = []
        # Every queue's backlog on the samples' cadence, even while no cluster runs.
        if poll.backlogs and self.clock.due(QUEUES_KEY, poll.at):
            self.clock.mark(QUEUES_KEY, poll.at)
            queues = [(backlog, poll.at) for backlog in poll.backlogs]
        ended = []
        for stat in self.tracker.ended():
            self.clock.forget(key_of(stat))
            ended.append((stat.cluster_id, stat.tob, poll.at))
        batch = Batch(
            site=self.site.name,
            at=poll.at,
            seen=[stat for stat, _, _ in samples],
            samples=samples,
            queues=queues,
            events=events,
            ended=ended,
            minutes=self.minutes.drain(poll.at),
            gap_close=gap_close,
        )
        if not (
            batch.samples
            or batch.queues
            or batch.events
            or batch.ended
            or batch.minutes
            or gap_close
        ):
            return None
        return batch

    def final_batch(self) -> Batch | None:
        """The partial minutes at shutdown (the store merges them with the next run's)."""
        rows = self.minutes.drain_all()
        if not (self.leader and self.tracker is not None and rows):
            return None
        return Batch(site=self.site.name, at=utcnow(), minutes=rows, fence=self.fence)


@dataclass(frozen=True)
class Seed:
    """What a takeover resumes from: the tracker, the last watch mark, the new fence."""

    tracker: Tracker
    mark: datetime | None
    fence: int


class SeedFn:
    """Take a site over in the history and resume from it: its tracker and last watch
    mark, so a restart or takeover emits no false events and records how long nobody
    watched, and a new fencing token, so the sampler it replaces writes nothing more."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def __call__(self, site: str) -> Seed | None:
        """The seed, or None (logged) when the history cannot be read: the caller holds
        its polls rather than start from nothing and announce every cluster again."""
        try:
            async with self.engine.begin() as conn:
                token = await fence.take_over(conn, site)
                found = await reads.runs(
                    conn, sites=[site], ended_since=utcnow() - RESEED_ENDED_WITHIN, latest=True
                )
                mark = await reads.watched_at(conn, site)
        except Exception as exc:  # a database outage must not stop sampling
            log.warning(
                "could not read site %r's history to resume from (%s); holding its polls "
                "until it can",
                site,
                one_line(exc, with_type=True),
            )
            return None
        live = [resumed(run) for run in found if run.ended_at is None]
        ended = [resumed(run) for run in found if run.ended_at is not None]
        return Seed(Tracker(site, live=live, vanished=ended), mark, token)

    async def alerts(self, site: str, thresholds: Mapping[str, Threshold]) -> SiteAlerts:
        """A site's alert rules resumed: the alerts the table holds as firing (and what was
        sent for them), the hosts that had a cluster, the events of the counting windows."""
        now = utcnow()
        window = max(thresholds[rule].window_s for rule in (RESTART_LOOP, REINCARNATION_STORM))
        try:
            async with self.engine.connect() as conn:
                stored = await reads.alerts(conn, sites=[site])
                found = await reads.runs(conn, sites=[site], ended_since=now - RESEED_ENDED_WITHIN)
                events = await reads.site_events(
                    conn, site, (RESTARTED, REINCARNATED), now - timedelta(seconds=window)
                )
        except Exception as exc:  # a database outage must not stop sampling
            log.warning("could not read site %r's alerts to resume from (%s)", site, exc)
            return SiteAlerts(Evaluator(site, thresholds))
        evaluator = Evaluator(
            site,
            thresholds,
            firing=[row.alert for row in stored],
            hosts={run.host for run in found},
            events=events,
        )
        notified = [
            (row.alert, row.last_notified_status, row.last_notified_at)
            for row in stored
            if row.last_notified_status is not None and row.last_notified_at is not None
        ]
        return SiteAlerts.resumed(evaluator, notified)


def resumed(run: Run) -> ClusterStat:
    """A stored run as the ClusterStat its last poll was, near enough for the event tracker
    to carry on: status and reincarnations to diff against (from its newest sample), host
    and last record time to pair a restart with."""
    latest = run.latest
    return ClusterStat(
        name=run.site,
        cluster_id=run.cluster_id,
        host=run.host,
        pid=run.pid,
        sentinel=None,
        monitor=None,
        pusher=None,
        workers=(0,) * (latest.pool if latest else 0),
        status=(latest.status if latest else run.last_status) or "Idle",
        task_q_size=0,
        done_q_size=0,
        reincarnations=latest.rc if latest else 0,
        tob=run.tob,
        timestamp=run.last_seen,
    )


class Daemon:
    def __init__(self, settings: Settings, *, once: bool = False) -> None:
        self.settings = settings
        self.once = once
        self.interval_s = settings.daemon.interval_s
        self.engine = create_engine(settings.database_url)
        self.writer = Writer(self.engine, max_buffered=WRITE_BUFFER_POLLS)
        self.seed = SeedFn(self.engine)
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.sites = [
            SiteLoop(
                site=site,
                source=open_source(site),
                lock=lock_key(site, settings.database_url),
                token=token,
                interval_s=self.interval_s,
                sample_every_s=settings.daemon.sample_every_s,
                retries=not once,
                alert_rules=settings.alerts.rules,
            )
            for site in settings.sites
        ]
        # Delivery in a task of its own; `--once` records alerts but sends nothing.
        self.dispatcher = (
            Dispatcher(settings.alerts, self._read_silences, self._store_notified)
            if settings.alerts.targets and not once
            else None
        )
        self.stopping = asyncio.Event()
        self._deadline: float | None = None  # loop time the shutdown budget runs out
        self._wrote = asyncio.Event()
        # Called with each poll's Snapshot (the HTTP listener's state); must not block.
        self.on_poll: Callable[[Snapshot], None] | None = None

    async def run(self, migrate_schema: bool = True, allow_foreign_tables: bool = False) -> None:
        """Sample until stopped (or once); with `once`, raise Unavailable naming every site
        that could not be read, after writing what the others gave."""
        await migrate.ensure(
            self.engine, migrate=migrate_schema, allow_foreign_tables=allow_foreign_tables
        )
        log.info(
            "qwatch daemon: %d site(s), history in %s, poll every %.1f s, sample every %.0f s",
            len(self.sites),
            safe_url(self.settings.database_url),
            self.interval_s,
            self.settings.daemon.sample_every_s,
        )
        if self.once:
            await self._run_once()
            return
        writing = asyncio.create_task(self._write_loop())
        upkeep = asyncio.create_task(self._maintenance_loop())
        sampling = [asyncio.create_task(self._sample(site)) for site in self.sites]
        stopped = asyncio.create_task(self.stopping.wait())
        # Messages still in flight at the stop are not sent; a restart resumes them.
        alerting = [asyncio.create_task(self.dispatcher.run())] if self.dispatcher else []
        try:
            # A task that ends before the stop is a bug: stop the others, then raise it.
            await asyncio.wait(
                [stopped, writing, upkeep, *alerting, *sampling],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self.stop()
            stopped.cancel()
            upkeep.cancel()
            for task in alerting:
                task.cancel()
            await self._shutdown(sampling)
            writing.cancel()
        for task in (writing, upkeep, *alerting, *sampling):
            error = None if task.cancelled() or not task.done() else task.exception()
            if error is not None:
                raise error

    def stop(self) -> None:
        """Start the shutdown budget (at the first call) and stop polling."""
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + SHUTDOWN_BUDGET_S
        self.stopping.set()

    async def _run_once(self) -> None:
        try:
            ticks = await asyncio.gather(*(site.tick(self.seed) for site in self.sites))
            for batch in (batch for batches in ticks for batch in batches):
                self.writer.submit(batch)
            await self.writer.flush()
        finally:
            self.stop()
            await self._shutdown([None] * len(self.sites))
        failed = [site for site in self.sites if site.error is not None]
        if failed:
            raise Unavailable(
                "; ".join(f"could not read site {s.site.name!r}: {s.error}" for s in failed)
            )

    async def _sample(self, site: SiteLoop) -> None:
        """One site's polls on a fixed grid: work time doesn't push the schedule, and
        missed ticks are skipped."""
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not self.stopping.is_set():
            started = loop.time()
            was_leader = site.leader
            if site.fence is not None and self.writer.refused(site.site.name, site.fence):
                site.resign()  # the history says another daemon took the site over since
            batches = await site.tick(self.seed)
            if was_leader and not site.leader and (dropped := self.writer.discard(site.site.name)):
                log.info(
                    "site %r: dropped %d queued polls: another daemon samples it now",
                    site.site.name,
                    dropped,
                )
            for batch in batches:
                self.writer.submit(batch)
                self._wrote.set()
            if self.dispatcher is not None and site.alerts is not None and site.leader:
                self.dispatcher.after_poll(site.alerts, utcnow())
            if self.on_poll is not None:  # the listener's state: one site's part of a poll
                self.on_poll(self._snapshot(site, batches, loop.time() - started))
            next_at += self.interval_s
            now = loop.time()
            if next_at < now:
                next_at = now + self.interval_s - (now - next_at) % self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), next_at - now)

    async def _read_silences(self, at: datetime) -> list[Silence]:
        async with self.engine.connect() as conn:
            return await reads.silences(conn, active_at=at)

    def _store_notified(self, site: str, notified: tuple[tuple[Alert, str, datetime], ...]) -> None:
        """What the delivery task sent, into the alerts table (after the poll that fired it:
        the writer keeps the order)."""
        self.writer.submit(Batch(site, utcnow(), notified=notified))
        self._wrote.set()

    def _snapshot(self, site: SiteLoop, batches: Sequence[Batch], seconds: float) -> Snapshot:
        part = SiteSnapshot(
            site=site.site.name,
            leader=site.leader,
            duration_s=seconds,
            poll=site.last_poll,
            error=None if site.error is None else str(site.error),
            events=Counter(event.kind for batch in batches for event in batch.events),
            alerts_firing=(
                Counter(alert.rule for alert in site.alerts.evaluator.firing)
                if site.alerts is not None
                else {}
            ),
        )
        writer = self.writer
        return Snapshot(utcnow(), (part,), writer.pending, writer.dropped, WRITE_BUFFER_POLLS)

    async def _write_loop(self) -> None:
        failures = 0
        reminded = asyncio.get_running_loop().time()
        while True:
            await self._wrote.wait()
            self._wrote.clear()
            try:
                await self.writer.flush()
                failures = 0
            except StoreUnavailable as exc:
                failures += 1
                now = asyncio.get_running_loop().time()
                if now - reminded >= OUTAGE_REMINDER_S:
                    reminded = now
                    log.warning(
                        "history database still unavailable (%s): %d polls waiting, %d dropped",
                        one_line(exc.__cause__ or exc, with_type=True),
                        self.writer.pending,
                        self.writer.dropped,
                    )
                await asyncio.sleep(backoff(failures, self.interval_s, DB_BACKOFF_MAX_S))
                self._wrote.set()

    async def _maintenance_loop(self) -> None:
        retention = self.settings.daemon.retention
        while True:
            await asyncio.sleep(MAINTENANCE_EVERY_S)
            if not any(site.leader for site in self.sites):
                continue
            now = utcnow()
            try:
                await maintenance.roll_up_hours(self.engine, now - timedelta(hours=2))
                await maintenance.prune(self.engine, now, retention)
            except Exception as exc:  # retried next round; the write loop reports outages
                log.debug("maintenance skipped: %s", exc)

    async def _shutdown(self, sampling: Sequence[asyncio.Task[None] | None]) -> None:
        """Every site's stop side by side within the one budget; cancel what is left.

        `sampling` holds each site's polling task (in the order of `sites`), or None.
        """
        assert self._deadline is not None
        deadline = self._deadline
        stopping = [
            asyncio.create_task(self._stop_site(site, task, deadline))
            for site, task in zip(self.sites, sampling, strict=True)
        ]
        loop = asyncio.get_running_loop()
        sites_end = deadline - SITES_END_BEFORE_S
        _, late = await asyncio.wait(stopping, timeout=max(0.0, sites_end - loop.time()))
        in_flight = [task for task in sampling if task is not None and not task.done()]
        for task in (*late, *in_flight):
            task.cancel()
        if late:
            # A task that ignores its cancellation is left to the exit.
            await asyncio.wait([*late, *in_flight], timeout=SHUTDOWN_CANCEL_WAIT_S)
            pairs = zip(self.sites, stopping, strict=True)
            names = ", ".join(repr(site.site.name) for site, task in pairs if task in late)
            log.error(
                "shutdown budget of %.0f s spent; stopped waiting for %s", SHUTDOWN_BUDGET_S, names
            )
        if self.writer.pending:
            log.error(
                "exiting with %d polls unwritten: the history database is unavailable",
                self.writer.pending,
            )
        # A connection stuck behind a lock can't be closed politely; the exit closes it.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline - ENGINE_ENDS_BEFORE_S):
                await self.engine.dispose()

    async def _stop_site(
        self, site: SiteLoop, sampling: asyncio.Task[None] | None, deadline: float
    ) -> None:
        """The poll in flight, the final flush, the lock release and the close, for one site."""
        if sampling is not None:
            with contextlib.suppress(Exception):  # a bug: run() raises it
                await asyncio.shield(sampling)  # cancelled by _shutdown itself when late
        batch = site.final_batch()
        if batch is not None:
            self.writer.submit(batch)
        # Writer.flush is serialised: the sites' flushes take turns, each writing whatever
        # is queued by then.
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            async with asyncio.timeout_at(deadline - FLUSH_ENDS_BEFORE_S):
                await self.writer.flush()
        if site.leader:
            with contextlib.suppress(SourceUnavailable):  # else it expires by itself
                await site.source.release_lock(site.lock, site.token)
        await site.source.close()


async def run_daemon(
    settings: Settings,
    *,
    once: bool = False,
    migrate: bool = True,
    allow_foreign_tables: bool = False,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until `stop` is set, or until SIGTERM/SIGINT when no `stop` is given.

    0 after a clean stop; with `once`, Unavailable (exit 1) unless every site was read and
    its poll written.
    """
    listener = on_poll = None
    if settings.listen is not None:  # bound before anything else: a busy port stops us here
        from qwatch.serve.server import start_listener  # aiohttp loads only when asked for

        listener, on_poll = await start_listener(settings, settings.daemon.interval_s)
    watcher = None
    try:
        daemon = Daemon(settings, once=once)  # creates the SQLite history, if it is one
        daemon.on_poll = on_poll
        if stop is None:
            _install_signal_handlers(asyncio.get_running_loop(), daemon)
        else:
            watcher = asyncio.create_task(_stop_when(stop, daemon))
        await daemon.run(migrate_schema=migrate, allow_foreign_tables=allow_foreign_tables)
    finally:
        if watcher is not None:
            watcher.cancel()
        if listener is not None:
            await listener.stop()
    log.info("qwatch daemon stopped")
    return 0


async def _stop_when(stop: asyncio.Event, daemon: Daemon) -> None:
    await stop.wait()
    daemon.stop()


def _install_signal_handlers(loop: asyncio.AbstractEventLoop, daemon: Daemon) -> None:
    """First signal: finish the poll in flight, flush, exit 0. Second: exit at once."""

    def handle(signum: int) -> None:
        if daemon.stopping.is_set():
            os._exit(128 + signum)
        log.info("%s: stopping after the poll in flight", signal.Signals(signum).name)
        daemon.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, handle, signum)
