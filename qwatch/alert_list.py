"""`qwatch alerts`: the alerts firing now, or with `--since` also those that ended since;
as a table (times in the display zone), CSV or JSON (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from qwatch import output
from qwatch.alerts.rules import Alert
from qwatch.alerts.silences import Silence, silenced
from qwatch.config import Settings
from qwatch.durations import parse_time
from qwatch.errors import UserError
from qwatch.fmt import UTC_ZONE, Zone, duration, iso, when
from qwatch.store import reads
from qwatch.store.reads import AlertRow

HEADERS = ("rule", "site", "subject", "severity", "started", "resolved", "lasted", "notified")


class BadAlertsRequest(UserError, ValueError):
    """An unusable --format or --since."""


async def run(
    settings: Settings, since: str | None = None, fmt: str = "table", now: datetime | None = None
) -> str:
    if fmt not in output.FORMATS:
        raise BadAlertsRequest(f"--format must be one of {', '.join(output.FORMATS)}")
    at = now or datetime.now(UTC)
    start = parse_time(since, at) if since is not None else None
    async with reads.reader(settings.database_url) as conn:
        found = await reads.alerts(conn, since=start)
        quiet = await reads.silences(conn, active_at=at)
    return render(found, quiet, at, fmt, settings.display_zone, past=start is not None)


def alert_json(alert: Alert) -> dict[str, Any]:
    """An alert as JSON: `qwatch alerts` and `qwatch history --events` alike."""
    return {
        "rule": alert.rule,
        "site": alert.site,
        "subject": alert.subject,
        "host": alert.host,
        "cluster_id": alert.cluster_id,
        "severity": alert.severity,
        "summary": alert.summary,
        "started_at": iso(alert.started_at),
        "resolved_at": iso(alert.ended_at),
    }


def _row(row: AlertRow, quiet: list[Silence], at: datetime) -> dict[str, Any]:
    alert = row.alert
    return {
        **alert_json(alert),
        "last_notified_at": iso(row.last_notified_at),
        "last_notified_status": row.last_notified_status,
        "silenced": alert.firing and silenced(alert, quiet, at),
        "details": dict(alert.details),
    }


def render(
    found: list[AlertRow],
    quiet: list[Silence],
    at: datetime,
    fmt: str,
    zone: Zone = UTC_ZONE,
    *,
    past: bool = False,
) -> str:
    rows = [_row(row, quiet, at) for row in found]
    if fmt == "json":
        return output.json(rows, pretty=True)
    if fmt == "csv":
        columns = [c for c in rows[0] if c != "details"] if rows else list(_CSV)
        return output.csv(
            [*columns, "details"],
            ([*(r[c] for c in columns), output.json_cell(r["details"])] for r in rows),
        )
    if not found:
        return "no alert fired in this range" if past else "no alert firing"
    cells = []
    for row, shown in zip(found, rows, strict=True):
        alert = row.alert
        end = alert.ended_at
        notified = row.last_notified_status or ("silenced" if shown["silenced"] else "-")
        cells.append(
            [
                alert.rule,
                alert.site,
                alert.subject or "-",
                alert.severity,
                when(alert.started_at, zone, seconds=True),
                "firing" if end is None else when(end, zone, seconds=True),
                duration((end or at) - alert.started_at),
                notified,
            ]
        )
    headers = [zone.header(h) if h in ("started", "resolved") else h for h in HEADERS]
    table = output.table(headers, cells, right=set())
    summaries = "\n".join(f"  {row.alert.summary}" for row in found if row.alert.firing)
    return f"{table}\n{summaries}" if summaries else table


_CSV = (
    "rule", "site", "subject", "host", "cluster_id", "severity", "summary", "started_at",
    "resolved_at", "last_notified_at", "last_notified_status", "silenced",
)  # fmt: skip
