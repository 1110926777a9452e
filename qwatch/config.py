"""Settings: defaults < TOML file < QWATCH_* environment < flags, or a Django project's settings.

A Django settings module (--django-settings, DJANGO_SETTINGS_MODULE, or the file's
`django_settings`) takes the place of the defaults for its site, so nothing is configured
twice; the file's own keys, the environment and the flags still override what it says.

Every ConfigError is one line naming the setting and what is wrong. None carries a secret:
values are echoed only where they cannot hold one (schemes, option names, time zones).
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
import tomllib
import traceback
import zoneinfo
from collections.abc import Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

import platformdirs

DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_NAME = "default"
DEFAULT_TIME_ZONE = "UTC"
DJANGO_DEFAULT_TIME_ZONE = "America/Chicago"  # Django's own default for TIME_ZONE
CONFIG_FILE_NAME = "qwatch.toml"
STAT_TTL_S = 3.0  # Django Q writes each Stat with a 3 s expiry
SECRET_HINT = "QWATCH_SECRET_KEY, qwatch.toml secret_key, or --django-settings"


class ConfigError(Exception):
    """A bad setting: one line naming the setting and what is wrong (never its secret value)."""


# --------------------------------------------------------------------------- URLs

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*\Z")
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "sslpassword", "secret"})


def _split_url(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, location, query), or None when this is not scheme://….

    The userinfo ends at the last "@" before the query, so an unencoded "/" or "@" in a
    password still lands in the password and never in a host or path we might print.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not _SCHEME_RE.match(scheme):
        return None
    before_query, _, query = rest.partition("?")
    userinfo, _, location = before_query.rpartition("@")
    return scheme.lower(), userinfo, location, query


def safe_url(url: str) -> str:
    """The URL with any password masked as ***, for messages and logs."""
    parts = _split_url(url)
    if parts is None:
        return "<not a URL>"
    scheme, userinfo, location, query = parts
    head = f"{scheme}://"
    if userinfo:
        user, colon, _ = userinfo.partition(":")
        head += f"{user}:***@" if colon else f"{userinfo}@"
    if not query:
        return head + location
    masked = "&".join(
        f"{key}=***" if key.lower() in _SECRET_QUERY_KEYS else pair
        for pair in query.split("&")
        for key in [pair.partition("=")[0]]
    )
    return f"{head}{location}?{masked}"


def _shown(piece: str, secrets: Sequence[str | None]) -> str:
    """repr(piece) unless it could be (part of) a secret."""
    for secret in secrets:
        if secret and (secret in piece or piece in secret):
            return "'***'"
    return repr(piece)


_FIELD_OPTIONS = frozenset(
    {"username", "password", "db", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile"}
)
_TIMEOUT_OPTIONS = {
    "socket_connect_timeout": "connect_timeout",
    "socket_timeout": "command_timeout",
}
_TLS_OPTIONS = frozenset(
    {"ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname"}
)
# redis-py pool tuning that is harmless to ignore: qwatch owns its own single connection.
_IGNORED_OPTIONS = frozenset(
    {
        "client_name",
        "decode_responses",
        "encoding",
        "health_check_interval",
        "max_connections",
        "protocol",
        "retry_on_timeout",
        "socket_keepalive",
    }
)
_KNOWN_OPTIONS = _FIELD_OPTIONS | _TLS_OPTIONS | set(_TIMEOUT_OPTIONS) | _IGNORED_OPTIONS
_FALSE_WORDS = frozenset({"0", "f", "false", "n", "no", "off"})
_TRUE_WORDS = frozenset({"1", "t", "true", "y", "yes", "on"})


def _positive_seconds(value: object, setting: str) -> float:
    if isinstance(value, str):
        with suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{setting} must be a positive number of seconds")
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{setting} must be a positive number of seconds")
    return float(value)


def _cert_reqs_verify(value: object, setting: str) -> bool:
    """redis-py's ssl_cert_reqs: None or "none" turns verification off."""
    if value is None:
        return False
    if isinstance(value, str) and value.lower() in ("none", "optional", "required"):
        return value.lower() != "none"
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
        return value != 0  # ssl.CERT_NONE / CERT_OPTIONAL / CERT_REQUIRED
    raise ConfigError(f"{setting} must be none, optional or required")


