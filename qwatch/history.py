"""`qwatch history <cluster|host>`: one run's, or one host's, history as a table, CSV or JSON.

Reading is `read()` (SQL through qwatch.store.reads), the arithmetic is qwatch.timeline,
and the rest of this module renders. Input is checked before the database is opened, so a
typo is reported even when no database is there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from qwatch import output, wording
from qwatch import timeline as tl
from qwatch.alert_list import alert_json
from qwatch.alerts.rules import Alert
from qwatch.config import Settings, safe_url
from qwatch.durations import DurationError, parse_duration, parse_time
from qwatch.errors import UserError
from qwatch.fmt import UTC_ZONE, Zone, days_hms, duration, hms, iso, short_id, when
from qwatch.retention import Retention
from qwatch.store import reads
from qwatch.store.reads import NotReadable, Selection
from qwatch.values import EventRow, GapRow, QueueSummary, Run

DEFAULT_RANGE = timedelta(hours=24)
FORMATS = output.FORMATS


class BadInput(UserError, ValueError):
    """A range, width or format that cannot be used; the message names the option."""


@dataclass(frozen=True)
class Request:
    """The command line's words, unparsed."""

    ref: str
    since: str | None = None
    until: str | None = None
    every: str | None = None
    events_only: bool = False
    fmt: str = "table"
    site: str | None = None


@dataclass(frozen=True)
class History:
    selection: Selection
    plan: tl.Plan
    runs: tuple[Run, ...]  # the selection's runs that overlap the range, oldest first
    buckets: list[tl.Bucket]
    events: list[EventRow]
    gaps: list[GapRow]
    summary: tl.Summary
    # Alerts about the selection (its hosts, its clusters, its sites' site-wide rules) that
    # fired or resolved in the range: `--events` lists their starts and ends too.
    alerts: tuple[Alert, ...] = ()
    # Each queue of the selection's sites over the range (main and ALT_CLUSTERS).
    queues: tuple[QueueSummary, ...] = ()


@dataclass(frozen=True)
class AlertMark:
    """An alert's start or end, listed beside the events."""

    at: datetime
    alert: Alert
    resolved: bool

    @property
    def kind(self) -> str:
        return "alert_resolved" if self.resolved else "alert_fired"


def alert_marks(alerts: Sequence[Alert], since: datetime, until: datetime) -> list[AlertMark]:
    """Each alert's start and end that fall in [since, until), in time order."""
    marks = [AlertMark(a.started_at, a, False) for a in alerts]
    marks += [AlertMark(a.ended_at, a, True) for a in alerts if a.ended_at is not None]
    return sorted((m for m in marks if since <= m.at < until), key=lambda m: m.at)


def _about(alerts: Sequence[Alert], runs: Sequence[Run]) -> tuple[Alert, ...]:
    hosts = {run.host for run in runs}
    ids = {run.cluster_id for run in runs}
    return tuple(
        a
        for a in alerts
        if a.host is None or a.cluster_id in ids or (a.cluster_id is None and a.host in hosts)
    )


def make_plan(request: Request, now: datetime, kept: Retention) -> tl.Plan:
    """The range and buckets the request asks for: last 24 h by default."""
    if request.fmt not in FORMATS:
        raise BadInput(f"--format must be one of {', '.join(FORMATS)}")
    try:
        until = parse_time(request.until, now) if request.until else now
    except DurationError as error:
        raise BadInput(f"--until: {error}") from None
    try:
        since = parse_time(request.since, now) if request.since else until - DEFAULT_RANGE
    except DurationError as error:
        raise BadInput(f"--since: {error}") from None
    try:
        every = parse_duration(request.every) if request.every else None
    except DurationError as error:
        raise BadInput(f"--every: {error}") from None
    try:
        return tl.plan(since, until, now, every, kept)
    except tl.PlanError as error:
        raise BadInput(str(error)) from None


