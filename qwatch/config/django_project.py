"""A Site from a Django project's settings module: SECRET_KEY, TIME_ZONE, Q_CLUSTER, CACHES.

The module is imported by name without django.setup(); a failure is reported by the
project line that raised it, never by the values involved.
"""

from __future__ import annotations

import importlib
import re
import sys
import traceback
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from qwatch.config.django_databases import database_url
from qwatch.config.redis_url import fields_from_kwargs, parse_redis_url
from qwatch.config.settings import (
    DEFAULT_NAME,
    DEFAULT_TIME_ZONE,
    CacheSettings,
    RedisSettings,
    Site,
)
from qwatch.config.values import check_time_zone, is_int
from qwatch.errors import ConfigError

DJANGO_DEFAULT_TIME_ZONE = "America/Chicago"  # Django's own default for TIME_ZONE

_REDIS_CACHE_BACKENDS = frozenset(
    {"django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"}
)
_NON_REDIS_BROKERS = ("broker_class", "iron_mq", "sqs", "orm", "mongo")
_DJANGO_Q_REDIS_BROKER = "django_q.brokers.redis_broker.Redis"
_DJANGO_DEFAULT_CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def _raised_at(exc: BaseException, cwd: Path) -> str:
    """' at mysite/settings.py:12' — the project line that failed, never its values."""
    line: int | None
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        filename, line = exc.filename, exc.lineno
    else:
        frames = [
            frame
            for frame in traceback.extract_tb(exc.__traceback__)
            if Path(frame.filename).is_relative_to(cwd)
        ]
        if not frames:
            return ""
        filename, line = frames[-1].filename, frames[-1].lineno
    path = Path(filename)
    shown = path.relative_to(cwd) if path.is_relative_to(cwd) else path
    return f" at {shown.as_posix()}:{line}"


def _import_settings(module_name: str, chooser: str, cwd: Path) -> ModuleType:
    """Import the project's settings by name, without django.setup() or configuring Django."""
    if not all(part.isidentifier() for part in module_name.split(".")):
        raise ConfigError(f"{chooser}: {module_name!r} is not a dotted module name")
    directory = str(cwd)
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)  # as manage.py would have it
    try:
        importlib.invalidate_caches()
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(
                f"{chooser}: no module {module_name!r} (run qwatch from the project directory "
                "or set PYTHONPATH)"
            ) from None
        raise ConfigError(
            f"{chooser}: importing {module_name!r} failed: ModuleNotFoundError "
            f"(no module {missing!r}){_raised_at(exc, cwd)}"
        ) from None
    except (Exception, SystemExit) as exc:
        failure = f"{type(exc).__name__}{_raised_at(exc, cwd)}"
        raise ConfigError(f"{chooser}: importing {module_name!r} failed: {failure}") from None
    finally:
        if added:
            with suppress(ValueError):
                sys.path.remove(directory)


def project_root(module: ModuleType, module_name: str) -> Path | None:
    """The directory the settings module was imported from (where manage.py lives), which a
    relative path in the settings (a SQLite NAME, the file cache's LOCATION) is relative to
    when the site runs `manage.py qcluster` from there, whatever qwatch's own directory."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = Path(file).absolute()
    depth = len(module_name.split(".")) + (path.name == "__init__.py")
    return path.parents[depth - 1]


def _redis_from_cache(
    caches: Mapping[Any, Any], alias: object, where: str
) -> tuple[RedisSettings, Mapping[str, Any]]:
    """The Redis behind a Django cache, as Django's RedisCache or django-redis would connect."""
    setting = f"{where}: CACHES[{alias!r}]"
    cache = caches.get(alias)
    if not isinstance(cache, Mapping):
        raise ConfigError(f"{setting} is not defined")
    location = cache.get("LOCATION")
    if isinstance(location, str) and location.strip():
        # both backends write to the first of several servers
        first = re.split("[;,]", location)[0].strip()
    elif isinstance(location, list | tuple) and location and isinstance(location[0], str):
        first = location[0]
    else:
        raise ConfigError(f"{setting}['LOCATION'] must be a Redis URL or a list of them")
    options = cache.get("OPTIONS") or {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"{setting}['OPTIONS'] must be a dict")
    # Django's RedisCache hands lower-case OPTIONS to redis-py; django-redis uses capitals.
    kwargs: dict[str, Any] = {
        k: v for k, v in options.items() if isinstance(k, str) and k.islower()
    }
    pool_kwargs = options.get("CONNECTION_POOL_KWARGS") or {}
    if not isinstance(pool_kwargs, Mapping):
        raise ConfigError(f"{setting}['OPTIONS']['CONNECTION_POOL_KWARGS'] must be a dict")
    kwargs.update(pool_kwargs)
    for upper, lower in (
        ("PASSWORD", "password"),
        ("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout"),
        ("SOCKET_TIMEOUT", "socket_timeout"),
    ):
        if upper in options:
            kwargs[lower] = options[upper]
    base = replace(RedisSettings(), **fields_from_kwargs(kwargs, f"{setting}['OPTIONS']"))
    # redis-py's from_url lets what the URL states win over the options
    redis = replace(base, **parse_redis_url(first, f"{setting}['LOCATION']"))
    return redis, cache


