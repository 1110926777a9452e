"""The settings themselves: frozen dataclasses for a Redis, a site, the daemon and the whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from qwatch import fmt
from qwatch.config.alerts import AlertSettings
from qwatch.config.database_url import default_database_url
from qwatch.config.listen import ListenAddress
from qwatch.config.redis_url import fields_from_kwargs, parse_redis_url
from qwatch.config.urls import safe_url
from qwatch.config.values import is_int, positive_seconds
from qwatch.errors import ConfigError
from qwatch.retention import KEEP_HOURS_DAYS, KEEP_MINUTES_DAYS, KEEP_SAMPLES_DAYS, Retention

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_NAME = "default"
DEFAULT_TIME_ZONE = "UTC"
DEFAULT_DISPLAY_TIME_ZONE = "UTC"  # what tables and the monitor show; CSV and JSON are UTC
STAT_TTL_S = 3.0  # Django Q writes each Stat with a 3 s expiry
SECRET_HINT = "QWATCH_SECRET_KEY, qwatch.toml secret_key, or --django-settings"


@dataclass(frozen=True)
class RedisSettings:
    host: str = "localhost"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    unix_socket_path: str | None = None
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_verify: bool = True  # rediss://…?ssl_cert_reqs=none turns it off
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    connect_timeout: float = 5.0
    command_timeout: float = 5.0
    ssl_check_hostname: bool = True  # ?ssl_check_hostname=false, for certificates without the host

    @classmethod
    def from_url(cls, url: str, *, setting: str = "redis URL") -> RedisSettings:
        """redis://[[user]:password@]host[:port][/db], rediss://…, unix:///path?db=N.

        Query options: db, socket_connect_timeout, socket_timeout (seconds) and, for
        rediss://, ssl_ca_certs, ssl_cert_reqs, ssl_certfile, ssl_keyfile, ssl_check_hostname.
        """
        return replace(cls(), **parse_redis_url(url, setting))

    @classmethod
    def from_django(cls, value: object, *, setting: str = "Q_CLUSTER['redis']") -> RedisSettings:
        """Q_CLUSTER['redis'] as Django Q takes it: a URL, or redis-py keyword arguments."""
        if isinstance(value, str):
            return cls.from_url(value, setting=setting)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{setting} must be a URL or a dict of redis-py options")
        return replace(cls(), **fields_from_kwargs(value, setting))

    @property
    def address(self) -> str:
        """Where this points, safe to print: never the password."""
        if self.unix_socket_path:
            return f"unix://{self.unix_socket_path}?db={self.db}"
        scheme = "rediss" if self.ssl else "redis"
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"


CACHE_BACKENDS = ("database", "memcached", "file")


@dataclass(frozen=True)
class CacheSettings:
    """A Django cache, other than Redis, that Django Q writes its Stats through.

    backend "database": `location` is the SQLAlchemy URL of the project's database and
    `table` Django's cache table; "memcached": `location` is "host:port[,host:port…]" and
    `client` "pymemcache" or "pylibmc" (they flag values differently); "file": `location` is
    the FileBasedCache directory. Keys are made as Django makes them: KEY_FUNCTION (a dotted
    path) if set, else "<key_prefix>:<version>:<key>".
    """

    backend: str
    location: str = field(repr=False)  # a database URL may carry the password
    table: str = ""
    client: str = ""
    key_prefix: str = ""
    version: int = 1
    key_function: str | None = None
    # The zone of a naive time the store keeps (DatabaseCache's `expires` on SQLite/MySQL):
    # UTC under USE_TZ (or DATABASES[…]['TIME_ZONE']), else the project's TIME_ZONE.
    time_zone: str = "UTC"

    def __post_init__(self) -> None:
        if self.backend not in CACHE_BACKENDS:
            raise ConfigError(f"cache backend must be one of {', '.join(CACHE_BACKENDS)}")

    def make_key(self, key: str) -> str:
        """Django's default key function; a KEY_FUNCTION is applied by the cache source."""
        return f"{self.key_prefix}:{self.version}:{key}"

    @property
    def address(self) -> str:
        """Where the cache is, safe to print: never a password."""
        if self.backend == "database":
            return f"database cache {self.table} in {safe_url(self.location)}"
        return f"{self.backend} cache {self.location}"


