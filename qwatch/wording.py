"""The words people read for an event or a gap, shared by `qwatch history` and the monitor.

An event is its kind and its detail (the JSON `qwatch.events` writes). `history` prints the
detail in a column beside the time, the short id and the kind (`detail`); the monitor's
pane has one line per event, so there the sentence names the cluster and what happened
(`sentence`). Both say it with the same words: a state change is `Idle → Working`, time
with Redis out of reach is a Redis outage. Pure: no I/O, `now` is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from qwatch.fmt import hms, short_id
from qwatch.values import EventRow, GapKind, GapRow

ARROW = "→"
OUTAGE = "Redis outage"


def _change(d: Mapping[str, object]) -> str:
    return f"{d.get('from', '?')} {ARROW} {d.get('to', '?')}"


def _downtime(d: Mapping[str, object]) -> str | None:
    value = d.get("downtime_s")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return hms(value)
    return None


def detail(event: EventRow) -> str:
    """The event's detail in a few words, for a column beside its kind and cluster."""
    d = event.detail
    if event.kind == "appeared":
        return f"as {d.get('status', '?')}" + (" (back after a lapse)" if d.get("returned") else "")
    if event.kind == "state_changed":
        return _change(d)
    if event.kind == "reincarnated":
        return f"+{d.get('by', '?')} (total {d.get('total', '?')})"
    if event.kind == "restarted":
        previous = short_id(str(d.get("previous", "?")))
        return f"after {previous}, down {_downtime(d) or '?'}"
    if event.kind == "vanished":
        gap = f" during a {OUTAGE}" if d.get("during_gap") else ""
        return f"last {d.get('last_status', '?')}{gap}"
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def sentence(event: EventRow) -> str:
    """The event as one line that names its cluster: `a1b2c3d4 Idle → Working`."""
    d = event.detail
    short = short_id(event.cluster_id)
    if event.kind == "restarted":
        down = _downtime(d)
        after = f", down {down}" if down is not None else ""
        return f"restarted as {short} (was {short_id(str(d.get('previous', '')))}{after})"
    if event.kind == "vanished":
        gap = f" during a {OUTAGE}" if d.get("during_gap") else ""
        return f"{short} vanished{gap}, last {d.get('last_status', '?')}"
    if event.kind == "state_changed":
        return f"{short} {_change(d)}"
    if event.kind == "reincarnated":
        return f"{short} +{d.get('by', '?')} reincarnated (total {d.get('total', '?')})"
    if event.kind == "appeared":
        again = " again" if d.get("returned") else ""
        return f"{short} appeared{again}, {d.get('status', '?')}"
    return f"{short} {event.kind}"


def flips(count: int) -> str:
    """Several Idle/Working changes folded into one line."""
    return f"Idle ⇄ Working, {count} changes"


def gap(row: GapRow, now: datetime) -> str:
    """A gap, how long it lasted (or has lasted) and why: `Redis unreachable 0:05:00: …`."""
    length = hms(((row.ended_at or now) - row.started_at).total_seconds())
    still = "" if row.ended_at else ", still"
    what = "Not sampled" if row.kind == GapKind.UNWATCHED else "Redis unreachable"
    return f"{what} {length}{still}: {row.reason}"
