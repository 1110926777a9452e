"""The layout's import rules, checked in fresh interpreters (imports are cached per process).

- The read side (history, reports, timeline, the monitor's view, check, the listener's
  state) never loads Django or the decoder: those belong to reading Redis.
- The store never imports the read side, and `values` and `errors` import nothing heavy.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

READ_SIDE = (
    "qwatch.history",
    "qwatch.reports",
    "qwatch.timeline",
    "qwatch.monitor.state",
    "qwatch.monitor.render",
    "qwatch.monitor.pane",
    "qwatch.check",
    "qwatch.serve.state",
    "qwatch.alerts.rules",
    "qwatch.alert_list",
)
STORE = (
    "qwatch.store.models",
    "qwatch.store.reads",
    "qwatch.store.writer",
    "qwatch.store.maintenance",
)
READ_SIDE_ONLY = ("qwatch.history", "qwatch.reports", "qwatch.timeline", "qwatch.monitor")


def loaded_by(module: str) -> set[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(done.stdout))


def _under(modules: set[str], prefix: str) -> set[str]:
    return {m for m in modules if m == prefix or m.startswith(prefix + ".")}


@pytest.mark.parametrize("module", READ_SIDE)
def test_the_read_side_loads_neither_django_nor_the_decoder(module: str) -> None:
    loaded = loaded_by(module)
    assert not _under(loaded, "django")
    assert not _under(loaded, "qwatch.decode")


@pytest.mark.parametrize("module", STORE)
def test_the_store_never_imports_the_read_side(module: str) -> None:
    loaded = loaded_by(module)
    assert not set().union(*(_under(loaded, side) for side in READ_SIDE_ONLY))


@pytest.mark.parametrize("module", ["qwatch.values", "qwatch.errors"])
def test_the_shared_values_import_nothing_heavy(module: str) -> None:
    loaded = loaded_by(module)
    for heavy in ("django", "sqlalchemy", "prompt_toolkit", "asyncio_redis", "qwatch.decode"):
        assert not _under(loaded, heavy), heavy


def test_the_settings_load_neither_the_rule_engine_nor_unused_parsers() -> None:
    """Every command loads the settings, so `qwatch status` pays for what they import: the
    [alerts] table is checked against the rules' names alone, TOML is parsed only when a
    file is there, a database URL by SQLAlchemy only for a command that opens it."""
    loaded = loaded_by("qwatch.config")
    for unused in ("qwatch.alerts.rules", "qwatch.events", "tomllib", "sqlalchemy"):
        assert not _under(loaded, unused), unused
