"""Where live Stats come from: async I/O behind one seam, `StatSource.poll() -> Poll`.

redis.py    the only Redis I/O: asyncio-redis' protocol on qwatch's own transport
            (TLS, ACL, timeouts), SCAN/MGET of the records, the sampler lock
discovery.py pure: which record keys a poll reads on a shared keyspace (known keys, an
            incremental SCAN under a budget of Redis time, when a late key may date from)
notify.py   keyspace notifications, where the server already sends them (a subscriber)
resp.py     pure: Redis reply parsing
decoding.py a poll's raw records -> clusters and refusals, for every source
cache.py    CacheSource: Stats through a Django cache (non-Redis broker), via a CacheReader
cache_reader.py / cache_database.py   the reader seam; Django's DatabaseCache table

Every command gets its source from `open_source(site)`, never by naming a class, so a site
whose Stats live elsewhere (another Django cache) is read by every command alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from qwatch.config import Site
    from qwatch.decode import Decoder
    from qwatch.values import Poll


class StatSource(Protocol):
    """One site's live records: read them, hold the daemon's sampler lock, close."""

    site: Site

    async def poll(self) -> Poll:
        """Every live cluster, the backlog and what was refused; raises `Unavailable`."""
        ...

    async def server_version(self) -> str:
        """What serves the records, for the monitor's header (e.g. Redis's version)."""
        ...

    async def acquire_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """Take or extend the daemon's sampler lock for this site; True when held."""
        ...

    async def release_lock(self, key: str, token: str) -> None: ...

    async def close(self) -> None: ...


def open_source(site: Site, decoder: Decoder | None = None) -> StatSource:
    """The source that reads `site`'s Stats where its Django Q writes them."""
    if site.cache is not None:
        from qwatch.sources.cache import CacheSource

        return CacheSource(site, decoder)
    from qwatch.sources.redis import RedisSource

    return RedisSource(site, decoder)