_DATABASE_CACHE = "django.core.cache.backends.db.DatabaseCache"
_FILE_CACHE = "django.core.cache.backends.filebased.FileBasedCache"
_MEMCACHED_CLIENTS = {
    "django.core.cache.backends.memcached.PyMemcacheCache": "pymemcache",
    "django.core.cache.backends.memcached.PyLibMCCache": "pylibmc",
}
_IN_PROCESS_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache": "LocMemCache",
    "django.core.cache.backends.dummy.DummyCache": "DummyCache",
}


def _key_function(value: object, setting: str, cwd: Path) -> str | None:
    """KEY_FUNCTION as a dotted path, imported now (the project's directory on the path, as
    for its settings) so that the cache source finds the module loaded."""
    if value is None:
        return None
    if callable(value):
        path = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
    elif isinstance(value, str) and "." in value:
        path = value
    else:
        raise ConfigError(f"{setting}['KEY_FUNCTION'] must be a dotted path or a function")
    module_name, _, name = path.rpartition(".")
    directory = str(cwd)
    added = directory not in sys.path
    if added:
        sys.path.insert(0, directory)
    try:
        function = getattr(importlib.import_module(module_name), name, None)
    except (Exception, SystemExit):
        function = None
    finally:
        if added:
            with suppress(ValueError):
                sys.path.remove(directory)
    if not callable(function):
        raise ConfigError(f"{setting}['KEY_FUNCTION'] cannot be imported as a function")
    return path


def cache_settings(
    module: ModuleType,
    caches: Mapping[Any, Any],
    alias: object,
    broker: str,
    where: str,
    cwd: Path,
) -> CacheSettings | None:
    """The non-Redis cache a non-Redis broker keeps its Stats in; None for a Redis cache
    (read as Redis). A cache that cannot be read from outside the app is a ConfigError."""
    setting = f"{where}: CACHES[{alias!r}]"
    cache = caches.get(alias)
    if not isinstance(cache, Mapping):
        raise ConfigError(
            f"{where}: the {broker} broker keeps cluster Stats in CACHES[{alias!r}], "
            "which is not defined"
        )
    backend = cache.get("BACKEND")
    if backend in _REDIS_CACHE_BACKENDS:
        return None
    if backend in _IN_PROCESS_CACHES:
        raise ConfigError(
            f"{setting} is {_IN_PROCESS_CACHES[backend]}: its Stats live inside each qcluster "
            "process; point Q_CLUSTER['cache'] at a shared cache (database, memcached, file "
            "or Redis)"
        )
    prefix, version = cache.get("KEY_PREFIX", ""), cache.get("VERSION", 1)
    if not isinstance(prefix, str) or not is_int(version):
        raise ConfigError(f"{setting} KEY_PREFIX must be a string, VERSION an integer")
    keys: dict[str, Any] = {
        "key_prefix": prefix,
        "version": int(version),
        "key_function": _key_function(cache.get("KEY_FUNCTION"), setting, cwd),
    }
    location = cache.get("LOCATION")
    if backend == _DATABASE_CACHE:
        if not isinstance(location, str) or not location:
            raise ConfigError(f"{setting}['LOCATION'] must name the cache table")
        databases = getattr(module, "DATABASES", {})
        # Django routes the cache model like any other: without routers, to "default".
        url = database_url(databases, "default", where, cwd=cwd)
        if getattr(module, "USE_TZ", True):  # Django >= 5.0 defaults to True
            entry = databases.get("default") or {}
            zone = entry.get("TIME_ZONE") or "UTC"
        else:
            zone = getattr(module, "TIME_ZONE", DJANGO_DEFAULT_TIME_ZONE) or DEFAULT_TIME_ZONE
        check_time_zone(zone, f"{where}: TIME_ZONE")
        return CacheSettings("database", url, table=location, time_zone=zone, **keys)
    if backend in _MEMCACHED_CLIENTS:
        if isinstance(location, str) and location.strip():
            servers = [part.strip() for part in re.split("[;,]", location) if part.strip()]
        elif isinstance(location, list | tuple) and all(isinstance(x, str) for x in location):
            servers = [part.strip() for part in location if part.strip()]
        else:
            servers = []
        if not servers:
            raise ConfigError(f"{setting}['LOCATION'] must be host:port or a list of them")
        client = _MEMCACHED_CLIENTS[backend]
        return CacheSettings("memcached", ",".join(servers), client=client, **keys)
    if backend == _FILE_CACHE:
        if not isinstance(location, str | Path) or not str(location):
            raise ConfigError(f"{setting}['LOCATION'] must be the cache directory")
        directory = Path(location).expanduser()
        directory = directory if directory.is_absolute() else cwd / directory
        return CacheSettings("file", directory.as_posix(), **keys)
    raise ConfigError(
        f"{setting}['BACKEND'] {backend!r} is not a cache qwatch can read (database, "
        "memcached, file or Redis)"
    )


