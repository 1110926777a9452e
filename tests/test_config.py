"""Settings: every layer of precedence, every URL form, Django projects, and the error lines."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qwatch.cli import main
from qwatch.config import (
    ConfigError,
    DaemonSettings,
    RedisSettings,
    Settings,
    Site,
    async_database_url,
    default_database_url,
    load_settings,
    safe_url,
    sqlite_path,
)
from qwatch.config.django_project import broker_kind

# Every secret in these tests contains SENTINEL, so one check covers them all.
SENTINEL = "Sentinel-7f3a"
SECRET = f"django-insecure-{SENTINEL}"
PASSWORD = f"pw-{SENTINEL}"


def error_of(call: Callable[[], object]) -> str:
    """The ConfigError message, checked: one line, and no secret in it."""
    with pytest.raises(ConfigError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    assert SENTINEL not in message
    assert SENTINEL not in repr(caught.value)
    return message


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Write mysite/settings.py under tmp_path; give its dotted name; forget it afterwards."""

    def make(settings_text: str, package: str = "mysite") -> str:
        write(tmp_path / package / "__init__.py", "")
        write(tmp_path / package / "settings.py", settings_text)
        return f"{package}.settings"

    yield make
    for name in list(sys.modules):
        module_file = getattr(sys.modules[name], "__file__", None) or ""
        if module_file.startswith(str(tmp_path)):
            del sys.modules[name]


def load(tmp_path: Path, environ: dict[str, str] | None = None, **flags: Any) -> Settings:
    return load_settings(environ=environ or {}, cwd=tmp_path, **flags)


# --------------------------------------------------------------------------- Redis URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://localhost:6379/0", {"host": "localhost", "port": 6379, "db": 0}),
        ("redis://", {"host": "localhost", "port": 6379, "db": 0}),
        ("redis://cache.internal", {"host": "cache.internal", "port": 6379, "db": 0}),
        ("redis://h:7000/5", {"host": "h", "port": 7000, "db": 5}),
        ("redis://h/", {"host": "h", "db": 0}),
        ("REDIS://H:1/2", {"host": "H", "port": 1, "db": 2}),
        ("redis://[::1]:7000/1", {"host": "::1", "port": 7000, "db": 1}),
        ("redis://h/1?db=4", {"db": 4}),
        ("redis://:pw@h", {"username": None, "password": "pw"}),
        ("redis://alice:pw@h", {"username": "alice", "password": "pw"}),
        ("redis://alice@h", {"username": "alice", "password": None}),
        ("redis://al%40ce:p%40ss%3Aw%2Frd@h", {"username": "al@ce", "password": "p@ss:w/rd"}),
        # an unencoded "/" or "@" still belongs to the password
        ("redis://:ab/cd@h/3", {"password": "ab/cd", "host": "h", "db": 3}),
        ("redis://:a@b@h", {"password": "a@b", "host": "h"}),
        ("redis://h?password=pw&username=bob", {"password": "pw", "username": "bob"}),
        ("redis://:url@h?password=query", {"password": "url"}),
        (
            "redis://h?socket_connect_timeout=1.5&socket_timeout=2",
            {"connect_timeout": 1.5, "command_timeout": 2.0},
        ),
        ("redis://h?health_check_interval=10&max_connections=5", {"host": "h"}),
        ("rediss://h:6380/1", {"ssl": True, "ssl_verify": True, "port": 6380, "db": 1}),
        ("rediss://h?ssl_cert_reqs=none", {"ssl": True, "ssl_verify": False}),
        ("rediss://h?ssl_cert_reqs=required", {"ssl_verify": True}),
        ("rediss://h?ssl_cert_reqs=OPTIONAL", {"ssl_verify": True}),
        (
            "rediss://h?ssl_ca_certs=/etc/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem",
            {"ssl_ca_certs": "/etc/ca.pem", "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem"},
        ),
        ("rediss://h?ssl_check_hostname=false", {"ssl_check_hostname": False}),
        ("unix:///run/redis.sock", {"unix_socket_path": "/run/redis.sock", "db": 0}),
        ("unix:///run/redis.sock?db=3", {"unix_socket_path": "/run/redis.sock", "db": 3}),
        ("unix://:pw@/run/redis.sock", {"unix_socket_path": "/run/redis.sock", "password": "pw"}),
        ("unix://localhost/run/redis.sock", {"unix_socket_path": "/run/redis.sock"}),
        ("unix:///run/my%20redis.sock", {"unix_socket_path": "/run/my redis.sock"}),
    ],
)
def test_redis_url_forms(url: str, expected: dict[str, object]) -> None:
    redis = RedisSettings.from_url(url)
    assert {key: getattr(redis, key) for key in expected} == expected