async def read(
    conn: AsyncConnection, ref: str, plan: tl.Plan, now: datetime, site: str | None = None
) -> History:
    """Resolve `ref` and read what the plan needs; raises reads.BadReference."""
    selection = await reads.resolve(conn, ref, site=site, within=plan.range)
    runs = selection.runs
    if selection.kind == "host":  # a host's story in this range: the runs up in it
        runs = tuple(r for r in runs if r.up(now).clip(plan.range) is not None)
    pks = [r.pk for r in runs]
    points = await reads.points(conn, pks, plan.source, plan.since, plan.until)
    events = await reads.events(conn, pks, plan.since, plan.until)
    gap_rows = await reads.gaps(conn, selection.sites, plan.since, plan.until)
    gaps = [g.span(now) for g in gap_rows]
    stored = await reads.alerts(conn, sites=selection.sites, since=plan.since)
    in_range = [row.alert for row in stored if row.alert.started_at < plan.until]
    return History(
        selection=selection,
        plan=plan,
        runs=runs,
        buckets=tl.bucketize(plan, selection.runs, points, gaps, now),
        events=events,
        gaps=gap_rows,
        summary=tl.summarize(plan, selection.runs, points, gaps, events, now),
        alerts=_about(in_range, runs),
        queues=tuple(await reads.queue_backlogs(conn, selection.sites, plan.since, plan.until)),
    )


async def run(settings: Settings, request: Request, now: datetime | None = None) -> str:
    """The whole command: check the input, read, render. Raises BadInput, NotReadable or
    reads.BadReference, each with a message for people."""
    now = now or datetime.now(UTC)
    plan = make_plan(request, now, settings.daemon.retention)
    url = settings.database_url
    async with reads.reader(url) as conn:
        if not await reads.has_history(conn):
            raise NotReadable(f"no history yet in {safe_url(url)}: start `qwatch daemon`")
        history = await read(conn, request.ref, plan, now, request.site)
    return render(history, request.fmt, events_only=request.events_only, zone=settings.display_zone)


# --------------------------------------------------------------------------- rendering


def render(history: History, fmt: str, *, events_only: bool = False, zone: Zone = UTC_ZONE) -> str:
    """Tables show times in `zone`; CSV and JSON always in UTC."""
    marks = alert_marks(history.alerts, history.plan.since, history.plan.until)
    if fmt == "json":
        return as_json(history, events_only=events_only)
    if fmt == "csv":
        return events_csv(history.events, marks) if events_only else buckets_csv(history.buckets)
    if events_only:
        return f"{title(history, zone)}\n{events_table(history.events, zone, marks)}"
    return "\n".join(
        [title(history, zone), buckets_table(history, zone), "", summary_text(history, zone)]
    )


def title(history: History, zone: Zone = UTC_ZONE) -> str:
    """Two lines: what was selected, then the range (80 columns even for a full UUID)."""
    sel, plan = history.selection, history.plan
    if sel.kind == "host":
        n = len(history.runs)
        what = f"host {sel.ref}: {n} cluster run{'s' if n != 1 else ''} in range"
    else:
        run = sel.runs[0]
        what = f"cluster {run.cluster_id} on {run.host}"
    same_year = plan.since.year == plan.until.year
    since = when(plan.since, zone)
    until = when(plan.until, zone, date="day" if same_year else "year")
    return (
        f"{what}\n{since} - {until} {zone.name}, every {duration(plan.every)}, from {plan.source}"
    )


_SHORT_STATES = {"Starting": "Strt", "Idle": "Idle", "Working": "Work", "Stopping": "Stpg",
                 "Stopped": "Stpd"}  # fmt: skip
_STATE_WIDTH = 13


def _state(bucket: tl.Bucket) -> str:
    text = bucket.label
    if len(text) > _STATE_WIDTH:  # three states or more: keep the table in 80 columns
        text = "+".join(_SHORT_STATES[s] for s in bucket.states)
    return text


def _cluster(bucket: tl.Bucket) -> str:
    if not bucket.cluster_ids:
        return "-"
    newest = short_id(bucket.cluster_ids[-1])
    return newest + ("+" if len(bucket.cluster_ids) > 1 else "")  # a restart in the bucket


def _num(value: int | float | None) -> str:
    return "-" if value is None else str(value)


