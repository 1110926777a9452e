"""qwatch.retry: the one backoff of the daemon and the monitor."""

from __future__ import annotations

import pytest

from qwatch.retry import backoff


@pytest.mark.parametrize(
    ("failures", "wait"), [(0, 2.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (5000, 10.0)]
)
def test_backoff_doubles_up_to_the_cap(failures: int, wait: float) -> None:
    assert backoff(failures, 2.0, 10.0) == wait


def test_backoff_keeps_the_normal_cadence_without_failures() -> None:
    assert backoff(0, 60.0, 5.0) == 60.0  # the cap bounds retries, not the normal interval
