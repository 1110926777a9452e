"""The monitor's pure view logic, without a terminal: sparklines, column fitting, sorting,
filtering, selection, uptime, cell styles, the status bar and the history pane's numbers."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwatch import fmt
from qwatch.config import RedisSettings, Site
from qwatch.monitor import pane, render
from qwatch.monitor.columns import HOST_MIN, cell, fit_columns
from qwatch.monitor.records import (
    RANGES,
    TABLE_SLOTS,
    HostRaw,
    StoreInfo,
    StoreKind,
    TableHistory,
)
from qwatch.monitor.spark import BLOCKS, level, slots, sparkline
from qwatch.monitor.state import SORT_KEYS, Focus, MonitorState, Row, Source
from qwatch.values import (
    STATES,
    Backlog,
    ClusterStat,
    EventRow,
    GapKind,
    GapRow,
    Latest,
    Poll,
    Run,
    Skipped,
)
from tests.helpers import cluster_stat, run_row

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
SITE = Site(
    name="shop",
    secret_key="k",
    redis=RedisSettings(host="10.0.0.5", port=6380, password="hunter2"),
    workers=4,
    queue_limit=16,
)


def stat(
    host: str = "web-1",
    cluster_id: str = "00000000-0000-0000-0000-0000000000aa",
    status: str = "Idle",
    pool: int = 4,
    tq: int = 0,
    rq: int = 0,
    rc: int = 0,
    up_s: float = 3723.0,
    site: str = "shop",
) -> ClusterStat:
    tob = NOW - timedelta(seconds=up_s)
    return cluster_stat(
        cluster_id,
        name=site,
        host=host,
        pid=100,
        status=status,
        tq=tq,
        rq=rq,
        rc=rc,
        tob=tob,
        timestamp=NOW,
        workers=tuple(range(pool)),
    )


def poll(
    *stats: ClusterStat,
    queued: int = 7,
    skipped: tuple[Skipped, ...] = (),
    backlogs: tuple[Backlog, ...] | None = None,
) -> Poll:
    if backlogs is None:
        backlogs = (Backlog("shop", "redis", queued),)
    return Poll("shop", NOW, tuple(stats), skipped, backlogs)


def make_state(
    *stats: ClusterStat, sites: tuple[Site, ...] = (SITE,), **kw: object
) -> MonitorState:
    state = MonitorState.for_sites(sites, clock=lambda: NOW, **kw)
    if stats:
        state.set_poll(poll(*stats))
    return state


def ids(n: int) -> list[str]:
    return [f"00000000-0000-0000-0000-{i:012d}" for i in range(n)]


def styles_of(line: render.Line, text: str) -> str:
    """The style of the fragment holding `text`."""
    for style, fragment in line:
        if text in fragment:
            return style
    raise AssertionError(f"{text!r} not in {line!r}")


def text_of(line: render.Line) -> str:
    return "".join(fragment for _, fragment in line)


# --- sparklines -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "top", "expected"),
    [
        (0, 10, 0),
        (-1, 10, 0),
        (5, 0, 0),
        (0.01, 10, 1),
        (1, 7, 1),
        (5, 10, 4),
        (10, 10, 7),
        (20, 10, 7),
    ],
)
def test_level_keeps_zero_apart_and_tops_at_seven(value: float, top: float, expected: int) -> None:
    assert level(value, top) == expected


def test_sparkline_scales_to_its_own_peak_and_leaves_gaps_blank() -> None:
    assert sparkline([0, 1, 2, None, 4]) == "▁▃▅ █"
    assert sparkline([None, None]) == "  "
    assert sparkline([0, 0, 0]) == "▁▁▁"
    assert sparkline([3]) == BLOCKS[-1]


def test_sparkline_width_keeps_the_newest_and_pads_on_the_left() -> None:
    assert sparkline([1, 2, 3, 4], width=2) == "▇█"  # scaled to what is kept
    assert sparkline([4], width=3) == "  █"
    assert sparkline([1, 2], width=0) == ""


def test_slots_keep_the_peak_of_a_slot_and_drop_what_is_outside() -> None:
    assert slots([(0, 1.0), (0, 3.0), (2, 2.0), (5, 9.0), (-1, 9.0), (1, None)], 3) == [
        3.0,
        None,
        2.0,
    ]


# --- columns ---------------------------------------------------------------------------


def test_all_columns_fit_a_wide_terminal_in_qmonitor_order() -> None:
    columns = fit_columns(160, host_width=12, range_label="1h")
    assert [c.title for c in columns] == [
        "Host", "Id", "State", "Pool", "TQ", "RQ", "RC", "Up", "RC 1h", "TQ 1h",
    ]  # fmt: skip
    assert columns[0].width == 12
    assert sum(c.width + 1 for c in columns) + 1 <= 160


@pytest.mark.parametrize("width", [60, 70, 80, 90, 100, 120])
def test_columns_never_overflow_and_drop_the_least_needed_first(width: int) -> None:
    columns = fit_columns(width, sites=["a", "bb"], host_width=40)
    keys = [c.key for c in columns]
    assert sum(c.width + 1 for c in columns) + 1 <= width
    assert {"host", "id", "state", "tq", "up"} <= set(keys)
    if "rc1h" in keys:
        assert "rq" in keys  # rq goes only after the history columns went
    if "site" not in keys:
        assert "rc" not in keys


def test_eighty_columns_drop_the_sparkline_but_keep_qmonitors_columns() -> None:
    keys = [c.key for c in fit_columns(80, host_width=20)]
    assert "trend" not in keys
    assert keys[:8] == ["host", "id", "state", "pool", "tq", "rq", "rc", "up"]


def test_site_column_only_for_several_sites_and_history_columns_only_with_history() -> None:
    assert "site" not in [c.key for c in fit_columns(200, sites=["only"])]
    assert "site" in [c.key for c in fit_columns(200, sites=["a", "b"])]
    assert not {"rc1h", "trend"} & {c.key for c in fit_columns(200, history=False)}


def test_host_width_is_clamped_and_cells_cut_with_an_ellipsis() -> None:
    host = fit_columns(200, host_width=3)[0]
    assert host.width == HOST_MIN
    assert cell("a-very-long-hostname", host) == "a-very-…"
    up = next(c for c in fit_columns(200) if c.key == "up")
    assert cell("1:02:03", up) == "  1:02:03"


# --- sorting, filtering, selection ---------------------------------------------------------


def test_rows_sort_by_each_column_and_reverse() -> None:
    a = stat("b-host", ids(3)[0], "Working", pool=2, tq=5, rq=1, rc=3, up_s=10)
    b = stat("a-host", ids(3)[1], "Stopped", pool=4, tq=0, rq=9, rc=0, up_s=99)
    c = stat("c-host", ids(3)[2], "Idle", pool=3, tq=2, rq=0, rc=1, up_s=50)
    state = make_state(a, b, c)
    hosts = lambda: [r.host for r in state.rows]  # noqa: E731
    assert hosts() == ["a-host", "b-host", "c-host"]
    expected = {
        "id": ["b-host", "a-host", "c-host"],
        "state": ["c-host", "b-host", "a-host"],  # Idle, Working, Stopped (Django Q's order)
        "pool": ["b-host", "c-host", "a-host"],
        "tq": ["a-host", "c-host", "b-host"],
        "rq": ["c-host", "b-host", "a-host"],
        "rc": ["a-host", "c-host", "b-host"],
        "up": ["b-host", "c-host", "a-host"],
    }
    for key, order in expected.items():
        state.cycle_sort()
        assert state.sort_key == key
        assert hosts() == order, key
    state.reverse_sort()
    assert hosts() == ["a-host", "c-host", "b-host"]


def test_sort_cycles_back_to_host() -> None:
    state = make_state(stat())
    for _ in range(9):
        state.cycle_sort()
    assert state.sort_key == "host"


def test_filter_matches_host_or_full_id_case_insensitively_and_escape_clears() -> None:
    rows = [stat(f"web-{i}", cid) for i, cid in enumerate(ids(4))]
    rows.append(stat("worker-9", "ffffffff-0000-0000-0000-abcdef123456"))
    state = make_state(*rows)
    state.start_filter()
    state.type_filter("WEB-")
    assert [r.host for r in state.rows] == ["web-0", "web-1", "web-2", "web-3"]
    state.erase_filter()
    state.type_filter("\x1b[15~")  # an unbound key (F5) is not typing
    state.type_filter("9")
    assert state.filter_text == "WEB9"
    state.clear_filter()
    state.start_filter()
    state.type_filter("ffffffff")  # the id's head, which the Id column does not show
    state.end_filter()
    assert [r.host for r in state.rows] == ["worker-9"]
    assert not state.filter_editing
    state.escape()
    assert state.filter_text == "" and len(state.rows) == 5


def test_selection_follows_its_cluster_through_refreshes_and_sorts() -> None:
    a, b, c = (stat(f"h{i}", cid) for i, cid in enumerate(ids(3)))
    state = make_state(a, b, c)
    state.move(2)
    assert state.selected is not None and state.selected.host == "h2"
    state.reverse_sort()
    assert state.selected.host == "h2" and state.index == 0
    state.set_poll(poll(b, c, a))
    assert state.selected.host == "h2"


def test_a_vanished_selection_stays_on_its_host() -> None:
    old = stat("h1", ids(3)[1])
    state = make_state(stat("h0", ids(3)[0]), old, stat("h2", ids(3)[2]))
    state.move(1)
    state.set_poll(poll(stat("h0", ids(3)[0]), stat("h2", ids(3)[2]), stat("h1", "new-run-id")))
    assert state.selected is not None and state.selected.host == "h1"


def test_selection_change_of_host_wakes_the_history_reader() -> None:
    woken: list[int] = []
    state = make_state(stat("h0", ids(2)[0]), stat("h1", ids(2)[1]))
    state.wake = lambda: woken.append(1)
    state.move(1)
    state.move(1)  # already at the end: same host, no wake
    state.cycle_range()
    assert len(woken) == 2
    assert state.range.label == "24h"


def test_paging_home_end_and_the_viewport_for_two_hundred_rows() -> None:
    state = make_state(*(stat(f"host-{i:03d}", cid) for i, cid in enumerate(ids(200))))
    first, shown = state.visible(30)
    assert (first, len(shown)) == (0, 30)
    state.page_move(1)
    assert state.index == 29
    state.page_move(1)
    first, shown = state.visible(30)
    assert state.index == 58 and first <= 58 < first + 30
    state.end()
    first, shown = state.visible(30)
    assert state.index == 199 and first == 170 and shown[-1].host == "host-199"
    state.home()
    assert state.visible(30)[0] == 0
    state.move(-5)
    assert state.index == 0


def test_keys_in_the_pane_scroll_its_events_and_escape_returns() -> None:
    state = make_state(stat("h0", ids(2)[0]), stat("h1", ids(2)[1]))
    state.focus_pane()
    state.move(3)
    assert state.index == 0 and state.pane_scroll == 3
    state.escape()
    assert state.focus is Focus.TABLE
    state.toggle_help()
    state.escape()
    assert not state.help


# --- cells and styles ------------------------------------------------------------------------


def test_uptime_counts_on_from_the_poll_in_hmmss() -> None:
    state = make_state(stat(up_s=3723))
    row = state.rows[0]
    assert render.hms(row.uptime_at(NOW)) == "1:02:03"
    assert render.hms(row.uptime_at(NOW + timedelta(seconds=60))) == "1:03:03"
    assert render.hms(26 * 3600 + 5) == "26:00:05"  # hours grow past a day, as qmonitor's


@pytest.mark.parametrize(
    ("status", "style", "color"),
    [
        ("Starting", "class:state.starting", "ansiyellow"),
        ("Stopping", "class:state.stopping", "ansiyellow"),
        ("Working", "class:state.working", "ansigreen"),
        ("Idle", "class:state.idle", ""),
        ("Stopped", "class:state.stopped", "ansired"),
    ],
)
def test_state_colours_follow_qmonitor(status: str, style: str, color: str) -> None:
    state = make_state(stat(status=status))
    line = render.table(state, 140, 5, NOW)[1]
    found = styles_of(line, status)
    assert style in found
    assert (
        render.STYLE.get_attrs_for_style_str(found.replace("class:row.selected", "")).color or ""
    ) == color


def test_pool_tq_and_rq_colours() -> None:
    site_ids = ids(4)
    state = make_state(
        stat("h0", site_ids[0], pool=3, tq=0, rq=0),  # below the 4 configured workers
        stat("h1", site_ids[1], pool=4, tq=5, rq=2),  # busy queues
        stat("h2", site_ids[2], pool=4, tq=16, rq=0),  # at the queue limit
    )
    lines = render.table(state, 140, 10, NOW)
    cells = {text_of(line).split()[0]: line for line in lines[1:]}

    def style(host: str, text: str) -> str:
        return next(s for s, t in cells[host] if t.strip() == text)

    assert "class:pool.low" in style("h0", "3")
    assert "class:tq.busy" in style("h1", "5")
    assert "class:rq.busy" in style("h1", "2")
    assert "class:tq.full" in style("h2", "16")
    assert not any("busy" in s or "full" in s for s, t in cells["h0"])


def test_pool_is_plain_when_the_configured_workers_are_unknown() -> None:
    site = Site(name="shop", secret_key="k")
    state = make_state(stat(pool=1), sites=(site,))
    assert not any("pool.low" in s for s, _ in render.table(state, 140, 5, NOW)[1])


def history_for(
    state: MonitorState, *runs: Run, tq: dict[int, list[float | None]] | None = None
) -> None:
    state.set_store(StoreInfo(StoreKind.OK, "", newest_sample=NOW - timedelta(seconds=4)))
    state.set_table_history(TableHistory("1h", NOW, runs, tq or {}, {1: 3}))


def run_info(pk: int, host: str, cid: str, ended: datetime | None, up_s: float = 100.0) -> Run:
    tob = NOW - timedelta(hours=2)
    latest = Latest(ended or NOW, "Stopped", 4, 0, 0, 2, up_s)
    return Run(pk, "shop", cid, host, None, tob, tob, ended or NOW, ended, "Stopped", latest)


def test_gone_clusters_are_listed_after_the_live_ones_dimmed_with_when_they_went() -> None:
    live = stat("web-1", ids(2)[0], up_s=7200)
    state = make_state(live)
    history_for(
        state,
        run_info(1, "web-1", ids(2)[0], None),
        run_info(2, "aaa-old", ids(2)[1], NOW - timedelta(minutes=3)),
        tq={1: [0, 1, 2, 4], 2: [3, 3]},
    )
    assert [(r.host, r.source) for r in state.rows] == [
        ("web-1", Source.LIVE),
        ("aaa-old", Source.GONE),
    ]
    lines = render.table(state, 160, 10, NOW)
    gone = lines[2]
    assert "gone 3m ago" in text_of(gone)
    assert "class:row.gone" in styles_of(gone, "aaa-old")
    assert render.STYLE.get_attrs_for_style_str(styles_of(gone, "aaa-old")).dim
    assert "0:01:40" in text_of(gone)  # its last uptime, not counting on
    assert "▁▃▅█" in text_of(lines[1]) and "3" in text_of(lines[1])  # sparkline, RC in 1h


def test_a_run_the_daemon_saw_after_our_poll_is_not_called_gone() -> None:
    state = make_state(stat("web-1", ids(3)[0]))
    fresh = replace(run_info(2, "web-2", ids(3)[1], None), last_seen=NOW + timedelta(seconds=1))
    stale = replace(run_info(3, "web-3", ids(3)[2], None), last_seen=NOW - timedelta(seconds=9))
    history_for(state, fresh, stale)
    assert [(r.host, r.source) for r in state.rows] == [
        ("web-1", Source.LIVE),
        ("web-3", Source.GONE),
    ]


def test_before_the_first_poll_the_stored_open_runs_show_as_stored() -> None:
    state = MonitorState.for_sites((SITE,), clock=lambda: NOW)
    history_for(state, run_info(1, "web-1", ids(2)[0], None), run_info(2, "x", ids(2)[1], NOW))
    assert [(r.host, r.source) for r in state.rows] == [("web-1", Source.STORED)]


def test_an_empty_table_says_why() -> None:
    state = MonitorState.for_sites((SITE,), clock=lambda: NOW)
    assert "Reading redis://10.0.0.5:6380/0" in render.empty_reason(state)
    state.set_redis_error("shop", "Redis redis://10.0.0.5:6380/0: connection refused", NOW)
    assert "Cannot read" in render.empty_reason(state)
    state.set_poll(poll(skipped=(Skipped("django_q:shop:cluster:x", "bad signature"),)))
    reason = render.empty_reason(state)
    assert "No clusters of site 'shop'" in reason and "django_q:shop:cluster:*" in reason
    assert "1 record(s) skipped" in reason
    state.set_poll(poll(stat()))
    state.type_filter("nomatch")
    assert "nomatch" in render.empty_reason(state)


def test_status_bar_has_address_version_backlog_count_sample_age_skips_and_no_password() -> None:
    state = make_state(stat("a", ids(2)[0]), stat("b", ids(2)[1]))
    state.set_poll(
        poll(
            stat("a", ids(2)[0]),
            stat("b", ids(2)[1]),
            queued=42,
            skipped=(
                Skipped("k1", "bad signature"),
                Skipped("k2", "bad signature"),
                Skipped("k3", "bad pickle"),
            ),
        )
    )
    state.set_version("shop", "7.2.4")
    state.set_store(StoreInfo(StoreKind.OK, "", newest_sample=NOW - timedelta(seconds=12)))
    line = render.status(state, NOW)
    text = text_of(line)
    assert "redis://10.0.0.5:6380/0 v7.2.4" in text
    assert "hunter2" not in text
    assert "queued 42" in text and "2 clusters" in text and "sample 12s ago" in text
    assert "skipped 3: bad signature (+1 reasons)" in text
    assert "? help" in text
    stale = render.status(state, NOW + timedelta(minutes=5))
    assert "class:status.warn" in styles_of(stale, "sample 5m ago")
    # Narrow: the version, the help, the backlog go before the skips and the sample age.
    narrow = text_of(render.status(state, NOW, width=80))
    assert "skipped 3" in narrow and "sample 12s ago" in narrow and "help" not in narrow
    assert "v7.2.4" not in narrow and "redis://10.0.0.5:6380/0" in narrow
    # every queue of the site, and `?` for one whose backlog cannot be read
    queues = (Backlog("shop", "redis", 3), Backlog("long", "redis", 12))
    state.set_poll(poll(stat("a", ids(2)[0]), backlogs=queues))
    assert "queued 15 (shop 3, long 12)" in text_of(render.status(state, NOW))
    queues = (Backlog("shop", "sqs", None, reason="x"), Backlog("long", "sqs", None, reason="x"))
    state.set_poll(poll(stat("a", ids(2)[0]), backlogs=queues))
    assert "queued ? (shop ?, long ?)" in text_of(render.status(state, NOW))


def test_banner_and_hint() -> None:
    state = make_state(stat())
    assert render.banner(state, NOW) == []
    state.set_redis_error("shop", "Redis redis://10.0.0.5:6380/0: connection refused", NOW)
    (line,) = render.banner(state, NOW + timedelta(seconds=12))
    assert "connection refused (for 0:00:12; retrying; showing the last poll)" in text_of(line)
    assert line[0][0] == "class:banner"
    message = "no history database at /x: start `qwatch daemon`, or pass --db"
    state.set_store(StoreInfo(StoreKind.UNREADABLE, message))
    hint = render.hint(state)
    assert hint is not None and text_of(hint) == " N" + message[1:]
    state.set_store(StoreInfo(StoreKind.OK, ""))
    assert render.hint(state) is None


def test_firing_alerts_are_red_lines_in_the_banner() -> None:
    from qwatch.alerts.rules import Alert

    state = make_state(stat())
    down = [
        Alert("cluster_down", "shop", f"web{i}", "critical", f"shop: no live cluster on web{i}",
              NOW - timedelta(minutes=2), host=f"web{i}")
        for i in range(5)
    ]  # fmt: skip
    state.set_alerts(down[:1])
    (line,) = render.banner(state, NOW)
    assert line[0][0] == "class:banner"
    assert (
        text_of(line) == " ALERT cluster_down (critical, 0:02:00): shop: no live cluster on web0 "
    )
    state.set_alerts(down)
    lines = render.banner(state, NOW)
    assert len(lines) == render.MAX_ALERT_LINES + 1
    assert text_of(lines[-1]) == " … and 2 more alerts: `qwatch alerts` "
    state.set_alerts([])
    assert render.banner(state, NOW) == []


def test_title_shows_range_sort_and_filter() -> None:
    state = make_state(stat())
    state.reverse_sort()
    state.start_filter()
    state.type_filter("web")
    text = text_of(render.title(state))
    assert "range 1h" in text and "sort host ▼" in text and "filter web▏" in text


# --- the history pane ----------------------------------------------------------------------


def at(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def event(
    minutes: float, kind: str, cid: str = "x" * 28 + "run2aaaa", **detail: object
) -> EventRow:
    return EventRow(at(minutes), 2, cid, kind, dict(detail))


def run(pk: int, cid: str, seen: float, last: float, ended: float | None) -> Run:
    end = None if ended is None else at(ended)
    return run_row(pk, cluster_id=cid, pid=1, first_seen=at(seen), last_seen=at(last), ended_at=end)


def test_pane_availability_restarts_and_gaps_over_an_hour() -> None:
    first = run(1, "run1", seen=90, last=30, ended=29)
    second = run(2, "run2", seen=25, last=0, ended=None)
    start, end, _ = RANGES[1].window(NOW, 30)
    raw = HostRaw(
        "shop", "web-1", "1h", start, end, NOW, 30, (first, second),
        tq=[None] * 28 + [2.0, 6.0], rq=[None] * 30, backlog=[None] * 29 + [40.0],
        rc=[None] * 20 + [1.0] + [None] * 8 + [2.0],
        kinds={"restarted": 1, "vanished": 1, "reincarnated": 2},
        events=(
            event(25, "restarted", previous="run1", downtime_s=240.0),
            event(25, "appeared", status="Idle"),
            event(29, "vanished", cid="run1", last_status="Stopped"),
        ),
        gaps=(GapRow("shop", at(10), at(5), "Redis redis://x: connection refused"),),
    )  # fmt: skip
    history = pane.build(raw)
    # Known: the whole hour but the 5-minute Redis gap; down: from the first run's end
    # (29 minutes ago) to the second's first sighting (25 minutes ago).
    assert history.known_s == pytest.approx(55 * 60)
    assert history.down_s == pytest.approx(4 * 60)
    assert history.availability == pytest.approx(51 / 55)
    assert (history.restarts, history.vanished, history.reincarnations) == (1, 1, 3)
    assert history.tq_spark.endswith("▄█") and history.tq_peak == 6.0
    texts = [line.text for line in history.events]
    assert texts[0].startswith("Redis unreachable 0:05:00")
    assert "restarted as run2aaaa (was run1, down 0:04:00)" in texts
    assert not any("appeared" in t for t in texts)  # the restart line says it
    assert texts[-1] == "run1 vanished, last Stopped"


def test_pane_stops_counting_when_the_daemon_stopped_watching() -> None:
    # Open, but not refreshed for 20 minutes: the daemon stopped; after that is unknown.
    raw = HostRaw(
        "shop", "web-1", "1h", *RANGES[1].window(NOW, 30)[:2], NOW, 30,
        (run(1, "run1", seen=50, last=20, ended=None),),
    )  # fmt: skip
    history = pane.build(raw)
    assert history.known_s == pytest.approx(30 * 60)
    assert history.availability == pytest.approx(1.0)


def test_pane_counts_time_nobody_sampled_as_unknown_even_with_every_run_ended() -> None:
    # The cluster ended 50 minutes ago and the daemon stopped 40 minutes ago (its watch
    # mark, read as an open gap): the 10 minutes in between are down, the rest unknown.
    raw = HostRaw(
        "shop", "web-1", "1h", *RANGES[1].window(NOW, 30)[:2], NOW, 30,
        (run(1, "run1", seen=70, last=50, ended=50),),
        gaps=(GapRow("shop", at(40), None, "no qwatch daemon is sampling", GapKind.UNWATCHED),),
    )  # fmt: skip
    history = pane.build(raw)
    assert history.known_s == pytest.approx(20 * 60)
    assert history.down_s == pytest.approx(10 * 60)
    assert history.events[0].text.startswith("Not sampled 0:40:00, still")


def test_idle_working_flips_fold_into_one_line() -> None:
    flips = [event(i, "state_changed", **{"from": f, "to": t}) for i, (f, t) in enumerate(
        [("Idle", "Working"), ("Working", "Idle"), ("Idle", "Working")], start=1
    )]  # fmt: skip
    stop = event(0.5, "state_changed", **{"from": "Working", "to": "Stopping"})
    lines = pane.event_lines([stop, *flips], [], NOW)
    assert [line.text for line in lines] == [
        "run2aaaa Working → Stopping",
        "Idle ⇄ Working, 3 changes",
    ]
    assert lines[1].at == at(1)


@pytest.mark.parametrize(
    ("zone", "shown"), [(fmt.UTC_ZONE, "11:35:00"), (fmt.zone("Asia/Tokyo"), "20:35:00")]
)
def test_pane_event_times_are_in_the_display_zone_and_say_it(zone: fmt.Zone, shown: str) -> None:
    state = make_state(stat(), zone=zone)  # UTC unless display_time_zone says otherwise
    raw = HostRaw(
        "shop", "web-1", "1h", *RANGES[1].window(NOW, 30)[:2], NOW, 30,
        (run(1, "run2aaaa", seen=50, last=0, ended=None),),
        events=(event(25, "reincarnated", by=1, total=1),),
    )  # fmt: skip
    state.set_pane(pane.build(raw))
    lines = [text_of(line) for line in render.pane(state, 100, 20, NOW)]
    assert f" Events ({zone.name}), newest first" in lines[6]
    assert lines[7].startswith(f" {shown} run2aaaa +1 reincarnated")


def test_the_pane_lists_the_firing_alerts_of_its_host_and_site_in_red() -> None:
    from qwatch.alerts.rules import Alert

    state = make_state(stat())
    raw = HostRaw(
        "shop", "web-1", "1h", *RANGES[1].window(NOW, 30)[:2], NOW, 30,
        (run(1, "run2aaaa", seen=50, last=0, ended=None),),
    )  # fmt: skip
    state.set_pane(pane.build(raw))
    plain = [text_of(line) for line in render.pane(state, 100, 20, NOW)]
    mine = Alert("queue_full", "shop", "c-1", "warning", "shop: web-1's task queue is full",
                 NOW - timedelta(minutes=6), host="web-1", cluster_id="c-1")  # fmt: skip
    site_wide = Alert("stuck", "shop", "", "critical", "shop: backlog of 40 not draining",
                      NOW - timedelta(minutes=12))  # fmt: skip
    others = [
        Alert("cluster_down", "shop", "web-2", "critical", "shop: no live cluster on web-2",
              NOW - timedelta(minutes=2), host="web-2"),
        Alert("cluster_down", "shop2", "web-1", "critical", "shop2: no live cluster on web-1",
              NOW - timedelta(minutes=2), host="web-1"),
        Alert("cluster_down", "shop", "web-1", "critical", "resolved",
              NOW - timedelta(minutes=9), NOW - timedelta(minutes=1), host="web-1"),
    ]  # fmt: skip
    state.set_alerts([mine, *others, site_wide])
    assert pane.alerts_of(state.alerts, "shop", "web-1") == (site_wide, mine)  # oldest first
    lines = render.pane(state, 100, 20, NOW)
    texts = [text_of(line) for line in lines]
    assert texts[1] == " ALERT stuck (critical, 0:12:00): shop: backlog of 40 not draining "
    assert texts[2] == " ALERT queue_full (warning, 0:06:00): shop: web-1's task queue is full "
    assert lines[1][0][0] == lines[2][0][0] == "class:pane.alert"
    assert render.STYLE.get_attrs_for_style_str("class:pane.alert").color == "ansired"
    assert texts[3:] == plain[1:]  # the rest of the pane as before, below the alerts
    # Cut to the pane's width; many alerts end in how many more, as the banner does.
    assert all(len(t) <= 30 for t in map(text_of, render.pane(state, 30, 20, NOW)[1:3]))
    state.set_alerts([replace(mine, subject=f"c-{i}", cluster_id=f"c-{i}") for i in range(5)])
    texts = [text_of(line) for line in render.pane(state, 100, 20, NOW)]
    assert texts[1 + render.MAX_ALERT_LINES] == " … and 2 more alerts: `qwatch alerts` "
    assert texts[2 + render.MAX_ALERT_LINES :] == plain[1:]


def test_range_windows_end_on_a_slot_boundary() -> None:
    for rng in RANGES:
        start, end, width = rng.window(NOW + timedelta(seconds=7), 30)
        assert end >= NOW + timedelta(seconds=7) > end - timedelta(seconds=width)
        assert int(end.timestamp()) % width == 0
        assert (end - start).total_seconds() == width * 30


slot_values = st.lists(
    st.one_of(st.none(), st.floats(0, 50, allow_nan=False)), min_size=0, max_size=TABLE_SLOTS
)


@given(
    first=st.lists(slot_values, min_size=1, max_size=6), second=st.lists(slot_values, max_size=6)
)
def test_the_table_draws_each_rows_sparkline_as_drawing_it_anew_would(
    first: list[list[float | None]], second: list[list[float | None]]
) -> None:
    """Rows keep their series and the table draws it when on screen, cached by its values:
    what it shows must be what drawing each one anew gives, read after read (the second
    read reuses some of the first's series)."""
    names = ids(len(first) + len(second))
    runs = tuple(run_info(pk, f"web-{pk}", names[pk], None) for pk in range(len(names)))
    state = make_state(*(stat(f"web-{pk}", names[pk], up_s=7200) for pk in range(len(names))))
    for series in (first, first[: len(first) // 2] + second):
        history_for(state, *runs, tq=dict(enumerate(series)))
        for pk, values in enumerate(series):
            row = next(r for r in state.rows if r.cluster_id == names[pk])
            assert row.trend == tuple(values)
            drawn = render._cell(row, "trend", NOW)
            assert drawn == (sparkline(values, TABLE_SLOTS), "class:spark")


def test_the_live_count_follows_polls_filters_and_gone_runs() -> None:
    names = ids(5)
    state = make_state(*(stat(f"web-{i}", names[i]) for i in range(4)))
    history_for(state, run_info(9, "web-9", names[4], NOW - timedelta(minutes=5)))

    def counted() -> int:
        return sum(1 for r in state.rows if r.source is Source.LIVE)

    assert state.live_count == counted() == 4 and len(state.rows) == 5
    state.type_filter("web-1")
    assert state.live_count == counted() == 1
    state.clear_filter()
    state.set_poll(poll(stat("web-0", names[0])))
    assert state.live_count == counted() == 1
    assert "1 cluster " in text_of(render.status(state, NOW))


def _reference_order(row: Row, key: str) -> tuple[object, ...]:
    """The sort written out column by column, as the table documents it."""
    tie = (row.host, row.site, row.cluster_id)
    if key == "host":
        return tie
    if key == "id":
        return (row.short_id, *tie)
    if key == "state":
        return (STATES.index(row.status) if row.status in STATES else len(STATES), *tie)
    fields = {"pool": "pool", "tq": "tq", "rq": "rq", "rc": "rc", "up": "uptime_s"}
    value = getattr(row, fields.get(key, "rc_hour"))
    return (-1 if value is None else value, *tie)


@given(
    specs=st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["Idle", "Working", "Stopped", "Starting"]),
            st.integers(0, 3),
            st.integers(0, 3),
            st.floats(0, 100),
        ),
        max_size=12,
    ),
    key=st.sampled_from(SORT_KEYS),
)
def test_every_sort_key_orders_like_the_written_out_sort(
    specs: list[tuple[str, str, int, int, float]], key: str
) -> None:
    names = ids(len(specs))
    state = make_state(
        *(
            stat(host, names[i], status, pool=n % 3 + 1, tq=n, rq=m, rc=m, up_s=up)
            for i, (host, status, n, m, up) in enumerate(specs)
        )
    )
    while state.sort_key != key:
        state.cycle_sort()
    expected = sorted(state.rows, key=lambda r: _reference_order(r, key))
    assert [r.cluster_id for r in state.rows] == [r.cluster_id for r in expected]
