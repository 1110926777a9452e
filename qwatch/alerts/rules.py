"""The alert rules over one site's polls (pure: the poll's time is the only clock).

Six rules, each on by default, each with a threshold the configuration can change or switch
off (qwatch.alerts.thresholds: `Threshold`, `DEFAULTS`):

    cluster_down         per host     a host that had a live cluster has none for `for` (60 s)
    restart_loop         per host     `count` restarts within `window` (3 in 15 min)
    reincarnation_storm  per host     `count` reincarnations within `window` (10 in 10 min)
    stuck                per site     broker backlog above zero and not smaller than it was
                                      `for` ago (10 min), while a cluster is live
    queue_full           per cluster  task queue at the site's queue_limit for `for` (5 min)
    redis_unreachable    per site     Redis could not be read for `for` (30 s)

An `Evaluator` is fed each poll of its site (`Poll`: the clusters read, the backlog, whether
Redis answered) with the events the poll produced (qwatch.events' kinds) and answers which
alerts fired and which resolved. It keeps only what the rules need between polls: when each
condition started, the hosts seen with a live cluster, the restart and reincarnation times
inside their windows, and the backlog over the `stuck` window. A daemon resumes one from
the alerts table (`firing`), the hosts it knows and the events of the last window.

While Redis cannot be read, nothing is known about the clusters: every rule but
redis_unreachable holds its state (nothing fires, nothing resolves), and cluster_down also
waits out the few seconds after Redis returns in which clusters rewrite their records.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Protocol

from qwatch.alerts.thresholds import (
    CLUSTER_DOWN,
    DEFAULTS,
    QUEUE_FULL,
    REDIS_UNREACHABLE,
    REINCARNATION_STORM,
    RESTART_LOOP,
    RULES,
    STUCK,
    TAKES,
    Threshold,
)
from qwatch.events import DEFAULT_GAP_GRACE_S
from qwatch.fmt import duration
from qwatch.values import REINCARNATED, RESTARTED, ClusterStat

CRITICAL = "critical"
WARNING = "warning"

# A cluster in these states takes tasks; Stopping and Stopped ones are on their way out.
LIVE_STATES = frozenset({"Starting", "Idle", "Working"})

SEVERITY: Mapping[str, str] = MappingProxyType(
    {
        CLUSTER_DOWN: CRITICAL,
        RESTART_LOOP: CRITICAL,
        REINCARNATION_STORM: WARNING,
        STUCK: CRITICAL,
        QUEUE_FULL: WARNING,
        REDIS_UNREACHABLE: CRITICAL,
    }
)


@dataclass(frozen=True, slots=True, order=True)
class AlertKey:
    """An alert's stable identity: the subject is a host, a cluster id, or "" for the site."""

    rule: str
    site: str
    subject: str


@dataclass(frozen=True, slots=True)
class Alert:
    rule: str
    site: str
    subject: str
    severity: str
    summary: str  # one line a person can act on
    started_at: datetime  # when it fired (the condition's own start is details["since"])
    ended_at: datetime | None = None  # None while firing
    host: str | None = None
    cluster_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # the numbers, JSON-ready

    @property
    def key(self) -> AlertKey:
        return AlertKey(self.rule, self.site, self.subject)

    @property
    def firing(self) -> bool:
        return self.ended_at is None

    @property
    def labels(self) -> dict[str, str]:
        """Alertmanager-style labels: alertname, site, host and cluster_id where they apply."""
        found = {"alertname": self.rule, "site": self.site}
        if self.host is not None:
            found["host"] = self.host
        if self.cluster_id is not None:
            found["cluster_id"] = self.cluster_id
        found["severity"] = self.severity
        return found


