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
from qwatch.config.settings import DEFAULT_NAME, DEFAULT_TIME_ZONE, RedisSettings, Site
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
    alias = q_cluster["orm"]
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
    queues = alt_queues(q_cluster, where)
    broker_database = None
    if broker == "orm" and q_cluster.get("orm"):
        broker_database = _broker_database(module, q_cluster, where, cwd)
    cache_prefix = None
    if broker != "redis":
        # Django Q then keeps its Stats in the Django cache Q_CLUSTER['cache'] names
        alias = q_cluster.get("cache", "default")
        cache = caches.get(alias)
        backend = cache.get("BACKEND") if isinstance(cache, Mapping) else None
        if backend not in _REDIS_CACHE_BACKENDS:
            raise ConfigError(
                f"{where}: the {broker} broker keeps cluster Stats in CACHES[{alias!r}], "
                "which is not a Redis cache qwatch can read"
            )
        redis, cache = _redis_from_cache(caches, alias, where)
        prefix, version = cache.get("KEY_PREFIX", ""), cache.get("VERSION", 1)
        if not isinstance(prefix, str) or not is_int(version):
            raise ConfigError(
                f"{where}: CACHES[{alias!r}] KEY_PREFIX must be a string, VERSION an integer"
            )
        cache_prefix = f"{prefix}:{version}:"  # Django's default key function
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
        alt_queues=queues,
        broker_database=broker_database,
    )
