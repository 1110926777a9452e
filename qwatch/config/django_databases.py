"""A Django DATABASES entry as the SQLAlchemy URL qwatch reads it with (read-only).

Used for the tables Django Q's site keeps in its own database: the DatabaseCache table that
holds the Stats of a non-Redis broker, and the ORM broker's queue (django_q_ormq).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from qwatch.errors import ConfigError

# Django ENGINE -> the URL scheme qwatch.config.database_url (and SQLAlchemy) takes.
_ENGINES = {
    "django.db.backends.sqlite3": "sqlite",
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.postgresql_psycopg2": "postgresql",
    "django.contrib.gis.db.backends.postgis": "postgresql",
    "django.db.backends.mysql": "mysql",
}


def _text(entry: Mapping[str, Any], key: str, setting: str) -> str:
    value = entry.get(key) or ""
    if not isinstance(value, str | int):
        raise ConfigError(f"{setting}[{key!r}] must be a string")
    return str(value)


def database_url(databases: object, alias: str, where: str, *, cwd: Path) -> str:
    """`DATABASES[alias]` as `sqlite:////abs/path` or `postgresql://user:pass@host:port/name`.

    The URL may hold the password: print it only through `qwatch.config.urls.safe_url`.
    """
    setting = f"{where}: DATABASES[{alias!r}]"
    if not isinstance(databases, Mapping):
        raise ConfigError(f"{where}: DATABASES must be a dict")
    entry = databases.get(alias)
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{setting} is not defined")
    engine = entry.get("ENGINE")
    scheme = _ENGINES.get(engine) if isinstance(engine, str) else None
    if scheme is None:
        raise ConfigError(
            f"{setting}['ENGINE'] {engine!r} is not one qwatch reads (sqlite3, postgresql or mysql)"
        )
    name = entry.get("NAME")
    if not isinstance(name, str | Path) or not str(name):
        raise ConfigError(f"{setting}['NAME'] must be set")
    if scheme == "sqlite":
        if str(name) == ":memory:" or str(name).startswith("file:"):
            raise ConfigError(f"{setting} is an in-memory SQLite database: not readable outside")
        path = Path(name)
        path = path if path.is_absolute() else cwd / path
        return f"sqlite:///{path.as_posix()}"
    user = quote(_text(entry, "USER", setting), safe="")
    password = quote(_text(entry, "PASSWORD", setting), safe="")
    host = _text(entry, "HOST", setting)
    port = _text(entry, "PORT", setting)
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    query = ""
    options = entry.get("OPTIONS")
    socket = options.get("unix_socket") if isinstance(options, Mapping) else None
    if scheme == "mysql" and (host.startswith("/") or isinstance(socket, str)):
        # Django's MySQL backend takes a HOST starting with "/" (or OPTIONS unix_socket)
        # as the socket file itself; OPTIONS wins, as in Django's get_connection_params.
        socket_file = socket if isinstance(socket, str) else host
        query, host = f"?unix_socket={quote(socket_file, safe='/')}", ""
    elif host.startswith("/"):  # a PostgreSQL unix socket directory
        query, host = f"?host={quote(host, safe='/')}", ""
    elif ":" in host:
        host = f"[{host}]"
    location = f"{host or ('' if query else 'localhost')}{f':{port}' if port else ''}"
    return f"{scheme}://{credentials}{location}/{quote(str(name), safe='')}{query}"
