"""The monitor slows its polls when they would cost more than its share of a core."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwatch.config import Site
from qwatch.monitor import refresh, render
from qwatch.monitor.state import MonitorState
from qwatch.sources.redis import RedisSource
from tests.helpers import wait_for_async
from tests.plugins.redis_server import RedisServer


def test_a_cheap_poll_keeps_the_cadence_and_a_costly_one_stretches_it() -> None:
    assert refresh.paced(1.0, 0.05) == 1.0
    assert refresh.paced(1.0, 0.10) == 1.0  # exactly the budget
    assert refresh.paced(1.0, 0.28) == 2.8  # 10,000 clusters on this machine
    assert refresh.paced(1.0, 0.281) == 2.9  # rounded up, never under the budget


@given(
    every=st.floats(0.05, 5.0),
    cost=st.floats(0.0, 10.0),
    budget=st.floats(0.01, 1.0),
)
def test_the_paced_interval_never_spends_more_than_the_budget(
    every: float, cost: float, budget: float
) -> None:
    interval = refresh.paced(every, cost, budget)
    assert interval >= every
    assert cost / interval <= budget + 1e-9


def test_the_status_bar_says_when_the_cadence_was_slowed() -> None:
    state = MonitorState.for_sites([Site(name="shop")])
    now = datetime(2026, 12, 3, tzinfo=UTC)
    assert "every" not in "".join(text for _, text in render.status(state, now))
    state.set_pace("shop", 2.8)
    assert "every 2.8s" in "".join(text for _, text in render.status(state, now))


async def test_a_poll_over_the_budget_slows_the_real_refresh(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Any real poll costs more than a billionth of its interval: the cadence must stretch.
    monkeypatch.setattr(refresh, "POLL_CPU_BUDGET", 1e-9)
    site = Site(name="shop", secret_key="k" * 40, redis=redis_server.settings())
    state = MonitorState.for_sites([site])
    source = RedisSource(site)
    task = asyncio.create_task(refresh.watch_redis(state, source, lambda: None, every_s=0.05))
    try:
        await wait_for_async(
            lambda: state.sites["shop"].every_s is not None, 10, "a slowed cadence"
        )
        assert state.sites["shop"].every_s > 0.05  # type: ignore[operator]
        assert state.sites["shop"].poll is not None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await source.close()
