"""The monitor's rows rebuilt in slices, the event loop run between them: the same rows in
the same order as a rebuild in one piece, never a half-built table on screen, the newest
rebuild winning over an older one still under way, and a key answered meanwhile."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output

from qwatch.config import Settings, Site
from qwatch.monitor import refresh
from qwatch.monitor import state as state_module
from qwatch.monitor.app import create_monitor
from qwatch.monitor.records import TABLE_SLOTS, TableHistory
from qwatch.monitor.state import SORT_KEYS, MonitorState, Steps
from qwatch.values import Latest, Poll, Run
from tests.helpers import cluster_stat

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SITES = (
    Site(name="shop", secret_key="k", workers=4, queue_limit=16),
    Site(name="depot", secret_key="k"),
)
HOSTS = ("web-a", "web-b", "worker-c", "db-d")
STATUSES = ("Idle", "Working", "Starting", "Stopping")

# (site index, host index, status index, task queue, reincarnations, uptime s)
cluster_specs = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.integers(0, 3),
        st.integers(0, 3),
        st.integers(0, 5),
        st.integers(0, 3),
        st.integers(1, 10_000),
    ),
    max_size=14,
)


def cid(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


def polls_of(specs: list[tuple[int, int, int, int, int, int]], at: datetime) -> list[Poll]:
    by_site: dict[str, list[object]] = {site.name: [] for site in SITES}
    for i, (site, host, status, tq, rc, up_s) in enumerate(specs):
        name = SITES[site].name
        by_site[name].append(
            cluster_stat(
                cid(i),
                name=name,
                host=HOSTS[host],
                status=STATUSES[status],
                tq=tq,
                rc=rc,
                tob=NOW - timedelta(seconds=up_s),
                timestamp=at,
            )
        )
    return [Poll(name, at, tuple(stats)) for name, stats in by_site.items()]  # type: ignore[arg-type]


def history_of(specs: list[tuple[int, int, int, int, int, int]], gone: int) -> TableHistory:
    """Runs for every other live cluster and `gone` ended ones, with sparklines."""
    runs = []
    for i, (site, host, _status, _tq, _rc, up_s) in enumerate(specs):
        if i % 2 == 0:
            tob = NOW - timedelta(seconds=up_s)
            name, pk = SITES[site].name, i + 1
            runs.append(Run(pk, name, cid(i), HOSTS[host], None, tob, tob, NOW, None, "Idle"))
    for g in range(gone):
        tob, ended = NOW - timedelta(hours=2, seconds=g), NOW - timedelta(minutes=10 + g)
        latest = Latest(ended, "Stopped", 4, 0, 0, g, 60.0 * g)
        pk = 1000 + g
        site, host = SITES[g % 2].name, HOSTS[g % 4]
        runs.append(Run(pk, site, cid(pk), host, None, tob, tob, ended, ended, "Stopped", latest))
    slots = {r.pk: [float(r.pk % 7)] * TABLE_SLOTS for r in runs if r.pk % 3}
    return TableHistory("1h", NOW, tuple(runs), slots, {r.pk: r.pk % 4 for r in runs})


def new_state() -> MonitorState:
    return MonitorState.for_sites(SITES, clock=lambda: NOW)


def step_through(state: MonitorState, steps: Steps) -> int:
    """Runs a rebuild's steps, checking the table is the old one until the last; returns
    how many slices it took."""
    rows, polls = state.rows, {name: live.poll for name, live in state.sites.items()}
    count = 0
    for _ in steps:
        count += 1
        assert state.rows is rows, "a frame here would show a half-built table"
        assert {name: live.poll for name, live in state.sites.items()} == polls
    return count


def sort_by(state: MonitorState, key: str, reverse: bool, text: str) -> None:
    while state.sort_key != key:
        state.cycle_sort()
    if state.sort_reverse != reverse:
        state.reverse_sort()
    if text:
        state.type_filter(text)


@given(
    specs=cluster_specs,
    gone=st.integers(0, 4),
    key=st.sampled_from(SORT_KEYS),
    reverse=st.booleans(),
    text=st.sampled_from(["", "web", "C", "0000000000"]),
    size=st.integers(1, 4),
)
def test_rows_rebuilt_in_slices_are_the_rows_rebuilt_in_one_piece(
    specs: list[tuple[int, int, int, int, int, int]],
    gone: int,
    key: str,
    reverse: bool,
    text: str,
    size: int,
) -> None:
    polls, later = polls_of(specs, NOW), polls_of(specs, NOW + timedelta(seconds=1))
    history = history_of(specs, gone)
    whole, sliced = new_state(), new_state()
    for state in (whole, sliced):
        sort_by(state, key, reverse, text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_module, "REBUILD_SLICE", size)
        for poll in polls:
            whole.set_poll(poll)
            step_through(sliced, sliced.poll_steps(poll))
        whole.set_table_history(history)
        slices = step_through(sliced, sliced.table_history_steps(history))
        for poll in later:
            whole.set_poll(poll)
            step_through(sliced, sliced.poll_steps(poll))
    assert sliced.rows == whole.rows
    assert sliced.live_count == whole.live_count
    assert sliced.index == whole.index
    assert sliced.table_history is history
    assert {n: s.poll for n, s in sliced.sites.items()} == {p.site: p for p in later}
    if len(history.runs) > size:
        assert slices > 1  # it was sliced


def test_a_rebuild_overtaken_by_a_newer_poll_swaps_nothing_in() -> None:
    specs = [(i % 2, i % 4, i % 4, i, 0, 100 + i) for i in range(12)]
    shop, depot = polls_of(specs, NOW)
    shop_later, _ = polls_of(specs[:5], NOW + timedelta(seconds=1))
    reference = new_state()
    reference.set_poll(shop_later)
    reference.set_poll(depot)
    state = new_state()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_module, "REBUILD_SLICE", 2)
        older = state.poll_steps(shop)
        next(older)
        newer = state.poll_steps(depot)  # another site's poll, while the first is built
        next(newer)
        step_through(state, older)  # the older one ends first: it must not swap
        assert state.rows == [] and state.sites["shop"].poll is None
        newest = state.poll_steps(shop_later)  # the same site again
        step_through(state, newer)
        assert state.rows == [] and state.sites["depot"].poll is None
        step_through(state, newest)
    assert state.rows == reference.rows
    assert state.sites["shop"].poll is shop_later and state.sites["depot"].poll is depot


def test_a_poll_overtakes_a_history_rebuild_and_carries_the_history_in() -> None:
    specs = [(0, i % 4, 0, i, 0, 100 + i) for i in range(8)]
    shop, _ = polls_of(specs, NOW)
    history = history_of(specs, 3)
    reference = new_state()
    reference.set_table_history(history)
    reference.set_poll(shop)
    state = new_state()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_module, "REBUILD_SLICE", 2)
        reading = state.table_history_steps(history)
        next(reading)
        polled = state.poll_steps(shop)
        step_through(state, reading)
        assert state.table_history is None and state.rows == []
        step_through(state, polled)
    assert state.table_history is history
    assert state.rows == reference.rows


@pytest.mark.parametrize("change", ["sort", "reverse", "filter"])
def test_a_sort_or_filter_changed_during_a_rebuild_is_the_order_swapped_in(change: str) -> None:
    specs = [(0, i % 4, i % 4, i % 3, i % 2, 100 + i) for i in range(20)]
    first, _ = polls_of(specs, NOW)
    second, _ = polls_of(specs, NOW + timedelta(seconds=1))
    reference = new_state()
    state = new_state()
    for each in (reference, state):
        each.set_poll(first)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(state_module, "REBUILD_SLICE", 3)
        steps = state.poll_steps(second)
        for _ in range(8):  # into the arranging: past the 7 slices of building
            next(steps)
        for each in (reference, state):  # the key: the old rows in the new order at once
            if change == "sort":
                each.cycle_sort()
            elif change == "reverse":
                each.reverse_sort()
            else:
                each.type_filter("worker")
        assert state.rows == reference.rows
        reference.set_poll(second)
        step_through(state, steps)
    assert state.rows == reference.rows
    assert [row.as_of for row in state.rows] == [second.at] * len(state.rows)


async def test_a_key_pressed_during_a_rebuild_is_answered_before_the_rebuild_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(state_module, "REBUILD_SLICE", 10)
    rows, columns = 40, 120
    output = Vt100_Output(
        io.StringIO(), lambda: Size(rows=rows, columns=columns), term="xterm-256color"
    )
    settings = Settings(sites=SITES[:1], database_url="sqlite:////nonexistent/qwatch.sqlite3")
    specs = [(0, i % 4, i % 4, i % 5, 0, 100 + i) for i in range(200)]
    first, _ = polls_of(specs, NOW)
    second, _ = polls_of(specs, NOW + timedelta(seconds=1))
    loop = asyncio.get_running_loop()
    with create_pipe_input() as pipe:
        monitor = create_monitor(settings, input=pipe, output=output, clock=lambda: NOW)
        state, app = monitor.state, monitor.app
        state.set_poll(first)
        drawn = asyncio.Event()
        app.after_render += lambda _app: drawn.set()

        def on_screen() -> str:
            screen = app.renderer.last_rendered_screen
            assert screen is not None
            buffer = screen.data_buffer
            return "\n".join(
                "".join(buffer[y][x].char for x in range(columns)) for y in range(rows)
            )

        shown_during: list[bool] = []

        def pressing(steps: Steps) -> Iterator[None]:
            """The rebuild, with `?` pressed after its first slice; it goes on only once the
            help is drawn, which can happen only if the loop runs between slices."""
            old_rows = state.rows
            for count, _ in enumerate(steps):
                yield
                if count == 0:
                    pipe.send_text("?")
                    deadline = loop.time() + 10.0
                    while "this help" not in on_screen():
                        assert loop.time() < deadline, "no frame with the help during the rebuild"
                        yield
                    shown_during.append(state.help and state.rows is old_rows)

        running = asyncio.create_task(app.run_async())
        try:
            async with asyncio.timeout(10):
                await drawn.wait()  # the first frame
            await refresh.sliced(pressing(state.poll_steps(second)))
            assert shown_during == [True]  # drawn over the old rows, before the swap
            assert [row.as_of for row in state.rows] == [second.at] * len(specs)
            assert state.help
        finally:
            app.exit(result=0)
            async with asyncio.timeout(10):
                await running
