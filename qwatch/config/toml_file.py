"""qwatch.toml: finding and reading it, type-checking its keys, and applying its tables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from qwatch.config.database_url import async_database_url
from qwatch.config.settings import (
    CACHE_BACKENDS,
    CacheSettings,
    DaemonSettings,
    RedisSettings,
    Site,
)
from qwatch.config.values import check_time_zone, is_int
from qwatch.errors import ConfigError

CONFIG_FILE_NAME = "qwatch.toml"

# kind → (check, what the message says it must be)
_KINDS: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "texts": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
        "a list of non-empty strings",
    ),
    "count": (is_int, "an integer"),
    "seconds": (lambda v: is_int(v) or isinstance(v, float), "a number of seconds"),
}
SITE_KEYS = {
    "name": "name",
    "cluster_name": "name",
    "redis_url": "name",
    "secret_key": "name",
    "secret_key_fallbacks": "texts",
    "time_zone": "name",
    "cache_prefix": "text",
    "workers": "count",
    "queue_limit": "count",
    "django_settings": "name",
    # Stats through a Django cache other than Redis (non-Redis broker): see cache_from_table
    "stats_from": "name",
    "cache_backend": "name",
    "cache_location": "name",
    "cache_table": "name",
    "cache_key_prefix": "text",
    "cache_version": "count",
    "cache_client": "name",
    "broker": "name",
    "alt_queues": "texts",
    "broker_database_url": "name",
}
# Django Q's brokers, as Site.broker names them (qwatch.sources.backlog reads redis and orm).
BROKERS = ("redis", "orm", "sqs", "mongo", "iron_mq", "broker_class")
_CACHE_KEYS = {
    "cache_backend": "backend",
    "cache_location": "location",
    "cache_table": "table",
    "cache_key_prefix": "key_prefix",
    "cache_version": "version",
    "cache_client": "client",
}
_MEMCACHED_CLIENTS = ("pymemcache", "pylibmc")
TOP_KEYS = {
    **SITE_KEYS,
    "database_url": "name",
    "listen": "name",
    "metrics_token": "name",
    "display_time_zone": "name",
    "daemon": "table",
    "sites": "tables",
    "alerts": "table",
    "notify": "tables",
}
_DAEMON_KEYS = {
    "interval": ("seconds", "interval_s"),
    "sample_every": ("seconds", "sample_every_s"),
    "keep_samples_days": ("count", "keep_samples_days"),
    "keep_minutes_days": ("count", "keep_minutes_days"),
    "keep_hours_days": ("count", "keep_hours_days"),
}


def find_config(config_path: str | None, cwd: Path) -> tuple[Path | None, str]:
    if config_path is not None:
        path = cwd / config_path  # an absolute config_path replaces cwd
        if not path.is_file():
            raise ConfigError(f"--config: no such file {config_path!r}")
        return path, config_path
    default = cwd / CONFIG_FILE_NAME
    return (default, CONFIG_FILE_NAME) if default.is_file() else (None, CONFIG_FILE_NAME)


def read_toml(path: Path, label: str) -> dict[str, Any]:
    # Imported here: most runs of `qwatch status` read no file, and need not load the parser.
    import tomllib

    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read it ({type(exc).__name__})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib quotes the odd character it trips on, which may sit inside a secret
        reason = re.sub(r"((?:invalid|Illegal) character) \S+", r"\1", str(exc))
        raise ConfigError(f"{label}: not valid TOML: {reason}") from None


def check_table(table: Mapping[str, Any], kinds: Mapping[str, str], where: str, label: str) -> None:
    for key, value in table.items():
        if key not in kinds:
            raise ConfigError(f"{label}: unknown setting {where + key!r}")
        kind = kinds[key]
        if kind == "table" and not isinstance(value, dict):
            raise ConfigError(f"{label}: {where}{key} must be a table ([{key}])")
        if kind == "tables" and not (
            isinstance(value, list) and all(isinstance(s, dict) for s in value)
        ):
            raise ConfigError(f"{label}: {where}{key} must be an array of tables ([[{key}]])")
        if kind in _KINDS:
            check, expected = _KINDS[kind]
            if not check(value):
                raise ConfigError(f"{label}: {where}{key} must be {expected}")
            if kind == "count" and value < 1:
                raise ConfigError(f"{label}: {where}{key} must be 1 or more")


def daemon_from_table(table: Mapping[str, Any], label: str) -> DaemonSettings:
    kinds = {key: kind for key, (kind, _) in _DAEMON_KEYS.items()}
    check_table(table, kinds, "daemon.", label)
    try:
        return DaemonSettings(**{_DAEMON_KEYS[key][1]: value for key, value in table.items()})
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def apply_table(site: Site, table: Mapping[str, Any], where: str, label: str) -> Site:
    """A TOML site's keys (already type-checked) over `site`."""
    changes: dict[str, Any] = {
        key: table[key]
        for key in ("name", "cluster_name", "secret_key", "cache_prefix", "workers", "queue_limit")
        if key in table
    }
    if "secret_key_fallbacks" in table:
        changes["secret_key_fallbacks"] = tuple(table["secret_key_fallbacks"])
    if "time_zone" in table:
        changes["time_zone"] = check_time_zone(table["time_zone"], f"{label}: {where}time_zone")
    if "redis_url" in table:
        changes["redis"] = RedisSettings.from_url(
            table["redis_url"], setting=f"{label}: {where}redis_url"
        )
    changes["cache"] = cache_from_table(site.cache, table, where, label)
    if "broker" in table:
        if table["broker"] not in BROKERS:
            raise ConfigError(f"{label}: {where}broker must be one of {', '.join(BROKERS)}")
        changes["broker"] = table["broker"]
    if "alt_queues" in table:
        changes["alt_queues"] = tuple(table["alt_queues"])
    if "broker_database_url" in table:
        url = table["broker_database_url"]
        # checked now, so a bad URL is a ConfigError at load and not a backlog reason later
        async_database_url(url, setting=f"{label}: {where}broker_database_url", project=True)
        changes["broker_database"] = url
    return replace(site, **changes)


