"""What the background reads deliver to the view state: plain frozen values (no I/O here).

`refresh` fills these from the store's reads (`qwatch.store.reads`) and hands them, with
Redis polls, to `state`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from qwatch.values import EventRow, Run

if TYPE_CHECKING:  # only a type here: keep SQLAlchemy out of the pure modules' imports
    from qwatch.values import GapRow

RunKey = tuple[str, str, datetime]  # (site, cluster_id, tob): one cluster run (Run.key)

TABLE_SLOTS = 12  # sparkline cells in the table
PANE_SLOTS = 30  # sparkline cells in the history pane


@dataclass(frozen=True, slots=True)
class Range:
    label: str
    seconds: int
    # Samples (one per cluster per sample_every) are fresh but many; minute rollups lag a
    # minute but stay few over days.
    from_samples: bool

    def window(self, now: datetime, slots: int) -> tuple[datetime, datetime, int]:
        """(start, end, slot width in s) with the end on a slot boundary at or after `now`.

        Aligned, so a slot keeps its data from one refresh to the next instead of the
        sparkline shimmering as the window slides by a few seconds.
        """
        width = max(1, self.seconds // slots)
        epoch = int(now.timestamp())
        end_epoch = -(-epoch // width) * width
        end = datetime.fromtimestamp(end_epoch, UTC)
        return end - timedelta(seconds=width * slots), end, width


RANGES = (
    Range("15m", 15 * 60, True),
    Range("1h", 3600, True),
    Range("24h", 24 * 3600, False),
    Range("7d", 7 * 24 * 3600, False),
)


class StoreKind(StrEnum):
    UNKNOWN = "unknown"  # not read yet
    UNREADABLE = "unreadable"  # no database, not migrated, or unreachable (message says which)
    EMPTY = "empty"  # migrated, no samples yet
    OK = "ok"
    ERROR = "error"  # a read failed; the last data is kept


@dataclass(frozen=True)
class StoreInfo:
    kind: StoreKind = StoreKind.UNKNOWN
    message: str = ""  # why, for the hint line or the status bar
    newest_sample: datetime | None = None

    @property
    def usable(self) -> bool:
        """Whether there is history to show (an ERROR keeps what was read before)."""
        return self.kind in (StoreKind.OK, StoreKind.ERROR)


@dataclass(frozen=True)
class TableHistory:
    """The history columns of the table, for one range."""

    range_label: str
    at: datetime
    runs: tuple[Run, ...] = ()  # with their newest sample (Run.latest)
    tq_slots: dict[int, list[float | None]] = field(default_factory=dict)  # by run pk
    rc_hour: dict[int, int] = field(default_factory=dict)  # reincarnations in the last hour


@dataclass(frozen=True)
class HostRaw:
    """Everything the history pane needs about one host of one site over one range."""

    site: str
    host: str
    range_label: str
    start: datetime
    end: datetime  # the range's end, aligned to the slot width (may be a little after now)
    at: datetime  # when it was read
    slot_count: int
    runs: tuple[Run, ...] = ()  # those up in the range, oldest first
    tq: list[float | None] = field(default_factory=list)
    rq: list[float | None] = field(default_factory=list)
    backlog: list[float | None] = field(default_factory=list)
    rc: list[float | None] = field(default_factory=list)  # reincarnations added per slot
    kinds: dict[str, int] = field(default_factory=dict)  # event counts in the range
    events: tuple[EventRow, ...] = ()  # newest first
    gaps: tuple[GapRow, ...] = ()  # the site's Redis outages in the range
