"""Django Q status records: the `ClusterStat` value and the decoder (pure, no I/O).

CONTRACT STUB — the decoder helper replaces the bodies; the names and fields below are
what the rest of qwatch codes against.
"""

from __future__ import annotations

from collections.abc import Sequence
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


class Decoder:
    """Verifies and decodes one site's records. Build once per site, reuse for every record."""

    def __init__(
        self,
        name: str,
        secret_key: str,
        fallback_keys: Sequence[str] = (),
        time_zone: str = "UTC",
    ) -> None:
        raise NotImplementedError

    def decode(self, raw: bytes | str) -> ClusterStat:
        """Return the record's ClusterStat or raise DecodeError; never anything else."""
        raise NotImplementedError
