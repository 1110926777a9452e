"""The history database URL: its default, the async driver URL SQLAlchemy is given, and
the libpq options of a PostgreSQL URL read into what the asyncpg driver takes instead.

Users write PostgreSQL URLs for libpq (`?sslmode=require&connect_timeout=10`); asyncpg
has other names for the same things and refuses libpq's. `postgres_options` reads them
(pure: no file is opened here); qwatch.store.engine turns them into connect arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from qwatch.config.urls import safe_url, split_url
from qwatch.errors import ConfigError


def default_database_url() -> str:
    """SQLite in the user's data directory (XDG_DATA_HOME on Linux, via platformdirs)."""
    directory = Path(platformdirs.user_data_dir("qwatch", appauthor=False))
    return f"sqlite:///{(directory / 'history.sqlite3').as_posix()}"


_SQLITE_SCHEMES = ("sqlite", "sqlite+aiosqlite")
_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+asyncpg")
_MYSQL_SCHEMES = ("mysql", "mysql+aiomysql", "mariadb", "mariadb+aiomysql")
# What a MySQL URL may say beyond user, password, host, port and database: a socket file
# (Django's HOST "/path" or OPTIONS unix_socket) and the connection's character set.
MYSQL_OPTIONS = ("unix_socket", "charset")


def async_database_url(
    url: str, *, setting: str = "database URL", parse: bool = True, project: bool = False
) -> str:
    """sqlite:// → sqlite+aiosqlite://, postgres(ql):// → postgresql+asyncpg://, and with
    `project` (a Django project's own database, read only) mysql:// → mysql+aiomysql://.

    qwatch's history is never kept in MySQL: without `project` a MySQL URL is refused.
    The scheme is always checked; the rest (and a PostgreSQL or MySQL URL's options) only
    when `parse`, by SQLAlchemy."""
    parts = split_url(url) if isinstance(url, str) else None
    if parts is None:
        raise ConfigError(f"{setting}: not a URL (use sqlite:///path or postgresql://…)")
    scheme = parts[0]
    rest = url.partition("://")[2]
    if scheme in _SQLITE_SCHEMES:
        converted = f"sqlite+aiosqlite://{rest}"
    elif scheme in _POSTGRES_SCHEMES:
        converted = f"postgresql+asyncpg://{rest}"
    elif scheme in _MYSQL_SCHEMES and project:
        converted = f"mysql+aiomysql://{rest}"
    elif scheme in _MYSQL_SCHEMES:
        raise ConfigError(
            f"{setting}: MySQL is read only as a Django project's own database; "
            "qwatch's history is kept in SQLite or PostgreSQL"
        )
    else:
        raise ConfigError(
            f"{setting}: unsupported scheme {scheme!r} (use sqlite:///path or postgresql://…)"
        )
    if not parse:
        return converted
    from sqlalchemy.engine import make_url  # only here: SQLAlchemy is slow to import

    try:
        parsed = make_url(converted)
    except Exception:  # its messages quote the whole URL, password included
        raise ConfigError(f"{setting}: cannot parse {safe_url(url)}") from None
    if parsed.get_backend_name() == "postgresql":
        postgres_options(parsed.query, setting=setting)
    elif parsed.get_backend_name() == "mysql":
        url_options(parsed.query, MYSQL_OPTIONS, setting=setting, where=" in a MySQL URL")
    return converted


def url_options(
    query: Mapping[str, str | Sequence[str]],
    known: Sequence[str],
    *,
    setting: str,
    passed: Sequence[str] = (),
    where: str = "",
) -> dict[str, str]:
    """The `known` options of a URL's query, each given once; `passed` ones are left to the
    driver. Anything else is one ConfigError naming the option, never echoing its value."""
    values: dict[str, str] = {}
    for key, value in query.items():
        if key in passed:
            continue
        if key not in known:
            raise ConfigError(
                f"{setting}: unsupported option {key!r} "
                f"(qwatch reads {', '.join((*known, *passed))}{where})"
            )
        if not isinstance(value, str):
            raise ConfigError(f"{setting}: option {key!r} is given more than once")
        values[key] = value
    return values


SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
TARGET_SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
# Named alike by libpq and asyncpg, so passed on as they are (`?host=/run/postgresql`
# for a unix socket is read by SQLAlchemy's asyncpg dialect itself).
_PASSED_THROUGH = ("host", "port", "user", "password")
LIBPQ_OPTIONS = (
    "sslmode",
    "sslrootcert",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
)


@dataclass(frozen=True)
class PostgresOptions:
    """A PostgreSQL URL's libpq options, checked; None where the URL does not say."""

    sslmode: str | None = None
    sslrootcert: str | None = None  # a CA file, or "system" for the system's CAs
    connect_timeout: float | None = None
    application_name: str | None = None
    settings: tuple[tuple[str, str], ...] = ()  # `options=-c name=value …`, in order
    target_session_attrs: str | None = None


def postgres_options(
    query: Mapping[str, str | Sequence[str]], *, setting: str = "database URL"
) -> PostgresOptions:
    """The libpq options in a URL's query; anything else is one ConfigError naming it.

    Values are checked, never echoed: a URL may carry a secret where an option should be.
    """
    values = url_options(query, LIBPQ_OPTIONS, setting=setting, passed=_PASSED_THROUGH)
    sslmode = values.get("sslmode")
    if sslmode is not None and sslmode not in SSL_MODES:
        raise ConfigError(f"{setting}: sslmode must be one of {', '.join(SSL_MODES)}")
    sslrootcert = values.get("sslrootcert")
    if sslrootcert == "":
        raise ConfigError(f"{setting}: sslrootcert must name a CA certificate file")
    attrs = values.get("target_session_attrs")
    if attrs is not None and attrs not in TARGET_SESSION_ATTRS:
        raise ConfigError(
            f"{setting}: target_session_attrs must be one of {', '.join(TARGET_SESSION_ATTRS)}"
        )
    return PostgresOptions(
        sslmode=sslmode,
        sslrootcert=sslrootcert,
        connect_timeout=_timeout(values.get("connect_timeout"), setting),
        application_name=values.get("application_name"),
        settings=_server_settings(values.get("options"), setting),
        target_session_attrs=attrs,
    )


def _timeout(value: str | None, setting: str) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < 86400:  # libpq's 0 (wait forever) too: every wait is bounded
        raise ConfigError(f"{setting}: connect_timeout must be a positive number of seconds")
    return seconds


def _server_settings(options: str | None, setting: str) -> tuple[tuple[str, str], ...]:
    """libpq's `options` (`-c name=value`, `-cname=value` or `--name=value`, split on
    whitespace, a backslash escaping the next character) as (name, value) pairs."""
    if options is None:
        return ()
    words = _split_options(options)
    pairs: list[tuple[str, str]] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word == "-c" and index + 1 < len(words):
            assignment = words[index + 1]
            index += 2
        elif word.startswith(("-c", "--")) and len(word) > 2:  # -cname=value, --name=value
            assignment, index = word[2:], index + 1
        else:
            assignment = ""
        name, equals, value = assignment.partition("=")
        if not equals or not name or any(c.isspace() for c in name):
            raise ConfigError(
                f"{setting}: options must be server settings: -c name=value (e.g. "
                "options=-csearch_path%3Dqwatch)"
            )
        pairs.append((name.replace("-", "_"), value))
    return tuple(pairs)


def _split_options(text: str) -> list[str]:
    words: list[str] = []
    current: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char.isspace():
            if current:
                words.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return words


def sqlite_path(url: str) -> Path | None:
    """The file behind a SQLite URL (so its directory can be made), else None."""
    from sqlalchemy.engine import make_url

    parsed = make_url(async_database_url(url, project=True))
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)
