"""Background tasks: one per Redis source (every second) and one for the history database.

They are the monitor's only I/O: Redis through `qwatch.sources.redis`, the history through
`qwatch.store.reads` (all the SQL is the store's; here its results are put into the view's
records). Every wait is bounded; a failure becomes text on the screen (the red banner, the
status bar), never an exception that ends the task; and each round ends with
`invalidate()` so the screen shows what was found.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from qwatch.errors import SchemaError, SourceUnavailable, one_line
from qwatch.monitor import pane
from qwatch.monitor.records import (
    PANE_SLOTS,
    TABLE_SLOTS,
    HostRaw,
    Range,
    StoreInfo,
    StoreKind,
    TableHistory,
)
from qwatch.monitor.state import MonitorState, Steps
from qwatch.retry import backoff
from qwatch.sources import StatSource
from qwatch.sources.redis import RedisReplyError
from qwatch.values import Source, Span

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# The history's reads (`qwatch.store.reads`, and SQLAlchemy under it) are imported by the
# functions that use them, when the first history read runs: the monitor waits for its
# first poll before that, so the rows of a big fleet are not held up by 0.2 s of imports.

log = logging.getLogger("qwatch.monitor")

REDIS_EVERY_S = 1.0
# The share of one core the polls may take (reading, decoding, rebuilding the rows): past
# a few thousand clusters a 1 s poll would cost a quarter of a core for a screen someone
# glances at, so the monitor polls less often instead. The daemon keeps its own cadence.
POLL_CPU_BUDGET = 0.10
REDIS_RETRY_MAX_S = 5.0
# Above the source's own connect and command timeouts: this one only catches a hang.
POLL_TIMEOUT_S = 15.0
STORE_EVERY_S = 2.0
STORE_TIMEOUT_S = 15.0
DISPOSE_TIMEOUT_S = 3.0
# How often the history columns and pane are re-read, by range: a 7-day sparkline moves
# one cell in hours, a 15-minute one every 30 s.
HISTORY_EVERY_S = {"15m": 5.0, "1h": 10.0, "24h": 30.0, "7d": 60.0}
MAX_EVENTS = 300  # newest events fetched for the pane; flips fold, so this is plenty


async def watch_redis(
    state: MonitorState,
    source: StatSource,
    invalidate: Callable[[], None],
    *,
    every_s: float = REDIS_EVERY_S,
) -> None:
    """Poll one site's Redis forever; back off (up to 5 s) while it fails."""
    loop = asyncio.get_running_loop()
    site = source.site
    failures = 0
    version_known = False
    pace_s = every_s
    while True:
        started = loop.time()
        cpu_started = time.thread_time()
        try:
            async with asyncio.timeout(POLL_TIMEOUT_S):
                poll = await source.poll()
                if not version_known:
                    state.set_version(site.name, await _version(source))
                    version_known = True
            await sliced(state.poll_steps(poll))
            failures = 0
            # Only this thread's CPU: waiting on the server costs nothing. What other tasks
            # ran while the poll awaited is counted too, which errs on the side of less.
            pace_s = paced(every_s, time.thread_time() - cpu_started)
            state.set_pace(site.name, pace_s if pace_s > every_s else None)
        except SourceUnavailable as exc:
            failures += 1
            version_known = False
            state.set_redis_error(site.name, str(exc), state.clock())
        except TimeoutError:
            failures += 1
            version_known = False
            await _close_quietly(source)  # a reply may still be on its way to a dead waiter
            message = f"{site.stats_address}: no answer in {POLL_TIMEOUT_S:.0f}s"
            state.set_redis_error(site.name, message, state.clock())
        except Exception as exc:  # a bug must show, not silently stop the refresh
            failures += 1
            log.exception("reading %s", site.stats_address)
            message = f"{site.stats_address}: {type(exc).__name__}: {exc}"
            state.set_redis_error(site.name, message, state.clock())
        invalidate()
        delay = backoff(failures, pace_s, max(REDIS_RETRY_MAX_S, pace_s))
        await asyncio.sleep(max(0.0, delay - (loop.time() - started)))


