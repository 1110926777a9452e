"""The real monitor Application, driven through a pipe input into a fixed-size terminal,
against a real redis-server, real django-q2 clusters and a history the daemon records.

What a person sees is read back from the renderer's last screen: the characters, and each
cell's style resolved through the monitor's style sheet to the colour it is drawn in.
"""

from __future__ import annotations

import asyncio
import importlib
import io
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output
from prompt_toolkit.styles import Attrs

import qwatch.monitor.app as app_module
from qwatch.config import DaemonSettings, Settings, Site
from qwatch.daemon import run_daemon
from qwatch.monitor import refresh
from qwatch.monitor.app import Monitor, create_monitor
from qwatch.monitor.render import STYLE
from qwatch.sources.redis import RedisSource
from tests.helpers import wait_for_async
from tests.plugins.qcluster import SECRET_KEY, DjangoProject
from tests.plugins.redis_server import RedisServer, redis_client

pytestmark = pytest.mark.slow

NAME = "qwatchmon"
HOST = socket.gethostname()
ROWS, COLUMNS = 40, 120


class _Terminal(io.StringIO):
    encoding = "utf-8"


@dataclass
class Screen:
    """The monitor running on a pipe and a fixed-size output, and what it last drew."""

    monitor: Monitor
    input: PipeInput
    stream: _Terminal
    size: list[int] = field(default_factory=lambda: [ROWS, COLUMNS])

    def lines(self) -> list[str]:
        screen = self.monitor.app.renderer.last_rendered_screen
        if screen is None:
            return []
        rows, columns = self.size
        return [
            "".join(screen.data_buffer[y][x].char for x in range(columns)).rstrip()
            for y in range(rows)
        ]

    @property
    def text(self) -> str:
        return "\n".join(self.lines())

    def find(self, needle: str, in_line: str | None = None) -> tuple[int, int]:
        for y, line in enumerate(self.lines()):
            if in_line is not None and in_line not in line:
                continue
            x = line.find(needle)
            if x >= 0:
                return y, x
        raise AssertionError(f"{needle!r} not on screen:\n{self.text}")

    def table_rows(self) -> list[str]:
        return [line for line in self.lines() if line.startswith(f" {HOST} ")]

    def line_with(self, needle: str) -> str:
        return self.lines()[self.find(needle)[0]]

    def style(self, needle: str, in_line: str | None = None) -> str:
        y, x = self.find(needle, in_line)
        screen = self.monitor.app.renderer.last_rendered_screen
        assert screen is not None
        return screen.data_buffer[y][x].style

    def attrs(self, needle: str, in_line: str | None = None) -> Attrs:
        return STYLE.get_attrs_for_style_str(self.style(needle, in_line))

    def keys(self, text: str) -> None:
        self.input.send_text(text)

    async def until(
        self, predicate: Callable[[], object], what: str, timeout: float = 30.0
    ) -> None:
        await wait_for_async(predicate, timeout, what, detail=lambda: f"screen:\n{self.text}")

    async def shows(self, needle: str, timeout: float = 30.0) -> None:
        await self.until(lambda: needle in self.text, f"{needle!r}", timeout)


@dataclass
class World:
    redis: RedisServer
    project: DjangoProject
    settings: Settings
    stop_daemon: asyncio.Event | None = None
    daemon: asyncio.Task[int] | None = None

    async def start_daemon(self) -> None:
        self.stop_daemon = asyncio.Event()
        self.daemon = asyncio.create_task(run_daemon(self.settings, stop=self.stop_daemon))

    async def cluster_ids(self) -> list[str]:
        async with RedisSource(self.settings.sites[0]) as source:
            return [c.cluster_id for c in (await source.poll()).clusters]


