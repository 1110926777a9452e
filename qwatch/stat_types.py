"""What decoding a Django Q status record yields: a `ClusterStat`, or a `DecodeError`.

Their own module so that every stage of the decoder (signature, safe_pickle, record_memo,
stat) can name them without importing one another; `qwatch.stat` re-exports them, and the
rest of qwatch imports them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

STATES = ("Starting", "Idle", "Working", "Stopping", "Stopped")


class DecodeError(ValueError):
    """A record qwatch refuses; `reason` is short and safe to print (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClusterStat:
    name: str  # the site: Q_CLUSTER['name'], the signing salt
    cluster_id: str  # uuid4 text, or the pid as text for django-q < 1.2
    host: str
    pid: int | None  # qcluster main pid; None before django-q 1.2
    sentinel: int | None
    monitor: int | None
    pusher: int | None
    workers: tuple[int, ...]
    status: str  # one of STATES
    task_q_size: int
    done_q_size: int
    reincarnations: int
    tob: datetime  # aware, UTC
    timestamp: datetime  # aware, UTC

    @property
    def pool(self) -> int:
        return len(self.workers)

    @property
    def uptime_s(self) -> float:
        return (self.timestamp - self.tob).total_seconds()

    @property
    def short_id(self) -> str:
        """The last 8 characters, as Django Q's qmonitor shows the id."""
        return self.cluster_id[-8:]
