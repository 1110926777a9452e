"""load_settings: defaults < TOML file < QWATCH_* environment < flags, one site or several."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from qwatch.config.alerts import alerts_from_document
from qwatch.config.database_url import async_database_url, default_database_url
from qwatch.config.django_project import site_from_django
from qwatch.config.listen import ListenAddress, parse_listen
from qwatch.config.settings import DEFAULT_DISPLAY_TIME_ZONE, RedisSettings, Settings, Site
from qwatch.config.toml_file import (
    SITE_KEYS,
    TOP_KEYS,
    apply_table,
    check_table,
    daemon_from_table,
    find_config,
    read_toml,
)
from qwatch.config.values import check_display_zone, check_time_zone
from qwatch.errors import ConfigError


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
        return replace(site, time_zone=check_time_zone(value, setting))
    if key == "name":
        return replace(site, name=value)
    if key == "secret_key":
        return replace(site, secret_key=value)
    raise AssertionError(f"no site setting {key!r}")


def load_settings(
    *,
    config_path: str | None = None,
    django_settings: str | None = None,
    redis_url: str | None = None,
    database_url: str | None = None,
    name: str | None = None,
    display_time_zone: str | None = None,
    listen: str | None = None,
    environ: Mapping[str, str] = os.environ,
    cwd: Path | None = None,
    parse_database_url: bool = True,
) -> Settings:
    """Defaults < TOML (config_path or ./qwatch.toml) < QWATCH_* environment < flags.

    The Django settings module is the flag's, else DJANGO_SETTINGS_MODULE's, else the
    file's; it stands in for the defaults of its site. With several [[sites]] in the file,
    site values come from the file alone and the Django module is chosen per site.
    Secrets are not required here: commands that verify records call require_secret().
    A command that never opens the history database passes `parse_database_url=False`: its
    scheme is still checked, but not by SQLAlchemy, whose import costs 0.1 s.
    """
    # absolute: it goes on sys.path and is compared with traceback file names
    cwd = (cwd or Path.cwd()).absolute()
    path, label = find_config(config_path, cwd)
    document = read_toml(path, label) if path else {}
    check_table(document, TOP_KEYS, "", label)

    shared = {key: value for key, value in document.items() if key in SITE_KEYS}
    tables: list[tuple[str, dict[str, Any]]]
    if "sites" in document:
        if not document["sites"]:
            raise ConfigError(f"{label}: sites must list at least one [[sites]] table")
        if "name" in shared:
            raise ConfigError(f"{label}: name belongs in each [[sites]] table, not at the top")
        tables = []
        for index, table in enumerate(document["sites"]):
            where = f"sites[{index}]."
            check_table(table, SITE_KEYS, where, label)
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
        site = apply_table(site, table, where, label)
        for setting, key, value in overrides:
            site = _apply_override(site, setting, key, value)
        sites.append(site)

    seen: set[str] = set()
    for index, site in enumerate(sites):
        if site.name in seen:
            raise ConfigError(f"{label}: sites[{index}].name {site.name!r} is used by another site")
        seen.add(site.name)

    db_url, db_setting = default_database_url(), "database_url"
    given: list[tuple[str, str | None]] = [
        (f"{label}: database_url", document.get("database_url")),  # a text: check_table
        ("QWATCH_DATABASE_URL", environ.get("QWATCH_DATABASE_URL") or None),
        ("--db", database_url),
    ]
    for setting, url in given:
        if url is not None:
            db_url, db_setting = url, setting
    async_database_url(db_url, setting=db_setting, parse=parse_database_url)

    zone = DEFAULT_DISPLAY_TIME_ZONE
    zone_layers: list[tuple[str, str | None]] = [
        (f"{label}: display_time_zone", document.get("display_time_zone")),
        ("QWATCH_DISPLAY_TIME_ZONE", environ.get("QWATCH_DISPLAY_TIME_ZONE") or None),
        ("--tz", display_time_zone),
    ]
    for zone_setting, chosen in zone_layers:
        if chosen is not None:
            zone = check_display_zone(chosen, zone_setting)

    daemon = daemon_from_table(document.get("daemon", {}), label)
    alerts = alerts_from_document(document.get("alerts", {}), document.get("notify", []), label)
    address: ListenAddress | None = None
    for listen_setting, listen_value in (
        (f"{label}: listen", document.get("listen")),
        ("QWATCH_LISTEN", environ.get("QWATCH_LISTEN") or None),
        ("--listen", listen),
    ):
        if listen_value is not None:
            address = parse_listen(listen_value, listen_setting)
    token = environ.get("QWATCH_METRICS_TOKEN") or document.get("metrics_token") or None
    return Settings(
        sites=tuple(sites),
        database_url=db_url,
        daemon=daemon,
        alerts=alerts,
        config_file=path,
        display_time_zone=zone,
        listen=address,
        metrics_token=token,
    )
