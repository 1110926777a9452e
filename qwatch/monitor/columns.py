"""The table's columns and how they fit a terminal width (pure).

qmonitor's columns in its order (Host, Id, State, Pool, TQ, RQ, RC, Up), then qwatch's two
from the history (reincarnations in the last hour, a TQ sparkline over the range). When the
terminal is narrow the least needed go first; Host takes what is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from qwatch.monitor.records import TABLE_SLOTS

SEPARATOR = " "
HOST_MIN = 8
HOST_MAX = 32
SITE_MAX = 12


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str
    width: int
    right: bool = False  # numbers are right-aligned


# Fixed widths: Id is qmonitor's last 8 characters; State fits "gone 59m ago"; Up fits
# 999:59:59 (h:mm:ss, hours grow past 24 as qmonitor's do).
_FIXED = {
    "id": Column("id", "Id", 8),
    "state": Column("state", "State", 12),
    "pool": Column("pool", "Pool", 4, right=True),
    "tq": Column("tq", "TQ", 5, right=True),
    "rq": Column("rq", "RQ", 5, right=True),
    "rc": Column("rc", "RC", 4, right=True),
    "up": Column("up", "Up", 9, right=True),
    "rc1h": Column("rc1h", "RC 1h", 5, right=True),
    "trend": Column("trend", "TQ trend", TABLE_SLOTS),
}
ORDER = ("site", "host", "id", "state", "pool", "tq", "rq", "rc", "up", "rc1h", "trend")
# What goes first when the width runs out.
DROP_ORDER = ("trend", "rc1h", "rq", "pool", "rc", "site")


def fit_columns(
    width: int,
    *,
    sites: Sequence[str] = (),
    history: bool = True,
    host_width: int = HOST_MIN,
    range_label: str = "",
) -> list[Column]:
    """The columns that fit `width`, in display order, each with its width.

    `sites`: the site names, when more than one (a Site column appears); `host_width`: the
    longest host name on screen; `history`: whether the two history columns can be filled.
    """
    keys = [k for k in ORDER if (k != "site" or len(sites) > 1)]
    if not history:
        keys = [k for k in keys if k not in ("rc1h", "trend")]
    columns = {k: _column(k, sites, range_label) for k in keys if k != "host"}
    for victim in DROP_ORDER:
        if _needed(columns.values()) + HOST_MIN + len(SEPARATOR) <= width:
            break
        columns.pop(victim, None)
    spare = width - _needed(columns.values()) - len(SEPARATOR)
    host = Column("host", "Host", max(HOST_MIN, min(HOST_MAX, host_width, spare)))
    return [host if k == "host" else columns[k] for k in keys if k == "host" or k in columns]


def _column(key: str, sites: Sequence[str], range_label: str) -> Column:
    if key == "site":
        return Column("site", "Site", max(4, min(SITE_MAX, max(map(len, sites), default=4))))
    if key == "trend" and range_label:
        return replace(_FIXED[key], title=f"TQ {range_label}")
    return _FIXED[key]


def _needed(columns: Iterable[Column]) -> int:
    """Width of these columns, each with the separator after it, and the one that starts a
    line (the host column and its separator come on top)."""
    return sum(c.width + len(SEPARATOR) for c in columns) + len(SEPARATOR)


def cell(text: str, column: Column) -> str:
    """`text` padded or cut to the column's width ("…" marks a cut)."""
    if len(text) > column.width:
        return text[: column.width - 1] + "…" if column.width > 1 else text[: column.width]
    return text.rjust(column.width) if column.right else text.ljust(column.width)