@pytest.fixture(autouse=True)
def _fast_history(monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-read the history every second, not every 10-60 s, so tests need not wait."""
    for label in list(refresh.HISTORY_EVERY_S):
        monkeypatch.setitem(refresh.HISTORY_EVERY_S, label, 1.0)


@pytest.fixture
async def world(
    redis_server: RedisServer, django_project_factory: Callable[..., DjangoProject], tmp_path: Path
) -> AsyncIterator[World]:
    project = django_project_factory(redis_server.url, name=NAME, workers=2, queue_limit=4)
    # Configured for 3 workers while the cluster runs 2, so the Pool column is yellow.
    site = Site(
        name=NAME, secret_key=SECRET_KEY, redis=redis_server.settings(), workers=3, queue_limit=4
    )
    settings = Settings(
        sites=(site,),
        database_url=f"sqlite:///{tmp_path / 'history.sqlite3'}",
        daemon=DaemonSettings(interval_s=0.5, sample_every_s=1.0),
    )
    world = World(redis_server, project, settings)
    yield world
    if world.daemon is not None:
        assert world.stop_daemon is not None
        world.stop_daemon.set()
        async with asyncio.timeout(15):
            await world.daemon
    await asyncio.to_thread(project.stop_all)


@pytest.fixture
def pipe() -> Iterator[PipeInput]:
    with create_pipe_input() as pipe_input:
        yield pipe_input


@pytest.fixture
async def screen(world: World, pipe: PipeInput) -> AsyncIterator[Screen]:
    stream = _Terminal()
    size = [ROWS, COLUMNS]
    output = Vt100_Output(
        stream, lambda: Size(rows=size[0], columns=size[1]), term="xterm-256color"
    )
    monitor = create_monitor(world.settings, input=pipe, output=output)
    shown = Screen(monitor, pipe, stream, size)
    task = asyncio.create_task(monitor.run(handle_signals=False))
    yield shown
    if not task.done():
        monitor.quit()
    async with asyncio.timeout(10):
        assert await task == 0


async def test_live_rows_colours_and_history_pane(world: World, screen: Screen) -> None:
    world.project.start_cluster()
    await world.start_daemon()
    await screen.until(lambda: HOST in screen.text and "Idle" in screen.text, "the cluster's row")
    (cluster_id,) = await world.cluster_ids()
    short = cluster_id[-8:]
    row = screen.line_with(short)
    assert row.split()[:3] == [HOST, short, "Idle"]
    assert re.search(r"\b0:00:\d\d\b", row), row  # Up, h:mm:ss
    assert screen.attrs("Idle", in_line=short).color in (None, "")  # Idle is plain
    assert screen.attrs(" 2 ", in_line=short).color == "ansiyellow"  # Pool 2 < 3 configured
    status = screen.lines()[ROWS - 1]
    assert f"redis://127.0.0.1:{world.redis.port}/0 v" in status
    assert "1 cluster " in status and "hunter" not in status

    # The history pane comes from what the daemon recorded.
    await screen.shows(f"History of {HOST} · 1h")
    await screen.shows("Avail 100%")
    await screen.until(lambda: re.search(r"sample \ds ago", screen.text), "a fresh sample")
    assert "Runs 1" in screen.text and "appeared, " in screen.text

    # A backlog: TQ fills to the queue limit (green) while the cluster works (green).
    await asyncio.to_thread(world.project.enqueue, *["nap:1"] * 14)
    await screen.until(lambda: "Working" in screen.line_with(short), "Working")
    assert screen.attrs("Working", in_line=short).color == "ansigreen"
    await screen.until(
        lambda: screen.line_with(short).split()[4] == "4", "TQ at the queue limit", timeout=20
    )
    assert screen.attrs(" 4 ", in_line=short).color == "ansigreen"

    # A task that kills its worker: RC counts it, and so do the history columns and pane.
    await asyncio.to_thread(world.project.enqueue, "die")
    await screen.until(lambda: screen.line_with(short).split()[6] == "1", "RC 1", timeout=40)
    await screen.until(lambda: screen.line_with(short).split()[8] == "1", "RC 1h from history")
    await screen.shows("+1 reincarnated (total 1)")
    await screen.until(lambda: re.search(r"Reinc\.\s+\S*█\S*\s+total 1\b", screen.text), "trend")
    await screen.until(lambda: "█" in screen.line_with(short), "the TQ sparkline")
    assert screen.attrs("█", in_line=short).color == "ansiblue"


async def test_stopping_restarting_and_gone_clusters(world: World, screen: Screen) -> None:
    first = world.project.start_cluster()
    await world.start_daemon()
    await screen.until(lambda: "Idle" in screen.text, "the cluster's row")
    (old_id,) = await world.cluster_ids()
    old = old_id[-8:]
    await screen.shows("Avail 100%")

    seen: dict[str, str | None] = {}

    async def watch_states() -> None:
        while True:
            for state in ("Stopping", "Stopped"):
                row = f"{old} {state} "  # the table's row, not an event line of the pane
                if state not in seen and any(
                    line.endswith(row.strip()) or row in line for line in screen.table_rows()
                ):
                    seen[state] = screen.attrs(state, in_line=row).color
            await asyncio.sleep(0.05)  # a sampling rate: these states last a poll or two

    # Queued tasks keep it Working (Django Q says Idle while its queues are empty), and
    # in Stopping for a few polls while its workers finish them.
    await asyncio.to_thread(world.project.enqueue, *["nap:2"] * 6)
    await screen.until(lambda: f"{old} Working" in screen.text, "Working")
    watcher = asyncio.create_task(watch_states())
    try:
        await asyncio.to_thread(first.stop)
        await screen.until(
            lambda: any(old in row and "gone" in row for row in screen.table_rows()),
            "the gone row",
            timeout=15,
        )
    finally:
        watcher.cancel()
    assert seen.get("Stopping") == "ansiyellow", seen
    assert seen.get("Stopped") == "ansired", seen
    assert re.search(r"gone \d+s ago", screen.line_with(old))
    assert screen.attrs(HOST, in_line=old).dim
    assert "0 clusters" in screen.lines()[ROWS - 1]
    await screen.shows(f"{old} vanished, last Stopped")

    # Its successor on the same host (after the old record expired) is its restart.
    with redis_client(world.redis) as client:
        key = f"django_q:{NAME}:cluster:{old_id}"
        await wait_for_async(lambda: not client.exists(key), 10, "the old record to expire")
    world.project.start_cluster()
    await screen.until(
        lambda: any(old not in row for row in screen.table_rows()), "the successor's row"
    )
    await screen.shows(f"(was {old}, down ")
    await screen.shows("Restarts 1")
    rows = screen.table_rows()
    assert len(rows) == 2, screen.text
    assert old not in rows[0] and old in rows[1]  # live first, then the gone one
    assert "gone" in rows[1] and "gone" not in rows[0]
    avail = re.search(r"Avail ([\d.]+)%", screen.text)
    assert avail is not None and 50 < float(avail.group(1)) < 100


async def test_banner_while_redis_is_down_and_recovery(world: World, screen: Screen) -> None:
    world.project.start_cluster()
    await world.start_daemon()
    await screen.until(lambda: "Idle" in screen.text, "the cluster's row")
    await screen.shows("Avail 100%")

    await asyncio.to_thread(world.redis.stop)
    await screen.shows("connection refused", timeout=10)
    banner = screen.line_with("connection refused")
    assert banner.startswith(f" Redis redis://127.0.0.1:{world.redis.port}/0: connection refused")
    assert "retrying; showing the last poll; history still shown" in banner
    attrs = screen.attrs("connection refused")
    assert (attrs.bgcolor, attrs.color) == ("ansired", "ansiwhite")
    assert "Idle" in screen.text and "History of" in screen.text  # never blank

    # Keys still answer at once while Redis is down.
    screen.keys("r")
    await screen.shows("range 24h", timeout=2)

    await asyncio.to_thread(world.redis.start)
    # (The pane keeps the outage as an event: the daemon recorded it as a gap.)
    banner_shown = lambda: any(line.startswith(" Redis redis://") for line in screen.lines())  # noqa: E731
    await screen.until(lambda: not banner_shown(), "the banner to go")
    await screen.shows("Redis unreachable 0:00:")
    await screen.until(
        lambda: re.search(r" v\d+\.\d+", screen.lines()[ROWS - 1]), "the version again"
    )
    await screen.until(lambda: "1 cluster " in screen.lines()[ROWS - 1], "the cluster again")


async def test_keys_select_filter_sort_range_focus_help_resize_and_quit(
    world: World, screen: Screen
) -> None:
    world.project.start_cluster()
    world.project.start_cluster()
    await world.start_daemon()
    await screen.until(lambda: "2 clusters" in screen.text, "two clusters")
    await screen.shows("Avail 100%")
    shorts = sorted(cid[-8:] for cid in await world.cluster_ids())

    def order() -> list[str]:
        return [s for line in screen.table_rows() for s in shorts if f" {s} " in line]

    def selected() -> str:
        return next(s for s in shorts if "class:row.selected" in screen.style(s))

    # Sort: s cycles to the Id column, S reverses it.
    screen.keys("s")
    await screen.shows("sort id ▲")
    assert order() == shorts and "Id▲" in screen.text
    screen.keys("S")
    await screen.shows("sort id ▼")
    assert order() == shorts[::-1]

    # Select: Home/End, PgUp/PgDn, j/k and the arrows move the reverse-video row.
    rows = order()
    keys = [
        ("\x1b[H", 0), ("j", 1), ("k", 0), ("\x1b[B", 1), ("\x1b[A", 0),
        ("\x1b[F", 1), ("\x1b[5~", 0), ("\x1b[6~", 1), ("\x1b[H", 0),
    ]  # fmt: skip
    for key, expected in keys:
        screen.keys(key)
        await screen.until(
            lambda e=expected: selected() == rows[e], f"row {expected} after {key!r}"
        )
    assert screen.attrs(rows[0]).reverse and not screen.attrs(rows[1]).reverse

    # Filter by the id's head (not shown, but matched), Enter keeps it, Esc clears it.
    head = next(cid for cid in await world.cluster_ids() if cid.endswith(shorts[0]))[:8]
    screen.keys("/" + head)
    await screen.shows(f"filter {head}▏")
    await screen.until(lambda: order() == [shorts[0]], "only the filtered row")
    screen.keys("\r")
    await screen.until(lambda: "▏" not in screen.text, "typing to end")
    assert f"filter {head}" in screen.text and order() == [shorts[0]]
    screen.keys("\x1b")
    await screen.until(lambda: len(order()) == 2, "both rows after Esc")
    assert "filter" not in screen.lines()[0]

    # Range: r cycles 1h -> 24h -> 7d -> 15m -> 1h, in the title, header and pane.
    for label in ("24h", "7d", "15m", "1h"):
        screen.keys("r")
        await screen.shows(f"range {label}")
        await screen.shows(f"History of {HOST} · {label}")
        assert f"TQ {label}" in screen.text

    # Enter and Tab focus the pane, Esc goes back.
    for key in ("\r", "\t"):
        screen.keys(key)
        await screen.until(lambda: screen.attrs("History of").reverse, "the pane focused")
        screen.keys("\x1b")
        await screen.until(lambda: not screen.attrs("History of").reverse, "the table focused")

    # Help.
    screen.keys("?")
    await screen.shows("next range: 15m, 1h, 24h, 7d")
    screen.keys("\x1b")
    await screen.until(lambda: "next range" not in screen.text, "help closed")

    # Resize: 80 columns leave out the sparkline, and it comes back.
    screen.size[1] = 80
    await screen.until(lambda: "TQ 1h" not in screen.text, "the narrow layout")
    assert all(len(line) <= 80 for line in screen.lines())
    screen.size[1] = COLUMNS
    await screen.shows("TQ 1h")

    # q quits and gives the terminal back: the alternate screen is left, the cursor shown.
    screen.keys("q")
    await screen.until(lambda: not screen.monitor.app.is_running, "the app to exit")
    assert screen.stream.getvalue().endswith("\x1b[?25h")
    assert "\x1b[?1049l" in screen.stream.getvalue()[-80:]


async def test_without_history_a_hint_skipped_records_and_ctrl_c(
    world: World, screen: Screen
) -> None:
    world.project.start_cluster()  # and no daemon: no history database
    client = redis_client(world.redis)
    client.set(f"django_q:{NAME}:cluster:forged", b"not a signed record", ex=120)
    await screen.until(lambda: "Idle" in screen.text, "the cluster's row")
    await screen.shows("No history database at")
    # The hint wraps rather than losing its end off the edge of the screen.
    hint = "".join(line for line in screen.lines()[1:4] if "Host" not in line)
    assert hint.endswith(": start `qwatch daemon`, or pass --db"), screen.text
    assert "History of" not in screen.text
    status = screen.lines()[ROWS - 1]
    assert "no history" in status and "skipped 1: " in status
    assert screen.attrs("skipped 1").bgcolor == "ansiyellow"
    screen.keys("\x03")
    await screen.until(lambda: not screen.monitor.app.is_running, "Ctrl-C to quit")


async def test_history_imports_run_off_the_loop_then_what_lives_is_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The history's imports (SQLAlchemy) run in a worker thread, so a key pressed meanwhile
    is answered; then gc.freeze(), before the history's first read."""
    calls: list[tuple[str, object]] = []
    real_import = importlib.import_module

    def import_module(name: str) -> object:
        calls.append(("import " + name, threading.current_thread()))
        return real_import(name)

    class Store:
        async def run(self) -> None:
            calls.append(("store.run", threading.current_thread()))

    monkeypatch.setattr(app_module.importlib, "import_module", import_module)
    monkeypatch.setattr(app_module.gc, "freeze", lambda: calls.append(("freeze", None)))
    monitor = Monitor(settings=None, state=None, app=None, sources=[], store=Store())  # type: ignore[arg-type]
    polled = asyncio.Event()
    polled.set()
    await monitor._history_after(polled)
    loop_thread = threading.current_thread()
    assert [name for name, _ in calls] == ["import qwatch.store.reads", "freeze", "store.run"]
    assert calls[0][1] is not loop_thread and calls[2][1] is loop_thread