@dataclass(frozen=True, slots=True)
class Poll:
    """What one poll of a site learned. With redis_ok False, only `at` and `reason` count."""

    site: str
    at: datetime  # aware UTC: the poll's time, the evaluator's only clock
    clusters: Sequence[ClusterStat] = ()
    redis_ok: bool = True
    queued: int | None = None  # broker backlog; None when the daemon cannot tell
    queue_limit: int | None = None  # the site's Q_CLUSTER['queue_limit'], where known
    reason: str = ""  # why Redis could not be read: short and safe to show


class SiteEvent(Protocol):
    """What the rules read of an event (qwatch.events.Event has it)."""

    @property
    def at(self) -> datetime: ...
    @property
    def host(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def detail(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Change:
    """One poll's outcome: alerts that fired, alerts that resolved, and all still firing."""

    fired: tuple[Alert, ...] = ()
    resolved: tuple[Alert, ...] = ()
    firing: tuple[Alert, ...] = ()


@dataclass(frozen=True, slots=True)
class _Active:
    """A condition holding at this poll, before its `for` is applied."""

    key: AlertKey
    host: str | None
    cluster_id: str | None
    details: dict[str, Any]


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def summary_of(rule: str, site: str, details: Mapping[str, Any]) -> str:
    """The one line for people, from the alert's numbers."""
    d = details
    held = duration(timedelta(seconds=d.get("held_s", 0)))
    if rule == CLUSTER_DOWN:
        return (
            f"{site}: no live cluster on {d['host']} for {held}; "
            "start qcluster there or check its supervisor"
        )
    if rule == RESTART_LOOP:
        window = duration(timedelta(seconds=d["window_s"]))
        return (
            f"{site}: the cluster on {d['host']} restarted {d['restarts']} times within "
            f"{window}; it is crash-looping, read its log"
        )
    if rule == REINCARNATION_STORM:
        window = duration(timedelta(seconds=d["window_s"]))
        return (
            f"{site}: {d['reincarnations']} worker reincarnations on {d['host']} within "
            f"{window}; tasks are killing workers (timeouts, memory, crashes)"
        )
    if rule == STUCK:
        return (
            f"{site}: broker backlog {d['queued']} has not shrunk in {held} "
            f"(was {d['queued_before']}) while {d['live_clusters']} cluster(s) look up; "
            "check that their workers take tasks"
        )
    if rule == QUEUE_FULL:
        return (
            f"{site}: cluster {d['cluster_id'][-8:]} on {d['host']} has had its task queue at "
            f"queue_limit {d['queue_limit']} for {held}; its workers are not keeping up"
        )
    if rule == REDIS_UNREACHABLE:
        reason = f" ({d['reason']})" if d.get("reason") else ""
        return f"{site}: Redis unreachable for {held}{reason}; qwatch cannot see the clusters"
    raise ValueError(f"unknown rule {rule!r}")


class Evaluator:
    """The rules for one site, fed one poll at a time; see the module docstring.

    `firing`, `hosts` and `events` resume it: the alerts the table holds as firing (not
    sent again), the hosts known to have had a live cluster, and the recent restarted and
    reincarnated events (the counting windows).
    """

    def __init__(
        self,
        site: str,
        thresholds: Mapping[str, Threshold] | None = None,
        *,
        firing: Iterable[Alert] = (),
        hosts: Iterable[str] = (),
        events: Iterable[SiteEvent] = (),
        grace_s: float = DEFAULT_GAP_GRACE_S,
    ) -> None:
        given = thresholds or {}
        unknown = set(given) - set(RULES)
        if unknown:
            raise ValueError(f"unknown rules {sorted(unknown)}")
        self.site = site
        self.thresholds: Mapping[str, Threshold] = MappingProxyType(
            {rule: given.get(rule, DEFAULTS[rule]) for rule in RULES}
        )
        self._grace = timedelta(seconds=grace_s)
        self._firing: dict[AlertKey, Alert] = {}
        self._since: dict[AlertKey, datetime] = {}
        self._hosts: set[str] = set(hosts)
        self._restarts: dict[str, deque[datetime]] = {}
        self._reincarnations: dict[str, deque[tuple[datetime, int]]] = {}
        self._backlog: deque[tuple[datetime, int]] = deque()
        self._redis_down = False
        self._grace_until: datetime | None = None
        for alert in firing:
            if alert.site != site or not alert.firing:
                continue
            self._firing[alert.key] = alert
            since = alert.details.get("since")
            self._since[alert.key] = (
                datetime.fromisoformat(since) if isinstance(since, str) else alert.started_at
            )
            if alert.host is not None and alert.rule == CLUSTER_DOWN:
                self._hosts.add(alert.host)
        self._count(events)

    @property
    def firing(self) -> tuple[Alert, ...]:
        return tuple(self._firing[key] for key in sorted(self._firing))

    def evaluate(self, poll: Poll, events: Iterable[SiteEvent] = ()) -> Change:
        if poll.site != self.site:
            raise ValueError(f"poll of site {poll.site!r} given to the evaluator of {self.site!r}")
        at = poll.at
        active: dict[AlertKey, _Active] = {}
        held: set[str] = set()  # rules that learn nothing from this poll
        if poll.redis_ok:
            if self._redis_down:
                self._grace_until = at + self._grace
            self._redis_down = False
            self._count(events)
            self._prune(at)
            if self._grace_until is not None and at < self._grace_until:
                held.add(CLUSTER_DOWN)
                self._note_live_hosts(poll)
            else:
                self._grace_until = None
                self._cluster_down(poll, active)
            self._counted(RESTART_LOOP, active)
            self._counted(REINCARNATION_STORM, active)
            self._stuck(poll, active)
            self._queue_full(poll, active)
        else:
            self._redis_down = True
            held.update(rule for rule in RULES if rule != REDIS_UNREACHABLE)
            key = AlertKey(REDIS_UNREACHABLE, self.site, "")
            active[key] = _Active(key, None, None, {"reason": poll.reason})
        return self._settle(at, active, held)

    # -- the generic part: `for`, firing, resolving ------------------------------------------

    def _settle(self, at: datetime, active: dict[AlertKey, _Active], held: set[str]) -> Change:
        switched_off = {rule for rule, t in self.thresholds.items() if not t.enabled}
        for key in list(self._since):
            if key.rule not in held and key not in active:
                del self._since[key]
        fired: list[Alert] = []
        for key in sorted(active):
            if key.rule in switched_off:
                continue
            condition = active[key]
            since = self._since.setdefault(key, at)
            threshold = self.thresholds[key.rule]
            details = {
                **condition.details,
                "since": _iso(since),
                "held_s": (at - since).total_seconds(),
            }
            if TAKES[key.rule] == ("for",):
                details["for_s"] = float(threshold.for_s)
            summary = summary_of(key.rule, self.site, details)
            current = self._firing.get(key)
            if current is not None:  # still firing: the numbers move, nothing is sent
                self._firing[key] = replace(current, summary=summary, details=details)
            elif (at - since).total_seconds() >= threshold.for_s:
                alert = Alert(
                    rule=key.rule,
                    site=self.site,
                    subject=key.subject,
                    severity=SEVERITY[key.rule],
                    summary=summary,
                    started_at=at,
                    host=condition.host,
                    cluster_id=condition.cluster_id,
                    details=details,
                )
                self._firing[key] = alert
                fired.append(alert)
        resolved: list[Alert] = []
        for key in sorted(self._firing):
            gone = key.rule not in held and key not in active
            if gone or key.rule in switched_off:
                alert = self._firing.pop(key)
                self._since.pop(key, None)
                resolved.append(replace(alert, ended_at=at))
        return Change(tuple(fired), tuple(resolved), self.firing)

    # -- the rules ---------------------------------------------------------------------------

    def _note_live_hosts(self, poll: Poll) -> set[str]:
        live = {stat.host for stat in poll.clusters if stat.status in LIVE_STATES}
        self._hosts |= live
        return live

    def _cluster_down(self, poll: Poll, active: dict[AlertKey, _Active]) -> None:
        live = self._note_live_hosts(poll)
        for host in sorted(self._hosts - live):
            key = AlertKey(CLUSTER_DOWN, self.site, host)
            active[key] = _Active(key, host, None, {"host": host})

    def _count(self, events: Iterable[SiteEvent]) -> None:
        for event in events:
            if event.kind == RESTARTED:
                self._restarts.setdefault(event.host, deque()).append(event.at)
            elif event.kind == REINCARNATED:
                by = event.detail.get("by", 1)
                amount = by if isinstance(by, int) and by > 0 else 1
                self._reincarnations.setdefault(event.host, deque()).append((event.at, amount))

    def _prune(self, at: datetime) -> None:
        restart_start = at - timedelta(seconds=self.thresholds[RESTART_LOOP].window_s)
        for host, times in list(self._restarts.items()):
            while times and times[0] <= restart_start:
                times.popleft()
            if not times:
                del self._restarts[host]
        storm_start = at - timedelta(seconds=self.thresholds[REINCARNATION_STORM].window_s)
        for host, counted in list(self._reincarnations.items()):
            while counted and counted[0][0] <= storm_start:
                counted.popleft()
            if not counted:
                del self._reincarnations[host]

    def _counted(self, rule: str, active: dict[AlertKey, _Active]) -> None:
        threshold = self.thresholds[rule]
        totals: dict[str, int]
        if rule == RESTART_LOOP:
            totals = {host: len(times) for host, times in self._restarts.items()}
            noun = "restarts"
        else:
            totals = {host: sum(n for _, n in c) for host, c in self._reincarnations.items()}
            noun = "reincarnations"
        for host, total in sorted(totals.items()):
            if total >= threshold.count:
                key = AlertKey(rule, self.site, host)
                details = {
                    "host": host,
                    noun: total,
                    "count": threshold.count,
                    "window_s": threshold.window_s,
                }
                active[key] = _Active(key, host, None, details)

    def _stuck(self, poll: Poll, active: dict[AlertKey, _Active]) -> None:
        live = sum(1 for stat in poll.clusters if stat.status in LIVE_STATES)
        queued = poll.queued
        if queued is None or queued <= 0 or live == 0:
            self._backlog.clear()  # drained, unknown, or nobody to drain it: a new run
            return
        at = poll.at
        self._backlog.append((at, queued))
        horizon = at - timedelta(seconds=self.thresholds[STUCK].for_s)
        # keep the newest poll at or before the horizon: the value `for` ago
        while len(self._backlog) > 1 and self._backlog[1][0] <= horizon:
            self._backlog.popleft()
        key = AlertKey(STUCK, self.site, "")
        first_at, first_queued = self._backlog[0]
        if first_at <= horizon:
            before = first_queued
        elif key in self._firing:
            # resumed while firing: until a whole window is seen, compare with what it fired at
            before = int(self._firing[key].details.get("queued_before", queued))
        else:
            return
        if queued >= before:
            details = {"queued": queued, "queued_before": before, "live_clusters": live}
            active[key] = _Active(key, None, None, details)
            # the comparison spans `for` already: the condition has held since the horizon
            self._since.setdefault(key, horizon)

    def _queue_full(self, poll: Poll, active: dict[AlertKey, _Active]) -> None:
        limit = poll.queue_limit
        if not limit:
            return
        for stat in poll.clusters:
            if stat.task_q_size >= limit:
                key = AlertKey(QUEUE_FULL, self.site, stat.cluster_id)
                details = {
                    "host": stat.host,
                    "cluster_id": stat.cluster_id,
                    "task_q_size": stat.task_q_size,
                    "queue_limit": limit,
                }
                active[key] = _Active(key, stat.host, stat.cluster_id, details)