def test_redis_url_defaults_and_address() -> None:
    assert RedisSettings.from_url("redis://localhost:6379/0") == RedisSettings()
    assert RedisSettings().connect_timeout == 5.0
    assert RedisSettings().command_timeout == 5.0


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://localhost", "redis://localhost:6379/0"),
        (f"redis://:{PASSWORD}@h:7/2", "redis://h:7/2"),
        (f"redis://alice:{PASSWORD}@h/1", "redis://alice@h:6379/1"),
        (f"rediss://:{PASSWORD}@h:6380/0?ssl_cert_reqs=none", "rediss://h:6380/0"),
        (f"unix://:{PASSWORD}@/tmp/r.sock?db=2", "unix:///tmp/r.sock?db=2"),
        ("redis://[::1]:7000", "redis://[::1]:7000/0"),
    ],
)
def test_address_never_shows_the_password(url: str, address: str) -> None:
    redis = RedisSettings.from_url(url)
    assert redis.address == address
    assert SENTINEL not in repr(redis)
    assert SENTINEL not in str(redis)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://h", "unknown scheme 'http' (use redis://, rediss:// or unix://)"),
        ("localhost:6379", "not a URL"),
        (f"{PASSWORD}@localhost", "not a URL"),
        (f":{PASSWORD}@h://x", "not a URL"),
        ("", "not a URL"),
        (f"redis://:{PASSWORD}@h:port/0", "port must be a number from 1 to 65535"),
        (f"redis://:{PASSWORD}@h:0", "port must be a number from 1 to 65535"),
        (f"redis://:{PASSWORD}@h:65536", "port must be a number from 1 to 65535"),
        (f"redis://:{PASSWORD}@h/zero", "database must be a number"),
        (f"redis://:{PASSWORD}@h/-1", "database must be a number"),
        (f"redis://:{PASSWORD}@h?db=x", "database must be a number"),
        (f"redis://:{PASSWORD}@h/0?color=red", "unknown option 'color'"),
        (f"redis://:{PASSWORD}@h/0?{SENTINEL}=1", "unknown option '***'"),
        (f"redis://:{PASSWORD}@h/0?socket_timeout=0", "socket_timeout must be a positive number"),
        (f"redis://:{PASSWORD}@h?socket_connect_timeout=x", "socket_connect_timeout must be"),
        (f"redis://:{PASSWORD}@h?socket_timeout=nan", "socket_timeout must be"),
        (f"redis://:{PASSWORD}@h?ssl_ca_certs=/ca.pem", "ssl_ca_certs needs a rediss:// URL"),
        (f"rediss://:{PASSWORD}@h?ssl_cert_reqs=maybe", "ssl_cert_reqs must be none, optional"),
        (f"rediss://:{PASSWORD}@h?ssl_check_hostname=perhaps", "ssl_check_hostname must be"),
        (f"rediss://:{PASSWORD}@h?ssl_ca_certs=", "ssl_ca_certs must name a file"),
        (f"redis://:{PASSWORD}@[::1", "malformed IPv6 host"),
        (f"unix://:{PASSWORD}@", "needs the socket path"),
        ("unix://", "needs the socket path"),
        (f"redis://:{PASSWORD}@h?a=1&&", "malformed query string"),
        # a "?" inside an unencoded password: its tail must not be read back as an option
        (f"redis://:pw?{SENTINEL}=1@h", "percent-encode"),
    ],
)
def test_bad_redis_url_is_one_line_naming_the_setting(url: str, fragment: str) -> None:
    message = error_of(lambda: RedisSettings.from_url(url))
    assert message.startswith("redis URL: ")
    assert fragment in message


def test_redis_url_error_names_the_given_setting() -> None:
    message = error_of(lambda: RedisSettings.from_url("http://x", setting="QWATCH_REDIS_URL"))
    assert message.startswith("QWATCH_REDIS_URL: unknown scheme 'http'")


def test_redis_url_must_be_text() -> None:
    assert "must be a string" in error_of(lambda: RedisSettings.from_url(6379))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- redis-py kwargs


def test_from_django_takes_a_url_or_kwargs() -> None:
    assert RedisSettings.from_django("redis://h:1/2") == RedisSettings(host="h", port=1, db=2)
    assert RedisSettings.from_django({}) == RedisSettings()
    redis = RedisSettings.from_django(
        {
            "host": "h",
            "port": 6380,
            "db": 3,
            "password": PASSWORD,
            "username": "alice",
            "ssl": True,
            "ssl_ca_certs": "/ca.pem",
            "ssl_cert_reqs": "none",
            "socket_timeout": 2,
            "socket_connect_timeout": 1.5,
            "decode_responses": True,  # ignored: does not change where or how we connect
        }
    )
    assert redis == RedisSettings(
        host="h",
        port=6380,
        db=3,
        password=PASSWORD,
        username="alice",
        ssl=True,
        ssl_ca_certs="/ca.pem",
        ssl_verify=False,
        command_timeout=2.0,
        connect_timeout=1.5,
    )
    assert SENTINEL not in repr(redis)


def test_from_django_kwargs_edge_values() -> None:
    import ssl

    assert RedisSettings.from_django({"ssl_cert_reqs": None}).ssl_verify is False
    assert RedisSettings.from_django({"ssl_cert_reqs": ssl.CERT_NONE}).ssl_verify is False
    assert RedisSettings.from_django({"ssl_cert_reqs": ssl.CERT_REQUIRED}).ssl_verify is True
    assert RedisSettings.from_django({"socket_timeout": None}).command_timeout == 5.0
    assert RedisSettings.from_django({"port": "6390"}).port == 6390
    sock = RedisSettings.from_django({"unix_socket_path": "/run/r.sock", "db": 1})
    assert sock.address == "unix:///run/r.sock?db=1"


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (6379, "Q_CLUSTER['redis'] must be a URL or a dict"),
        ({"port": "x"}, "Q_CLUSTER['redis']['port'] must be an integer"),
        ({"port": True}, "['port'] must be an integer"),
        ({"port": 70000}, "['port'] must be from 1 to 65535"),
        ({"db": -1}, "['db'] must be 0 or more"),
        ({"host": 1}, "['host'] must be a string"),
        ({"password": 12345}, "['password'] must be a string"),
        ({"ssl": "yes", "password": PASSWORD}, "['ssl'] must be True or False"),
        ({"ssl_cert_reqs": "maybe", "password": PASSWORD}, "must be none, optional or required"),
        ({"socket_timeout": -1, "password": PASSWORD}, "must be a positive number of seconds"),
        (f"http://:{PASSWORD}@h", "unknown scheme 'http'"),
    ],
)
def test_bad_django_redis_value(value: object, fragment: str) -> None:
    assert fragment in error_of(lambda: RedisSettings.from_django(value))


# --------------------------------------------------------------------------- other URLs


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            f"postgresql://qwatch:{PASSWORD}@db:5432/qwatch",
            "postgresql://qwatch:***@db:5432/qwatch",
        ),
        (f"redis://:{PASSWORD}@h/0", "redis://:***@h/0"),
        ("redis://alice@h/0", "redis://alice@h/0"),
        (
            f"postgresql://db/q?password={PASSWORD}&sslmode=require",
            "postgresql://db/q?password=***&sslmode=require",
        ),
        (f"postgresql://u:{PASSWORD}/x@db/q", "postgresql://u:***@db/q"),
        ("sqlite:////var/lib/q.sqlite3", "sqlite:////var/lib/q.sqlite3"),
        (f"host=db password={PASSWORD}", "<not a URL>"),
    ],
)
def test_safe_url_masks_passwords(url: str, shown: str) -> None:
    assert safe_url(url) == shown


