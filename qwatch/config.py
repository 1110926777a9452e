"""Settings: defaults < TOML file < QWATCH_* environment < flags, or a Django project's settings.

CONTRACT STUB — the config helper replaces the bodies; names and fields are the contract.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ConfigError(Exception):
    """A bad setting: one line naming the setting and what is wrong (never its secret value)."""


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

    @classmethod
    def from_url(cls, url: str) -> RedisSettings:
        raise NotImplementedError

    @property
    def address(self) -> str:
        """Where this points, safe to print: never the password."""
        raise NotImplementedError


@dataclass(frozen=True)
class Site:
    """One Django Q site: its Q_CLUSTER name, the keys that verify its records, its Redis."""

    name: str = "default"
    cluster_name: str | None = None  # names the broker list when set
    secret_key: str = field(default="", repr=False)
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    time_zone: str = "UTC"
    redis: RedisSettings = field(default_factory=RedisSettings)
    cache_prefix: str | None = None  # e.g. ":1:" when records go through Django's Redis cache
    workers: int | None = None  # configured pool size, where known
    queue_limit: int | None = None

    @property
    def stat_pattern(self) -> str:
        return f"{self.cache_prefix or ''}django_q:{self.name}:cluster:*"

    @property
    def broker_key(self) -> str:
        return f"django_q:{self.cluster_name or self.name}:q"


@dataclass(frozen=True)
class Settings:
    sites: tuple[Site, ...]
    database_url: str
