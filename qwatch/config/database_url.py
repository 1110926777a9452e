"""The history database URL: its default, and the async driver URL SQLAlchemy is given."""

from __future__ import annotations

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


def async_database_url(url: str, *, setting: str = "database URL") -> str:
    """sqlite:// → sqlite+aiosqlite://, postgres(ql):// → postgresql+asyncpg://."""
    parts = split_url(url) if isinstance(url, str) else None
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
