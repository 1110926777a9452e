"""What the listener knows: the daemon's latest poll of each site, kept in memory.

Pure: the daemon hands `ListenerState.observe` a plain `Snapshot` after each poll, with
the time passed in; the endpoints read a frozen `View` of it. Nothing here does I/O, so
a scrape never touches Redis or SQL, and the rules about time (a vanished cluster's
series linger 5 minutes, a host is remembered 24 hours) are tested without servers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from importlib import metadata

from qwatch.values import Backlog, ClusterStat, Poll

CLUSTER_LINGER = timedelta(minutes=5)  # a vanished cluster's series, for rate() to see its end
HOST_MEMORY = timedelta(hours=24)  # a host that had a cluster keeps its qwatch_host_clusters
HEALTHY_TICKS = 3  # /healthz: the loop ticked within this many intervals
# Poll durations, seconds: a 1 s interval with headroom either side.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def qwatch_version() -> str:
    try:
        return metadata.version("qwatch")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@dataclass(frozen=True)
class SiteSnapshot:
    """One site's part of one poll, as the daemon saw it."""

    site: str
    leader: bool  # this daemon holds the site's sampler lock
    duration_s: float
    poll: Poll | None = None  # None: standing by, backing off, or Redis failed
    error: str | None = None  # why Redis could not be read (None when it was, or standby)
    events: Mapping[str, int] = field(default_factory=dict)  # event kind -> count this poll
    alerts_firing: Mapping[str, int] = field(default_factory=dict)  # rule -> firing (sampler)

    @property
    def reached_redis(self) -> bool:
        """Read on this poll: the sampler got its records, a standby renewed its bid."""
        return self.error is None and (self.poll is not None or not self.leader)


@dataclass(frozen=True)
class Snapshot:
    at: datetime  # aware UTC: when the poll finished
    sites: tuple[SiteSnapshot, ...]
    pending: int  # polls waiting in the history writer's buffer
    dropped: int  # polls the writer dropped since the daemon started
    capacity: int  # the writer's buffer size


@dataclass(frozen=True)
class Lingering:
    """A cluster still exported: live on the last poll (`live`), or vanished < 5 min ago."""

    stat: ClusterStat
    live: bool


@dataclass(frozen=True)
class SiteView:
    site: str
    leader: bool
    redis_up: bool
    error: str | None
    last_poll_at: datetime | None  # the last successful read
    clusters: tuple[Lingering, ...]  # empty unless leader
    hosts: Mapping[str, int]  # host seen in the last 24 h -> live clusters now (leader only)
    backlogs: tuple[Backlog, ...]  # every queue of the site, last poll (leader only)
    skipped: Mapping[str, int]  # reason -> records, last poll
    events: Mapping[str, int]  # kind -> events since the daemon started
    buckets: tuple[int, ...]  # cumulative poll-duration counts, one per DURATION_BUCKETS + inf
    duration_sum: float
    polls: int
    poll: Poll | None  # the last successful read, for /api/clusters (leader only)
    alerts_firing: Mapping[str, int] = field(default_factory=dict)  # rule -> firing (leader)


@dataclass(frozen=True)
class View:
    """Everything one scrape or probe reads, frozen: safe to render in another thread."""

    at: datetime | None  # the last poll; None before the first
    interval_s: float
    sites: tuple[SiteView, ...]
    pending: int
    dropped: int
    capacity: int
    version: str
    queue_limits: Mapping[str, int]  # site -> Django Q's queue_limit, where known


@dataclass
class _Site:
    name: str
    last: SiteSnapshot | None = None
    last_poll: Poll | None = None
    last_poll_at: datetime | None = None
    # cluster_id -> (last record, last poll that listed it)
    seen: dict[str, tuple[ClusterStat, datetime]] = field(default_factory=dict)
    hosts: dict[str, datetime] = field(default_factory=dict)  # host -> last time it had one
    events: Counter[str] = field(default_factory=Counter)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    duration_sum: float = 0.0
    polls: int = 0
    alerts_firing: Mapping[str, int] = field(default_factory=dict)


