"""Diff consecutive polls of one site into cluster events (pure: time is passed in).

A cluster is identified by (cluster_id, tob): django-q < 1.2 uses the pid as cluster_id, so
an id alone can come back for a different run. The host (within a site) is what survives a
restart, so `restarted` pairs a new cluster with one that vanished on the same host.

Every event's `at` is the poll time at which it was noticed, not the record's own timestamp:
records carry the writing host's clock, polls carry the daemon's, and events must sort in
the daemon's order.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from qwatch.values import (
    APPEARED,
    KINDS,
    REINCARNATED,
    RESTARTED,
    STATE_CHANGED,
    VANISHED,
    ClusterStat,
)

_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}

Key = tuple[str, datetime]  # (cluster_id, tob)

# A restart is rarely a day after the crash; beyond that, pairing would guess, and a fleet
# whose hostnames change at every deploy would grow the candidate list without bound.
DEFAULT_PAIR_WINDOW_S = 24 * 3600.0

# After a gap, a cluster missing from a poll may only be waiting to rewrite its record: a
# restarted Redis starts empty and Django Q writes every 0.5 s. Past its 3 s expiry, it's gone.
DEFAULT_GAP_GRACE_S = 3.5


def appeared_at(tob: datetime, since: datetime, noticed: datetime) -> datetime:
    """When a cluster found late (Poll.late) appeared: its time of birth, as far as the clocks
    allow. `tob` is the writing host's clock; its key cannot predate `since` nor postdate the
    poll that found it, so a skewed clock is clamped into that window."""
    return min(noticed, max(tob, since))


def key_of(stat: ClusterStat) -> Key:
    return (stat.cluster_id, stat.tob)


@dataclass(frozen=True, slots=True)
class Event:
    at: datetime
    site: str
    cluster_id: str
    tob: datetime
    host: str
    kind: str
    detail: dict[str, Any]  # JSON-serialisable

    @property
    def key(self) -> Key:
        return (self.cluster_id, self.tob)


def _order(event: Event) -> tuple[str, str, datetime, int]:
    return (event.host, event.cluster_id, event.tob, _KIND_ORDER[event.kind])


def _latest_by_key(clusters: Iterable[ClusterStat]) -> dict[Key, ClusterStat]:
    """One record per cluster: a stale duplicate (e.g. via a cache index) loses to the newer."""
    clusters = tuple(clusters)
    latest = {(stat.cluster_id, stat.tob): stat for stat in clusters}
    if len(latest) == len(clusters):  # no duplicates: the usual poll
        return latest
    latest = {}
    for stat in clusters:
        key = key_of(stat)
        seen = latest.get(key)
        if seen is None or stat.timestamp > seen.timestamp:
            latest[key] = stat
    return latest


class Tracker:
    """Turns one site's successive polls into events.

    `observe()` returns the events; the clusters that ended in that poll (their last records)
    are also available from `ended()` until the next observe, so the daemon can close them.

    Seeding: `live` are clusters the database still holds open (no second `appeared` after a
    daemon restart); `vanished` are recently ended ones, candidates for `restarted`. Seeded
    live clusters missing from the first poll vanished while nobody watched, so their
    `vanished` events say `during_gap`, like those after a Redis outage.
    """

    def __init__(
        self,
        site: str,
        live: Iterable[ClusterStat] = (),
        vanished: Iterable[ClusterStat] = (),
        *,
        pair_window_s: float | None = DEFAULT_PAIR_WINDOW_S,
        gap_grace_s: float = DEFAULT_GAP_GRACE_S,
    ) -> None:
        self.site = site
        self._live = _latest_by_key(live)
        self._high_rc = {key: stat.reincarnations for key, stat in self._live.items()}
        self._waiting: dict[str, list[ClusterStat]] = {}  # host -> vanished, not yet paired
        self._replaced: set[Key] = set()  # stopping runs already paired with their successor
        for stat in vanished:
            self._waiting.setdefault(stat.host, []).append(stat)
        self._window = None if pair_window_s is None else timedelta(seconds=pair_window_s)
        self._blind = bool(self._live)  # the gap between the database's last sample and now
        self._gap_since: datetime | None = None
        self._grace = timedelta(seconds=gap_grace_s)
        self._grace_until: datetime | None = None
        self._ended: tuple[ClusterStat, ...] = ()
        self._stopping: dict[str, list[tuple[Key, ClusterStat]]] = {}

    @property
    def live(self) -> Mapping[Key, ClusterStat]:
        """The clusters of the last poll (or the seed), by key; read-only."""
        return MappingProxyType(self._live)

    @property
    def gap_since(self) -> datetime | None:
        """Where the gap since the last successful poll starts (the first `gap()`), or None."""
        return self._gap_since

    def ended(self) -> tuple[ClusterStat, ...]:
        """The last records of the clusters that vanished in the last observe()."""
        return self._ended

    def gap(self, at: datetime) -> None:
        """Redis could not be read since `at`: the next observe() spans an unwatched stretch."""
        self._blind = True
        if self._gap_since is None:
            self._gap_since = at

    def observe(
        self,
        clusters: Sequence[ClusterStat],
        at: datetime,
        late: Mapping[str, datetime] | None = None,
    ) -> list[Event]:
        """Diff this poll's records against the previous poll's; events sorted by host, id.

        `late` (Poll.late): clusters found late by a shared keyspace's discovery, with the
        time since which they may have been there unseen; they appeared at their birth.
        """
        current = _latest_by_key(clusters)
        if self._blind:
            self._grace_until = at + self._grace
        self._blind = False
        self._gap_since = None
        self._forget_old_candidates(at)

        events: list[Event] = []
        ended = [stat for key, stat in self._live.items() if key not in current]
        grace_until = self._grace_until
        during_gap = grace_until is not None
        if grace_until is not None and at < grace_until:
            for stat in ended:  # held, not vanished: its record may not be rewritten yet
                current[key_of(stat)] = stat
            ended = []
        else:
            self._grace_until = None
        for stat in ended:
            events.append(self._vanished(stat, at, during_gap))
            self._high_rc.pop(key_of(stat), None)
            if key_of(stat) in self._replaced:
                self._replaced.discard(key_of(stat))
            else:
                self._waiting.setdefault(stat.host, []).append(stat)

        # Built once per poll: scanning every record for each newcomer was O(N^2) when
        # 10,000 clusters appear at once (95 % of the daemon's CPU under py-spy).
        self._stopping = _stopping_by_host(current, self._live)
        live, high_rc = self._live, self._high_rc
        newcomers = []
        for key, stat in current.items():
            previous = live.get(key)
            if previous is None:
                newcomers.append((key, stat))
            elif (
                stat.status != previous.status
                or key not in high_rc
                or stat.reincarnations > high_rc[key]
            ):
                events.extend(self._changes(previous, stat, at))
            # else: nothing an event is made of moved (most records, most polls)
        # Oldest birth first, so when two clusters start on one host the first-born is the
        # one that takes the place of the most recently vanished. Only newcomers pair.
        newcomers.sort(key=lambda item: (item[0][1], item[0][0]))
        for _key, stat in newcomers:
            since = late.get(stat.cluster_id) if late else None
            born = at if since is None else appeared_at(stat.tob, since, at)
            events.extend(self._appeared(stat, born, current))

        self._live = current
        self._ended = tuple(sorted(ended, key=lambda s: (s.host, s.cluster_id, s.tob)))
        events.sort(key=_order)
        return events

    def _event(self, stat: ClusterStat, at: datetime, kind: str, detail: dict[str, Any]) -> Event:
        return Event(at, self.site, stat.cluster_id, stat.tob, stat.host, kind, detail)

    def _vanished(self, stat: ClusterStat, at: datetime, during_gap: bool) -> Event:
        detail = {
            "last_status": stat.status,
            "last_seen": stat.timestamp.isoformat(),
            "during_gap": during_gap,
        }
        return self._event(stat, at, VANISHED, detail)

    def _appeared(
        self, stat: ClusterStat, at: datetime, current: Mapping[Key, ClusterStat]
    ) -> list[Event]:
        self._high_rc[key_of(stat)] = stat.reincarnations
        if self._take_own_candidate(stat):
            # The same run again after its record lapsed: not a restart, and no new baseline.
            return [self._event(stat, at, APPEARED, {"status": stat.status, "returned": True})]
        events = [self._event(stat, at, APPEARED, {"status": stat.status})]
        previous = self._take_candidate(stat) or self._take_stopping(stat, current)
        if previous is not None:
            downtime = max(0.0, (stat.tob - previous.timestamp).total_seconds())
            detail = {
                "previous": previous.cluster_id,
                "previous_tob": previous.tob.isoformat(),
                "downtime_s": downtime,
            }
            events.append(self._event(stat, at, RESTARTED, detail))
        return events

    def _changes(self, old: ClusterStat, new: ClusterStat, at: datetime) -> list[Event]:
        events: list[Event] = []
        if new.status != old.status:
            changed = {"from": old.status, "to": new.status}
            events.append(self._event(new, at, STATE_CHANGED, changed))
        # Measured against the highest count seen: a dip (stale record) and the climb back
        # to where it was are no reincarnations.
        key = key_of(new)
        high = self._high_rc.get(key, old.reincarnations)
        if new.reincarnations > high:
            counted = {"by": new.reincarnations - high, "total": new.reincarnations}
            events.append(self._event(new, at, REINCARNATED, counted))
            high = new.reincarnations
        self._high_rc[key] = high
        return events

    def _take_own_candidate(self, stat: ClusterStat) -> bool:
        waiting = self._waiting.get(stat.host, [])
        key = key_of(stat)
        for i, candidate in enumerate(waiting):
            if key_of(candidate) == key:
                del waiting[i]
                return True
        return False

    def _take_candidate(self, stat: ClusterStat) -> ClusterStat | None:
        """Consume the most recently vanished cluster on this host born before `stat`."""
        waiting = self._waiting.get(stat.host)
        if not waiting:
            return None
        # One born after the newcomer cannot be the run it replaced.
        older = [c for c in waiting if c.tob < stat.tob]
        if not older:
            return None
        chosen = max(older, key=lambda c: (c.timestamp, c.tob, c.cluster_id))
        waiting.remove(chosen)
        if not waiting:
            del self._waiting[stat.host]
        return chosen

    def _take_stopping(
        self, stat: ClusterStat, current: Mapping[Key, ClusterStat]
    ) -> ClusterStat | None:
        """A run on this host that is stopping as `stat` starts: a supervisor's restart.

        Django Q's Stopped record outlives its process by up to 3 s, and a supervisor starts
        the new cluster at once, so the new run appears while the old one is still listed.
        """
        stopping = [
            c
            for key, c in self._stopping.get(stat.host, ())
            if c.tob < stat.tob and key not in self._replaced
        ]
        if not stopping:
            return None
        chosen = max(stopping, key=lambda c: (c.timestamp, c.tob, c.cluster_id))
        self._replaced.add(key_of(chosen))
        return chosen

    def _forget_old_candidates(self, at: datetime) -> None:
        if self._window is None:
            return
        for host in list(self._waiting):
            kept = [c for c in self._waiting[host] if at - c.timestamp <= self._window]
            if kept:
                self._waiting[host] = kept
            else:
                del self._waiting[host]


def _stopping_by_host(
    current: Mapping[Key, ClusterStat], live: Mapping[Key, ClusterStat]
) -> dict[str, list[tuple[Key, ClusterStat]]]:
    """host -> the runs already watched that are Stopping or Stopped in this poll."""
    index: dict[str, list[tuple[Key, ClusterStat]]] = {}
    for key, c in current.items():
        if c.status in ("Stopping", "Stopped") and key in live:
            index.setdefault(c.host, []).append((key, c))
    return index


class SampleClock:
    """Says when a cluster's sample is due: on first sight, then once per `every_s` slot.

    The slots lie on a grid from the first sample, so the time a poll takes never pushes
    the schedule: a sample every 10 s stays one per 10 s on average, not one per 10 s plus
    the poll's lateness. `slack_s` (the daemon passes half its poll interval) lets a poll
    that ends a little before its slot take it, so polls as often as the samples, each a
    few milliseconds early or late, still sample every time.

    `due()` only asks; `mark()` records a stored sample (the daemon also stores, and marks,
    whenever a cluster has an event: the grid then starts again from that sample).
    `forget()` drops an ended cluster.
    """

    def __init__(self, every_s: float, slack_s: float = 0.0) -> None:
        if every_s <= 0:
            raise ValueError("every_s must be positive")
        if not 0 <= slack_s < every_s:
            raise ValueError("slack_s must be at least 0 and below every_s")
        self._every = timedelta(seconds=every_s)
        self._slack = timedelta(seconds=slack_s)
        self._last: dict[Hashable, datetime] = {}
        self._next: dict[Hashable, datetime] = {}  # the start of the next slot

    def due(self, key: Hashable, at: datetime) -> bool:
        last = self._last.get(key)
        if last is None:
            return True
        # A clock stepped back would otherwise hold samples off until it caught up.
        return at >= self._next[key] - self._slack or at < last

    def mark(self, key: Hashable, at: datetime) -> None:
        last, slot = self._last.get(key), self._next.get(key)
        self._last[key] = at
        if last is None or slot is None or at < last or at < slot - self._slack:
            # First sight, a stepped-back clock, or an event's sample between slots.
            self._next[key] = at + self._every
            return
        # This sample fills its slot; slots missed meanwhile (an outage) are skipped.
        self._next[key] = slot + ((at + self._slack - slot) // self._every + 1) * self._every

    def forget(self, key: Hashable) -> None:
        self._last.pop(key, None)
        self._next.pop(key, None)
