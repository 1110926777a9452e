"""The history pane's numbers for one host over one range (pure: time is passed in), and
which firing alerts concern the host.

Availability, downtime and what counts as unknown follow `qwatch.timeline`, the rules of
`qwatch history`, so the pane and the command never disagree: a run is up from its first
sighting to its end, gaps (Redis out, no daemon) and unwatched time are neither up nor down.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

from qwatch import timeline, wording
from qwatch.alerts.rules import Alert
from qwatch.monitor.records import HostRaw
from qwatch.monitor.spark import peak, sparkline
from qwatch.values import EventRow, Span

if TYPE_CHECKING:
    from qwatch.values import GapRow

MAX_EVENT_LINES = 100
_FLIP = frozenset({"Idle", "Working"})


@dataclass(frozen=True, slots=True)
class EventLine:
    at: datetime
    kind: str  # an event kind, "flips" (folded Idle/Working changes) or "gap"
    text: str
    count: int = 1  # events folded into this line


@dataclass(frozen=True)
class HostHistory:
    site: str
    host: str
    range_label: str
    at: datetime
    runs: int
    known_s: float  # the range less what nobody watched (Redis gaps, before, after)
    up_s: float
    down_s: float
    availability: float | None  # None when nothing was watched
    restarts: int
    vanished: int
    reincarnations: int
    tq_spark: str
    rq_spark: str
    backlog_spark: str
    rc_spark: str
    tq_peak: float | None
    rq_peak: float | None
    backlog_peak: float | None
    events: tuple[EventLine, ...]


def build(raw: HostRaw) -> HostHistory:
    window = Span(raw.start, max(raw.start, raw.at))
    gaps = [gap.span(raw.at) for gap in raw.gaps]
    avail = timeline.availability(raw.runs, gaps, window, raw.at)
    return HostHistory(
        site=raw.site,
        host=raw.host,
        range_label=raw.range_label,
        at=raw.at,
        runs=len(raw.runs),
        known_s=avail.known_s,
        up_s=avail.up_s,
        down_s=avail.down_s,
        availability=avail.ratio,
        restarts=raw.kinds.get("restarted", 0),
        vanished=raw.kinds.get("vanished", 0),
        reincarnations=int(sum(v for v in raw.rc if v is not None)),
        tq_spark=sparkline(raw.tq),
        rq_spark=sparkline(raw.rq),
        backlog_spark=sparkline(raw.backlog),
        rc_spark=sparkline(raw.rc),
        tq_peak=peak(raw.tq),
        rq_peak=peak(raw.rq),
        backlog_peak=peak(raw.backlog),
        events=tuple(event_lines(raw.events, raw.gaps, raw.at)[:MAX_EVENT_LINES]),
    )


def alerts_of(alerts: Sequence[Alert], site: str, host: str) -> tuple[Alert, ...]:
    """The firing alerts of `site` that concern `host`: its own (a host's or one of its
    clusters') and the site-wide ones (a stuck backlog, Redis unreachable), oldest first."""
    found = [
        alert
        for alert in alerts
        if alert.firing and alert.site == site and alert.host in (host, None)
    ]
    return tuple(sorted(found, key=lambda alert: alert.started_at))


# --- event lines -----------------------------------------------------------------------


def event_lines(
    events: Sequence[EventRow], gaps: Sequence[GapRow], now: datetime
) -> list[EventLine]:
    """Newest first. A run of Idle/Working flips folds into one line: a busy cluster flips
    every few seconds, and a screen of flips would hide the restarts."""
    lines: list[EventLine] = []
    restarted = {(e.cluster_id, e.at) for e in events if e.kind == "restarted"}
    for event in events:
        if event.kind == "appeared" and (event.cluster_id, event.at) in restarted:
            continue  # the restart line says it
        if _is_flip(event):
            last = lines[-1] if lines else None
            count = last.count + 1 if last is not None and last.kind == "flips" else 1
            text = wording.sentence(event) if count == 1 else wording.flips(count)
            line = EventLine(event.at, "flips", text, count)
            if count > 1:
                lines[-1] = replace(line, at=lines[-1].at)
            else:
                lines.append(line)
            continue
        lines.append(EventLine(event.at, event.kind, wording.sentence(event)))
    for gap in gaps:
        lines.append(EventLine(gap.started_at, "gap", wording.gap(gap, now)))
    lines.sort(key=lambda line: line.at, reverse=True)
    return lines


def _is_flip(event: EventRow) -> bool:
    return (
        event.kind == "state_changed"
        and event.detail.get("from") in _FLIP
        and event.detail.get("to") in _FLIP
    )
