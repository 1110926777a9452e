"""Test-wide set-up: each plugin module owns the fixtures for one real server (and
tests/records.py the one fixture the decoder tests share)."""

from __future__ import annotations

import pytest

pytest_plugins = [
    "tests.plugins.tls",
    "tests.plugins.redis_server",
    "tests.plugins.memcached_server",
    "tests.plugins.postgres_server",
    "tests.plugins.mariadb_server",
    "tests.plugins.qcluster",
    "tests.plugins.qwatch_daemon",
    "tests.records",  # its `full_decodes` fixture, for the decoder's memo tests
    "tests.plugins.prometheus_server",
]


@pytest.fixture(autouse=True)
def _isolated_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A developer's own qwatch settings never leak into a test (litecli's habit)."""
    for name in (
        "QWATCH_REDIS_URL",
        "QWATCH_DATABASE_URL",
        "QWATCH_NAME",
        "QWATCH_SECRET_KEY",
        "QWATCH_SECRET_KEY_FALLBACKS",
        "QWATCH_TIME_ZONE",
        "QWATCH_DISPLAY_TIME_ZONE",
        "QWATCH_LISTEN",
        "QWATCH_METRICS_TOKEN",
        "DJANGO_SETTINGS_MODULE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg-config")))
