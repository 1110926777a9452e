"""The seam between the cache-backed Stat source and each Django cache backend's store.

A `CacheReader` fetches stored values by their final cache keys (already made by the key
function) and unwraps only its backend's envelope: DatabaseCache's base64, the file cache's
expiry header and zlib, memcached's flags. What it returns is what Django's cache pickled
(or, for memcached's text flag, the text's bytes); the restricted unpicklers in
qwatch.decode judge it. Expired entries are left out, as Django's `get_many` would.
"""

from __future__ import annotations

from typing import Protocol

# A stored value larger than this is refused unread: a real Stat is under 2 KB, the index
# of record keys under 100 bytes per cluster.
MAX_VALUE_BYTES = 4 * 1024 * 1024


class CacheReader(Protocol):
    async def get_many(self, keys: list[str]) -> dict[str, bytes]:
        """The live values of those of `keys` that exist, in as few round trips as the store
        allows. Raises qwatch.errors.Unavailable (one line naming the store, no password)."""
        ...

    async def version(self) -> str:
        """What serves the cache, for the monitor's header (e.g. "memcached 1.6.18")."""
        ...

    async def close(self) -> None: ...
