"""`qwatch report [NAME]`: list the SQL report views, or run one over a time range.

The views themselves live in the migrations (migrations/versions/0002_report_views.py;
0004_daily_availability_by_day.py, which redefined daily_availability so that the range's
filter on `day` limits its work to the days asked for; and 0007_alerts_view.py, whose view
`alert_history` the report `alerts` reads; 0008_queue_backlog.py, whose view is
`hourly_queue_backlog`), so psql and sqlite3 users get the same rows; this module only
knows their names, which column holds their time, and how to print them.
docs/reporting.md describes every column.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Float, Integer, String
from sqlalchemy.ext.asyncio import AsyncConnection

from qwatch import output
from qwatch.config import Settings, safe_url
from qwatch.durations import DurationError, parse_time
from qwatch.errors import UserError
from qwatch.fmt import UTC_ZONE, Zone, day, hms, iso, when
from qwatch.store import reads
from qwatch.store.models import UTCDateTime
from qwatch.store.reads import NotReadable
from qwatch.timeline import floor

DEFAULT_RANGE = timedelta(days=7)
FORMATS = output.FORMATS
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class BadReport(UserError, ValueError):
    """An unknown report name or an unusable range; the message says which."""


@dataclass(frozen=True)
class Report:
    name: str
    about: str
    columns: dict[str, Any]  # name -> SQLAlchemy type, in the view's order
    where: str  # which rows fall in [:since, :until)
    order: str
    grain: timedelta | None = None  # --since is floored to this (the view's time unit)
    view: str = ""  # the SQL view read, when not named as the report

    @property
    def source(self) -> str:
        return self.view or self.name


_T, _S, _I, _F = UTCDateTime(), String(), Integer(), Float()

REPORTS = {
    r.name: r
    for r in (
        Report(
            "daily_availability",
            "uptime and availability per host and UTC day",
            {
                "site": _S,
                "host": _S,
                "day": _T,
                "up_s": _F,
                "down_s": _F,
                "unknown_s": _F,
                "availability": _F,
            },
            "day >= :since AND day < :until",
            "site, host, day",
            DAY,
        ),
        Report(
            "hourly_reincarnations",
            "workers reincarnated per cluster run and hour",
            {
                "site": _S,
                "host": _S,
                "cluster_id": _S,
                "hour": _T,
                "reincarnations": _I,
                "total": _I,
            },
            "hour >= :since AND hour < :until",
            "hour, site, host, cluster_id",
            HOUR,
        ),
        Report(
            "restarts",
            "each restart: the new run, the one it replaced, the downtime between",
            {
                "site": _S,
                "host": _S,
                "at": _T,
                "cluster_id": _S,
                "previous_cluster_id": _S,
                "downtime_s": _F,
            },
            "at >= :since AND at < :until",
            "at, site, host",
        ),
        Report(
            "hourly_backlog",
            "broker backlog and task queues per site and hour",
            {
                "site": _S,
                "hour": _T,
                "clusters": _I,
                "queued_avg": _F,
                "queued_max": _I,
                "task_q_avg": _F,
                "task_q_max": _I,
            },
            "hour >= :since AND hour < :until",
            "site, hour",
            HOUR,
        ),
        Report(
            "hourly_queue_backlog",
            "backlog of each queue (main and ALT_CLUSTERS) per site and hour",
            {
                "site": _S,
                "queue": _S,
                "broker": _S,
                "hour": _T,
                "samples": _I,
                "known": _I,
                "length_min": _I,
                "length_max": _I,
                "length_avg": _F,
                "oldest_age_max_s": _F,
            },
            "hour >= :since AND hour < :until",
            "site, queue, hour",
            HOUR,
        ),
        Report(
            "cluster_runs",
            "every cluster run that overlaps the range, with how long it was seen",
            {
                "site": _S,
                "host": _S,
                "cluster_id": _S,
                "pid": _I,
                "tob": _T,
                "first_seen": _T,
                "last_seen": _T,
                "ended_at": _T,
                "last_status": _S,
                "seen_s": _F,
            },
            "first_seen < :until AND COALESCE(ended_at, last_seen) >= :since",
            "site, host, first_seen",
        ),
        Report(
            "redis_gaps",
            "Redis outages the daemon rode out",
            {"site": _S, "started_at": _T, "ended_at": _T, "duration_s": _F, "reason": _S},
            "started_at < :until AND (ended_at IS NULL OR ended_at >= :since)",
            "started_at, site",
        ),
        Report(
            "alerts",
            "every alert that fired in the range: when, how long, what was sent",
            {
                "site": _S,
                "rule": _S,
                "subject": _S,
                "host": _S,
                "cluster_id": _S,
                "severity": _S,
                "summary": _S,
                "started_at": _T,
                "resolved_at": _T,
                "duration_s": _F,
                "last_notified_status": _S,
                "last_notified_at": _T,
            },
            "started_at < :until AND (resolved_at IS NULL OR resolved_at >= :since)",
            "started_at, site, rule, subject",
            view="alert_history",  # `alerts` is the table's name (migrations 0005, 0007)
        ),
    )
}


def listing() -> str:
    rows = [(r.name, r.about) for r in REPORTS.values()]
    return (
        output.table(("report", "what"), rows, right=set())
        + "\n\nrun one: qwatch report NAME [--since 7d] [--until TIME] [--format table|csv|json]"
    )


def pick(name: str) -> Report:
    try:
        return REPORTS[name]
    except KeyError:
        raise BadReport(f"no report named {name!r} (reports: {', '.join(REPORTS)})") from None


def time_range(
    since: str | None, until: str | None, now: datetime, grain: timedelta | None = None
) -> tuple[datetime, datetime]:
    """[since, until): the last 7 days by default; since floored to the report's unit."""
    try:
        end = parse_time(until, now) if until else now
    except DurationError as error:
        raise BadReport(f"--until: {error}") from None
    try:
        start = parse_time(since, now) if since else end - DEFAULT_RANGE
    except DurationError as error:
        raise BadReport(f"--since: {error}") from None
    if grain is not None:
        start = floor(start, grain)
    if start >= end:
        raise BadReport(f"--since ({iso(start)}) must be before --until ({iso(end)})")
    return start, end


