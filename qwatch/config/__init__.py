"""Settings: defaults < TOML file < QWATCH_* environment < flags, or a Django project's settings.

A Django settings module (--django-settings, DJANGO_SETTINGS_MODULE, or the file's
`django_settings`) takes the place of the defaults for its site, so nothing is configured
twice; the file's own keys, the environment and the flags still override what it says.

Every ConfigError is one line naming the setting and what is wrong. None carries a secret:
values are echoed only where they cannot hold one (schemes, option names, time zones).

Modules, each with one job:
    values          ConfigError and the value checks several sources share
    urls            splitting scheme://… URLs; safe_url masks their passwords
    redis_url       Redis fields from a URL or redis-py keyword arguments
    database_url    the history database URL: default, async driver form, SQLite file,
                    a PostgreSQL URL's libpq options (sslmode, connect_timeout, …)
    alerts          [alerts] and [[notify]]: AlertSettings, the notification targets
    listen          the daemon's HTTP listen address (HOST:PORT, :PORT)
    settings        the frozen dataclasses: RedisSettings, Site, DaemonSettings, Settings
    toml_file       qwatch.toml: find, read, type-check, apply
    django_project  a Site from a Django project's settings module
    load            load_settings: the layers put together
"""

from qwatch.config.alerts import (
    AlertSettings,
    CommandTarget,
    EmailTarget,
    Target,
    WebhookTarget,
)
from qwatch.config.database_url import LIBPQ_OPTIONS as LIBPQ_OPTIONS
from qwatch.config.database_url import (
    PostgresOptions,
    async_database_url,
    default_database_url,
    postgres_options,
    sqlite_path,
)
from qwatch.config.django_project import DJANGO_DEFAULT_TIME_ZONE as DJANGO_DEFAULT_TIME_ZONE
from qwatch.config.django_project import site_from_django
from qwatch.config.listen import ListenAddress, parse_listen
from qwatch.config.load import load_settings
from qwatch.config.settings import DEFAULT_NAME as DEFAULT_NAME
from qwatch.config.settings import DEFAULT_REDIS_URL, DaemonSettings, RedisSettings, Settings, Site
from qwatch.config.settings import DEFAULT_TIME_ZONE as DEFAULT_TIME_ZONE
from qwatch.config.settings import SECRET_HINT as SECRET_HINT
from qwatch.config.settings import STAT_TTL_S as STAT_TTL_S
from qwatch.config.toml_file import CONFIG_FILE_NAME as CONFIG_FILE_NAME
from qwatch.config.urls import safe_url
from qwatch.errors import ConfigError

__all__ = [
    "DEFAULT_REDIS_URL",
    "AlertSettings",
    "CommandTarget",
    "ConfigError",
    "DaemonSettings",
    "EmailTarget",
    "ListenAddress",
    "PostgresOptions",
    "RedisSettings",
    "Settings",
    "Site",
    "Target",
    "WebhookTarget",
    "async_database_url",
    "default_database_url",
    "load_settings",
    "parse_listen",
    "postgres_options",
    "safe_url",
    "site_from_django",
    "sqlite_path",
]