async def sliced(steps: Steps) -> None:
    """A rebuild of the rows, with the event loop run between its slices: a key pressed
    meanwhile is answered, and a frame drawn, before the rebuild is done (it swaps the new
    rows in at its last step, so no frame shows them half-built)."""
    for _ in steps:
        await asyncio.sleep(0)


def paced(every_s: float, cost_s: float, budget: float | None = None) -> float:
    """The time between polls: `every_s`, or longer when a poll's CPU cost would take more
    than `budget` (POLL_CPU_BUDGET) of a core at that cadence, rounded up to a tenth of a
    second so that it does not jitter."""
    budget = POLL_CPU_BUDGET if budget is None else budget
    if cost_s <= every_s * budget:
        return every_s
    return math.ceil(cost_s / budget * 10 - 1e-9) / 10  # 0.28 / 0.1 is 2.8000000000000003


async def _version(source: StatSource) -> str:
    try:
        return await source.server_version()
    except RedisReplyError:  # INFO may be forbidden by an ACL: the version is only nice to have
        return "?"


async def _close_quietly(source: StatSource) -> None:
    try:
        await source.close()
    except Exception:
        log.debug("closing the Redis connection failed", exc_info=True)


class StoreWatcher:
    """Reads the history database every couple of seconds, and at once when woken.

    The keys wake it (through `state.wake`) when the range or the selected host changes,
    so the pane follows the selection without a key press ever waiting on SQL.
    """

    def __init__(
        self,
        state: MonitorState,
        database_url: str,
        invalidate: Callable[[], None],
        *,
        every_s: float = STORE_EVERY_S,
    ) -> None:
        self.state = state
        self.url = database_url
        self.invalidate = invalidate
        self.every_s = every_s
        self.woken = asyncio.Event()
        self.engine: AsyncEngine | None = None
        self._table_read: tuple[str, float] | None = None  # (range, loop time)
        self._pane_read: tuple[str, str, str, float] | None = None  # (site, host, range, time)
        state.wake = self.woken.set

    async def run(self) -> None:
        try:
            while True:
                await self.round()
                self.invalidate()
                try:
                    async with asyncio.timeout(self.every_s):
                        await self.woken.wait()
                except TimeoutError:
                    pass
                self.woken.clear()
        finally:
            await self._drop_engine()

    async def _drop_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            try:
                async with asyncio.timeout(DISPOSE_TIMEOUT_S):
                    await engine.dispose()
            except Exception:  # a hung server must not hold the monitor's exit
                log.debug("closing the history connections failed", exc_info=True)

    async def round(self) -> None:
        try:
            async with asyncio.timeout(STORE_TIMEOUT_S):
                await self._read()
        except Exception as exc:  # TimeoutError included: keep what was read, say why
            await self._drop_engine()  # open afresh (and check again) next round
            reason = "no answer" if isinstance(exc, TimeoutError) else one_line(exc, with_type=True)
            self.state.set_store(
                StoreInfo(StoreKind.ERROR, reason, newest_sample=self.state.store.newest_sample)
            )
            if not isinstance(exc, TimeoutError | OSError):
                log.debug("reading the history failed", exc_info=True)

    async def _read(self) -> None:
        from qwatch.store import reads

        if self.engine is None:
            # Checks the file exists (connecting would create it: the monitor never writes)
            # and the schema is this qwatch's; says what to do when not.
            try:
                self.engine = await reads.open_reader(self.url)
            except (reads.NotReadable, SchemaError) as exc:
                self.state.set_store(StoreInfo(StoreKind.UNREADABLE, str(exc)))
                return
        async with self.engine.connect() as conn:
            info = await freshness(conn)
            self.state.set_store(info)
            if info.kind is StoreKind.OK:
                firing = await reads.alerts(conn, sites=list(self.state.sites))
                self.state.set_alerts([row.alert for row in firing])
                await self._read_history(conn)

    async def _read_history(self, conn: AsyncConnection) -> None:
        state = self.state
        rng = state.range
        now = state.clock()
        clock = asyncio.get_running_loop().time()
        every = HISTORY_EVERY_S.get(rng.label, 10.0)
        if _due(self._table_read, (rng.label,), clock, every):
            history = await table_history(conn, list(state.sites), rng, now)
            await sliced(state.table_history_steps(history))
            self._table_read = (rng.label, clock)
        target = state.pane_target
        if target is not None and _due(self._pane_read, (*target, rng.label), clock, every):
            raw = await host_history(conn, *target, rng, now)
            state.set_pane(pane.build(raw))
            self._pane_read = (*target, rng.label, clock)