def buckets_table(history: History, zone: Zone = UTC_ZONE) -> str:
    """One row per bucket; TQ, RQ and backlog are the bucket's highest values."""
    seconds = history.plan.every < timedelta(minutes=1)
    rows = [
        (
            when(b.span.start, zone, date="day", seconds=seconds),
            _cluster(b),
            _state(b),
            _num(b.pool),
            _num(b.tq_max),
            _num(b.rq_max),
            _num(b.queued_max),
            _num(b.rc),
            days_hms(b.uptime_s),
        )
        for b in history.buckets
    ]
    headers = (
        zone.header("time"),
        "cluster",
        "state",
        "pool",
        "TQ",
        "RQ",
        "backlog",
        "RC",
        "uptime",
    )
    return output.table(headers, rows, right={3, 4, 5, 6, 7, 8})


def summary_text(history: History, zone: Zone = UTC_ZONE) -> str:
    s = history.summary
    a = s.availability
    lines = []
    if a.ratio is None:
        lines.append(("availability", "unknown: nothing in this range was watched"))
    else:
        lines.append(("availability", f"{a.ratio:.2%} (up {hms(a.up_s)} of {hms(a.known_s)})"))
    if a.unknown_s > 0:
        gaps = f" ({hms(a.gap_s)} in gaps)" if a.gap_s > 0 else ""
        lines.append(("unknown", f"{hms(a.unknown_s)}{gaps}"))
    longest = s.longest_downtime
    down = (
        "none"
        if longest is None
        else f"{hms(longest.seconds)} from {when(longest.start, zone, date='day', seconds=True)}"
    )
    tq = "-" if s.tq_mean is None else f"mean {s.tq_mean:.2f}, max {s.tq_max}"
    lines += [
        ("restarts", str(s.restarts)),
        ("reincarnations", str(s.reincarnations)),
        ("longest down", down),
        ("task queue", tq),
    ]
    several = len({q.site for q in history.queues}) > 1
    for q in history.queues:
        name = f"{q.site}/{q.queue}" if several else q.queue
        lines.append((f"backlog {name}", _queue_text(q)))
    return "\n".join(f"{name:<15} {text}" for name, text in lines)


def _queue_text(q: QueueSummary) -> str:
    """`max 12, mean 3.50 (120 samples)`; unknown samples counted, never read as zero."""
    unknown = q.samples - q.known
    note = f"{q.samples} samples" + (f", {unknown} unknown" if unknown else "")
    if q.length_mean is None:
        return f"unknown ({note})"
    return f"max {q.length_max}, mean {q.length_mean:.2f} ({note})"


def _mark_detail(mark: AlertMark) -> str:
    alert = mark.alert
    if not mark.resolved:
        return f"{alert.rule} ({alert.severity}): {alert.summary}"
    assert alert.ended_at is not None
    return f"{alert.rule} after {duration(alert.ended_at - alert.started_at)}"


def events_table(
    events: Sequence[EventRow], zone: Zone = UTC_ZONE, marks: Sequence[AlertMark] = ()
) -> str:
    if not events and not marks:
        return "no events in this range"
    timed = [(e.at, (short_id(e.cluster_id), e.kind, wording.detail(e))) for e in events] + [
        (
            m.at,
            (short_id(m.alert.cluster_id) if m.alert.cluster_id else "-", m.kind, _mark_detail(m)),
        )
        for m in marks
    ]
    timed.sort(key=lambda item: item[0])  # stable: an event stays before an alert it caused
    rows = [(when(at, zone, date="day", seconds=True), *cells) for at, cells in timed]
    return output.table((zone.header("time"), "cluster", "event", "detail"), rows, right=set())


def _r(value: float | None, places: int = 3) -> float | None:
    return None if value is None else round(value, places)


def bucket_json(b: tl.Bucket) -> dict[str, Any]:
    return {
        "start": iso(b.span.start),
        "end": iso(b.span.end),
        "cluster_ids": list(b.cluster_ids),
        "states": list(b.states),
        "label": b.label,
        "pool": b.pool,
        "tq_max": b.tq_max,
        "tq_avg": _r(b.tq_avg),
        "rq_max": b.rq_max,
        "rq_avg": _r(b.rq_avg),
        "queued_max": b.queued_max,
        "queued_avg": _r(b.queued_avg),
        "rc": b.rc,
        "uptime_s": _r(b.uptime_s),
        "up_s": _r(b.up_s),
        "down_s": _r(b.down_s),
        "unknown_s": _r(b.unknown_s),
        "gap_s": _r(b.gap_s),
    }