def cache_from_table(
    cache: CacheSettings | None, table: Mapping[str, Any], where: str, label: str
) -> CacheSettings | None:
    """`stats_from = "cache"` and the cache_* keys over the cache the site had (from its
    Django settings, if any); `stats_from = "redis"` drops it."""
    given = {field: table[key] for key, field in _CACHE_KEYS.items() if key in table}
    stats_from = table.get("stats_from")
    if stats_from not in (None, "cache", "redis"):
        raise ConfigError(f'{label}: {where}stats_from must be "cache" or "redis"')
    if stats_from == "redis":
        return None
    if stats_from is None and cache is None:
        if given:
            first = next(key for key in _CACHE_KEYS if key in table)
            raise ConfigError(f'{label}: {where}{first} needs stats_from = "cache"')
        return None
    if not given:
        if cache is None:
            raise ConfigError(f'{label}: {where}stats_from = "cache" needs cache_backend')
        return cache
    if cache is not None and given.get("backend", cache.backend) == cache.backend:
        fields = {**vars(cache), **given}
    else:
        fields = {"backend": "", "location": "", **given}
    backend = fields["backend"]
    if backend not in CACHE_BACKENDS:
        raise ConfigError(
            f"{label}: {where}cache_backend must be one of {', '.join(CACHE_BACKENDS)}"
        )
    if not fields["location"]:
        raise ConfigError(f"{label}: {where}cache_location must be set for the {backend} cache")
    if backend == "database":
        if not fields.get("table"):
            raise ConfigError(f"{label}: {where}cache_table must name the DatabaseCache table")
        setting = f"{label}: {where}cache_location"
        async_database_url(fields["location"], setting=setting, project=True)
    if backend == "memcached":
        fields["client"] = fields.get("client") or "pymemcache"
        if fields["client"] not in _MEMCACHED_CLIENTS:
            raise ConfigError(f"{label}: {where}cache_client must be pymemcache or pylibmc")
    elif given.get("client"):
        raise ConfigError(f"{label}: {where}cache_client is for the memcached cache only")
    return CacheSettings(**fields)