@pytest.mark.parametrize(
    ("url", "converted"),
    [
        ("sqlite:///history.sqlite3", "sqlite+aiosqlite:///history.sqlite3"),
        ("sqlite:////abs/h.sqlite3", "sqlite+aiosqlite:////abs/h.sqlite3"),
        ("sqlite+aiosqlite:///h.db", "sqlite+aiosqlite:///h.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://u:p@db/q", "postgresql+asyncpg://u:p@db/q"),
        ("postgres://u:p@db/q", "postgresql+asyncpg://u:p@db/q"),
        ("postgresql+asyncpg://db/q", "postgresql+asyncpg://db/q"),
        ("PostgreSQL://db/q", "postgresql+asyncpg://db/q"),
    ],
)
def test_async_database_url(url: str, converted: str) -> None:
    assert async_database_url(url) == converted


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        (f"mysql://u:{PASSWORD}@db/q", "MySQL is read only as a Django project's own database"),
        (f"postgresql+psycopg2://u:{PASSWORD}@db/q", "unsupported scheme 'postgresql+psycopg2'"),
        (f"postgresql://u:{PASSWORD}@db:port/q", "cannot parse postgresql://u:***@db:port/q"),
        (f"{PASSWORD}", "not a URL"),
    ],
)
def test_bad_database_url(url: str, fragment: str) -> None:
    message = error_of(lambda: async_database_url(url, setting="--db"))
    assert message.startswith("--db: ")
    assert fragment in message


def test_a_project_database_may_be_mysql() -> None:
    """A Django project's own database (its cache table, its ORM queue) is read on MySQL
    too, through aiomysql; only a socket file and a charset may be added to the URL."""
    url = f"mysql://u:{PASSWORD}@db:3307/shop?unix_socket=/run/m.sock&charset=utf8mb4"
    assert async_database_url(url, project=True) == url.replace("mysql:", "mysql+aiomysql:")
    assert async_database_url("mariadb://db/q", project=True) == "mysql+aiomysql://db/q"
    message = error_of(
        lambda: async_database_url(f"mysql://db/q?ssl_key={PASSWORD}", setting="x", project=True)
    )
    assert (
        message
        == "x: unsupported option 'ssl_key' (qwatch reads unix_socket, charset in a MySQL URL)"
    )


def test_database_url_unparsed_checks_the_scheme_only() -> None:
    """`status` (parse=False) never opens the database: a bad scheme is still refused, what
    only SQLAlchemy would find is left to the commands that open it."""
    assert "MySQL is read only as a Django project's own database" in error_of(
        lambda: async_database_url("mysql://db/q", parse=False)
    )
    unparsable = f"postgresql://u:{PASSWORD}@db:port/q"
    assert (
        async_database_url(unparsable, parse=False)
        == f"postgresql+asyncpg://u:{PASSWORD}@db:port/q"
    )
    assert "cannot parse" in error_of(lambda: async_database_url(unparsable))


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:////var/lib/h.sqlite3") == Path("/var/lib/h.sqlite3")
    assert sqlite_path("sqlite:///rel/h.sqlite3") == Path("rel/h.sqlite3")
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql://db/q") is None


# --------------------------------------------------------------------------- precedence


def test_defaults(tmp_path: Path) -> None:
    settings = load(tmp_path)
    (site,) = settings.sites
    assert site == Site()
    assert site.name == "default"
    assert site.redis.address == "redis://localhost:6379/0"
    assert site.time_zone == "UTC"
    assert site.secret_key == ""
    assert settings.daemon == DaemonSettings()
    assert settings.config_file is None


def test_default_database_follows_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = f"sqlite:///{(tmp_path / 'data' / 'qwatch' / 'history.sqlite3').as_posix()}"
    assert default_database_url() == expected
    assert load(tmp_path).database_url == expected
    assert sqlite_path(expected) == tmp_path / "data" / "qwatch" / "history.sqlite3"


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    write(
        tmp_path / "qwatch.toml",
        """
        database_url = "sqlite:///file.sqlite3"
        redis_url = "redis://file:6379/1"
        name = "file"
        secret_key = "file-key"
        secret_key_fallbacks = ["file-old"]
        time_zone = "Europe/Paris"
        """,
    )
    file_site = load(tmp_path).sites[0]
    assert (file_site.name, file_site.redis.host, file_site.redis.db) == ("file", "file", 1)
    assert (file_site.secret_key, file_site.secret_key_fallbacks) == ("file-key", ("file-old",))
    assert file_site.time_zone == "Europe/Paris"
    assert load(tmp_path).database_url == "sqlite:///file.sqlite3"
    assert load(tmp_path).config_file == tmp_path / "qwatch.toml"

    environ = {
        "QWATCH_DATABASE_URL": "sqlite:///env.sqlite3",
        "QWATCH_REDIS_URL": "redis://env:6379/2",
        "QWATCH_NAME": "env",
        "QWATCH_SECRET_KEY": "env-key",
        "QWATCH_SECRET_KEY_FALLBACKS": " old-1 , old-2,, ",
        "QWATCH_TIME_ZONE": "Asia/Tokyo",
    }
    env = load(tmp_path, environ)
    env_site = env.sites[0]
    assert (env_site.name, env_site.redis.host, env_site.redis.db) == ("env", "env", 2)
    assert (env_site.secret_key, env_site.secret_key_fallbacks) == ("env-key", ("old-1", "old-2"))
    assert env_site.time_zone == "Asia/Tokyo"
    assert env.database_url == "sqlite:///env.sqlite3"

    flags = load(
        tmp_path,
        environ,
        redis_url="redis://flag:6379/3",
        database_url="postgresql://db/qwatch",
        name="flag",
    )
    flag_site = flags.sites[0]
    assert (flag_site.name, flag_site.redis.host, flag_site.redis.db) == ("flag", "flag", 3)
    assert flag_site.secret_key == "env-key"  # no flag for it: the environment still counts
    assert flags.database_url == "postgresql://db/qwatch"


def test_display_time_zone_layers(tmp_path: Path) -> None:
    assert load(tmp_path).display_time_zone == "UTC"  # the default: every command in UTC
    assert load(tmp_path).display_zone.name == "UTC"
    write(tmp_path / "qwatch.toml", 'display_time_zone = "Europe/Paris"\n')
    assert load(tmp_path).display_time_zone == "Europe/Paris"
    environ = {"QWATCH_DISPLAY_TIME_ZONE": "local"}
    assert load(tmp_path, environ).display_time_zone == "local"
    assert load(tmp_path, environ).display_zone.tz is None  # the machine's zone
    assert load(tmp_path, environ, display_time_zone="Asia/Tokyo").display_time_zone == (
        "Asia/Tokyo"
    )
    assert load(tmp_path, {"QWATCH_DISPLAY_TIME_ZONE": ""}).display_time_zone == "Europe/Paris"


