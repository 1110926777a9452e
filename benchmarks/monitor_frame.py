"""Frame time of `qwatch monitor` for 200 clusters with history sparklines.

The real monitor (`qwatch.monitor.app.create_monitor`: state, layout, key bindings, style)
with its data handed in as the refresh tasks hand it in (`set_poll`, `set_store`,
`set_table_history`, `set_pane`), drawn by prompt-toolkit's own renderer into a Vt100
output of a fixed size that writes to memory. Nothing is read from Redis or a database:
this times the drawing, not the reads (benchmarks/live_read.py and history_reads.py do).

The fleet (seeded): a host per 4 clusters, 70 % Idle, 24 % Working, 3 % Starting, 3 %
Stopping, queue sizes moving with every poll, plus one gone run from the history per 20
live clusters; a 12-cell task-queue sparkline per row, a history pane with 4 sparklines of
30 cells and 300 events for every host. Measured, per terminal size and fleet size:

- render: the pure render (state -> styled text) of the title, table, pane and status bar
- full frame: a whole frame through prompt-toolkit's renderer after a reset (the first
  frame, or a resize): layout, screen, every cell written out
- move: ↓ then a frame: the selection moves (scrolling past the page), the pane shows the
  newly selected host's history, and the renderer writes what changed
- poll: a Redis poll arrives and the rows are rebuilt (filter, sort, selection kept), in
  slices as the refresh runs it (`MonitorState.poll_steps`): all the slices, and the
  longest one (what a key pressed meanwhile may wait for)
- poll + frame: the same and the frame after it, with the clock a second on (every
  uptime cell changes): what the monitor does every second
- history: a history read arrives (rows rebuilt with its columns), all slices and the
  longest

Every repetition times each measure once for every (size, fleet) in turn, so load on the
machine hits them alike. The baseline, measured in the same run, is the same frame for 0
clusters (the fixed cost of the screen) and for 20; the ratios are 200's ÷ those.
Target (issue 6): a frame for 200 clusters with history sparklines under 30 ms.

    .venv/bin/python benchmarks/monitor_frame.py [--quick] [--frames 300]
        [--clusters 0,20,200] [--sizes 160x50,80x24] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import os
import platform
import pstats
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prompt_toolkit.application.current import set_app
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import DummyInput
from prompt_toolkit.output.color_depth import ColorDepth
from prompt_toolkit.output.vt100 import Vt100_Output

from qwatch.config import RedisSettings, Settings, Site
from qwatch.monitor import layout, pane, render
from qwatch.monitor.app import Monitor, create_monitor
from qwatch.monitor.pane import HostHistory
from qwatch.monitor.records import (
    PANE_SLOTS,
    TABLE_SLOTS,
    HostRaw,
    StoreInfo,
    StoreKind,
    TableHistory,
)
from qwatch.values import Backlog, ClusterStat, EventRow, Latest, Poll, Run

TARGET_MS = 30.0
MAIN_N = 200
SITE = "shop"
MEASURES = (
    "render",
    "full frame",
    "move",
    "poll",
    "poll slice",
    "poll + frame",
    "history",
    "history slice",
)
ABOUT = {
    "render": "(a) pure render, state -> text",
    "full frame": "(b) full frame, prompt-toolkit",
    "move": "(c) ↓ + incremental frame",
    "poll": "(d) poll arrives: rows rebuilt",
    "poll slice": "(d) its longest slice",
    "poll + frame": "(d) poll + incremental frame",
    "history": "history read arrives",
    "history slice": "its longest slice",
}
POLLS = 8  # distinct polls, handed in in turn
EVENTS = 300  # per host, in the pane


class Sink(io.StringIO):
    """The terminal: what the renderer writes, kept in memory."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


@dataclass
class Fleet:
    polls: list[list[ClusterStat]]
    runs: list[Run]
    histories: list[TableHistory]
    panes: dict[str, HostHistory]


