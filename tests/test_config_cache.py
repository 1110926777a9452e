"""The Stats cache of a non-Redis broker: from a project's CACHES, and from qwatch.toml."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from qwatch.cli import main
from qwatch.config import load_settings
from qwatch.config.settings import CacheSettings
from tests.test_config import PASSWORD, SECRET, SENTINEL, error_of, load, project, write

__all__ = ["project"]  # the fixture, shared with tests/test_config.py

ORM = 'Q_CLUSTER = {"name": "shop", "orm": "default"}\n'
DB_CACHE = "django.core.cache.backends.db.DatabaseCache"


SQLITE = 'DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db"}}\n'


def _settings(caches: str, more: str = SQLITE) -> str:
    return f'SECRET_KEY = "{SECRET}"\n{ORM}CACHES = {caches}\n{more}'


def test_database_cache_on_sqlite(tmp_path: Path, project: Callable[..., str]) -> None:
    module = project(
        _settings(
            f'{{"default": {{"BACKEND": "{DB_CACHE}", "LOCATION": "qcache", '
            '"KEY_PREFIX": "shop", "VERSION": 2}}',
            'DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", '
            '"NAME": "db.sqlite3"}}\nUSE_TZ = True\n',
        )
    )
    site = load(tmp_path, django_settings=module).sites[0]
    assert site.broker == "orm"
    assert site.cache == CacheSettings(
        "database",
        f"sqlite:///{tmp_path / 'db.sqlite3'}",
        table="qcache",
        key_prefix="shop",
        version=2,
    )
    assert site.stats_address == f"database cache qcache in sqlite:///{tmp_path / 'db.sqlite3'}"


def test_database_cache_on_postgres_keeps_the_password_out(
    tmp_path: Path, project: Callable[..., str]
) -> None:
    module = project(
        _settings(
            f'{{"stats": {{"BACKEND": "{DB_CACHE}", "LOCATION": "qcache"}}}}',
            'DATABASES = {"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", '
            f'"USER": "qw", "PASSWORD": "{PASSWORD}", "HOST": "db.example", "PORT": 5433}}}}\n'
            'USE_TZ = False\nTIME_ZONE = "Asia/Tokyo"\n',
        ).replace('"orm": "default"', '"orm": "default", "cache": "stats"')
    )
    site = load(tmp_path, django_settings=module).sites[0]
    assert site.cache is not None
    assert site.cache.location == f"postgresql://qw:{PASSWORD}@db.example:5433/shop"
    assert site.cache.time_zone == "Asia/Tokyo"  # naive times under USE_TZ=False
    assert SENTINEL not in repr(site) and SENTINEL not in site.stats_address
    assert site.stats_address == "database cache qcache in postgresql://qw:***@db.example:5433/shop"


def test_memcached_and_file_caches(tmp_path: Path, project: Callable[..., str]) -> None:
    module = project(
        _settings(
            '{"default": {"BACKEND": "django.core.cache.backends.memcached.PyLibMCCache", '
            '"LOCATION": ["10.0.0.1:11211", "10.0.0.2:11211"]}, '
            '"files": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", '
            '"LOCATION": "var/cache", "KEY_PREFIX": "p"}}'
        )
    )
    site = load(tmp_path, django_settings=module).sites[0]
    assert site.cache == CacheSettings(
        "memcached", "10.0.0.1:11211,10.0.0.2:11211", client="pylibmc"
    )
    files = project(
        _settings(
            '{"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", '
            '"LOCATION": "var/cache", "KEY_PREFIX": "p"}}'
        ),
        package="filesite",
    )
    site = load(tmp_path, django_settings=files).sites[0]
    assert site.cache == CacheSettings("file", (tmp_path / "var/cache").as_posix(), key_prefix="p")


def test_key_function_is_checked_and_kept(tmp_path: Path, project: Callable[..., str]) -> None:
    write(tmp_path / "mysite" / "keys.py", "def make(key, prefix, version):\n    return key\n")
    cache = f'{{"default": {{"BACKEND": "{DB_CACHE}", "LOCATION": "t", "KEY_FUNCTION": "%s"}}}}'
    module = project(_settings(cache % "mysite.keys.make"))
    site = load(tmp_path, django_settings=module).sites[0]
    assert site.cache is not None and site.cache.key_function == "mysite.keys.make"
    module = project(_settings(cache % "mysite.keys.nope"), package="othersite")
    assert error_of(lambda: load(tmp_path, django_settings=module)) == (
        "othersite.settings: CACHES['default']['KEY_FUNCTION'] cannot be imported as a function"
    )


@pytest.mark.parametrize(
    ("backend", "name"),
    [
        ("django.core.cache.backends.locmem.LocMemCache", "LocMemCache"),
        ("django.core.cache.backends.dummy.DummyCache", "DummyCache"),
    ],
)
def test_in_process_caches_exit_2_naming_the_setting(
    tmp_path: Path,
    project: Callable[..., str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    name: str,
) -> None:
    module = project(_settings(f'{{"default": {{"BACKEND": "{backend}"}}}}'))
    monkeypatch.chdir(tmp_path)
    code = main(["status", "--django-settings", module])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert err == (
        f"qwatch: mysite.settings: CACHES['default'] is {name}: its Stats live inside each "
        "qcluster process; point Q_CLUSTER['cache'] at a shared cache (database, memcached, "
        "file or Redis)\n"
    )


def test_unknown_cache_backend_is_refused(tmp_path: Path, project: Callable[..., str]) -> None:
    module = project(_settings('{"default": {"BACKEND": "shop.caches.Mine"}}'))
    assert "CACHES['default']['BACKEND'] 'shop.caches.Mine' is not a cache qwatch can read" in (
        error_of(lambda: load(tmp_path, django_settings=module))
    )


def test_toml_names_a_cache(tmp_path: Path) -> None:
    write(
        tmp_path / "qwatch.toml",
        f"""\
        name = "shop"
        stats_from = "cache"
        cache_backend = "database"
        cache_location = "postgresql://qw:{PASSWORD}@db/shop"
        cache_table = "qcache"
        cache_key_prefix = "shop"
        cache_version = 4
        """,
    )
    site = load(tmp_path).sites[0]
    assert site.cache == CacheSettings(
        "database",
        f"postgresql://qw:{PASSWORD}@db/shop",
        table="qcache",
        key_prefix="shop",
        version=4,
    )
    write(
        tmp_path / "qwatch.toml",
        'stats_from = "cache"\ncache_backend = "memcached"\ncache_location = "h:11211"\n',
    )
    assert load(tmp_path).sites[0].cache == CacheSettings(
        "memcached", "h:11211", client="pymemcache"
    )


def test_toml_overrides_and_drops_the_django_cache(
    tmp_path: Path, project: Callable[..., str]
) -> None:
    module = project(_settings(f'{{"default": {{"BACKEND": "{DB_CACHE}", "LOCATION": "qcache"}}}}'))
    write(tmp_path / "qwatch.toml", f'django_settings = "{module}"\ncache_table = "other"\n')
    site = load(tmp_path).sites[0]
    assert site.cache is not None and site.cache.table == "other"
    write(tmp_path / "qwatch.toml", f'django_settings = "{module}"\nstats_from = "redis"\n')
    assert load(tmp_path).sites[0].cache is None


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('stats_from = "memcached"', 'qwatch.toml: stats_from must be "cache" or "redis"'),
        ('stats_from = "cache"', 'qwatch.toml: stats_from = "cache" needs cache_backend'),
        ('cache_backend = "file"', 'qwatch.toml: cache_backend needs stats_from = "cache"'),
        (
            'stats_from = "cache"\ncache_backend = "locmem"\ncache_location = "x"',
            "qwatch.toml: cache_backend must be one of database, memcached, file",
        ),
        (
            'stats_from = "cache"\ncache_backend = "file"',
            "qwatch.toml: cache_location must be set for the file cache",
        ),
        (
            'stats_from = "cache"\ncache_backend = "database"\ncache_location = "sqlite:///x"',
            "qwatch.toml: cache_table must name the DatabaseCache table",
        ),
        (
            f'stats_from = "cache"\ncache_backend = "database"\ncache_table = "t"\n'
            f'cache_location = "redis://:{PASSWORD}@h"',
            "qwatch.toml: cache_location: unsupported scheme 'redis'",
        ),
        (
            'stats_from = "cache"\ncache_backend = "memcached"\ncache_location = "h:1"\n'
            'cache_client = "python-memcached"',
            "qwatch.toml: cache_client must be pymemcache or pylibmc",
        ),
        (
            f'stats_from = "cache"\ncache_backend = "database"\ncache_table = "t"\n'
            f'cache_location = "mysql://qw:{PASSWORD}@h/shop?ssl=1"',
            "qwatch.toml: cache_location: unsupported option 'ssl' (qwatch reads unix_socket, "
            "charset in a MySQL URL)",
        ),
        ("cache_version = 0", "qwatch.toml: cache_version must be 1 or more"),
    ],
)
def test_bad_toml_cache_keys(tmp_path: Path, toml: str, message: str) -> None:
    write(tmp_path / "qwatch.toml", toml + "\n")
    assert message in error_of(lambda: load(tmp_path))


def test_database_cache_on_mysql(tmp_path: Path, project: Callable[..., str]) -> None:
    module = project(
        _settings(
            f'{{"default": {{"BACKEND": "{DB_CACHE}", "LOCATION": "qcache"}}}}',
            'DATABASES = {"default": {"ENGINE": "django.db.backends.mysql", "NAME": "shop", '
            f'"USER": "qw", "PASSWORD": "{PASSWORD}", "HOST": "db", "PORT": "3307"}}}}\n'
            "USE_TZ = True\n",
        )
    )
    site = load(tmp_path, django_settings=module).sites[0]
    assert site.cache == CacheSettings(
        "database", f"mysql://qw:{PASSWORD}@db:3307/shop", table="qcache"
    )
    assert SENTINEL not in site.stats_address
    assert site.stats_address == "database cache qcache in mysql://qw:***@db:3307/shop"


def test_toml_database_cache_on_mysql(tmp_path: Path) -> None:
    location = f"mysql://qw:{PASSWORD}@db/shop"
    write(
        tmp_path / "qwatch.toml",
        f'stats_from = "cache"\ncache_backend = "database"\ncache_location = "{location}"\n'
        f'cache_table = "qcache"\nbroker = "orm"\nbroker_database_url = "{location}"\n',
    )
    site = load(tmp_path).sites[0]
    assert site.cache == CacheSettings("database", location, table="qcache")
    assert site.broker_database == location
    assert SENTINEL not in site.stats_address


def test_database_cache_on_a_mysql_socket(tmp_path: Path, project: Callable[..., str]) -> None:
    # Django's MySQL HOST "/path" is the socket file; OPTIONS unix_socket wins over it.
    for index, (database, socket) in enumerate(
        [
            ('"HOST": "/run/mysqld/mysqld.sock"', "/run/mysqld/mysqld.sock"),
            ('"HOST": "/a.sock", "OPTIONS": {"unix_socket": "/b.sock"}', "/b.sock"),
        ]
    ):
        module = project(
            _settings(
                f'{{"default": {{"BACKEND": "{DB_CACHE}", "LOCATION": "qcache"}}}}',
                'DATABASES = {"default": {"ENGINE": "django.db.backends.mysql", '
                f'"NAME": "shop", "USER": "qw", {database}}}}}\n',
            ),
            package=f"mysite{index}",
        )
        site = load(tmp_path, django_settings=module).sites[0]
        assert site.cache is not None
        assert site.cache.location == f"mysql://qw@/shop?unix_socket={socket}"


def test_relative_paths_are_the_projects_not_qwatchs(
    tmp_path: Path,
    project: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    # qwatch started elsewhere, the project on PYTHONPATH: a relative LOCATION or NAME is
    # relative to where manage.py qcluster runs (the settings' import root), not to qwatch.
    module = project(
        _settings(
            '{"default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", '
            '"LOCATION": "var/cache"}}'
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    site = load_settings(environ={}, cwd=elsewhere, django_settings=module).sites[0]
    assert site.cache == CacheSettings("file", (tmp_path / "var" / "cache").as_posix())
