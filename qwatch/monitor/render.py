"""View state -> styled text fragments (pure: `now` is passed in, nothing is read).

Styles are class names (`class:state.working`); `STYLE` maps them to colours, following
qmonitor: Starting and Stopping yellow, Working green, Stopped red, Pool yellow below the
configured workers, TQ cyan when busy and green at the queue limit, RQ cyan when busy.
Only the rows that fit are drawn, and sparklines arrive drawn already.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from prompt_toolkit.formatted_text import StyleAndTextTuples
from prompt_toolkit.styles import Style

from qwatch.alerts.rules import Alert
from qwatch.fmt import ago, hms, when
from qwatch.monitor.columns import SEPARATOR, Column, cell, fit_columns
from qwatch.monitor.pane import HostHistory, alerts_of
from qwatch.monitor.records import TABLE_SLOTS, StoreKind
from qwatch.monitor.spark import table_sparkline
from qwatch.monitor.state import Focus, MonitorState, Row, Source

Line = StyleAndTextTuples

STYLE = Style.from_dict(
    {
        "title": "bold",
        "title.key": "ansicyan",
        "banner": "bg:ansired ansiwhite bold",
        "hint": "ansiyellow",
        "header": "bold underline",
        "header.sorted": "ansicyan",
        "row.selected": "reverse",
        "row.selected.unfocused": "noreverse underline",
        "row.gone": "dim",
        "row.stored": "dim italic",
        "state.starting": "ansiyellow",
        "state.stopping": "ansiyellow",
        "state.working": "ansigreen",
        "state.idle": "",
        "state.stopped": "ansired",
        "state.gone": "",
        "pool.low": "ansiyellow",
        "tq.busy": "ansicyan",
        "tq.full": "ansigreen",
        "rq.busy": "ansicyan",
        "spark": "ansiblue",
        "empty": "italic",
        "pane.border": "ansibrightblack",
        "pane.title": "bold",
        "pane.title.focused": "reverse",
        "pane.label": "ansibrightblack",
        "pane.good": "ansigreen",
        "pane.warn": "ansiyellow",
        "pane.bad": "ansired",
        "pane.alert": "ansired bold",
        "event.time": "ansibrightblack",
        "event.restarted": "ansiyellow",
        "event.vanished": "ansired",
        "event.reincarnated": "ansimagenta",
        "event.gap": "ansired",
        "status": "reverse",
        "status.warn": "bg:ansiyellow ansiblack",
        "status.bad": "bg:ansired ansiwhite",
        "help": "bg:ansiblack ansiwhite",
        "help.key": "ansicyan bold",
    }
)


# --- top lines ---------------------------------------------------------------------------


def title(state: MonitorState) -> Line:
    names = ", ".join(state.sites)
    arrow = "▼" if state.sort_reverse else "▲"
    line: Line = [
        ("class:title", " qwatch "),
        ("", f" site{'s' if state.several_sites else ''} {names} · range "),
        ("class:title.key", state.range.label),
        ("", " · sort "),
        ("class:title.key", f"{state.sort_key} {arrow}"),
    ]
    if state.filter_text or state.filter_editing:
        cursor = "▏" if state.filter_editing else ""
        line += [("", " · filter "), ("class:title.key", f"{state.filter_text}{cursor}")]
    return line


MAX_ALERT_LINES = 3  # then "… and N more alerts": the table keeps the screen


def banner(state: MonitorState, now: datetime) -> list[Line]:
    """One red line per site whose Redis is failing (the reason and for how long), then
    one per alert firing (the sampling daemon's, from the history)."""
    lines: list[Line] = []
    for live in state.sites.values():
        if live.error is None:
            continue
        down = hms((now - live.down_since).total_seconds()) if live.down_since else "?"
        shown = ["retrying"]
        if live.poll is not None:
            shown.append("showing the last poll")
        if state.store.usable:
            shown.append("history still shown")
        text = f" {live.error} (for {down}; {'; '.join(shown)}) "
        lines.append([("class:banner", text)])
    return lines + alert_lines(state.alerts, "class:banner", now)


def alert_lines(
    firing: Sequence[Alert], style: str, now: datetime, width: int | None = None
) -> list[Line]:
    """One line per firing alert (rule, severity, how long, summary), at most
    MAX_ALERT_LINES and then how many more; cut to `width` when given."""
    texts = [
        f" ALERT {alert.rule} ({alert.severity}, "
        f"{hms((now - alert.started_at).total_seconds())}): {alert.summary} "
        for alert in firing[:MAX_ALERT_LINES]
    ]
    if len(firing) > MAX_ALERT_LINES:
        texts.append(f" … and {len(firing) - MAX_ALERT_LINES} more alerts: `qwatch alerts` ")
    return [[(style, text[:width])] for text in texts]


def hint(state: MonitorState) -> Line | None:
    """Why there is no history pane, when there is none; the messages say what to do."""
    if state.store.kind in (StoreKind.UNREADABLE, StoreKind.EMPTY):
        message = state.store.message
        return [("class:hint", f" {message[:1].upper()}{message[1:]}")]
    return None


# --- the table ---------------------------------------------------------------------------


def columns_for(state: MonitorState, width: int, rows: Iterable[Row]) -> list[Column]:
    return fit_columns(
        width,
        sites=list(state.sites) if state.several_sites else (),
        history=state.store.usable,
        host_width=max((len(r.host) for r in rows), default=0),
        range_label=state.range.label,
    )


def header(state: MonitorState, columns: list[Column]) -> Line:
    line: Line = [("class:header", SEPARATOR)]
    for column in columns:
        text = column.title
        style = "class:header"
        if column.key == state.sort_key:
            text = f"{text}{'▼' if state.sort_reverse else '▲'}"
            style = "class:header class:header.sorted"
        line.append((style, cell(text, column) + SEPARATOR))
    return line


def table(state: MonitorState, width: int, height: int, now: datetime) -> list[Line]:
    """The header and the rows that fit in `height` lines, or a line saying why none."""
    body = max(1, height - 1)
    first, rows = state.visible(body)
    columns = columns_for(state, width, rows)
    lines = [header(state, columns)]
    if not rows:
        lines.append([("class:empty", f" {empty_reason(state)}")])
        return lines
    focused = state.focus is Focus.TABLE
    for offset, row in enumerate(rows):
        lines.append(row_line(row, columns, now, first + offset == state.index, focused))
    return lines


def row_line(row: Row, columns: list[Column], now: datetime, selected: bool, focused: bool) -> Line:
    base = "class:row"
    if row.source is Source.GONE:
        base += " class:row.gone"
    elif row.source is Source.STORED:
        base += " class:row.stored"
    if selected:
        base += " class:row.selected" + ("" if focused else " class:row.selected.unfocused")
    line: Line = [(base, SEPARATOR)]
    for column in columns:
        text, style = _cell(row, column.key, now)
        line.append((f"{base} {style}" if style else base, cell(text, column)))
        line.append((base, SEPARATOR))
    return line


def _cell(row: Row, key: str, now: datetime) -> tuple[str, str]:
    """(text, extra style) for one cell."""
    if key == "site":
        return row.site, ""
    if key == "host":
        return row.host, ""
    if key == "id":
        return row.short_id, ""
    if key == "state":
        if row.source is Source.GONE and row.gone_at is not None:
            return f"gone {ago((now - row.gone_at).total_seconds())} ago", "class:state.gone"
        return row.status, f"class:state.{row.status.lower()}"
    if key == "pool":
        low = row.workers is not None and row.pool is not None and row.pool < row.workers
        return _num(row.pool), "class:pool.low" if low else ""
    if key == "tq":
        return _num(row.tq), _queue_style(row.tq, row.queue_limit, "tq")
    if key == "rq":
        return _num(row.rq), _queue_style(row.rq, None, "rq")
    if key == "rc":
        return _num(row.rc), ""
    if key == "up":
        return hms(row.uptime_at(now)), ""
    if key == "rc1h":
        return _num(row.rc_hour), ""
    if key == "trend":
        spark = "" if row.trend is None else table_sparkline(row.trend, TABLE_SLOTS)
        return spark, "class:spark"
    return "", ""


def _queue_style(size: int | None, limit: int | None, name: str) -> str:
    if size is None or size <= 0:
        return ""
    if limit is not None and size >= limit:
        return f"class:{name}.full"
    return f"class:{name}.busy"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def empty_reason(state: MonitorState) -> str:
    """Why the table is empty, so "the monitor shows nothing" always says why."""
    if state.filter_text and any(live.poll and live.poll.clusters for live in state.sites.values()):
        return f"No cluster's host or id contains {state.filter_text!r} (Esc clears the filter)."
    reasons = []
    for live in state.sites.values():
        site = live.site
        if live.poll is None and live.error is None:
            reasons.append(f"Reading {site.stats_address}…")
        elif live.poll is None:
            reasons.append(f"Cannot read {site.stats_address} (see the banner).")
        else:
            skipped = len(live.poll.skipped)
            extra = f"; {skipped} record(s) skipped, see the status bar" if skipped else ""
            reasons.append(
                f"No clusters of site {site.name!r} in {site.stats_address} "
                f"(keys {site.stat_pattern}){extra}."
            )
    return " ".join(reasons)


# --- the history pane --------------------------------------------------------------------


def pane(state: MonitorState, width: int, height: int, now: datetime) -> list[Line]:
    target = state.pane_target
    history = state.pane
    focused = state.focus is Focus.PANE
    title_style = "class:pane.title" + (" class:pane.title.focused" if focused else "")
    if target is None:
        return [[(title_style, " History")], [("class:pane.label", " No cluster selected.")]]
    site, host = target
    label = f"{site} · {host}" if state.several_sites else host
    head = f" History of {label} · {state.range.label} "
    if history is None or (history.site, history.host) != target:
        return [[(title_style, head)], [("class:pane.label", " Reading the history…")]]
    if history.range_label != state.range.label:
        head += f"(showing {history.range_label} until read) "
    lines: list[Line] = [[(title_style, head)]]
    # The firing alerts of the host and its site, red, above the numbers they explain.
    lines += alert_lines(alerts_of(state.alerts, site, host), "class:pane.alert", now, width)
    lines.append(_summary(state, history, now))
    lines.append(_trend("Reinc.", history.rc_spark, float(history.reincarnations), "total"))
    lines.append(_trend("TQ", history.tq_spark, history.tq_peak, "peak"))
    lines.append(_trend("RQ", history.rq_spark, history.rq_peak, "peak"))
    lines.append(_trend("Backlog", history.backlog_spark, history.backlog_peak, "peak"))
    room = max(0, height - len(lines) - 1)
    events = history.events
    state.pane_scroll = max(0, min(state.pane_scroll, max(0, len(events) - room)))
    shown = events[state.pane_scroll : state.pane_scroll + room]
    more = f" ({state.pane_scroll + 1}-{state.pane_scroll + len(shown)} of {len(events)})"
    heading = f" Events ({state.zone.name}), newest first" + (more if events else ": none")
    lines.append([("class:pane.label", heading)])
    with_date = state.range.seconds > 24 * 3600
    for event in shown:
        shown_at = (
            when(event.at, state.zone, date="day")
            if with_date
            else when(event.at, state.zone, date="none", seconds=True)
        )
        lines.append(
            [
                ("class:event.time", f" {shown_at} "),
                (f"class:event.{event.kind}", event.text[: max(0, width - 12)]),
            ]
        )
    return lines


def _summary(state: MonitorState, history: HostHistory, now: datetime) -> Line:
    row = state.selected
    up = hms(row.uptime_at(now)) if row is not None and row.source is Source.LIVE else "-"
    if history.availability is None:
        avail, style = "-", ""
    else:
        pct = history.availability * 100
        avail = f"{pct:.1f}%" if pct < 100 else "100%"
        style = "class:pane.good" if pct >= 99.9 else "class:pane.warn"
        style = "class:pane.bad" if pct < 95 else style
    return [
        ("class:pane.label", " Up "),
        ("", up),
        ("class:pane.label", "  Avail "),
        (style, avail),
        ("class:pane.label", "  Down "),
        ("", hms(history.down_s)),
        ("class:pane.label", "/"),
        ("", hms(history.known_s)),
        ("class:pane.label", "  Restarts "),
        ("class:pane.warn" if history.restarts else "", str(history.restarts)),
        ("class:pane.label", "  Gone "),
        ("", str(history.vanished)),
        ("class:pane.label", "  Runs "),
        ("", str(history.runs)),
    ]


def _trend(label: str, spark: str, value: float | None, what: str) -> Line:
    shown = "-" if value is None else f"{value:g}"
    return [
        ("class:pane.label", f" {label:<8}"),
        ("class:spark", spark or "(no data)"),
        ("class:pane.label", f"  {what} "),
        ("", shown),
    ]


# --- the status bar ------------------------------------------------------------------------


def status(state: MonitorState, now: datetime, width: int = 1000) -> Line:
    """The status bar; when it is too wide, the least needed parts go first."""
    parts: list[tuple[int, str, str]] = []  # (priority: higher stays longer, style, text)
    addresses = list(dict.fromkeys(live.site.stats_address for live in state.sites.values()))
    versions = {live.version for live in state.sites.values() if live.version}
    redis = addresses[0] + (f" +{len(addresses) - 1}" if len(addresses) > 1 else "")
    parts.append((9, "class:status", f" {redis} "))
    if versions:
        parts.append((2, "class:status", f"v{','.join(sorted(versions))} "))
    several_sites = len(state.sites) > 1
    queues = [
        (f"{live.site.name}/{b.queue}" if several_sites else b.queue, b.length)
        for live in state.sites.values()
        if live.poll is not None
        for b in live.poll.backlogs
    ]
    if queues:
        # `?`: that broker's backlog cannot be read (SQS, MongoDB) or its database is down
        lengths = [n for _, n in queues if n is not None]
        known = sum(lengths) if lengths else None
        parts.append((4, "class:status", f"│ queued {'?' if known is None else known} "))
        if len(queues) > 1:
            each = ", ".join(f"{name} {'?' if n is None else n}" for name, n in queues)
            parts.append((1, "class:status", f"({each}) "))
    count = state.live_count
    parts.append((6, "class:status", f"│ {count} cluster{'s' if count != 1 else ''} "))
    slowed = [live.every_s for live in state.sites.values() if live.every_s is not None]
    if slowed:
        parts.append((3, "class:status", f"every {max(slowed):g}s "))
    parts.append((7, *_sample_age(state, now)))
    skipped = Counter(
        s.reason for live in state.sites.values() if live.poll for s in live.poll.skipped
    )
    if skipped:
        reason, _ = skipped.most_common(1)[0]
        more = f" (+{len(skipped) - 1} reasons)" if len(skipped) > 1 else ""
        text = f"│ skipped {sum(skipped.values())}: {reason}{more} "
        parts.append((8, "class:status.warn", text))
    parts.append((5, "class:status", "│ ? help "))
    parts.append((2, "class:status", " q quit "))
    # The address, the sample age and the skips always stay; the edge cuts what is left over.
    while sum(len(text) for _, _, text in parts) > width and min(parts)[0] < 7:
        parts.remove(min(parts, key=lambda part: part[0]))
    return [(style, text) for _, style, text in parts]


def _sample_age(state: MonitorState, now: datetime) -> tuple[str, str]:
    store = state.store
    if store.kind is StoreKind.UNKNOWN:
        return ("class:status", "│ history … ")
    if store.kind is StoreKind.ERROR:
        return ("class:status.bad", f"│ history: {store.message} ")
    if not store.usable or store.newest_sample is None:
        missing = store.kind is StoreKind.UNREADABLE
        return ("class:status.warn", "│ no history " if missing else "│ no samples ")
    age = (now - store.newest_sample).total_seconds()
    style = "class:status.warn" if age > state.stale_after_s else "class:status"
    return (style, f"│ sample {ago(age)} ago ")


HELP = (
    ("q  Ctrl-C", "quit"),
    ("↑ ↓  j k", "select a cluster (scroll the events in the history pane)"),
    ("PgUp PgDn", "a page up or down"),
    ("Home End", "first or last"),
    ("Enter  Tab", "focus the history pane (Esc goes back)"),
    ("s  S", "next sort column, reverse the order"),
    ("/", "filter by host or id (Enter keeps it, Esc clears it)"),
    ("r", "next range: 15m, 1h, 24h, 7d"),
    ("?", "this help (Esc or ? closes it)"),
)


def help_lines() -> list[Line]:
    lines: list[Line] = [[("class:help", " Keys")], [("class:help", "")]]
    for keys, what in HELP:
        lines.append([("class:help.key", f" {keys:<12}"), ("class:help", f"{what} ")])
    return lines