async def rows(
    conn: AsyncConnection, report: Report, since: datetime, until: datetime
) -> list[dict[str, Any]]:
    """The view's rows in [since, until), as dicts with aware UTC datetimes."""
    return await reads.view_rows(
        conn, report.source, report.columns, report.where, report.order, since, until
    )


async def run(
    settings: Settings,
    name: str,
    since: str | None = None,
    until: str | None = None,
    fmt: str = "table",
    now: datetime | None = None,
) -> str:
    """The whole command: check the input, read, render. Raises BadReport or NotReadable."""
    if fmt not in FORMATS:
        raise BadReport(f"--format must be one of {', '.join(FORMATS)}")
    report = pick(name)
    start, end = time_range(since, until, now or datetime.now(UTC), report.grain)
    url = settings.database_url
    async with reads.reader(url) as conn:
        if not await reads.has_history(conn):
            raise NotReadable(f"no history yet in {safe_url(url)}: start `qwatch daemon`")
        found = await rows(conn, report, start, end)
    return render(report, found, start, end, fmt, settings.display_zone)


# --------------------------------------------------------------------------- rendering


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, float):
        return round(value, 6)
    return value


def _cell(report: Report, column: str, value: Any, zone: Zone) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        if report.grain == DAY:  # the view's days are UTC days, whatever the display zone
            return day(value)
        return when(value, zone, seconds=True)
    if column == "availability":
        return f"{value:.2%}"
    if column.endswith("_s"):
        return hms(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _header(report: Report, column: str, zone: Zone) -> str:
    """A time column's name with the zone its cells are in: `hour (UTC)`."""
    if not isinstance(report.columns[column], UTCDateTime):
        return column
    return UTC_ZONE.header(column) if report.grain == DAY else zone.header(column)


def render(
    report: Report,
    found: list[dict[str, Any]],
    since: datetime,
    until: datetime,
    fmt: str,
    zone: Zone = UTC_ZONE,
) -> str:
    """Tables show times in `zone` (a daily report's days stay UTC days); CSV and JSON UTC."""
    columns = list(report.columns)
    if fmt == "json":
        return output.json(
            {
                "report": report.name,
                "since": iso(since),
                "until": iso(until),
                "rows": [{k: _json_value(v) for k, v in row.items()} for row in found],
            },
            pretty=True,
        )
    if fmt == "csv":
        return output.csv(columns, ([_json_value(row[c]) for c in columns] for row in found))
    head = f"{report.name}: {when(since, zone)} - {when(until, zone)} {zone.name}"
    if not found:
        return f"{head}\nno rows in this range"
    numeric = {i for i, c in enumerate(columns) if isinstance(report.columns[c], Integer | Float)}
    cells = [[_cell(report, c, row[c], zone) for c in columns] for row in found]
    headers = [_header(report, c, zone) for c in columns]
    return f"{head}\n{output.table(headers, cells, right=numeric)}"
