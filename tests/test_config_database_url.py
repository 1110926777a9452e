"""PostgreSQL URLs as users write them for libpq: `?sslmode=…&sslrootcert=…` and the rest.

The options are read into asyncpg's connect arguments (pure tests), and work against a
real PostgreSQL that serves TLS only, with a CA and certificate made by the test:
`qwatch db upgrade` and `qwatch history` with sslmode=require and verify-full, a wrong CA
refused in one line (exit 1), an option qwatch does not know refused in one line (exit 2).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest
from sqlalchemy import text

from qwatch.config import ConfigError, PostgresOptions, async_database_url, postgres_options
from qwatch.store import migrate
from qwatch.store.engine import PG_CONNECT_TIMEOUT_S, create_engine, postgres_connect_args
from tests.helpers import write_small_history
from tests.plugins.postgres_server import PostgresServer
from tests.plugins.qwatch_daemon import run_qwatch
from tests.plugins.tls import TLSFiles, make_tls_files

NO_REDIS = "redis://127.0.0.1:9/0"  # the read commands and `db` never touch it


def test_libpq_options_become_asyncpg_arguments() -> None:
    options = postgres_options(
        {
            "sslmode": "require",
            "connect_timeout": "3",
            "application_name": "billing",
            "options": r"-c search_path=qwatch -cstatement_timeout=5s --work-mem=4MB -c a=b\ c",
            "target_session_attrs": "read-write",
        }
    )
    args = postgres_connect_args(options)
    assert args["ssl"] == "require" and args["timeout"] == 3.0
    assert args["target_session_attrs"] == "read-write"
    assert args["server_settings"] == {
        "application_name": "billing",
        "search_path": "qwatch",
        "statement_timeout": "5s",
        "work_mem": "4MB",
        "a": "b c",
        "timezone": "UTC",  # qwatch's arithmetic needs it: always UTC
    }


def test_no_options_keep_qwatch_defaults() -> None:
    args = postgres_connect_args(postgres_options({}))
    assert "ssl" not in args and "target_session_attrs" not in args
    assert args["timeout"] == PG_CONNECT_TIMEOUT_S
    assert args["server_settings"] == {"application_name": "qwatch", "timezone": "UTC"}


def test_a_root_certificate_makes_a_verifying_context(tls_files: TLSFiles) -> None:
    for mode, hostname in (("verify-full", True), ("verify-ca", False), ("require", False)):
        options = postgres_options({"sslmode": mode, "sslrootcert": str(tls_files.ca)})
        context = postgres_connect_args(options)["ssl"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname is hostname
    for mode in ("disable", "allow", "prefer"):  # libpq verifies nothing in these
        options = postgres_options({"sslmode": mode, "sslrootcert": str(tls_files.ca)})
        assert postgres_connect_args(options)["ssl"] == mode


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=sometimes", "--db: sslmode must be one of disable, allow, prefer, require"),
        ("sslcompression=1", "--db: unsupported option 'sslcompression' (qwatch reads sslmode"),
        ("sslpassword=hunter2", "--db: unsupported option 'sslpassword'"),
        ("connect_timeout=soon", "--db: connect_timeout must be a positive number of seconds"),
        ("connect_timeout=0", "--db: connect_timeout must be a positive number of seconds"),
        ("options=-x", "--db: options must be server settings: -c name=value"),
        ("target_session_attrs=any-old", "--db: target_session_attrs must be one of any,"),
        ("sslmode=require&sslmode=disable", "--db: option 'sslmode' is given more than once"),
    ],
)
def test_bad_options_are_named(query: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        async_database_url(f"postgresql://u@db/q?{query}", setting="--db")
    assert str(caught.value).startswith(message)
    assert "hunter2" not in str(caught.value)


def test_sqlite_urls_and_connection_parameters_are_left_to_the_driver() -> None:
    assert async_database_url("sqlite:///h.db?timeout=5") == "sqlite+aiosqlite:///h.db?timeout=5"
    # Named alike by libpq and asyncpg (SQLAlchemy's asyncpg dialect reads `host` itself).
    url = "postgresql:///history?host=/run/postgresql&port=5433&user=qw&password=pw"
    assert async_database_url(url) == url.replace("postgresql:", "postgresql+asyncpg:")
    assert postgres_options({"host": "/run/postgresql", "port": "5433"}) == PostgresOptions()


def test_an_unknown_option_is_one_line_exit_2_in_every_command(tmp_path: Path) -> None:
    url = "postgresql://qwatch@127.0.0.1:9/history?sslcompression=1"
    for args in (["history", "web-1"], ["db", "upgrade"], ["report", "restarts"]):
        done = run_qwatch(*args, name="shop", redis_url=NO_REDIS, db_url=url)
        assert done.returncode == 2, done.stderr
        assert done.stderr == (
            "qwatch: QWATCH_DATABASE_URL: unsupported option 'sslcompression' "
            "(qwatch reads sslmode, sslrootcert, connect_timeout, application_name, options, "
            "target_session_attrs, host, port, user, password)\n"
        )


# --------------------------------------------------------------------------- real TLS


@pytest.fixture
def tls_postgres(
    postgres_server_factory: Callable[..., PostgresServer], tls_files: TLSFiles
) -> PostgresServer:
    """A PostgreSQL that accepts TLS connections only, its certificate signed by tls_files.ca."""
    server = postgres_server_factory(tls=tls_files)
    server.create_database("history")
    return server


def _url(server: PostgresServer, query: str, host: str = "127.0.0.1") -> str:
    return f"postgresql://postgres@{host}:{server.port}/history?{query}"


def test_tls_with_sslmode_require_and_verify_full(
    tls_postgres: PostgresServer, tls_files: TLSFiles, tmp_path: Path
) -> None:
    ca = quote(str(tls_files.ca))
    require = _url(tls_postgres, "sslmode=require&connect_timeout=5")
    done = run_qwatch("db", "upgrade", name="shop", redis_url=NO_REDIS, db_url=require)
    assert done.returncode == 0, done.stderr
    assert f"revision {migrate.head()} (current" in done.stdout

    write_small_history(require, datetime.now(UTC))
    for url in (
        require,
        _url(tls_postgres, f"sslmode=verify-full&sslrootcert={ca}"),
        _url(tls_postgres, f"sslmode=verify-full&sslrootcert={ca}", host="localhost"),
        _url(tls_postgres, f"sslmode=verify-ca&sslrootcert={ca}&application_name=billing"),
    ):
        done = run_qwatch("history", "5ma11c1u", name="shop", redis_url=NO_REDIS, db_url=url)
        assert done.returncode == 0, done.stderr
        assert "cluster 5ma11c1u-0000-4000-8000-000000000001 on web-1" in done.stdout

    # A unix socket (no TLS there: the server trusts local connections) by `?host=`.
    socket_dir = quote(str(tls_postgres.base))
    by_socket = f"postgresql://postgres@/history?host={socket_dir}&port={tls_postgres.port}"
    done = run_qwatch("history", "5ma11c1u", name="shop", redis_url=NO_REDIS, db_url=by_socket)
    assert done.returncode == 0 and "on web-1" in done.stdout, done.stderr

    # The server refuses plain connections: sslmode=disable cannot read it.
    done = run_qwatch(
        "history",
        "5ma11c1u",
        name="shop",
        redis_url=NO_REDIS,
        db_url=_url(tls_postgres, "sslmode=disable"),
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "no encryption" in done.stderr

    # A CA that did not sign the server's certificate: one line, exit 1, for each command.
    other = make_tls_files(tmp_path)
    wrong = _url(tls_postgres, f"sslmode=verify-full&sslrootcert={quote(str(other.ca))}")
    for args in (["history", "5ma11c1u"], ["db", "upgrade"]):
        done = run_qwatch(*args, name="shop", redis_url=NO_REDIS, db_url=wrong)
        assert done.returncode == 1, done.stderr
        assert done.stderr.startswith("qwatch: ") and done.stderr.count("\n") == 1, done.stderr
        assert "certificate verify failed" in done.stderr

    # A CA file that is not there is the user's to fix: exit 2.
    missing = _url(tls_postgres, "sslmode=verify-full&sslrootcert=/nonexistent/ca.crt")
    done = run_qwatch("history", "5ma11c1u", name="shop", redis_url=NO_REDIS, db_url=missing)
    assert done.returncode == 2
    assert done.stderr == (
        "qwatch: database URL: sslrootcert /nonexistent/ca.crt will not load: "
        "No such file or directory\n"
    )


def test_the_session_gets_the_url_s_settings(
    tls_postgres: PostgresServer, tls_files: TLSFiles
) -> None:
    tls_postgres.psql("CREATE SCHEMA qwatch", database="history")
    options = quote("-c search_path=qwatch -c statement_timeout=4000")
    url = _url(
        tls_postgres,
        f"sslmode=verify-full&sslrootcert={quote(str(tls_files.ca))}&application_name=billing"
        f"&options={options}&target_session_attrs=read-write&connect_timeout=4",
    )

    async def read() -> tuple[object, ...]:
        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                row = (
                    await conn.execute(
                        text(
                            "SELECT current_setting('application_name'), "
                            "current_setting('search_path'), "
                            "current_setting('statement_timeout'), current_setting('TimeZone'), "
                            "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())"
                        )
                    )
                ).one()
        finally:
            await engine.dispose()
        return tuple(row)

    assert asyncio.run(read()) == ("billing", "qwatch", "4s", "UTC", True)