def run_json(r: Run) -> dict[str, Any]:
    return {
        "cluster_id": r.cluster_id,
        "site": r.site,
        "host": r.host,
        "pid": r.pid,
        "tob": iso(r.tob),
        "first_seen": iso(r.first_seen),
        "last_seen": iso(r.last_seen),
        "ended_at": iso(r.ended_at),
        "last_status": r.last_status,
    }


def event_json(e: EventRow) -> dict[str, Any]:
    return {"at": iso(e.at), "cluster_id": e.cluster_id, "kind": e.kind, "detail": e.detail}


def summary_json(history: History) -> dict[str, Any]:
    s, plan, sel = history.summary, history.plan, history.selection
    a = s.availability
    longest = s.longest_downtime
    return {
        "reference": sel.ref,
        "selection": sel.kind,
        "since": iso(plan.since),
        "until": iso(plan.until),
        "every_s": plan.every.total_seconds(),
        "source": str(plan.source),
        "range_s": _r(a.range_s),
        "observed_from": iso(a.observed.start) if a.observed else None,
        "up_s": _r(a.up_s),
        "down_s": _r(a.down_s),
        "unknown_s": _r(a.unknown_s),
        "gap_s": _r(a.gap_s),
        "availability": _r(a.ratio, 6),
        "restarts": s.restarts,
        "reincarnations": s.reincarnations,
        "longest_downtime_s": _r(longest.seconds) if longest else None,
        "longest_downtime_from": iso(longest.start) if longest else None,
        "tq_mean": _r(s.tq_mean),
        "tq_max": s.tq_max,
        "queues": [
            {
                "site": q.site,
                "queue": q.queue,
                "broker": q.broker,
                "samples": q.samples,
                "known": q.known,
                "length_max": q.length_max,
                "length_mean": _r(q.length_mean),
            }
            for q in history.queues
        ],
        "gaps": [
            {
                "started_at": iso(g.started_at),
                "ended_at": iso(g.ended_at),
                "kind": g.kind,
                "reason": g.reason,
            }
            for g in history.gaps
        ],
    }


def as_json(history: History, *, events_only: bool = False) -> str:
    document: dict[str, Any] = {"clusters": [run_json(r) for r in history.runs]}
    if not events_only:
        document["buckets"] = [bucket_json(b) for b in history.buckets]
    document["events"] = [event_json(e) for e in history.events]
    if events_only:
        document["alerts"] = [alert_json(a) for a in history.alerts]
    else:
        document["summary"] = summary_json(history)
    return output.json(document, pretty=True)


BUCKET_COLUMNS = (
    "start", "end", "cluster_ids", "states", "pool", "tq_max", "tq_avg", "rq_max", "rq_avg",
    "queued_max", "queued_avg", "rc", "uptime_s", "up_s", "down_s", "unknown_s", "gap_s",
)  # fmt: skip


def _bucket_csv(b: tl.Bucket) -> list[object]:
    row = bucket_json(b)
    row["cluster_ids"] = " ".join(b.cluster_ids)
    row["states"] = " ".join(b.states)
    return [row[c] for c in BUCKET_COLUMNS]


def buckets_csv(buckets: Sequence[tl.Bucket]) -> str:
    return output.csv(BUCKET_COLUMNS, (_bucket_csv(b) for b in buckets))


def events_csv(events: Sequence[EventRow], marks: Sequence[AlertMark] = ()) -> str:
    timed: list[tuple[datetime, list[object]]] = [
        (e.at, [iso(e.at), e.cluster_id, e.kind, output.json_cell(e.detail)]) for e in events
    ]
    for m in marks:
        a = m.alert
        detail = {
            "rule": a.rule,
            "subject": a.subject,
            "severity": a.severity,
            "summary": a.summary,
        }
        timed.append((m.at, [iso(m.at), a.cluster_id or "", m.kind, output.json_cell(detail)]))
    timed.sort(key=lambda item: item[0])
    return output.csv(("at", "cluster_id", "kind", "detail"), (row for _, row in timed))
