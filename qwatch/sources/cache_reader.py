"""The seam between the cache-backed Stat source and each Django cache backend's store.

A `CacheReader` fetches stored values by their final cache keys (already made by the key
function) and unwraps only its backend's envelope: DatabaseCache's base64, the file cache's
expiry header and zlib, memcached's flags. What it returns is what Django's cache pickled
(or, for memcached's text flag, the text's bytes); the restricted unpicklers in
qwatch.decode judge it. Expired entries are left out, as Django's `get_many` would.

What `get_many` maps a key to, exactly:

- absent: no such key, or expired (the file cache's expiry header; memcached expires its own);
- `bytes` starting with b"\x80": the pickle Django's cache stored, byte for byte (protocol
  2 or later; any other pickle is refused). Unpickle it with qwatch.decode's restricted
  unpicklers, never `pickle.loads`;
- other `bytes`: memcached's text flag (both pymemcache and pylibmc store a `str` so, flag
  16, unpickled): the text's UTF-8, checked. UTF-8 never starts with 0x80, so the first
  byte tells the two apart; the file and database caches pickle every value, a str too;
- `Refused(reason)`: there, but not unwrapped (too large, bad zlib, bad expiry header, a
  symlink, memcached's raw-bytes flag 0, integer flags 2/4, unknown flags, a bad key, a
  reply cut short). Count it as a skipped record under `reason`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

# A stored value larger than this is refused unread: a real Stat is under 2 KB, the index
# of record keys under 100 bytes per cluster.
MAX_VALUE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Refused:
    """A stored entry the reader would not unwrap (too large, a broken envelope, an unknown
    flag); `reason` is short and safe to print. The source counts it as a skipped record."""

    reason: str


class CacheReader(Protocol):
    async def get_many(self, keys: list[str]) -> dict[str, bytes | Refused]:
        """The live values of those of `keys` that exist, in as few round trips as the store
        allows; an entry that is there but will not unwrap is a `Refused`, never an error
        for the others. Raises qwatch.errors.SourceUnavailable (one line naming the store,
        no password) when the store cannot be read at all."""
        ...

    async def version(self) -> str:
        """What serves the cache, for the monitor's header (e.g. "memcached 1.6.18")."""
        ...

    async def close(self) -> None: ...
