"""The only Redis I/O in qwatch: connect, read a site's live Stats and backlog, the daemon lock.

CONTRACT STUB — the Redis helper replaces the bodies; names and fields are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from qwatch.config import RedisSettings, Site
from qwatch.stat import ClusterStat


class RedisUnavailable(Exception):
    """Refused, timed out, unauthorised or dropped; the message names the address, never the password."""


@dataclass(frozen=True, slots=True)
class Skipped:
    key: str
    reason: str


@dataclass(frozen=True)
class Poll:
    """One read of a site: every live cluster, the broker backlog, and what was refused."""

    site: str
    at: datetime  # aware UTC, when the read finished
    clusters: tuple[ClusterStat, ...]
    queued: dict[str, int] = field(default_factory=dict)  # broker list key -> LLEN
    skipped: tuple[Skipped, ...] = ()


class RedisSource:
    """A site's Redis connection, owned by qwatch: timeouts, TLS, auth, reconnect on demand."""

    def __init__(self, site: Site) -> None:
        raise NotImplementedError

    async def poll(self) -> Poll:
        """SCAN + MGET + decode + LLEN. Raises RedisUnavailable; (re)connects lazily."""
        raise NotImplementedError

    async def server_version(self) -> str:
        raise NotImplementedError

    async def acquire_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """SET key token NX PX; or extend it when we already hold it. True when we hold it."""
        raise NotImplementedError

    async def release_lock(self, key: str, token: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


async def open_connection(settings: RedisSettings):  # noqa: ANN201 - returns asyncio_redis protocol
    raise NotImplementedError
