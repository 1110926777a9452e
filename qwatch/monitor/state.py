"""The monitor's view state: rows, selection, sort, filter, range, focus (pure: no I/O).

Background tasks hand data in through the `set_*` methods; key bindings call the rest.
Both only change this object, and the renderer reads it. Rows are rebuilt when data or
the sort or filter changes, never while drawing a frame.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from qwatch.alerts.rules import Alert
from qwatch.config import Site
from qwatch.fmt import UTC_ZONE, Zone, short_id
from qwatch.monitor.pane import HostHistory
from qwatch.monitor.records import (
    RANGES,
    Range,
    RunKey,
    StoreInfo,
    TableHistory,
)
from qwatch.values import STATES, Poll

SORT_KEYS = ("host", "id", "state", "pool", "tq", "rq", "rc", "up", "rc1h")
DEFAULT_RANGE = "1h"
# Django Q's records live 3 s: a run the daemon saw in that time before (or after) our
# poll may well still be in Redis, so it is not called gone yet.
RECORD_TTL = timedelta(seconds=3)
_STATE_RANK = {name: rank for rank, name in enumerate(STATES)}
# Rows built, or sort keys made, between two turns of the event loop when a rebuild runs in
# slices (`MonitorState.poll_steps`): at 10,000 clusters a rebuild in one piece took
# ~30 ms, and a key pressed meanwhile waited for all of it.
REBUILD_SLICE = 1000

Steps = Iterator[None]  # a rebuild in slices: the event loop may run at each yield
T = TypeVar("T")


def run_through(steps: Generator[None, None, T]) -> T:
    """Work written in slices (it yields between them), done in one piece."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


class Source(StrEnum):
    LIVE = "live"  # in the latest Redis poll
    GONE = "gone"  # vanished within the range
    STORED = "stored"  # Redis has not been read yet: the store's last word


class Focus(StrEnum):
    TABLE = "table"
    PANE = "pane"


# Not frozen: a frozen dataclass's __init__ sets each field through object.__setattr__,
# 3x the cost, and a poll of 10,000 clusters builds 10,000 rows. Rows are built whole and
# never changed afterwards (a change is a new row).
@dataclass(slots=True)
class Row:
    site: str
    host: str
    cluster_id: str
    tob: datetime
    status: str
    source: Source
    pool: int | None
    tq: int | None
    rq: int | None
    rc: int | None
    uptime_s: float | None  # as of `as_of`
    as_of: datetime
    gone_at: datetime | None = None
    workers: int | None = None  # the site's configured pool size, where known
    queue_limit: int | None = None
    rc_hour: int | None = None
    trend: tuple[float | None, ...] | None = None  # TQ sparkline slots; drawn when on screen

    @property
    def key(self) -> RunKey:
        return (self.site, self.cluster_id, self.tob)

    @property
    def short_id(self) -> str:
        return short_id(self.cluster_id)

    def uptime_at(self, now: datetime) -> float | None:
        """Up at `now`: the record's own uptime (the writer's clock) plus the time since."""
        if self.uptime_s is None:
            return None
        if self.source is not Source.LIVE:
            return self.uptime_s
        return self.uptime_s + max(0.0, (now - self.as_of).total_seconds())


@dataclass
class SiteLive:
    """One site's Redis, as the refresh task last found it."""

    site: Site
    poll: Poll | None = None
    error: str | None = None  # why the last poll failed; None when it worked
    down_since: datetime | None = None
    version: str | None = None
    every_s: float | None = None  # the poll cadence, when slowed to keep the monitor's CPU low


_TIE = operator.attrgetter("host", "site", "cluster_id")
_FIRST = operator.itemgetter(0)
_NUMBERS = {"pool": "pool", "tq": "tq", "rq": "rq", "rc": "rc", "up": "uptime_s", "rc1h": "rc_hour"}


def sort_value(key: str) -> Callable[[Row], tuple[object, ...]]:
    """The sort key of one column; unknown numbers sort as lowest, ties by host then id.
    A function per column, chosen once per sort: 10,000 rows are sorted every poll."""
    if key == "host":
        return _TIE
    if key == "id":
        return lambda row: (row.short_id, *_TIE(row))
    if key == "state":
        return lambda row: (_STATE_RANK.get(row.status, len(_STATE_RANK)), *_TIE(row))
    number = operator.attrgetter(_NUMBERS[key])

    def by_number(row: Row) -> tuple[object, ...]:
        value = number(row)
        return (-1 if value is None else value, *_TIE(row))

    return by_number


def matches(row: Row, text: str) -> bool:
    needle = text.strip().lower()
    return not needle or needle in row.host.lower() or needle in row.cluster_id.lower()


def arrange(rows: Sequence[Row], key: str, reverse: bool, text: str) -> list[Row]:
    """Filter, then sort: live clusters first, then the ones from history, each sorted."""
    return run_through(arrange_steps(rows, key, reverse, text))[0]