def test_bad_display_time_zone_names_the_setting(tmp_path: Path) -> None:
    hint = "(UTC, local, or an IANA name like Europe/Paris)"
    assert error_of(lambda: load(tmp_path, display_time_zone="Mars/Base")) == (
        f"--tz: unknown time zone 'Mars/Base' {hint}"
    )
    environ = {"QWATCH_DISPLAY_TIME_ZONE": "Nowhere"}
    assert error_of(lambda: load(tmp_path, environ)) == (
        f"QWATCH_DISPLAY_TIME_ZONE: unknown time zone 'Nowhere' {hint}"
    )
    write(tmp_path / "qwatch.toml", 'display_time_zone = "CEST+2"\n')
    assert error_of(lambda: load(tmp_path)).startswith(
        "qwatch.toml: display_time_zone: unknown time zone 'CEST+2'"
    )
    write(tmp_path / "qwatch.toml", "display_time_zone = 2\n")
    assert error_of(lambda: load(tmp_path)) == (
        "qwatch.toml: display_time_zone must be a non-empty string"
    )
    write(tmp_path / "qwatch.toml", '[[sites]]\nname = "a"\ndisplay_time_zone = "UTC"\n')
    assert "unknown setting 'sites[0].display_time_zone'" in error_of(lambda: load(tmp_path))


def test_bad_tz_flag_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in ("status", "history web-1", "report restarts", "monitor"):
        code = main([*command.split(), "--tz", "Mars/Base"])
        out, err = capsys.readouterr()
        assert (code, out) == (2, ""), command
        assert (
            err.startswith("qwatch: --tz: unknown time zone 'Mars/Base'") and err.count("\n") == 1
        )


