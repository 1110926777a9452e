"""The silence matcher by a table: which alerts a silence keeps quiet, and when."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qwatch.alerts.rules import Alert
from qwatch.alerts.silences import ALL, Silence, silenced

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def alert(rule: str = "cluster_down", site: str = "shop", host: str | None = "web1") -> Alert:
    return Alert(rule, site, host or "", "critical", "…", T0, host=host)


def silence(rule: str = ALL, site: str | None = None, host: str | None = None) -> Silence:
    return Silence(1, rule, site, host, T0 + HOUR, "upgrade", T0 - HOUR)


@pytest.mark.parametrize(
    ("given", "seen", "quiet"),
    [
        (silence(), alert(), True),
        (silence("cluster_down"), alert(), True),
        (silence("stuck"), alert(), False),
        (silence(site="shop"), alert(), True),
        (silence(site="reports"), alert(), False),
        (silence(host="web1"), alert(), True),
        (silence(host="web2"), alert(), False),
        (silence(host="web1"), alert("stuck", host=None), False),  # a site-wide alert
        (silence("stuck", site="shop"), alert("stuck", host=None), True),
    ],
)
def test_what_a_silence_matches(given: Silence, seen: Alert, quiet: bool) -> None:
    assert given.matches(seen, T0) is quiet
    assert silenced(seen, [silence("restart_loop"), given], T0) is quiet


def test_a_silence_holds_from_its_creation_until_its_end() -> None:
    given = silence()
    assert not given.matches(alert(), T0 - HOUR - timedelta(seconds=1))
    assert given.matches(alert(), T0 - HOUR)
    assert given.matches(alert(), T0 + HOUR - timedelta(seconds=1))
    assert not given.matches(alert(), T0 + HOUR)
    assert not silenced(alert(), [], T0)