def make_fleet(n: int, now: datetime, seed: int = 1) -> Fleet:
    rnd = random.Random(seed)
    hosts = [f"web-{i // 4:03d}.example.com" for i in range(n)]
    ids = [f"{rnd.getrandbits(32):08x}-0000-4000-8000-{rnd.getrandbits(48):012x}" for _ in hosts]
    tobs = [now - timedelta(seconds=rnd.randint(10, 30 * 86400)) for _ in hosts]
    workers = [(rnd.randint(1000, 60000),) * rnd.choice((2, 4, 4, 8, 16)) for _ in hosts]
    rcs = [rnd.randint(0, 37) for _ in hosts]
    polls = []
    for p in range(POLLS):
        at = now + timedelta(seconds=p)
        stats = []
        for i in range(n):
            status = rnd.choices(("Idle", "Working", "Starting", "Stopping"), (70, 24, 3, 3))[0]
            tq = rnd.randint(1, 40) if status == "Working" else 0
            rq = rnd.randint(0, 3) if status == "Working" else 0
            stats.append(
                ClusterStat(SITE, ids[i], hosts[i], 100 + i, 1, 2, 3, workers[i], status, tq, rq,
                            rcs[i], tobs[i], at)
            )  # fmt: skip
        polls.append(stats)
    runs = [
        Run(i + 1, SITE, ids[i], hosts[i], None, tobs[i], tobs[i], now, None, "Idle")
        for i in range(n)
    ]
    for g in range(n // 20):  # runs from the history that are no longer in Redis
        host = hosts[g * 20 % n]
        tob = now - timedelta(hours=2, seconds=g)
        cid = f"{rnd.getrandbits(32):08x}-0000-4000-8000-{rnd.getrandbits(48):012x}"
        ended = now - timedelta(minutes=20 + g)
        latest = Latest(ended, "Stopped", 4, 0, 0, 3, (ended - tob).total_seconds())
        runs.append(Run(n + g + 1, SITE, cid, host, None, tob, tob, ended, ended, "Stopped",
                        latest))  # fmt: skip
    histories = []
    for _ in range(2):
        slots = {
            r.pk: [None if rnd.random() < 0.05 else float(rnd.randint(0, 20))
                   for _ in range(TABLE_SLOTS)]
            for r in runs
        }  # fmt: skip
        rc_hour = {r.pk: rnd.randint(0, 3) for r in runs}
        histories.append(TableHistory("1h", now, tuple(runs), slots, rc_hour))
    panes = {}
    for host in dict.fromkeys(hosts):
        mine = [r for r in runs if r.host == host]
        timeline_runs = tuple(
            Run(r.pk, SITE, r.cluster_id, host, 1, r.tob, r.first_seen, r.last_seen,
                r.ended_at, r.last_status)
            for r in mine
        )  # fmt: skip
        events = []
        for e in range(EVENTS):
            run = mine[e % len(mine)]
            at = now - timedelta(seconds=7 * e + 3)
            kind = ("state_changed", "state_changed", "reincarnated", "restarted")[e % 4]
            if kind == "state_changed":
                detail: dict[str, object] = {"from": "Idle", "to": "Working"}
                if e % 24 == 0:
                    detail = {"from": "Working", "to": "Stopping"}
            elif kind == "reincarnated":
                detail = {"by": 1, "total": e // 4}
            else:
                detail = {"previous": ids[0], "downtime_s": 12.5}
            events.append(EventRow(at, run.pk, run.cluster_id, kind, detail))
        values = lambda top: [float(rnd.randint(0, top)) for _ in range(PANE_SLOTS)]  # noqa: E731
        raw = HostRaw(SITE, host, "1h", now - timedelta(hours=1), now, now, PANE_SLOTS,
                      timeline_runs, tq=values(20), rq=values(3), backlog=values(50),
                      rc=values(1), kinds={"restarted": 2, "vanished": 1},
                      events=tuple(events))  # fmt: skip
        panes[host] = pane.build(raw)
    return Fleet(polls, runs, histories, panes)


@dataclass
class Scenario:
    """One monitor, of one fleet, on one terminal size."""

    columns: int
    rows: int
    n: int
    fleet: Fleet
    monitor: Monitor
    sink: Sink
    clock: list[datetime]
    times: dict[str, list[float]] = field(default_factory=dict)
    written: list[int] = field(default_factory=list)
    round: int = 0

    @property
    def label(self) -> str:
        return f"{self.columns}x{self.rows}"


def make_scenario(columns: int, rows: int, n: int, fleet: Fleet, now: datetime) -> Scenario:
    sink = Sink()
    out = Vt100_Output(
        sink,
        lambda: Size(rows=rows, columns=columns),
        term="xterm-256color",
        default_color_depth=ColorDepth.DEPTH_8_BIT,
    )
    clock = [now]
    site = Site(name=SITE, secret_key="k", redis=RedisSettings(), workers=4, queue_limit=16)
    settings = Settings(sites=(site,), database_url="sqlite:////nonexistent/qwatch.sqlite3")
    monitor = create_monitor(settings, input=DummyInput(), output=out, clock=lambda: clock[0])
    state = monitor.state
    state.set_poll(Poll(SITE, now, tuple(fleet.polls[0]), backlogs=(Backlog(SITE, "redis", 42),)))
    state.set_store(StoreInfo(StoreKind.OK, "", now - timedelta(seconds=4)))
    state.set_table_history(fleet.histories[0])
    scenario = Scenario(columns, rows, n, fleet, monitor, sink, clock)
    show_pane(scenario)
    scenario.times = {m: [] for m in MEASURES}
    return scenario


def show_pane(s: Scenario) -> None:
    """The history task's answer for the selected host, as if it came at once."""
    target = s.monitor.state.pane_target
    if target is not None and (
        s.monitor.state.pane is None or s.monitor.state.pane.host != target[1]
    ):
        s.monitor.state.set_pane(s.fleet.panes[target[1]])


def frame(s: Scenario) -> None:
    """What Application._redraw does for one frame."""
    app = s.monitor.app
    app.renderer.render(app, app.layout)
    app.layout.update_parents_relations()


def pure_render(s: Scenario) -> None:
    state, now = s.monitor.state, s.clock[0]
    pane_body = layout.pane_height(s.monitor.app.output, len(state.rows))
    table_height = s.rows - 3 - pane_body  # title, the pane's rule, status bar
    render.title(state)
    render.table(state, s.columns, table_height, now)
    render.pane(state, s.columns, pane_body, now)
    render.status(state, now, s.columns)


def stepped(steps: Iterator[None]) -> tuple[float, float]:
    """(all, longest) ms of a rebuild run slice by slice as `refresh.sliced` runs it, the
    event loop's turns between the slices left out."""
    total = longest = 0.0
    done = False
    while not done:
        started = time.perf_counter()
        done = next(steps, StopIteration) is StopIteration
        took = (time.perf_counter() - started) * 1000
        total += took
        longest = max(longest, took)
    return total, longest


def one_round(s: Scenario) -> None:
    """Each measure once, timed; the state moves on as in use."""
    state, app = s.monitor.state, s.monitor.app
    times = s.times
    s.round += 1

    def timed(name: str, fn: Callable[[], None]) -> None:
        s.sink.seek(0)
        s.sink.truncate()
        started = time.perf_counter()
        fn()
        times[name].append((time.perf_counter() - started) * 1000)

    timed("render", lambda: pure_render(s))

    def full() -> None:
        app.renderer.reset(leave_alternate_screen=False)
        frame(s)

    timed("full frame", full)
    s.written.append(len(s.sink.getvalue()))

    def move() -> None:
        if state.index >= len(state.rows) - 1:
            state.home()
        else:
            state.move(1)
        show_pane(s)
        frame(s)

    timed("move", move)

    poll = s.fleet.polls[s.round % POLLS]
    s.clock[0] += timedelta(seconds=1)
    at = s.clock[0]
    # Same records, a second later: uptimes move on, and queue sizes and states change.
    clusters = tuple(replace(c, timestamp=at) for c in poll)

    def poll_and_frame() -> None:
        polled = Poll(SITE, at, clusters, backlogs=(Backlog(SITE, "redis", 42 + s.round % 5),))
        total, longest = stepped(state.poll_steps(polled))
        times["poll"].append(total)
        times["poll slice"].append(longest)
        frame(s)

    timed("poll + frame", poll_and_frame)
    history = s.fleet.histories[s.round % 2]
    total, longest = stepped(state.table_history_steps(replace(history, at=at)))
    times["history"].append(total)
    times["history slice"].append(longest)
    frame(s)  # untimed: draw what the history changed before the next round


def summary(xs: Sequence[float]) -> tuple[float, float, float]:
    ordered = sorted(xs)
    return (
        statistics.median(ordered),
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        ordered[-1],
    )


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )


def table(scenarios: list[Scenario], counts: list[int]) -> str:
    main_n = max(counts)
    base = [n for n in counts if n != main_n]
    head = ["size", "measure"]
    head += [f"{n} clusters" for n in base]
    head += [f"**{main_n}** median", "p95", "max"]
    head += [f"÷ {n}" for n in base] + [f"target {TARGET_MS:.0f} ms"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_key = {(s.label, s.n): s for s in scenarios}
    for label in dict.fromkeys(s.label for s in scenarios):
        for measure in MEASURES:
            main = by_key[(label, main_n)]
            med, p95, top = summary(main.times[measure])
            cells = [label, ABOUT[measure]]
            base_medians = [summary(by_key[(label, n)].times[measure])[0] for n in base]
            cells += [f"{b:.2f}" for b in base_medians]
            cells += [f"**{med:.2f}**", f"{p95:.2f}", f"{top:.2f}"]
            cells += [f"{med / b:.1f}x" if b > 0 else "" for b in base_medians]
            cells.append(
                "met" if p95 < TARGET_MS else ("median met" if med < TARGET_MS else "**missed**")
            )
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="60 frames instead of 300")
    parser.add_argument("--frames", type=int, help="timed frames per measure (default 300)")
    parser.add_argument(
        "--clusters",
        default=f"0,20,{MAIN_N}",
        help="fleet sizes; the largest is measured against the others",
    )
    parser.add_argument("--sizes", default="160x50,80x24", help="terminal sizes, COLUMNSxROWS")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile the largest fleet's rounds on the first size",
    )
    args = parser.parse_args(argv)  # fmt: skip
    frames = args.frames or (60 if args.quick else 300)
    counts = sorted({int(n) for n in args.clusters.split(",")})
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes.split(",")]
    now = datetime.now(UTC).replace(microsecond=0)

    print(f"machine: {machine()}")
    fleets = {n: make_fleet(n, now) for n in counts}
    scenarios = [make_scenario(c, r, n, fleets[n], now) for c, r in sizes for n in counts]
    print(
        f"{frames} frames per measure after 10 untimed, interleaved over "
        f"{len(scenarios)} monitors; rows in the table: "
        + ", ".join(
            f"{s.n} clusters -> {len(s.monitor.state.rows)}" for s in scenarios[: len(counts)]
        )
    )
    gc.collect()
    gc.freeze()  # the fleets and monitors are long-lived: as in a monitor that has run a while
    for rounds, keep in ((10, False), (frames, True)):
        for _ in range(rounds):
            for s in scenarios:
                with set_app(s.monitor.app):
                    one_round(s)
        if not keep:
            for s in scenarios:
                s.times = {m: [] for m in MEASURES}
                s.written.clear()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print("\nmilliseconds; median unless said\n")
    print(table(scenarios, counts))
    print("\nbytes written by a full frame: " + ", ".join(
        f"{s.label} {s.n} clusters {statistics.median(s.written):,.0f}"
        for s in scenarios))  # fmt: skip

    if args.profile:
        target = next(s for s in scenarios if s.n == max(counts))
        profiler = cProfile.Profile()
        with set_app(target.monitor.app):
            profiler.enable()
            for _ in range(frames):
                one_round(target)
            profiler.disable()
        print(f"\ncProfile, {frames} rounds of {target.label}, {target.n} clusters:")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
