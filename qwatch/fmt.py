"""Plain-text formatting shared by every command (pure: no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime


def hms(seconds: float | None) -> str:
    """Uptime as qmonitor shows it: h:mm:ss (hours grow past 24)."""
    if seconds is None:
        return "-"
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC with an explicit offset, or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: set[int]) -> str:
    """Columns padded to their widest cell; `right` holds the indexes of numeric columns."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