class ListenerState:
    """The daemon's side calls `observe`; the listener's side calls `view`."""

    def __init__(
        self, interval_s: float, version: str, queue_limits: Mapping[str, int] | None = None
    ) -> None:
        self.interval_s = interval_s
        self.version = version
        self.queue_limits = dict(queue_limits or {})
        self._sites: dict[str, _Site] = {}
        self._last: Snapshot | None = None

    def observe(self, snapshot: Snapshot) -> None:
        self._last = snapshot
        for part in snapshot.sites:
            site = self._sites.setdefault(part.site, _Site(part.site))
            site.last = part
            site.polls += 1
            site.duration_sum += part.duration_s
            for index, bound in enumerate(DURATION_BUCKETS):
                if part.duration_s <= bound:
                    site.buckets[index] += 1
            site.buckets[-1] += 1
            site.events.update(part.events)
            site.alerts_firing = part.alerts_firing if part.leader else {}
            if not part.leader:
                # Only the sampler exports cluster series: a pair scraped together counts once.
                site.seen.clear()
                site.hosts.clear()
                continue
            if part.poll is None:
                continue  # Redis failed: the last known clusters stand until it is back
            site.last_poll, site.last_poll_at = part.poll, snapshot.at
            for stat in part.poll.clusters:
                site.seen[stat.cluster_id] = (stat, snapshot.at)
                site.hosts[stat.host] = snapshot.at
            gone = snapshot.at - CLUSTER_LINGER
            for cluster_id in [c for c, (_, at) in site.seen.items() if at < gone]:
                del site.seen[cluster_id]
            forgotten = snapshot.at - HOST_MEMORY
            for host in [h for h, at in site.hosts.items() if at < forgotten]:
                del site.hosts[host]

    def view(self) -> View:
        return self.capture().view()

    def capture(self) -> Captured:
        """Copies of what a View is built from, taken at C speed on the daemon's loop, so
        the View itself (a tuple per cluster) can be built in another thread."""
        sites = tuple(
            replace(
                site,
                seen=dict(site.seen),
                hosts=dict(site.hosts),
                events=Counter(site.events),
                buckets=list(site.buckets),
            )
            for site in self._sites.values()
        )
        return Captured(self._last, sites, self.interval_s, self.version, self.queue_limits)


@dataclass(frozen=True)
class Captured:
    snapshot: Snapshot | None
    sites: tuple[_Site, ...]
    interval_s: float
    version: str
    queue_limits: Mapping[str, int]

    def view(self) -> View:
        snapshot = self.snapshot
        return View(
            at=snapshot.at if snapshot else None,
            interval_s=self.interval_s,
            sites=tuple(_site_view(site) for site in self.sites),
            pending=snapshot.pending if snapshot else 0,
            dropped=snapshot.dropped if snapshot else 0,
            capacity=snapshot.capacity if snapshot else 1,
            version=self.version,
            queue_limits=self.queue_limits,
        )


def _site_view(site: _Site) -> SiteView:
    last = site.last
    assert last is not None  # a _Site is made by observing it
    live_ids = (
        {s.cluster_id for s in site.last_poll.clusters} if site.last_poll is not None else set()
    )
    clusters = tuple(Lingering(stat, stat.cluster_id in live_ids) for stat, _ in site.seen.values())
    hosts = dict.fromkeys(site.hosts, 0)
    if last.leader and site.last_poll is not None:
        for stat in site.last_poll.clusters:
            hosts[stat.host] += 1
    poll = site.last_poll
    return SiteView(
        site=site.name,
        leader=last.leader,
        redis_up=last.reached_redis,
        error=last.error,
        last_poll_at=site.last_poll_at,
        clusters=clusters,
        hosts=hosts,
        backlogs=poll.backlogs if poll and last.leader else (),
        skipped=dict(Counter(s.reason for s in poll.skipped)) if poll and last.leader else {},
        events=dict(site.events),
        buckets=tuple(site.buckets),
        duration_sum=site.duration_sum,
        polls=site.polls,
        poll=poll if last.leader else None,
        alerts_firing=dict(site.alerts_firing) if last.leader else {},
    )


@dataclass(frozen=True)
class Probe:
    """A health answer: the HTTP status and the small JSON body saying why."""

    ok: bool
    body: dict[str, object]

    @property
    def status(self) -> int:
        return 200 if self.ok else 503


def liveness(view: View, now: datetime) -> Probe:
    """Alive while the poll loop ticked within three intervals."""
    if view.at is None:
        return Probe(False, {"status": "starting", "reason": "no poll yet"})
    age = (now - view.at).total_seconds()
    limit = HEALTHY_TICKS * view.interval_s
    body: dict[str, object] = {"last_poll_age_s": round(age, 3), "limit_s": limit}
    if age <= limit:
        return Probe(True, {"status": "ok", **body})
    return Probe(False, {"status": "stalled", "reason": "the poll loop has not ticked", **body})


def readiness(view: View) -> Probe:
    """Ready when every site was read on its last poll and the writer keeps up."""
    if view.at is None:
        return Probe(False, {"status": "starting", "reason": "no poll yet"})
    problems: list[str] = []
    sites: dict[str, str] = {}
    for site in view.sites:
        if not site.redis_up:
            sites[site.site] = "unreadable"
            problems.append(f"site {site.site!r}: Redis not read ({site.error or 'backing off'})")
        else:
            sites[site.site] = "sampling" if site.leader else "standby"
    if view.pending * 2 >= view.capacity:
        problems.append(f"history writer behind: {view.pending} of {view.capacity} polls buffered")
    body: dict[str, object] = {"sites": sites, "pending_polls": view.pending}
    if problems:
        return Probe(False, {"status": "not ready", "reasons": problems, **body})
    standby = all(state == "standby" for state in sites.values())
    return Probe(True, {"status": "standby" if standby else "ready", **body})