def _optional_count(q_cluster: Mapping[str, Any], key: str, where: str) -> int | None:
    value = q_cluster.get(key)
    if value is None or value is False:  # Django Q: unset, work it out at run time
        return None
    if not is_int(value) or value < 1:
        raise ConfigError(f"{where}: Q_CLUSTER[{key!r}] must be a positive integer")
    return int(value)


_BROKER_CLASSES = {
    _DJANGO_Q_REDIS_BROKER: "redis",
    "django_q.brokers.orm.ORM": "orm",
    "django_q.brokers.aws_sqs.Sqs": "sqs",
    "django_q.brokers.mongo.Mongo": "mongo",
    "django_q.brokers.ironmq.IronMQBroker": "iron_mq",
}


def broker_kind(q_cluster: Mapping[str, Any]) -> str:
    """Django Q's broker as Site.broker names it: the first of Conf's broker keys set (the
    order django_q.brokers.get_broker tries them), a known broker_class by its kind, else
    "broker_class" (a custom class: its backlog cannot be read)."""
    broker = next((key for key in _NON_REDIS_BROKERS if q_cluster.get(key)), "redis")
    if broker == "broker_class":
        return _BROKER_CLASSES.get(q_cluster["broker_class"], "broker_class")
    return broker


def alt_queues(q_cluster: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """Q_CLUSTER['ALT_CLUSTERS'] keys: the queues of clusters started with `qcluster --name`
    (or Q_CLUSTER_NAME), each served from its own broker list."""
    alt = q_cluster.get("ALT_CLUSTERS")
    if alt is None:
        return ()
    if not isinstance(alt, Mapping):
        raise ConfigError(f"{where}: Q_CLUSTER['ALT_CLUSTERS'] must be a dict")
    for key, value in alt.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"{where}: Q_CLUSTER['ALT_CLUSTERS'] keys must be non-empty strings")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: Q_CLUSTER['ALT_CLUSTERS'][{key!r}] must be a dict")
    return tuple(alt)


def _broker_database(
    module: ModuleType, q_cluster: Mapping[str, Any], where: str, cwd: Path
) -> str | None:
    """The ORM broker's database: Q_CLUSTER['orm'] names a DATABASES alias. An alias the
    settings do not define leaves it unknown (the backlog says so), the Stats still read."""
    alias = q_cluster.get("orm") or "default"  # Conf.ORM's default, for a broker_class ORM
    if not isinstance(alias, str):
        raise ConfigError(f"{where}: Q_CLUSTER['orm'] must name a DATABASES alias")
    databases = getattr(module, "DATABASES", {})
    if isinstance(databases, Mapping) and alias not in databases:
        return None
    return database_url(databases, alias, where, cwd=cwd)


