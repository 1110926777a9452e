"""The monitor's Application: state, layout, keys and refresh tasks wired together.

`create_monitor` builds everything without starting anything, so tests can drive it
with a pipe input and a fixed-size output; `Monitor.run` runs it until `q` or Ctrl-C and
closes what it opened. Full screen: leaving restores the terminal.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import logging
import signal
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from prompt_toolkit.application import Application
from prompt_toolkit.input import Input
from prompt_toolkit.output import Output

from qwatch.config import Settings, safe_url
from qwatch.monitor import refresh
from qwatch.monitor.keys import create_key_bindings
from qwatch.monitor.layout import create_layout
from qwatch.monitor.records import RANGES
from qwatch.monitor.render import STYLE
from qwatch.monitor.state import MonitorState
from qwatch.sources import StatSource, open_source

# How long a lone Esc waits to be sure it does not start an arrow key's sequence; the
# default half second makes Esc feel stuck.
ESC_TIMEOUT_S = 0.05
CLOSE_TIMEOUT_S = 3.0
FIRST_POLL_WAIT_S = 2.0


@dataclass
class Monitor:
    settings: Settings
    state: MonitorState
    app: Application[int]
    sources: list[StatSource]
    store: refresh.StoreWatcher

    def start_refresh(self) -> None:
        polled = asyncio.Event()

        def shown() -> None:
            polled.set()
            self.app.invalidate()

        for source in self.sources:
            self.app.create_background_task(refresh.watch_redis(self.state, source, shown))
        self.app.create_background_task(self._history_after(polled))

    async def _history_after(self, polled: asyncio.Event) -> None:
        """The history from the first poll on (or after FIRST_POLL_WAIT_S): its imports and
        first reads run on the same loop and would delay a big fleet's first rows."""
        try:
            async with asyncio.timeout(FIRST_POLL_WAIT_S):
                await polled.wait()
        except TimeoutError:
            pass
        # The history's imports (SQLAlchemy: ~0.1 s here) in a thread: on the loop they held
        # a key pressed then for all of it; in a thread the loop gets the GIL back within
        # Python's switch interval (5 ms).
        await asyncio.to_thread(importlib.import_module, "qwatch.store.reads")
        # Everything alive now (modules, classes, prompt-toolkit's and SQLAlchemy's tables)
        # lives as long as the monitor: frozen, no collection walks it again. Each poll at
        # 10,000 clusters ends in a full collection, which stopped the loop 50-60 ms and now
        # 11-19 ms, what a key pressed then waits (docs/performance.md, section 12).
        gc.freeze()
        await self.store.run()

    async def run(self, *, handle_signals: bool = True) -> int:
        """Until `q` or Ctrl-C (or SIGTERM/SIGHUP with `handle_signals`); returns 0."""
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGHUP) if handle_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, self.quit)
        try:
            # Background tasks are cancelled, and awaited, when the application exits.
            return await self.app.run_async(pre_run=self.start_refresh)
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await asyncio.gather(*(s.close() for s in self.sources), return_exceptions=True)
            except TimeoutError:
                pass

    def quit(self) -> None:
        if self.app.is_running and not self.app.future.done():  # type: ignore[union-attr]
            self.app.exit(result=0)


def create_monitor(
    settings: Settings,
    *,
    input: Input | None = None,
    output: Output | None = None,
    clock: Callable[[], datetime] | None = None,
    range_label: str | None = None,
) -> Monitor:
    state = MonitorState.for_sites(
        settings.sites,
        database=safe_url(settings.database_url),
        # Three missed samples (and a margin for the write) mean the daemon is not running.
        stale_after_s=3 * settings.daemon.sample_every_s + 5,
        clock=clock or (lambda: datetime.now(UTC)),
        zone=settings.display_zone,
    )
    if range_label is not None:
        state.range_index = [r.label for r in RANGES].index(range_label)
    app: Application[int] = Application(
        full_screen=True,
        style=STYLE,
        input=input,
        output=output,
        mouse_support=False,
    )
    monitor = Monitor(
        settings=settings,
        state=state,
        app=app,
        sources=[open_source(site) for site in settings.sites],
        store=refresh.StoreWatcher(state, settings.database_url, app.invalidate),
    )
    layout, _table = create_layout(state)
    app.layout = layout
    app.key_bindings = create_key_bindings(state, monitor.quit)
    app.ttimeoutlen = ESC_TIMEOUT_S
    return monitor


async def run_monitor(settings: Settings) -> int:
    with logs_held():
        return await create_monitor(settings).run()


class _Held(logging.Handler):
    def __init__(self, capacity: int) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[logging.LogRecord] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def logs_held(capacity: int = 100) -> Iterator[None]:
    """While the screen is ours, hold warnings in memory and drop the rest; print the held
    ones when the terminal is back. A log line written over a full-screen app garbles it."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    held = _Held(capacity)
    for handler in handlers:
        root.removeHandler(handler)
    root.addHandler(held)
    try:
        yield
    finally:
        root.removeHandler(held)
        for handler in handlers:
            root.addHandler(handler)
        for record in held.records:
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