def arrange_steps(
    rows: Sequence[Row], key: str, reverse: bool, text: str
) -> Generator[None, None, tuple[list[Row], int]]:
    """`arrange` in slices; returns the rows and how many of them are live.

    The sort keys are made a slice at a time; the sort itself, of ready-made keys, is one
    piece (~3 ms for 10,000 rows)."""
    by = sort_value(key)
    needle = text.strip()
    live: list[tuple[tuple[object, ...], Row]] = []
    other: list[tuple[tuple[object, ...], Row]] = []
    for start in range(0, len(rows), REBUILD_SLICE):
        for row in rows[start : start + REBUILD_SLICE]:
            if needle and not matches(row, text):
                continue
            (live if row.source is Source.LIVE else other).append((by(row), row))
        yield
    # The keys end in (host, site, cluster_id), unique per run: rows never compare.
    live.sort(key=_FIRST)
    other.sort(key=_FIRST)
    if reverse:  # after the sort, as the table always did: ties reversed too
        live.reverse()
        other.reverse()
    yield
    return [row for _, row in live] + [row for _, row in other], len(live)


@dataclass
class MonitorState:
    sites: dict[str, SiteLive]
    database: str = ""  # the history URL, without its password
    # The newest sample older than this says the daemon has stopped (3 of its samples).
    stale_after_s: float = 35.0
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    zone: Zone = UTC_ZONE  # the zone event times are shown in (display_time_zone)
    store: StoreInfo = field(default_factory=StoreInfo)
    table_history: TableHistory | None = None
    pane: HostHistory | None = None
    alerts: tuple[Alert, ...] = ()  # firing now, from the history's alerts table
    range_index: int = next(i for i, r in enumerate(RANGES) if r.label == DEFAULT_RANGE)
    sort_key: str = "host"
    sort_reverse: bool = False
    filter_text: str = ""
    filter_editing: bool = False
    focus: Focus = Focus.TABLE
    help: bool = False
    index: int = 0  # selected row in `rows`
    scroll: int = 0  # first row shown
    page: int = 10  # rows that fit, as last drawn
    pane_scroll: int = 0
    rows: list[Row] = field(default_factory=list)
    live_count: int = 0  # live rows in `rows`, kept with them so a frame does not count
    # Wakes the history task when the range or the selected host changes (set by refresh).
    wake: Callable[[], None] = field(default=lambda: None)
    _all: list[Row] = field(default_factory=list)
    _trends: dict[RunKey, tuple[float | None, ...]] = field(default_factory=dict)
    _rc_hour: dict[RunKey, int] = field(default_factory=dict)
    # Handed in, and not in the rows yet: a rebuild in slices is under way.
    _pending_polls: dict[str, Poll] = field(default_factory=dict)
    _pending_history: TableHistory | None = None
    _generation: int = 0  # of the rebuilds begun: only the newest may swap its rows in

    @classmethod
    def for_sites(cls, sites: Sequence[Site], **kwargs: object) -> MonitorState:
        return cls(sites={s.name: SiteLive(s) for s in sites}, **kwargs)  # type: ignore[arg-type]

    # --- what the background tasks hand in --------------------------------------------

    def set_poll(self, poll: Poll) -> None:
        """`poll_steps` in one piece."""
        for _ in self.poll_steps(poll):
            pass

    def poll_steps(self, poll: Poll) -> Steps:
        """Hand in a poll and rebuild the rows from it, in slices: the refresh runs the event
        loop at each step, so a key is answered between two slices. Until the last step the
        rows, and the site's poll, are the previous ones: a frame never shows a half-built
        table. A rebuild overtaken by a newer one (another poll, a history read) stops
        without swapping anything in; the newer one carries this poll too."""
        self._pending_polls[poll.site] = poll
        return self._rebuild_steps()

    def set_redis_error(self, site: str, message: str, at: datetime) -> None:
        live = self.sites[site]
        live.error = message
        if live.down_since is None:
            live.down_since = at

    def set_pace(self, site: str, every_s: float | None) -> None:
        """The cadence a site's polls were slowed to; None: the normal one."""
        self.sites[site].every_s = every_s

    def set_version(self, site: str, version: str) -> None:
        self.sites[site].version = version

    def set_store(self, info: StoreInfo) -> None:
        self.store = info

    def set_alerts(self, alerts: Sequence[Alert]) -> None:
        self.alerts = tuple(alerts)

    def set_table_history(self, history: TableHistory) -> None:
        """`table_history_steps` in one piece."""
        for _ in self.table_history_steps(history):
            pass

    def table_history_steps(self, history: TableHistory) -> Steps:
        """The rows' history columns, rebuilt in slices as `poll_steps` does; sparklines are
        drawn for the rows on screen only."""
        self._pending_history = history
        return self._rebuild_steps()

    def set_pane(self, pane: HostHistory) -> None:
        if self.pane is None or (pane.site, pane.host) != (self.pane.site, self.pane.host):
            self.pane_scroll = 0
        self.pane = pane

    # --- derived ------------------------------------------------------------------------

    @property
    def range(self) -> Range:
        return RANGES[self.range_index]

    @property
    def selected(self) -> Row | None:
        return self.rows[self.index] if 0 <= self.index < len(self.rows) else None

    @property
    def pane_target(self) -> tuple[str, str] | None:
        """(site, host) whose history the pane shows: the selected row's."""
        row = self.selected
        return (row.site, row.host) if row is not None else None

    @property
    def several_sites(self) -> bool:
        return len(self.sites) > 1

    def visible(self, height: int) -> tuple[int, list[Row]]:
        """(index of the first row shown, the rows that fit), keeping the selection in view."""
        self.page = max(1, height)
        if self.index < self.scroll:
            self.scroll = self.index
        elif self.index >= self.scroll + self.page:
            self.scroll = self.index - self.page + 1
        self.scroll = max(0, min(self.scroll, max(0, len(self.rows) - self.page)))
        return self.scroll, self.rows[self.scroll : self.scroll + self.page]

    # --- keys -----------------------------------------------------------------------------

    def move(self, delta: int) -> None:
        if self.focus is Focus.PANE:
            self.pane_scroll = max(0, self.pane_scroll + delta)
            return
        self._select(self.index + delta)

    def page_move(self, pages: int) -> None:
        self.move(pages * max(1, self.page - 1))

    def home(self) -> None:
        if self.focus is Focus.PANE:
            self.pane_scroll = 0
        else:
            self._select(0)

    def end(self) -> None:
        if self.focus is Focus.PANE:
            self.pane_scroll = len(self.pane.events) if self.pane else 0
        else:
            self._select(len(self.rows) - 1)

    def cycle_sort(self) -> None:
        self.sort_key = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self._rearrange()

    def reverse_sort(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._rearrange()

    def cycle_range(self) -> None:
        self.range_index = (self.range_index + 1) % len(RANGES)
        self.wake()

    def start_filter(self) -> None:
        self.filter_editing = True

    def type_filter(self, text: str) -> None:
        if not text.isprintable():  # an unbound key's escape sequence, not typing
            return
        self.filter_text += text
        self._rearrange()

    def erase_filter(self) -> None:
        self.filter_text = self.filter_text[:-1]
        self._rearrange()

    def end_filter(self) -> None:
        self.filter_editing = False

    def clear_filter(self) -> None:
        self.filter_text, self.filter_editing = "", False
        self._rearrange()

    def focus_pane(self) -> None:
        self.focus = Focus.PANE

    def escape(self) -> None:
        """Esc undoes the innermost thing: the filter being typed, the pane focus, the
        filter, the help."""
        if self.filter_editing or (self.focus is Focus.TABLE and self.filter_text):
            self.clear_filter()
        elif self.focus is Focus.PANE:
            self.focus = Focus.TABLE
        else:
            self.help = False

    def toggle_help(self) -> None:
        self.help = not self.help

    # --- rows -------------------------------------------------------------------------------

    def _select(self, index: int) -> None:
        before = self.pane_target
        self.index = max(0, min(index, len(self.rows) - 1))
        if self.pane_target != before:
            self.wake()

    def _rearrange(self) -> None:
        before = self.selected
        self._set_rows(
            *run_through(
                arrange_steps(self._all, self.sort_key, self.sort_reverse, self.filter_text)
            )
        )
        self._reselect(before)

    def _set_rows(self, rows: list[Row], live_count: int) -> None:
        self.rows = rows
        self.live_count = live_count

    def _reselect(self, before: Row | None) -> None:
        """Keep the same cluster selected, or the same host, or the same place."""
        target = self.pane_target if before is None else (before.site, before.host)
        if before is not None:
            for i, row in enumerate(self.rows):
                if row.key == before.key:
                    self.index = i
                    break
            else:
                same_host = [i for i, r in enumerate(self.rows) if (r.site, r.host) == target]
                self.index = same_host[0] if same_host else self.index
        self.index = max(0, min(self.index, len(self.rows) - 1))
        if self.pane_target != target:
            self.wake()

    def _rebuild_steps(self) -> Steps:
        """Begins a rebuild from what was handed in so far (a newer one begun before this
        one swaps makes it stop); the generator does the work."""
        self._generation += 1
        polls = {
            name: self._pending_polls.get(name, live.poll) for name, live in self.sites.items()
        }
        return self._rebuilding(self._generation, polls, self._pending_history)

    def _rebuilding(
        self, generation: int, polls: dict[str, Poll | None], history: TableHistory | None
    ) -> Steps:
        if history is not None:
            keys = {run.pk: run.key for run in history.runs}
            rc_hours = {keys[pk]: n for pk, n in history.rc_hour.items() if pk in keys}
            yield
            trends: dict[RunKey, tuple[float | None, ...]] = {}
            slots = list(history.tq_slots.items())
            for start in range(0, len(slots), REBUILD_SLICE):
                trends.update(
                    (keys[pk], tuple(values))
                    for pk, values in slots[start : start + REBUILD_SLICE]
                    if pk in keys
                )
                yield
        else:
            history, trends, rc_hours = self.table_history, self._trends, self._rc_hour
        rows: list[Row] = []
        live_keys: set[RunKey] = set()
        rc_hour, trend, live_source = rc_hours.get, trends.get, Source.LIVE
        for live in self.sites.values():
            poll = polls[live.site.name]
            if poll is None:
                continue
            # Names bound once and Row built positionally (its field order): 10,000 rows
            # are rebuilt every poll, and each lookup in the loop costs.
            name, at = poll.site, poll.at
            workers, limit = live.site.workers, live.site.queue_limit
            clusters = poll.clusters
            for start in range(0, len(clusters), REBUILD_SLICE):
                for stat in clusters[start : start + REBUILD_SLICE]:
                    cluster_id, tob = stat.cluster_id, stat.tob
                    key = (stat.name, cluster_id, tob)
                    live_keys.add(key)
                    rows.append(
                        Row(
                            name,
                            stat.host,
                            cluster_id,
                            tob,
                            stat.status,
                            live_source,
                            len(stat.workers),  # stat.pool
                            stat.task_q_size,
                            stat.done_q_size,
                            stat.reincarnations,
                            (stat.timestamp - tob).total_seconds(),  # stat.uptime_s
                            at,
                            None,  # gone_at
                            workers,
                            limit,
                            rc_hour(key),
                            trend(key),
                        )
                    )
                yield
        yield from self._stored_rows(history, polls, live_keys, rc_hours, trends, rows)
        # A key may change the sort or the filter while this runs: arrange again until the
        # order made is the one asked for now.
        arranged: tuple[list[Row], int] = ([], 0)
        asked: tuple[str, bool, str] | None = None
        while asked != (self.sort_key, self.sort_reverse, self.filter_text):
            asked = (self.sort_key, self.sort_reverse, self.filter_text)
            arranged = yield from arrange_steps(rows, *asked)
        if generation != self._generation:
            return  # overtaken: the newer rebuild has everything this one had, and more
        # The swap, in one piece: what a frame draws changes all at once.
        before = self.selected
        for name, poll in polls.items():
            live = self.sites[name]
            if poll is not live.poll:
                live.poll, live.error, live.down_since = poll, None, None
        self._pending_polls.clear()
        self.table_history, self._trends, self._rc_hour = history, trends, rc_hours
        self._pending_history = None
        self._all = rows
        self._set_rows(*arranged)
        self._reselect(before)

    def _stored_rows(
        self,
        history: TableHistory | None,
        polls: dict[str, Poll | None],
        live_keys: set[RunKey],
        rc_hour: dict[RunKey, int],
        trends: dict[RunKey, tuple[float | None, ...]],
        rows: list[Row],
    ) -> Steps:
        """Appends to `rows` the runs from the history that are not in Redis now: gone, or
        not yet read."""
        if history is None:
            return
        for index, run in enumerate(history.runs):
            if index % REBUILD_SLICE == REBUILD_SLICE - 1:
                yield
            live = self.sites.get(run.site)
            if live is None or run.key in live_keys:
                continue
            poll = polls[run.site]
            polled = poll is not None
            if poll is None and run.ended_at is not None:
                continue  # before the first poll, show only what was running
            if poll is not None and run.ended_at is None and run.last_seen > poll.at - RECORD_TTL:
                continue  # the daemon saw it after our last poll: new, or just gone
            gone_at = (run.ended_at or run.last_seen) if polled else None
            latest = run.latest
            rows.append(
                Row(
                    site=run.site,
                    host=run.host,
                    cluster_id=run.cluster_id,
                    tob=run.tob,
                    status=(latest.status if latest else run.last_status) or "?",
                    source=Source.GONE if polled else Source.STORED,
                    pool=latest.pool if latest else None,
                    tq=latest.tq if latest else None,
                    rq=latest.rq if latest else None,
                    rc=latest.rc if latest else None,
                    uptime_s=latest.uptime_s if latest else None,
                    as_of=run.last_seen,
                    gone_at=gone_at,
                    workers=live.site.workers,
                    queue_limit=live.site.queue_limit,
                    rc_hour=rc_hour.get(run.key),
                    trend=trends.get(run.key),
                )
            )