def site_from_django(
    module_name: str, *, chooser: str = "--django-settings", cwd: Path | None = None
) -> Site:
    """A Site from a Django project's settings: SECRET_KEY, TIME_ZONE, Q_CLUSTER, CACHES."""
    cwd = (cwd or Path.cwd()).absolute()
    module = _import_settings(module_name, chooser, cwd)
    where = module_name

    secret = getattr(module, "SECRET_KEY", "")
    if not isinstance(secret, str):
        raise ConfigError(f"{where}: SECRET_KEY must be a string")
    fallbacks = getattr(module, "SECRET_KEY_FALLBACKS", ())
    if not (isinstance(fallbacks, list | tuple) and all(isinstance(k, str) for k in fallbacks)):
        raise ConfigError(f"{where}: SECRET_KEY_FALLBACKS must be a list of strings")
    time_zone = getattr(module, "TIME_ZONE", DJANGO_DEFAULT_TIME_ZONE)
    if time_zone is None:  # Django's "the system's zone"; Django Q stamps are then local
        time_zone = DEFAULT_TIME_ZONE
    if not isinstance(time_zone, str):
        raise ConfigError(f"{where}: TIME_ZONE must be a string")
    check_time_zone(time_zone, f"{where}: TIME_ZONE")

    q_cluster = getattr(module, "Q_CLUSTER", {})
    if not isinstance(q_cluster, Mapping):
        raise ConfigError(f"{where}: Q_CLUSTER must be a dict")
    name = q_cluster.get("name", DEFAULT_NAME)
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: Q_CLUSTER['name'] must be a non-empty string")
    cluster_name = q_cluster.get("cluster_name")
    if cluster_name is not None and (not isinstance(cluster_name, str) or not cluster_name):
        raise ConfigError(f"{where}: Q_CLUSTER['cluster_name'] must be a non-empty string")
    caches = getattr(module, "CACHES", _DJANGO_DEFAULT_CACHES)
    if not isinstance(caches, Mapping):
        raise ConfigError(f"{where}: CACHES must be a dict")

    broker = broker_kind(q_cluster)
    root = project_root(module, module_name) or cwd
    queues = alt_queues(q_cluster, where)
    broker_database = None
    if broker == "orm":
        broker_database = _broker_database(module, q_cluster, where, root)
    cache_prefix = None
    stats_cache: CacheSettings | None = None
    if broker != "redis":
        # Django Q then keeps its Stats in the Django cache Q_CLUSTER['cache'] names
        alias = q_cluster.get("cache", "default")
        stats_cache = cache_settings(module, caches, alias, broker, where, root)
    if broker != "redis" and stats_cache is None:
        redis, cache = _redis_from_cache(caches, alias, where)
        prefix, version = cache.get("KEY_PREFIX", ""), cache.get("VERSION", 1)
        if not isinstance(prefix, str) or not is_int(version):
            raise ConfigError(
                f"{where}: CACHES[{alias!r}] KEY_PREFIX must be a string, VERSION an integer"
            )
        cache_prefix = f"{prefix}:{version}:"  # Django's default key function
    elif broker != "redis":
        redis = RedisSettings()  # unused: the Stats are in `stats_cache`
    elif q_cluster.get("django_redis"):
        redis, _ = _redis_from_cache(caches, q_cluster["django_redis"], where)
    else:
        # absent: Django Q's redis-py defaults, localhost:6379/0
        redis = RedisSettings.from_django(
            q_cluster.get("redis", {}), setting=f"{where}: Q_CLUSTER['redis']"
        )

    return Site(
        name=name,
        cluster_name=cluster_name,
        secret_key=secret,
        secret_key_fallbacks=tuple(fallbacks),
        time_zone=time_zone,
        redis=redis,
        cache_prefix=cache_prefix,
        workers=_optional_count(q_cluster, "workers", where),
        queue_limit=_optional_count(q_cluster, "queue_limit", where),
        broker=broker,
        cache=stats_cache,
        alt_queues=queues,
        broker_database=broker_database,
    )