def _host_port(text: str, setting: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ConfigError(f"{setting}: malformed IPv6 host (write it as [::1]:6379)")
        port_text = after[1:]
    else:
        host, _, port_text = text.partition(":")
    if not port_text:
        return unquote(host), None
    if not (port_text.isascii() and port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError(f"{setting}: the port must be a number from 1 to 65535")
    return unquote(host), int(port_text)


def _parse_redis_url(url: object, setting: str) -> dict[str, Any]:
    """The RedisSettings fields this URL states, and only those.

    Callers layer them over a base, as redis-py's from_url lets the URL win over kwargs.
    """
    if not isinstance(url, str):
        raise ConfigError(f"{setting} must be a string")
    parts = _split_url(url)
    if parts is None:
        raise ConfigError(
            f"{setting}: not a URL (use redis://host:port/db, rediss://host:port/db "
            "or unix:///path/to/socket)"
        )
    scheme, userinfo, location, query = parts
    if "@" in query and "@" not in url.partition("?")[0]:
        # most likely a password with an unencoded "?": its tail would read as options
        raise ConfigError(
            f"{setting}: '@' after '?' (percent-encode '?' in a password as %3F, '@' as %40)"
        )
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(
            f"{setting}: unknown scheme {scheme!r} (use redis://, rediss:// or unix://)"
        )
    user_text, _, pass_text = userinfo.partition(":")
    password = unquote(pass_text) or None
    secrets = (pass_text, password)

    options: dict[str, str] = {}
    if query:
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise ConfigError(f"{setting}: malformed query string") from None
        for key, value in pairs:
            if key not in _KNOWN_OPTIONS:
                raise ConfigError(f"{setting}: unknown option {_shown(key, secrets)}")
            options[key] = value

    fields: dict[str, Any] = {"ssl": scheme == "rediss", "unix_socket_path": None}
    if scheme == "unix":
        # unix://host/path: redis-py ignores the host, and so do we
        slash = location.find("/")
        path = unquote(location[slash:]) if slash >= 0 else ""
        if path in ("", "/"):
            raise ConfigError(
                f"{setting}: a unix:// URL needs the socket path, e.g. unix:///run/redis.sock"
            )
        fields["unix_socket_path"] = path
        db_text = options.get("db")
    else:
        hostport, _, path = location.partition("/")
        host, port = _host_port(hostport, setting)
        if host:
            fields["host"] = host
        if port is not None:
            fields["port"] = port
        # as in redis-py, ?db= wins over the path
        db_text = options.get("db", path or None)
    if db_text is not None:
        if not (db_text.isascii() and db_text.isdigit()):
            raise ConfigError(
                f"{setting}: the database must be a number from 0 (the /db part or ?db=)"
            )
        fields["db"] = int(db_text)

    # userinfo wins over ?username=/?password=, as in redis-py
    username = unquote(user_text) or options.get("username") or None
    password = password or options.get("password") or None
    if username:
        fields["username"] = username
    if password:
        fields["password"] = password

    for option, attribute in _TIMEOUT_OPTIONS.items():
        if option in options:
            fields[attribute] = _positive_seconds(options[option], f"{setting}: {option}")
    for option in _TLS_OPTIONS & options.keys():
        if scheme != "rediss":
            raise ConfigError(f"{setting}: {option} needs a rediss:// URL")
    for option in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
        if option in options:
            if not options[option]:
                raise ConfigError(f"{setting}: {option} must name a file")
            fields[option] = options[option]
    if "ssl_cert_reqs" in options:
        fields["ssl_verify"] = _cert_reqs_verify(
            options["ssl_cert_reqs"], f"{setting}: ssl_cert_reqs"
        )
    if "ssl_check_hostname" in options:
        word = options["ssl_check_hostname"].lower()
        if word not in _TRUE_WORDS | _FALSE_WORDS:
            raise ConfigError(f"{setting}: ssl_check_hostname must be true or false")
        fields["ssl_check_hostname"] = word in _TRUE_WORDS
    return fields


def _fields_from_kwargs(options: Mapping[Any, Any], setting: str) -> dict[str, Any]:
    """RedisSettings fields from redis-py keyword arguments (Q_CLUSTER['redis'] as a dict)."""
    fields: dict[str, Any] = {}
    for key, value in options.items():
        name = f"{setting}[{key!r}]"
        if key in (
            "host",
            "username",
            "unix_socket_path",
            "ssl_ca_certs",
            "ssl_certfile",
            "ssl_keyfile",
        ):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string")
            if value is not None:
                fields[key] = value
        elif key == "password":
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a string")
            fields[key] = value or None
        elif key in ("port", "db"):
            if isinstance(value, str) and value.isascii() and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an integer")
            if key == "port" and not 0 < value < 65536:
                raise ConfigError(f"{name} must be from 1 to 65535")
            if key == "db" and value < 0:
                raise ConfigError(f"{name} must be 0 or more")
            fields[key] = value
        elif key in ("ssl", "ssl_check_hostname"):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be True or False")
            fields[key] = value
        elif key == "ssl_cert_reqs":
            fields["ssl_verify"] = _cert_reqs_verify(value, name)
        elif key in _TIMEOUT_OPTIONS and value is not None:
            # None is redis-py's "no timeout": qwatch keeps its own
            fields[_TIMEOUT_OPTIONS[key]] = _positive_seconds(value, name)
        # other redis-py options do not change where or how qwatch connects
    return fields


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
        return replace(cls(), **_parse_redis_url(url, setting))

    @classmethod
    def from_django(cls, value: object, *, setting: str = "Q_CLUSTER['redis']") -> RedisSettings:
        """Q_CLUSTER['redis'] as Django Q takes it: a URL, or redis-py keyword arguments."""
        if isinstance(value, str):
            return cls.from_url(value, setting=setting)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{setting} must be a URL or a dict of redis-py options")
        return replace(cls(), **_fields_from_kwargs(value, setting))

    @property
    def address(self) -> str:
        """Where this points, safe to print: never the password."""
        if self.unix_socket_path:
            return f"unix://{self.unix_socket_path}?db={self.db}"
        scheme = "rediss" if self.ssl else "redis"
        user = f"{quote(self.username, safe='')}@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{user}{host}:{self.port}/{self.db}"


# --------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class Site:
    """One Django Q site: its Q_CLUSTER name, the keys that verify its records, its Redis."""

    name: str = "default"
    cluster_name: str | None = None  # names the broker list when set
    secret_key: str = field(default="", repr=False)  # "" = not configured
    secret_key_fallbacks: tuple[str, ...] = field(default=(), repr=False)
    time_zone: str = "UTC"
    redis: RedisSettings = field(default_factory=RedisSettings)
    cache_prefix: str | None = None  # e.g. ":1:" when records go through Django's Redis cache
    workers: int | None = None  # configured pool size, where known
    queue_limit: int | None = None
    # Django Q's broker; only "redis" keeps a queue list (broker_key) in this Redis
    broker: str = "redis"

    @property
    def stat_pattern(self) -> str:
        return f"{self.cache_prefix or ''}django_q:{self.name}:cluster:*"

    @property
    def broker_key(self) -> str:
        return f"django_q:{self.cluster_name or self.name}:q"


@dataclass(frozen=True)
class DaemonSettings:
    interval_s: float = 1.0
    sample_every_s: float = 10.0
    keep_samples_days: int = 7
    keep_minutes_days: int = 35
    keep_hours_days: int = 1095

    def __post_init__(self) -> None:
        # Messages use the [daemon] keys people write in qwatch.toml.
        for key, value in (("interval", self.interval_s), ("sample_every", self.sample_every_s)):
            if isinstance(value, str):  # _positive_seconds would parse it; the field is a number
                raise ConfigError(f"daemon.{key} must be a number of seconds")
            _positive_seconds(value, f"daemon.{key}")
        if self.interval_s >= STAT_TTL_S:
            raise ConfigError(
                "daemon.interval must be below 3 seconds (Django Q records expire after 3 s)"
            )
        if self.sample_every_s < self.interval_s:
            raise ConfigError("daemon.sample_every must be at least daemon.interval")
        for key in ("keep_samples_days", "keep_minutes_days", "keep_hours_days"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"daemon.{key} must be a whole number of days, 1 or more")


def default_database_url() -> str:
    """SQLite in the user's data directory (XDG_DATA_HOME on Linux, via platformdirs)."""
    directory = Path(platformdirs.user_data_dir("qwatch", appauthor=False))
    return f"sqlite:///{(directory / 'history.sqlite3').as_posix()}"


@dataclass(frozen=True)
class Settings:
    sites: tuple[Site, ...]
    database_url: str = field(default_factory=default_database_url)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    config_file: Path | None = None  # the TOML file read, if any

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


# --------------------------------------------------------------------------- databases

_SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")
_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg")


def async_database_url(url: str, *, setting: str = "database URL") -> str:
    """sqlite:// → sqlite+aiosqlite://, postgres(ql):// → postgresql+asyncpg://."""
    parts = _split_url(url) if isinstance(url, str) else None
    if parts is None:
        raise ConfigError(f"{setting}: not a URL (use sqlite:///path or postgresql://…)")
    scheme = parts[0]
    rest = url.partition("://")[2]
    if scheme in _SQLITE_SCHEMES:
        converted = f"sqlite+aiosqlite://{rest}"
    elif scheme in _POSTGRES_SCHEMES:
        converted = f"postgresql+asyncpg://{rest}"
    else:
        raise ConfigError(
            f"{setting}: unsupported scheme {scheme!r} (use sqlite:///path or postgresql://…)"
        )
    from sqlalchemy.engine import make_url  # only here: SQLAlchemy is slow to import

    try:
        make_url(converted)
    except Exception:  # its messages quote the whole URL, password included
        raise ConfigError(f"{setting}: cannot parse {safe_url(url)}") from None
    return converted


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (so its directory can be made), else None."""
    from sqlalchemy.engine import make_url

    parsed = make_url(async_database_url(url))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


# --------------------------------------------------------------------------- values


def _check_time_zone(value: str, setting: str) -> str:
    if value == "UTC":  # needs no tz database
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except Exception:  # not found, malformed key, a directory of the database…
        raise ConfigError(f"{setting}: unknown time zone {value!r}") from None
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# kind → (check, what the message says it must be)
_KINDS: dict[str, tuple[Any, str]] = {
    "name": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "text": (lambda v: isinstance(v, str), "a string"),
    "texts": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) and x for x in v),
        "a list of non-empty strings",
    ),
    "count": (_is_int, "an integer"),
    "seconds": (lambda v: _is_int(v) or isinstance(v, float), "a number of seconds"),
}
_SITE_KEYS = {
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
}
_TOP_KEYS = {**_SITE_KEYS, "database_url": "name", "daemon": "table", "sites": "sites"}
_DAEMON_KEYS = {
    "interval": ("seconds", "interval_s"),
    "sample_every": ("seconds", "sample_every_s"),
    "keep_samples_days": ("count", "keep_samples_days"),
    "keep_minutes_days": ("count", "keep_minutes_days"),
    "keep_hours_days": ("count", "keep_hours_days"),
}


def _check_table(
    table: Mapping[str, Any], kinds: Mapping[str, str], where: str, label: str
) -> None:
    for key, value in table.items():
        if key not in kinds:
            raise ConfigError(f"{label}: unknown setting {where + key!r}")
        kind = kinds[key]
        if kind == "table" and not isinstance(value, dict):
            raise ConfigError(f"{label}: {where}{key} must be a table ([{key}])")
        if kind == "sites" and not (
            isinstance(value, list) and all(isinstance(s, dict) for s in value)
        ):
            raise ConfigError(f"{label}: {where}{key} must be an array of tables ([[sites]])")
        if kind in _KINDS:
            check, expected = _KINDS[kind]
            if not check(value):
                raise ConfigError(f"{label}: {where}{key} must be {expected}")
            if kind == "count" and value < 1:
                raise ConfigError(f"{label}: {where}{key} must be 1 or more")


def _read_toml(path: Path, label: str) -> dict[str, Any]:
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


def _daemon_from_table(table: Mapping[str, Any], label: str) -> DaemonSettings:
    kinds = {key: kind for key, (kind, _) in _DAEMON_KEYS.items()}
    _check_table(table, kinds, "daemon.", label)
    try:
        return DaemonSettings(**{_DAEMON_KEYS[key][1]: value for key, value in table.items()})
    except ConfigError as exc:
        raise ConfigError(f"{label}: {exc}") from None


def _apply_table(site: Site, table: Mapping[str, Any], where: str, label: str) -> Site:
    """A TOML site's keys (already type-checked) over `site`."""
    changes: dict[str, Any] = {
        key: table[key]
        for key in ("name", "cluster_name", "secret_key", "cache_prefix", "workers", "queue_limit")
        if key in table
    }
    if "secret_key_fallbacks" in table:
        changes["secret_key_fallbacks"] = tuple(table["secret_key_fallbacks"])
    if "time_zone" in table:
        changes["time_zone"] = _check_time_zone(table["time_zone"], f"{label}: {where}time_zone")
    if "redis_url" in table:
        changes["redis"] = RedisSettings.from_url(
            table["redis_url"], setting=f"{label}: {where}redis_url"
        )
    return replace(site, **changes)


# --------------------------------------------------------------------------- Django


_REDIS_CACHE_BACKENDS = frozenset(
    {"django.core.cache.backends.redis.RedisCache", "django_redis.cache.RedisCache"}
)
_NON_REDIS_BROKERS = ("broker_class", "iron_mq", "sqs", "orm", "mongo")
_DJANGO_Q_REDIS_BROKER = "django_q.brokers.redis_broker.Redis"
_DJANGO_DEFAULT_CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def _raised_at(exc: BaseException, cwd: Path) -> str:
    """' at mysite/settings.py:12' — the project line that failed, never its values."""
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
    base = replace(RedisSettings(), **_fields_from_kwargs(kwargs, f"{setting}['OPTIONS']"))
    # redis-py's from_url lets what the URL states win over the options
    redis = replace(base, **_parse_redis_url(first, f"{setting}['LOCATION']"))
    return redis, cache


def _optional_count(q_cluster: Mapping[str, Any], key: str, where: str) -> int | None:
    value = q_cluster.get(key)
    if value is None or value is False:  # Django Q: unset, work it out at run time
        return None
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{where}: Q_CLUSTER[{key!r}] must be a positive integer")
    return value


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
    _check_time_zone(time_zone, f"{where}: TIME_ZONE")

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

    broker = next((key for key in _NON_REDIS_BROKERS if q_cluster.get(key)), "redis")
    if broker == "broker_class" and q_cluster["broker_class"] == _DJANGO_Q_REDIS_BROKER:
        broker = "redis"
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
        if not isinstance(prefix, str) or not _is_int(version):
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
    )


# --------------------------------------------------------------------------- loading


def _overrides(
    environ: Mapping[str, str], redis_url: str | None, name: str | None
) -> list[tuple[str, str, str]]:
    """(setting, key, value) for each QWATCH_* variable and flag that names a site value.

    Later entries win: the environment, then the flags. Empty variables count as unset.
    """
    found = [
        (variable, key, environ[variable])
        for variable, key in (
            ("QWATCH_NAME", "name"),
            ("QWATCH_REDIS_URL", "redis_url"),
            ("QWATCH_SECRET_KEY", "secret_key"),
            ("QWATCH_SECRET_KEY_FALLBACKS", "secret_key_fallbacks"),
            ("QWATCH_TIME_ZONE", "time_zone"),
        )
        if environ.get(variable)
    ]
    for flag, key, value in (("--redis", "redis_url", redis_url), ("--name", "name", name)):
        if value is not None:
            if not value:
                raise ConfigError(f"{flag} must not be empty")
            found.append((flag, key, value))
    return found


def _apply_override(site: Site, setting: str, key: str, value: str) -> Site:
    if key == "redis_url":
        return replace(site, redis=RedisSettings.from_url(value, setting=setting))
    if key == "secret_key_fallbacks":
        keys = tuple(part.strip() for part in value.split(",") if part.strip())
        return replace(site, secret_key_fallbacks=keys)
    if key == "time_zone":
        return replace(site, time_zone=_check_time_zone(value, setting))
    return replace(site, **{key: value})


def _find_config(config_path: str | None, cwd: Path) -> tuple[Path | None, str]:
    if config_path is not None:
        path = cwd / config_path  # an absolute config_path replaces cwd
        if not path.is_file():
            raise ConfigError(f"--config: no such file {config_path!r}")
        return path, config_path
    default = cwd / CONFIG_FILE_NAME
    return (default, CONFIG_FILE_NAME) if default.is_file() else (None, CONFIG_FILE_NAME)


def load_settings(
    *,
    config_path: str | None = None,
    django_settings: str | None = None,
    redis_url: str | None = None,
    database_url: str | None = None,
    name: str | None = None,
    environ: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
) -> Settings:
    """Defaults < TOML (config_path or ./qwatch.toml) < QWATCH_* environment < flags.

    The Django settings module is the flag's, else DJANGO_SETTINGS_MODULE's, else the
    file's; it stands in for the defaults of its site. With several [[sites]] in the file,
    site values come from the file alone and the Django module is chosen per site.
    Secrets are not required here: commands that verify records call require_secret().
    """
    # absolute: it goes on sys.path and is compared with traceback file names
    cwd = (cwd or Path.cwd()).absolute()
    path, label = _find_config(config_path, cwd)
    document = _read_toml(path, label) if path else {}
    _check_table(document, _TOP_KEYS, "", label)

    shared = {key: value for key, value in document.items() if key in _SITE_KEYS}
    tables: list[tuple[str, dict[str, Any]]]
    if "sites" in document:
        if not document["sites"]:
            raise ConfigError(f"{label}: sites must list at least one [[sites]] table")
        if "name" in shared:
            raise ConfigError(f"{label}: name belongs in each [[sites]] table, not at the top")
        tables = []
        for index, table in enumerate(document["sites"]):
            where = f"sites[{index}]."
            _check_table(table, _SITE_KEYS, where, label)
            # top-level site keys are shared defaults for every site
            tables.append((where, {**shared, **table}))
    else:
        tables = [("", shared)]

    overrides = _overrides(environ, redis_url, name)
    several = len(tables) > 1
    if several and (overrides or django_settings):
        setting = overrides[0][0] if overrides else "--django-settings"
        raise ConfigError(
            f"{setting}: {label} lists {len(tables)} sites; set this per site in the file"
        )

    sites: list[Site] = []
    for where, table in tables:
        module, chooser = None, ""
        if django_settings == "":
            raise ConfigError("--django-settings must not be empty")
        if django_settings is not None:
            module, chooser = django_settings, "--django-settings"
        elif not several and environ.get("DJANGO_SETTINGS_MODULE"):
            module, chooser = environ["DJANGO_SETTINGS_MODULE"], "DJANGO_SETTINGS_MODULE"
        elif "django_settings" in table:
            module, chooser = table["django_settings"], f"{label}: {where}django_settings"
        site = site_from_django(module, chooser=chooser, cwd=cwd) if module else Site()
        site = _apply_table(site, table, where, label)
        for setting, key, value in overrides:
            site = _apply_override(site, setting, key, value)
        sites.append(site)

    seen: set[str] = set()
    for index, site in enumerate(sites):
        if site.name in seen:
            raise ConfigError(f"{label}: sites[{index}].name {site.name!r} is used by another site")
        seen.add(site.name)

    db_url, db_setting = default_database_url(), "database_url"
    for setting, value in (
        (f"{label}: database_url", document.get("database_url")),
        ("QWATCH_DATABASE_URL", environ.get("QWATCH_DATABASE_URL") or None),
        ("--db", database_url),
    ):
        if value is not None:
            db_url, db_setting = value, setting
    async_database_url(db_url, setting=db_setting)

    daemon = _daemon_from_table(document.get("daemon", {}), label)
    return Settings(sites=tuple(sites), database_url=db_url, daemon=daemon, config_file=path)


__all__ = [
    "DEFAULT_REDIS_URL",
    "ConfigError",
    "DaemonSettings",
    "RedisSettings",
    "Settings",
    "Site",
    "async_database_url",
    "default_database_url",
    "load_settings",
    "safe_url",
    "site_from_django",
    "sqlite_path",
]