def test_empty_environment_variables_count_as_unset(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", 'name = "file"\n')
    environ = {"QWATCH_NAME": "", "QWATCH_REDIS_URL": "", "QWATCH_DATABASE_URL": ""}
    settings = load(tmp_path, environ)
    assert settings.sites[0].name == "file"
    assert settings.database_url == default_database_url()


def test_explicit_config_path(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", 'name = "cwd"\n')
    write(tmp_path / "etc" / "other.toml", 'name = "other"\n')
    assert load(tmp_path, config_path="etc/other.toml").sites[0].name == "other"
    absolute = str(tmp_path / "etc" / "other.toml")
    settings = load(tmp_path / "etc", config_path=absolute)
    assert settings.sites[0].name == "other"
    assert settings.config_file == Path(absolute)


def test_missing_explicit_config_is_an_error(tmp_path: Path) -> None:
    message = error_of(lambda: load(tmp_path, config_path="nope.toml"))
    assert message == "--config: no such file 'nope.toml'"


def test_daemon_table(tmp_path: Path) -> None:
    write(
        tmp_path / "qwatch.toml",
        """
        [daemon]
        interval = 0.5
        sample_every = 5
        keep_samples_days = 2
        keep_minutes_days = 10
        keep_hours_days = 365
        """,
    )
    assert load(tmp_path).daemon == DaemonSettings(0.5, 5.0, 2, 10, 365)


@pytest.mark.parametrize(
    ("daemon", "fragment"),
    [
        ("interval = 3", "daemon.interval must be below 3 seconds"),
        ("interval = 0", "daemon.interval must be a positive number of seconds"),
        ("interval = -1.0", "daemon.interval must be a positive number of seconds"),
        ('interval = "1"', "daemon.interval must be a number of seconds"),
        ("interval = 2\nsample_every = 1", "daemon.sample_every must be at least daemon.interval"),
        ("keep_hours_days = 0", "daemon.keep_hours_days must be 1 or more"),
        ("keep_samples_days = 1.5", "daemon.keep_samples_days must be an integer"),
        ("color = 1", "unknown setting 'daemon.color'"),
    ],
)
def test_bad_daemon_settings(tmp_path: Path, daemon: str, fragment: str) -> None:
    write(tmp_path / "qwatch.toml", f"[daemon]\n{daemon}\n")
    message = error_of(lambda: load(tmp_path))
    assert message.startswith("qwatch.toml: ")
    assert fragment in message


def test_daemon_settings_validate_themselves() -> None:
    with pytest.raises(ConfigError, match="Django Q records expire after 3 s"):
        DaemonSettings(interval_s=3.5)
    with pytest.raises(ConfigError, match="keep_minutes_days"):
        DaemonSettings(keep_minutes_days=0)
    with pytest.raises(ConfigError, match=r"daemon\.interval must be a number of seconds"):
        DaemonSettings(interval_s="1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- several sites

SITES_TOML = f"""
secret_key = "{SECRET}"
redis_url = "redis://shared:6379/0"
time_zone = "Europe/Berlin"

[[sites]]
name = "shop"
cluster_name = "shop-high"
workers = 8
queue_limit = 50

[[sites]]
name = "blog"
redis_url = "rediss://:{PASSWORD}@blog-redis:6380/2"
secret_key = "blog-{SECRET}"
secret_key_fallbacks = ["old-{SECRET}"]
time_zone = "UTC"
cache_prefix = ":1:"
"""


def test_several_sites_share_top_level_values(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", SITES_TOML)
    shop, blog = load(tmp_path).sites
    assert (shop.name, shop.cluster_name, shop.workers, shop.queue_limit) == (
        "shop",
        "shop-high",
        8,
        50,
    )
    assert (shop.secret_key, shop.time_zone, shop.redis.host) == (SECRET, "Europe/Berlin", "shared")
    assert shop.broker_key == "django_q:shop-high:q"
    assert shop.stat_pattern == "django_q:shop:cluster:*"
    assert blog.redis.address == "rediss://blog-redis:6380/2"
    assert blog.redis.password == PASSWORD
    assert (blog.secret_key, blog.secret_key_fallbacks) == (f"blog-{SECRET}", (f"old-{SECRET}",))
    assert blog.stat_pattern == ":1:django_q:blog:cluster:*"
    assert blog.broker_key == "django_q:blog:q"


@pytest.mark.parametrize(
    ("environ", "flags", "setting"),
    [
        ({"QWATCH_REDIS_URL": f"redis://:{PASSWORD}@h"}, {}, "QWATCH_REDIS_URL"),
        ({"QWATCH_SECRET_KEY": SECRET}, {}, "QWATCH_SECRET_KEY"),
        ({"QWATCH_NAME": "x"}, {}, "QWATCH_NAME"),
        ({"QWATCH_TIME_ZONE": "UTC"}, {}, "QWATCH_TIME_ZONE"),
        ({}, {"redis_url": "redis://h"}, "--redis"),
        ({}, {"name": "x"}, "--name"),
        ({}, {"django_settings": "mysite.settings"}, "--django-settings"),
    ],
)
def test_site_overrides_with_several_sites_point_to_the_file(
    tmp_path: Path, environ: dict[str, str], flags: dict[str, str], setting: str
) -> None:
    write(tmp_path / "qwatch.toml", SITES_TOML)
    message = error_of(lambda: load(tmp_path, environ, **flags))
    assert message == f"{setting}: qwatch.toml lists 2 sites; set this per site in the file"


def test_several_sites_still_take_the_database_from_env_and_flags(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", SITES_TOML)
    environ = {"QWATCH_DATABASE_URL": "sqlite:///env.db", "DJANGO_SETTINGS_MODULE": "not.used"}
    assert load(tmp_path, environ).database_url == "sqlite:///env.db"
    assert load(tmp_path, environ, database_url="sqlite:///f.db").database_url == "sqlite:///f.db"


def test_one_listed_site_takes_env_and_flags(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", '[[sites]]\nname = "only"\nredis_url = "redis://file"\n')
    (site,) = load(tmp_path, {"QWATCH_SECRET_KEY": SECRET}, redis_url="redis://flag").sites
    assert (site.name, site.secret_key, site.redis.host) == ("only", SECRET, "flag")


def test_site_names_must_be_unique(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", '[[sites]]\nname = "a"\n[[sites]]\nname = "a"\n')
    assert error_of(lambda: load(tmp_path)) == (
        "qwatch.toml: sites[1].name 'a' is used by another site"
    )


def test_settings_site_lookup(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", SITES_TOML)
    settings = load(tmp_path)
    assert settings.site("blog").name == "blog"
    assert "no site named 'nope' (sites: shop, blog)" in error_of(lambda: settings.site("nope"))
    assert "choose one of shop, blog" in error_of(lambda: settings.site())


def test_settings_need_a_site() -> None:
    assert "at least one site" in error_of(lambda: Settings(sites=(), database_url="sqlite://"))


# --------------------------------------------------------------------------- file errors


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("foo = 1", "unknown setting 'foo'"),
        (
            "[[sites]]\nname = 'a'\n[[sites]]\nworkers = 'many'",
            "sites[1].workers must be an integer",
        ),
        ("[[sites]]\nname = 'a'\ncolour = 1", "unknown setting 'sites[0].colour'"),
        ("workers = true", "workers must be an integer"),
        ("queue_limit = 0", "queue_limit must be 1 or more"),
        ("name = ''", "name must be a non-empty string"),
        ("name = 3", "name must be a non-empty string"),
        ("secret_key = 42", "secret_key must be a non-empty string"),
        (
            f"secret_key_fallbacks = '{SECRET}'",
            "secret_key_fallbacks must be a list of non-empty strings",
        ),
        (
            f"secret_key_fallbacks = ['{SECRET}', 3]",
            "secret_key_fallbacks must be a list of non-empty strings",
        ),
        ("database_url = 5", "database_url must be a non-empty string"),
        ("daemon = 5", "daemon must be a table ([daemon])"),
        ("sites = 5", "sites must be an array of tables ([[sites]])"),
        ("sites = []", "sites must list at least one [[sites]] table"),
        (
            "name = 'a'\n[[sites]]\nname = 'b'",
            "name belongs in each [[sites]] table, not at the top",
        ),
        ("time_zone = 'Mars/Base'", "time_zone: unknown time zone 'Mars/Base'"),
        (
            "[[sites]]\nname = 'a'\ntime_zone = '../etc/passwd'",
            "sites[0].time_zone: unknown time zone '../etc/passwd'",
        ),
        (
            f"redis_url = 'http://:{PASSWORD}@h'",
            "redis_url: unknown scheme 'http' (use redis://, rediss:// or unix://)",
        ),
        (
            f"[[sites]]\nname = 'a'\nredis_url = 'redis://:{PASSWORD}@h:x'",
            "sites[0].redis_url: the port must be a number from 1 to 65535",
        ),
        (
            f"database_url = 'mysql://u:{PASSWORD}@h/db'",
            "database_url: MySQL is read only as a Django project's own database; "
            "qwatch's history is kept in SQLite or PostgreSQL",
        ),
    ],
)
def test_bad_file_values(tmp_path: Path, toml: str, message: str) -> None:
    write(tmp_path / "qwatch.toml", toml + "\n")
    assert error_of(lambda: load(tmp_path)) == f"qwatch.toml: {message}"


@pytest.mark.parametrize(
    "toml",
    [
        f"secret_key = {SENTINEL}\n",  # a bare word: tomllib would quote its first character
        f'secret_key = "{SENTINEL}\n',
        f"secret_key = '{SENTINEL}' extra\n",
        f"[sites\nsecret_key = '{SENTINEL}'\n",
        f'secret_key = "\\q{SENTINEL}"\n',
    ],
)
def test_invalid_toml_is_one_line_without_the_value(tmp_path: Path, toml: str) -> None:
    write(tmp_path / "qwatch.toml", toml)
    message = error_of(lambda: load(tmp_path))
    assert message.startswith("qwatch.toml: not valid TOML: ")
    assert "line 1" in message or "line 2" in message


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "qwatch.toml").write_bytes(b"name = '\xff'\n")
    assert error_of(lambda: load(tmp_path)) == "qwatch.toml: not UTF-8 text"


def test_flag_errors_name_the_flag(tmp_path: Path) -> None:
    assert error_of(lambda: load(tmp_path, name="")) == "--name must not be empty"
    assert error_of(lambda: load(tmp_path, redis_url="")) == "--redis must not be empty"
    assert error_of(lambda: load(tmp_path, django_settings="")) == (
        "--django-settings must not be empty"
    )
    assert error_of(lambda: load(tmp_path, redis_url=f"http://:{PASSWORD}@h")).startswith(
        "--redis: unknown scheme 'http'"
    )
    assert error_of(lambda: load(tmp_path, database_url=f"mysql://u:{PASSWORD}@h")).startswith(
        "--db: MySQL is read only as a Django project's own database"
    )
    assert error_of(lambda: load(tmp_path, {"QWATCH_TIME_ZONE": "Mars/Base"})) == (
        "QWATCH_TIME_ZONE: unknown time zone 'Mars/Base'"
    )
    assert error_of(
        lambda: load(tmp_path, {"QWATCH_DATABASE_URL": f"oracle://u:{PASSWORD}@h"})
    ).startswith("QWATCH_DATABASE_URL: unsupported scheme 'oracle'")


# --------------------------------------------------------------------------- secrets


def test_require_secret(tmp_path: Path) -> None:
    settings = load(tmp_path)  # no secret is fine until a command needs one
    assert error_of(settings.require_secret) == (
        "secret_key is not set (QWATCH_SECRET_KEY, qwatch.toml secret_key, or --django-settings)"
    )
    load(tmp_path, {"QWATCH_SECRET_KEY": SECRET}).require_secret()

    two_sites = f'[[sites]]\nname = "a"\nsecret_key = "{SECRET}"\n[[sites]]\nname = "b"\n'
    write(tmp_path / "qwatch.toml", two_sites)
    message = error_of(load(tmp_path).require_secret)
    assert message.startswith("sites[1] ('b'): secret_key is not set")


def test_reprs_never_show_secrets(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", SITES_TOML)
    settings = load(tmp_path, database_url=f"postgresql://u:{PASSWORD}@db/q")
    for site in settings.sites:
        assert SENTINEL not in repr(site)
        assert SENTINEL not in str(site)
        assert SENTINEL not in repr(site.redis)
    # the database URL is kept whole for the store; callers print it through safe_url
    assert SENTINEL not in safe_url(settings.database_url)


# --------------------------------------------------------------------------- Django


DJANGO_SETTINGS = f"""
SECRET_KEY = "{SECRET}"
SECRET_KEY_FALLBACKS = ["old-{SECRET}"]
TIME_ZONE = "Europe/Amsterdam"
Q_CLUSTER = {{
    "name": "mysite",
    "cluster_name": "mysite-long",
    "workers": 4,
    "queue_limit": 20,
    "redis": "redis://:{PASSWORD}@django-redis:6379/3",
}}
"""


def test_django_settings_by_flag(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(DJANGO_SETTINGS)
    (site,) = load(tmp_path, django_settings=module).sites
    assert site.name == "mysite"
    assert site.cluster_name == "mysite-long"
    assert site.secret_key == SECRET
    assert site.secret_key_fallbacks == (f"old-{SECRET}",)
    assert site.time_zone == "Europe/Amsterdam"
    assert (site.workers, site.queue_limit) == (4, 20)
    assert site.redis.address == "redis://django-redis:6379/3"
    assert site.redis.password == PASSWORD
    assert (site.cache_prefix, site.broker) == (None, "redis")
    assert site.broker_key == "django_q:mysite-long:q"
    assert SENTINEL not in repr(site)
    load(tmp_path, django_settings=module).require_secret()


def test_django_settings_do_not_configure_django(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    from django.conf import settings as django_settings

    was_configured = django_settings.configured
    load(tmp_path, django_settings=project(DJANGO_SETTINGS))
    assert django_settings.configured == was_configured
    assert str(tmp_path) not in sys.path


def test_django_settings_from_environment(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(DJANGO_SETTINGS)
    (site,) = load(tmp_path, {"DJANGO_SETTINGS_MODULE": module}).sites
    assert (site.name, site.secret_key) == ("mysite", SECRET)


def test_django_settings_flag_beats_the_environment(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    module = project(DJANGO_SETTINGS)
    other = project('SECRET_KEY = "other"\nQ_CLUSTER = {"name": "other"}\n', package="othersite")
    (site,) = load(tmp_path, {"DJANGO_SETTINGS_MODULE": other}, django_settings=module).sites
    assert site.name == "mysite"


def test_django_settings_from_the_file(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(DJANGO_SETTINGS)
    write(tmp_path / "qwatch.toml", f'django_settings = "{module}"\nworkers = 9\n')
    (site,) = load(tmp_path).sites
    assert (site.name, site.secret_key, site.workers) == ("mysite", SECRET, 9)


def test_django_settings_per_site(tmp_path: Path, project: Callable[[str], str]) -> None:
    one = project(DJANGO_SETTINGS)
    two = project('SECRET_KEY = "two"\nQ_CLUSTER = {"name": "two", "redis": {"db": 5}}\n', "two")
    write(
        tmp_path / "qwatch.toml",
        f'[[sites]]\ndjango_settings = "{one}"\n[[sites]]\ndjango_settings = "{two}"\n',
    )
    first, second = load(tmp_path, {"DJANGO_SETTINGS_MODULE": "ignored.settings"}).sites
    assert (first.name, second.name, second.redis.db) == ("mysite", "two", 5)


def test_environment_file_and_flags_override_django(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    module = project(DJANGO_SETTINGS)
    write(tmp_path / "qwatch.toml", 'redis_url = "redis://from-file:6379/0"\ntime_zone = "UTC"\n')
    environ = {"QWATCH_SECRET_KEY": "env-key", "QWATCH_NAME": "renamed"}
    (site,) = load(tmp_path, environ, django_settings=module).sites
    assert (site.redis.host, site.time_zone) == ("from-file", "UTC")
    assert (site.secret_key, site.name) == ("env-key", "renamed")
    assert site.cluster_name == "mysite-long"  # untouched layers still come from Django
    (site,) = load(tmp_path, environ, django_settings=module, redis_url="redis://flag").sites
    assert site.redis.host == "flag"


def test_django_defaults(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(f'SECRET_KEY = "{SECRET}"\n')
    (site,) = load(tmp_path, django_settings=module).sites
    assert site.name == "default"
    assert site.cluster_name is None
    assert site.time_zone == "America/Chicago"  # Django's own default
    assert site.redis == RedisSettings()  # Django Q's redis-py defaults
    assert (site.workers, site.queue_limit, site.secret_key_fallbacks) == (None, None, ())


def test_django_without_secret_key_defers_to_require_secret(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    settings = load(tmp_path, django_settings=project('Q_CLUSTER = {"workers": False}\n'))
    assert settings.sites[0].workers is None
    assert "secret_key is not set" in error_of(settings.require_secret)


def test_django_redis_as_a_dict(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(
        f"""
        SECRET_KEY = "{SECRET}"
        Q_CLUSTER = {{
            "redis": {{
                "host": "dict-host",
                "port": 6390,
                "db": 2,
                "password": "{PASSWORD}",
                "socket_timeout": 3,
                "socket_connect_timeout": 4,
            }}
        }}
        """
    )
    (site,) = load(tmp_path, django_settings=module).sites
    assert site.redis == RedisSettings(
        host="dict-host",
        port=6390,
        db=2,
        password=PASSWORD,
        command_timeout=3.0,
        connect_timeout=4.0,
    )


def test_django_redis_cache_alias(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(
        f"""
        SECRET_KEY = "{SECRET}"
        CACHES = {{
            "default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            "qcache": {{
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": ["redis://primary:6379/4", "redis://replica:6379/4"],
                "OPTIONS": {{"PASSWORD": "{PASSWORD}", "SOCKET_TIMEOUT": 2}},
            }},
        }}
        Q_CLUSTER = {{"name": "mysite", "django_redis": "qcache", "redis": "redis://ignored"}}
        """
    )
    (site,) = load(tmp_path, django_settings=module).sites
    assert site.redis.address == "redis://primary:6379/4"
    assert (site.redis.password, site.redis.command_timeout) == (PASSWORD, 2.0)
    assert site.cache_prefix is None  # Django Q talks to that Redis directly
    assert site.stat_pattern == "django_q:mysite:cluster:*"


def test_password_in_the_location_wins_over_options(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    module = project(
        """
        SECRET_KEY = "k"
        CACHES = {"default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://:from-url@a:6379/1,redis://b:6379/1",
            "OPTIONS": {"password": "from-options", "db": 7},
        }}
        Q_CLUSTER = {"django_redis": "default"}
        """
    )
    (site,) = load(tmp_path, django_settings=module).sites
    assert (site.redis.host, site.redis.password, site.redis.db) == ("a", "from-url", 1)


def test_orm_broker_reads_stats_through_the_redis_cache(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    module = project(
        f"""
        SECRET_KEY = "{SECRET}"
        CACHES = {{
            "default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
            "stats": {{
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://:{PASSWORD}@cache-host:6379/6",
                "KEY_PREFIX": "shop",
                "VERSION": 3,
            }},
        }}
        Q_CLUSTER = {{"name": "shop", "orm": "default", "cache": "stats"}}
        """
    )
    (site,) = load(tmp_path, django_settings=module).sites
    assert site.broker == "orm"
    assert site.redis.address == "redis://cache-host:6379/6"
    assert site.cache_prefix == "shop:3:"
    assert site.stat_pattern == "shop:3:django_q:shop:cluster:*"


def test_cache_prefix_defaults_to_djangos(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(
        """
        SECRET_KEY = "k"
        CACHES = {"default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "rediss://cache:6380/0?ssl_cert_reqs=none",
        }}
        Q_CLUSTER = {"orm": "default"}
        """
    )
    (site,) = load(tmp_path, django_settings=module).sites
    assert site.cache_prefix == ":1:"
    assert site.stat_pattern == ":1:django_q:default:cluster:*"
    assert (site.redis.ssl, site.redis.ssl_verify) == (True, False)


@pytest.mark.parametrize(
    ("settings_text", "fragment"),
    [
        (
            'Q_CLUSTER = {"orm": "default"}',
            "mysite.settings: CACHES['default'] is LocMemCache: its Stats live inside each "
            "qcluster process; point Q_CLUSTER['cache'] at a shared cache",
        ),
        (
            'Q_CLUSTER = {"sqs": {"aws_region": "x"}, "cache": "nope"}',
            "the sqs broker keeps cluster Stats in CACHES['nope']",
        ),
        ("SECRET_KEY = 5", "mysite.settings: SECRET_KEY must be a string"),
        (f'SECRET_KEY_FALLBACKS = "{SECRET}"', "SECRET_KEY_FALLBACKS must be a list of strings"),
        ('TIME_ZONE = "Mars/Base"', "mysite.settings: TIME_ZONE: unknown time zone 'Mars/Base'"),
        ("TIME_ZONE = 1", "mysite.settings: TIME_ZONE must be a string"),
        ("Q_CLUSTER = []", "mysite.settings: Q_CLUSTER must be a dict"),
        ('Q_CLUSTER = {"name": ""}', "Q_CLUSTER['name'] must be a non-empty string"),
        ('Q_CLUSTER = {"cluster_name": 3}', "Q_CLUSTER['cluster_name'] must be a non-empty"),
        ('Q_CLUSTER = {"workers": "four"}', "Q_CLUSTER['workers'] must be a positive integer"),
        ('Q_CLUSTER = {"queue_limit": -1}', "Q_CLUSTER['queue_limit'] must be a positive"),
        (
            f'Q_CLUSTER = {{"redis": "http://:{PASSWORD}@h"}}',
            "mysite.settings: Q_CLUSTER['redis']: unknown scheme 'http'",
        ),
        (
            f'Q_CLUSTER = {{"redis": {{"password": "{PASSWORD}", "port": "x"}}}}',
            "mysite.settings: Q_CLUSTER['redis']['port'] must be an integer",
        ),
        ('Q_CLUSTER = {"django_redis": "missing"}', "CACHES['missing'] is not defined"),
        (
            'CACHES = {"q": {"LOCATION": 5}}\nQ_CLUSTER = {"django_redis": "q"}',
            "CACHES['q']['LOCATION'] must be a Redis URL or a list of them",
        ),
        (
            f'CACHES = {{"q": {{"LOCATION": "redis://:{PASSWORD}@h:bad"}}}}\n'
            'Q_CLUSTER = {"django_redis": "q"}',
            "CACHES['q']['LOCATION']: the port must be a number from 1 to 65535",
        ),
        (
            'CACHES = {"q": {"LOCATION": "redis://h",'
            f' "OPTIONS": {{"PASSWORD": 1, "x": "{SECRET}"}}}}}}\n'
            'Q_CLUSTER = {"django_redis": "q"}',
            "CACHES['q']['OPTIONS']['password'] must be a string",
        ),
        (
            'CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache",'
            ' "LOCATION": "redis://h", "VERSION": "v1"}}\nQ_CLUSTER = {"orm": "default"}',
            "KEY_PREFIX must be a string, VERSION an integer",
        ),
    ],
)
def test_bad_django_values(
    tmp_path: Path, project: Callable[[str], str], settings_text: str, fragment: str
) -> None:
    module = project(f'SECRET_KEY = "{SECRET}"\n' + settings_text + "\n")
    assert fragment in error_of(lambda: load(tmp_path, django_settings=module))


def test_django_import_failure_names_the_type_and_line_only(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    module = project(
        f"""
        import os
        SECRET_KEY = "{SECRET}"
        DATABASE_PASSWORD = os.environ["{SENTINEL}_{SECRET}"]
        """
    )
    message = error_of(lambda: load(tmp_path, django_settings=module))
    assert message == (
        "--django-settings: importing 'mysite.settings' failed: KeyError at mysite/settings.py:4"
    )


def test_django_import_failure_from_the_environment(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    module = project(f'raise RuntimeError("{SECRET}")\n')
    message = error_of(lambda: load(tmp_path, {"DJANGO_SETTINGS_MODULE": module}))
    assert message == (
        "DJANGO_SETTINGS_MODULE: importing 'mysite.settings' failed: "
        "RuntimeError at mysite/settings.py:1"
    )


def test_django_settings_syntax_error(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project(f'SECRET_KEY = "{SECRET}"\nQ_CLUSTER = {{"name": "{SECRET}" "x" = 1}}\n')
    message = error_of(lambda: load(tmp_path, django_settings=module))
    assert message == (
        "--django-settings: importing 'mysite.settings' failed: SyntaxError at mysite/settings.py:2"
    )


def test_django_settings_missing_dependency(tmp_path: Path, project: Callable[[str], str]) -> None:
    module = project("import qwatch_no_such_package\n")
    message = error_of(lambda: load(tmp_path, django_settings=module))
    assert message == (
        "--django-settings: importing 'mysite.settings' failed: ModuleNotFoundError "
        "(no module 'qwatch_no_such_package') at mysite/settings.py:1"
    )


def test_django_settings_module_not_found(tmp_path: Path) -> None:
    message = error_of(lambda: load(tmp_path, django_settings="nosuchsite.settings"))
    assert message == (
        "--django-settings: no module 'nosuchsite.settings' (run qwatch from the project "
        "directory or set PYTHONPATH)"
    )
    assert error_of(lambda: load(tmp_path, django_settings="my-site.settings")) == (
        "--django-settings: 'my-site.settings' is not a dotted module name"
    )


def test_relative_cwd(
    tmp_path: Path, project: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = project('raise ValueError("x")\n')
    monkeypatch.chdir(tmp_path.parent)
    message = error_of(
        lambda: load_settings(environ={}, cwd=Path(tmp_path.name), django_settings=module)
    )
    assert message.endswith("ValueError at mysite/settings.py:1")


def test_django_settings_named_in_the_file_errors_name_the_file(tmp_path: Path) -> None:
    write(tmp_path / "qwatch.toml", 'django_settings = "nosuchsite.settings"\n')
    assert error_of(lambda: load(tmp_path)).startswith(
        "qwatch.toml: django_settings: no module 'nosuchsite.settings'"
    )


# --------------------------------------------------------------------------- queues and brokers


ALT_SETTINGS = f"""
SECRET_KEY = "{SECRET}"
DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"}},
    "queue": {{"ENGINE": "django.db.backends.postgresql", "NAME": "q", "USER": "u",
               "PASSWORD": "{PASSWORD}", "HOST": "pg", "PORT": "5433"}}}}
CACHES = {{"default": {{"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://h"}}}}
Q_CLUSTER = {{"name": "shop", "orm": "queue", "ALT_CLUSTERS": {{"long": {{"timeout": 600}},
    "short": {{}}}}}}
"""


def test_django_alt_clusters_and_orm_database(
    tmp_path: Path, project: Callable[[str], str]
) -> None:
    (site,) = load(tmp_path, django_settings=project(ALT_SETTINGS)).sites
    assert (site.broker, site.alt_queues, site.queues) == (
        "orm",
        ("long", "short"),
        ("shop", "long", "short"),
    )
    assert site.broker_database == f"postgresql://u:{PASSWORD}@pg:5433/q"
    assert PASSWORD not in repr(site)


def test_broker_kind() -> None:
    assert broker_kind({}) == "redis"
    assert broker_kind({"orm": "default"}) == "orm"
    assert broker_kind({"sqs": {"aws_region": "x"}}) == "sqs"
    assert broker_kind({"mongo": {"host": "m"}}) == "mongo"
    assert broker_kind({"broker_class": "django_q.brokers.orm.ORM"}) == "orm"
    assert broker_kind({"broker_class": "django_q.brokers.redis_broker.Redis"}) == "redis"
    assert broker_kind({"broker_class": "my.Broker"}) == "broker_class"


@pytest.mark.parametrize(
    ("q_cluster", "fragment"),
    [
        ('{"ALT_CLUSTERS": ["long"]}', "Q_CLUSTER['ALT_CLUSTERS'] must be a dict"),
        ('{"ALT_CLUSTERS": {"long": 1}}', "Q_CLUSTER['ALT_CLUSTERS']['long'] must be a dict"),
        ('{"ALT_CLUSTERS": {"": {}}}', "ALT_CLUSTERS'] keys must be non-empty strings"),
    ],
)
def test_bad_alt_clusters(
    tmp_path: Path, project: Callable[[str], str], q_cluster: str, fragment: str
) -> None:
    module = project(f'SECRET_KEY = "{SECRET}"\nQ_CLUSTER = {q_cluster}\n')
    message = error_of(lambda: load(tmp_path, django_settings=module))
    assert fragment in message and "\n" not in message


def test_toml_broker_queues_and_database(tmp_path: Path) -> None:
    url = f"postgresql://u:{PASSWORD}@pg/q"
    write(
        tmp_path / "qwatch.toml",
        f"secret_key = '{SECRET}'\nbroker = 'orm'\nalt_queues = ['long']\n"
        f"broker_database_url = '{url}'\n",
    )
    (site,) = load(tmp_path).sites
    assert (site.broker, site.queues, site.broker_database) == ("orm", ("default", "long"), url)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("broker = 'kafka'", "broker must be one of redis, orm, sqs, mongo, iron_mq, broker_class"),
        ("alt_queues = 'long'", "alt_queues must be a list of non-empty strings"),
        (
            f"broker_database_url = 'mssql://u:{PASSWORD}@h/db'",
            "broker_database_url: unsupported scheme 'mssql' (use sqlite:///path or postgresql://…)",
        ),
    ],
)
def test_bad_toml_broker_values(tmp_path: Path, toml: str, message: str) -> None:
    write(tmp_path / "qwatch.toml", toml + "\n")
    assert error_of(lambda: load(tmp_path)) == f"qwatch.toml: {message}"
