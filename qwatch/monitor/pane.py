"""The history pane's numbers for one host over one range (pure: time is passed in).

Availability is the share of the watched time in which a cluster of this host was alive:
from each run's birth to its last sighting (or to now while it is still open). Redis
outages recorded by the daemon are neither up nor down, so they leave the watched time;
so does the time after the newest stored sample when the daemon has stopped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from qwatch.fmt import hms
from qwatch.monitor.records import EventRow, GapRow, HostRaw, RunInfo
from qwatch.monitor.spark import peak, sparkline

# A daemon samples every cluster at least every sample_every (10 s by default): no sample for
# this long means nobody is watching, and the time after is unknown rather than down.
STALE_AFTER = timedelta(minutes=2)
MAX_EVENT_LINES = 100
_FLIP = frozenset({"Idle", "Working"})

Interval = tuple[datetime, datetime]


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
    watched_s: float
    up_s: float
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

    @property
    def down_s(self) -> float:
        return max(0.0, self.watched_s - self.up_s)


def build(raw: HostRaw, newest_sample: datetime | None = None) -> HostHistory:
    """The pane for `raw`; `newest_sample` (any cluster's) says whether a daemon is watching."""
    end = raw.at
    if newest_sample is not None and raw.at - newest_sample > STALE_AFTER:
        end = newest_sample
    born = min((run.tob for run in raw.runs), default=None)
    window = [(max(raw.start, born), end)] if born is not None and born < end else []
    holes = [(g.started_at, g.ended_at or raw.at) for g in raw.gaps]
    watched = subtract(window, holes)
    up = intersect(union(_alive(run, end) for run in raw.runs), watched)
    watched_s = total(watched)
    return HostHistory(
        site=raw.site,
        host=raw.host,
        range_label=raw.range_label,
        at=raw.at,
        runs=len(raw.runs),
        watched_s=watched_s,
        up_s=total(up),
        availability=total(up) / watched_s if watched_s > 0 else None,
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


def _alive(run: RunInfo, end: datetime) -> Interval:
    last = end if run.ended_at is None else run.last_seen
    return (run.tob, max(run.tob, min(last, end)))


# --- interval arithmetic ---------------------------------------------------------------


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping; empty intervals dropped."""
    merged: list[Interval] = []
    for lo, hi in sorted(i for i in intervals if i[1] > i[0]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def intersect(a: Sequence[Interval], b: Sequence[Interval]) -> list[Interval]:
    out = []
    for lo1, hi1 in union(a):
        for lo2, hi2 in union(b):
            lo, hi = max(lo1, lo2), min(hi1, hi2)
            if hi > lo:
                out.append((lo, hi))
    return union(out)


def subtract(a: Sequence[Interval], holes: Sequence[Interval]) -> list[Interval]:
    out = union(a)
    for h_lo, h_hi in union(holes):
        kept: list[Interval] = []
        for lo, hi in out:
            if h_hi <= lo or h_lo >= hi:
                kept.append((lo, hi))
                continue
            if lo < h_lo:
                kept.append((lo, h_lo))
            if h_hi < hi:
                kept.append((h_hi, hi))
        out = kept
    return out


def total(intervals: Iterable[Interval]) -> float:
    return sum((hi - lo).total_seconds() for lo, hi in intervals)


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
            text = describe(event) if count == 1 else f"Idle ⇄ Working, {count} changes"
            line = EventLine(event.at, "flips", text, count)
            if count > 1:
                lines[-1] = replace(line, at=lines[-1].at)
            else:
                lines.append(line)
            continue
        lines.append(EventLine(event.at, event.kind, describe(event)))
    for gap in gaps:
        length = hms(((gap.ended_at or now) - gap.started_at).total_seconds())
        state = "" if gap.ended_at else ", still"
        text = f"Redis unreachable {length}{state}: {gap.reason}"
        lines.append(EventLine(gap.started_at, "gap", text))
    lines.sort(key=lambda line: line.at, reverse=True)
    return lines


def _is_flip(event: EventRow) -> bool:
    return (
        event.kind == "state_changed"
        and event.detail.get("from") in _FLIP
        and event.detail.get("to") in _FLIP
    )


def describe(event: EventRow) -> str:
    d = event.detail
    short = event.cluster_id[-8:]
    if event.kind == "restarted":
        previous = str(d.get("previous", ""))[-8:]
        down = _number(d.get("downtime_s"))
        after = f", down {hms(down)}" if down is not None else ""
        return f"restarted as {short} (was {previous}{after})"
    if event.kind == "vanished":
        gap = " during a Redis outage" if d.get("during_gap") else ""
        return f"{short} vanished{gap}, last {d.get('last_status', '?')}"
    if event.kind == "state_changed":
        return f"{short} {d.get('from', '?')} → {d.get('to', '?')}"
    if event.kind == "reincarnated":
        return f"{short} +{d.get('by', '?')} reincarnated (total {d.get('total', '?')})"
    if event.kind == "appeared":
        again = " again" if d.get("returned") else ""
        return f"{short} appeared{again}, {d.get('status', '?')}"
    return f"{short} {event.kind}"


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
