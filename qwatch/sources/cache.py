"""Stats read through the Django cache Django Q writes them to when its broker is not Redis.

Django Q (brokers/__init__.py set_stat/get_stats) keeps an index key, Conf.Q_STAT
`django_q:<name>:cluster`, holding the list of record keys, and one record per cluster
under `django_q:<name>:cluster:<id>` with a 3 s timeout; each key goes through the cache's
key function. A poll reads the index, then every record in one `get_many` of the backend's
`CacheReader`. What comes back is what Django's cache pickled: the index a list of str and
each record the signed str, both unpickled only by qwatch's restricted unpicklers (no
global may appear in either); anything else is a Skipped with its reason.
"""

from __future__ import annotations

import importlib
import operator
from collections.abc import Callable
from datetime import UTC, datetime

from qwatch.config.settings import CacheSettings, Site
from qwatch.decode import DecodeError, Decoder
from qwatch.decode.safe_pickle import CacheUnpickler, load
from qwatch.errors import ConfigError
from qwatch.sources.backlog import BacklogReader
from qwatch.sources.cache_reader import CacheReader, Refused
from qwatch.sources.decoding import PollDecoder
from qwatch.values import ClusterStat, Poll, Skipped

_BY_HOST_AND_ID = operator.attrgetter("host", "cluster_id")
_BY_KEY = operator.attrgetter("key")


def open_reader(settings: CacheSettings) -> CacheReader:
    """The reader of `settings.backend`'s store."""
    if settings.backend == "database":
        from qwatch.sources.cache_database import DatabaseCacheReader

        return DatabaseCacheReader(settings)
    if settings.backend == "memcached":
        from qwatch.sources.cache_memcached import MemcachedReader

        return MemcachedReader(settings)
    if settings.backend == "file":
        from qwatch.sources.cache_file import FileCacheReader

        return FileCacheReader(settings)
    raise ConfigError(f"{settings.backend} cache: not supported")


def key_maker(settings: CacheSettings) -> Callable[[str], str]:
    """Django's make_key for this cache: KEY_FUNCTION(key, prefix, version) when the project
    sets one (a dotted path, from its own settings: the config layer has imported the
    module already, with the project's directory on the path), else the default."""
    if not settings.key_function:
        return settings.make_key
    module_name, _, name = settings.key_function.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(
            f"cache KEY_FUNCTION {settings.key_function!r} cannot be imported"
        ) from None
    if not callable(function):
        raise ConfigError(f"cache KEY_FUNCTION {settings.key_function!r} is not callable")
    prefix, version = settings.key_prefix, settings.version

    def make_key(key: str) -> str:
        made = function(key, prefix, version)
        if not isinstance(made, str):
            raise ConfigError(f"cache KEY_FUNCTION {settings.key_function!r} made a non-str key")
        return made

    return make_key


def record_keys(raw: bytes, record_prefix: str) -> tuple[list[str], list[Skipped]] | str:
    """The index value (Django's pickle of a list of str) as its record keys, or why not.

    An entry that is not one of this site's record keys is refused: whoever can write the
    index must not make qwatch read other keys of the cache."""
    try:
        index = load(raw, CacheUnpickler)
    except DecodeError as exc:
        return exc.reason
    if type(index) is not list:
        return "index is not a list"
    keys: dict[str, None] = {}
    refused: list[Skipped] = []
    for entry in index:
        if type(entry) is not str:
            return "index holds something other than str"
        if not entry.startswith(record_prefix) or len(entry) == len(record_prefix):
            shown = "".join(c if c.isprintable() else "?" for c in entry[:80])
            refused.append(Skipped(shown, "index entry is not a record key of this site"))
            continue
        keys[entry] = None
    return list(keys), refused


class CacheSource:
    """A site whose Django Q writes its Stats through a Django cache other than Redis."""

    def __init__(
        self, site: Site, decoder: Decoder | None = None, reader: CacheReader | None = None
    ) -> None:
        if site.cache is None:
            raise ValueError("CacheSource needs a site with a cache")
        self.site = site
        self._make_key = key_maker(site.cache)
        self._index_key = self._make_key(site.stat_index_key)
        self._record_prefix = f"{site.stat_index_key}:"
        self._records = PollDecoder.for_site(site, decoder)
        self._reader = reader if reader is not None else open_reader(site.cache)
        self._backlogs = BacklogReader(site)  # the ORM's queue table, or "not readable"

    async def __aenter__(self) -> CacheSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def poll(self) -> Poll:
        """The index, then the records in one get_many; raises SourceUnavailable."""
        skipped: list[Skipped] = []
        index = (await self._reader.get_many([self._index_key])).get(self._index_key)
        keys: list[str] = []
        if isinstance(index, Refused):
            skipped.append(Skipped(self._index_key, index.reason))
        elif index is not None:  # missing or expired: no cluster has written yet
            listed = record_keys(index, self._record_prefix)
            if isinstance(listed, str):
                skipped.append(Skipped(self._index_key, listed))
            else:
                keys, refused = listed
                skipped += refused
        clusters: list[ClusterStat] = []
        if keys:
            made = {self._make_key(key): key[len(self._record_prefix) :] for key in keys}
            found = await self._reader.get_many(list(made))
            names: list[bytes] = []
            values: list[bytes | None] = []
            for name, value in found.items():
                if isinstance(value, Refused):
                    skipped.append(Skipped(name, value.reason))
                else:
                    names.append(name.encode())
                    values.append(value)
            clusters, bad = await self._records.decode_all(names, values, made.__getitem__)
            skipped += bad
        return Poll(
            site=self.site.name,
            at=datetime.now(UTC),
            clusters=tuple(sorted(clusters, key=_BY_HOST_AND_ID)),
            skipped=tuple(sorted(skipped, key=_BY_KEY)),
            backlogs=await self._backlogs.read(None),
        )

    async def server_version(self) -> str:
        return await self._reader.version()

    async def acquire_lock(self, key: str, token: str, ttl_s: float) -> bool:
        """Always held: qwatch only reads the cache, so it cannot keep a lock there. Run one
        daemon per cache-backed site; the history database's fence still guards writes."""
        if ttl_s <= 0:
            raise ValueError(f"lock ttl must be positive, not {ttl_s}")
        return True

    async def release_lock(self, key: str, token: str) -> None:
        return None

    async def close(self) -> None:
        await self._backlogs.close()
        await self._reader.close()