@dataclass(frozen=True)
class Site:
    """One Django Q site: its Q_CLUSTER name, the keys that verify its records, its Redis."""

    name: str = DEFAULT_NAME
    cluster_name: str | None = None  # names the broker list when set
    secret_key: str = field(default="", repr=False)  # "" = not configured
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    time_zone: str = DEFAULT_TIME_ZONE
    redis: RedisSettings = field(default_factory=RedisSettings)
    cache_prefix: str | None = None  # e.g. ":1:" when records go through Django's Redis cache
    workers: int | None = None  # configured pool size, where known
    queue_limit: int | None = None
    # Django Q's broker; only "redis" keeps a queue list (broker_key) in this Redis
    broker: str = "redis"
    # Where the Stats are when not in `redis`: a Django cache read from outside (issue 12).
    cache: CacheSettings | None = None
    # Q_CLUSTER ALT_CLUSTERS names: queues of their own, served by clusters that write
    # their Stats under `name` like the main one.
    alt_queues: tuple[str, ...] = ()
    # The ORM broker's database (SQLAlchemy URL, may hold a password), for its backlog.
    broker_database: str | None = field(default=None, repr=False)

    @property
    def stats_address(self) -> str:
        """Where the live Stats are read from, safe to print."""
        return self.cache.address if self.cache is not None else self.redis.address

    @property
    def stat_pattern(self) -> str:
        return f"{self.cache_prefix or ''}django_q:{self.name}:cluster:*"

    @property
    def task_queue_limit(self) -> int | None:
        """Django Q's queue_limit: as configured, else its default, workers²; None: unknown."""
        return self.queue_limit or (self.workers**2 if self.workers else None)

    @property
    def broker_key(self) -> str:
        return f"django_q:{self.cluster_name or self.name}:q"

    @property
    def queues(self) -> tuple[str, ...]:
        """Every queue of the site: the main cluster's, then each ALT_CLUSTERS one."""
        main = self.cluster_name or self.name
        return (main, *(q for q in self.alt_queues if q != main))

    @property
    def stat_index_key(self) -> str:
        """Django Q's list of record keys (Conf.Q_STAT), kept for cache-backed Stats."""
        return f"django_q:{self.name}:cluster"


@dataclass(frozen=True)
class DaemonSettings:
    interval_s: float = 1.0
    sample_every_s: float = 10.0
    keep_samples_days: int = KEEP_SAMPLES_DAYS
    keep_minutes_days: int = KEEP_MINUTES_DAYS
    keep_hours_days: int = KEEP_HOURS_DAYS

    def __post_init__(self) -> None:
        # Messages use the [daemon] keys people write in qwatch.toml.
        # Typed as numbers, but a TOML or caller's value may be anything.
        given: tuple[tuple[str, object], ...] = (
            ("interval", self.interval_s),
            ("sample_every", self.sample_every_s),
        )
        for key, value in given:
            if isinstance(value, str):  # positive_seconds would parse it; the field is a number
                raise ConfigError(f"daemon.{key} must be a number of seconds")
            positive_seconds(value, f"daemon.{key}")
        if self.interval_s >= STAT_TTL_S:
            raise ConfigError(
                "daemon.interval must be below 3 seconds (Django Q records expire after 3 s)"
            )
        if self.sample_every_s < self.interval_s:
            raise ConfigError("daemon.sample_every must be at least daemon.interval")
        for key in ("keep_samples_days", "keep_minutes_days", "keep_hours_days"):
            value = getattr(self, key)
            if not is_int(value) or value < 1:
                raise ConfigError(f"daemon.{key} must be a whole number of days, 1 or more")

    @property
    def retention(self) -> Retention:
        return Retention.of_days(
            self.keep_samples_days, self.keep_minutes_days, self.keep_hours_days
        )


@dataclass(frozen=True)
class Settings:
    sites: tuple[Site, ...]
    database_url: str = field(default_factory=default_database_url)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    config_file: Path | None = None  # the TOML file read, if any
    listen: ListenAddress | None = None  # the daemon's HTTP listener; None: off
    metrics_token: str | None = field(default=None, repr=False)  # bearer token for it
    display_time_zone: str = DEFAULT_DISPLAY_TIME_ZONE  # UTC, local or an IANA name

    @property
    def display_zone(self) -> fmt.Zone:
        """The zone every command shows times in (checked when the settings were loaded)."""
        return fmt.zone(self.display_time_zone)

    def __post_init__(self) -> None:
        if not self.sites:
            raise ConfigError("sites: at least one site must be configured")

    def with_daemon(self, **changes: Any) -> Settings:
        """These settings with some daemon knobs replaced (flags beat the file); validated."""
        return replace(self, daemon=replace(self.daemon, **changes))

    def require_secret(self) -> None:
        """For commands that verify records; `qwatch db upgrade` does not need a key."""
        for index, site in enumerate(self.sites):
            if not site.secret_key:
                where = "" if len(self.sites) == 1 else f"sites[{index}] ({site.name!r}): "
                raise ConfigError(f"{where}secret_key is not set ({SECRET_HINT})")

    def site(self, name: str | None = None) -> Site:
        """The named site, or the only one."""
        if name is None:
            if len(self.sites) == 1:
                return self.sites[0]
            raise ConfigError(f"--site: choose one of {', '.join(s.name for s in self.sites)}")
        for site in self.sites:
            if site.name == name:
                return site
        raise ConfigError(
            f"--site: no site named {name!r} (sites: {', '.join(s.name for s in self.sites)})"
        )