async def freshness(conn: AsyncConnection) -> StoreInfo:
    from qwatch.store import reads

    newest = await reads.newest_sample_at(conn)
    if newest is None:
        return StoreInfo(StoreKind.EMPTY, "No history recorded yet: start `qwatch daemon`.")
    return StoreInfo(StoreKind.OK, "", newest_sample=newest)


def _source(rng: Range) -> Source:
    # Samples (one per cluster per sample_every) are fresh but many; minute rollups lag a
    # minute but stay few over days.
    return Source.SAMPLES if rng.from_samples else Source.MINUTES


async def table_history(
    conn: AsyncConnection, sites: Sequence[str], rng: Range, now: datetime
) -> TableHistory:
    """The runs listed in the range, a TQ sparkline each, and their last hour's reincarnations."""
    from qwatch.store import reads

    start, _end, width = rng.window(now, TABLE_SLOTS)
    runs = await reads.runs(
        conn, sites=sites, ended_since=start, seen_since=start, latest=True, order="host"
    )
    pks = {run.pk for run in runs}
    tq: dict[int, list[float | None]] = {}
    for slot in await reads.peaks(conn, _source(rng), ["tq"], start, width, per_run=True):
        (peak,) = slot.peaks
        pk = slot.cluster_pk
        if pk in pks and peak is not None and 0 <= slot.slot < TABLE_SLOTS:
            assert pk is not None  # read per run
            tq.setdefault(pk, [None] * TABLE_SLOTS)[slot.slot] = peak
    last_hour = await reads.reincarnations(conn, now - timedelta(hours=1))
    rc_hour = {pk: n for pk, n in last_hour.items() if pk in pks}
    return TableHistory(rng.label, now, tuple(runs), tq, rc_hour)


async def host_history(
    conn: AsyncConnection, site: str, host: str, rng: Range, now: datetime
) -> HostRaw:
    """One host's runs, sparklines, event counts, newest events and Redis gaps in the range."""
    from qwatch.store import reads

    start, end, width = rng.window(now, PANE_SLOTS)
    window = Span(start, now)
    on_host = await reads.runs(conn, sites=[site], host=host)
    runs = [r for r in on_host if r.up(now).clip(window)]
    pks = [run.pk for run in runs]
    raw = HostRaw(site, host, rng.label, start, end, now, PANE_SLOTS, tuple(runs))
    if not pks:
        return raw
    series: list[list[float | None]] = [[None] * PANE_SLOTS for _ in range(3)]
    for slot in await reads.peaks(
        conn, _source(rng), ["tq", "rq", "queued"], start, width, pks=pks
    ):
        if 0 <= slot.slot < PANE_SLOTS:
            for values_of, peak in zip(series, slot.peaks, strict=True):
                values_of[slot.slot] = peak
    rc: list[float | None] = [None] * PANE_SLOTS
    for index, n in (await reads.reincarnations(conn, start, pks=pks, slot_width=width)).items():
        if 0 <= index < PANE_SLOTS:
            rc[index] = float(n)
    events = await reads.events(conn, pks, start, newest_first=True, limit=MAX_EVENTS)
    return HostRaw(
        site,
        host,
        rng.label,
        start,
        end,
        now,
        PANE_SLOTS,
        tuple(runs),
        tq=series[0],
        rq=series[1],
        backlog=series[2],
        rc=rc,
        kinds=await reads.event_counts(conn, pks, start),
        events=tuple(events),
        gaps=tuple(await reads.gaps(conn, [site], start, now)),
    )


def _due(
    last: tuple[object, ...] | None, wanted: tuple[str, ...], now: float, every: float
) -> bool:
    """Read again when what is wanted changed, or when the last read is `every` s old."""
    if last is None or last[:-1] != wanted:
        return True
    read_at = last[-1]
    assert isinstance(read_at, float)
    return now - read_at >= every
