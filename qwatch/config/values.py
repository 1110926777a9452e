"""The checks on single values that several sources of settings share."""

from __future__ import annotations

import math
import zoneinfo
from contextlib import suppress

from qwatch import fmt
from qwatch.errors import ConfigError as ConfigError  # re-exported: the config modules raise it


def positive_seconds(value: object, setting: str) -> float:
    if isinstance(value, str):
        with suppress(ValueError):
            value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise ConfigError(f"{setting} must be a positive number of seconds")
    return float(value)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_time_zone(value: str, setting: str) -> str:
    if value == "UTC":  # needs no tz database
        return value
    try:
        zoneinfo.ZoneInfo(value)
    except Exception:  # not found, malformed key, a directory of the database…
        raise ConfigError(f"{setting}: unknown time zone {value!r}") from None
    return value


def check_display_zone(value: str, setting: str) -> str:
    """The zone times are shown in: UTC, local (the machine's zone) or an IANA name."""
    try:
        fmt.zone(value)
    except ValueError as exc:
        raise ConfigError(f"{setting}: {exc}") from None
    return value
