"""qwatch.wording: one set of words for `qwatch history` and the monitor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qwatch import wording
from qwatch.values import EventRow, GapKind, GapRow

NOW = datetime(2025, 3, 1, 12, tzinfo=UTC)
CID = "a1b2c3d4-0000-4000-8000-00000000b002"


def event(kind: str, **detail: object) -> EventRow:
    return EventRow(NOW, 1, CID, kind, dict(detail))


def test_history_detail_column() -> None:
    assert wording.detail(event("appeared", status="Idle")) == "as Idle"
    assert wording.detail(event("appeared", status="Idle", returned=True)) == (
        "as Idle (back after a lapse)"
    )
    assert wording.detail(event("state_changed", **{"from": "Idle", "to": "Working"})) == (
        "Idle → Working"
    )
    assert wording.detail(event("reincarnated", by=2, total=5)) == "+2 (total 5)"
    restarted = event("restarted", previous="ffff-0000aaaa", downtime_s=120.0)
    assert wording.detail(restarted) == "after 0000aaaa, down 0:02:00"
    assert wording.detail(event("restarted")) == "after ?, down ?"
    assert wording.detail(event("vanished", last_status="Idle", during_gap=True)) == (
        "last Idle during a Redis outage"
    )
    assert wording.detail(event("odd", b=1, a=2)) == '{"a":2,"b":1}'


def test_monitor_sentence_uses_the_same_words() -> None:
    change = event("state_changed", **{"from": "Idle", "to": "Working"})
    assert wording.sentence(change) == f"0000b002 {wording.detail(change)}"
    vanished = event("vanished", last_status="Idle", during_gap=True)
    assert wording.sentence(vanished) == "0000b002 vanished during a Redis outage, last Idle"
    restarted = event("restarted", previous="ffff-0000aaaa", downtime_s=120)
    assert wording.sentence(restarted) == "restarted as 0000b002 (was 0000aaaa, down 0:02:00)"
    assert wording.sentence(event("appeared", status="Idle", returned=True)) == (
        "0000b002 appeared again, Idle"
    )
    assert wording.flips(3) == "Idle ⇄ Working, 3 changes"


def test_gaps() -> None:
    start = NOW - timedelta(minutes=5)
    closed = GapRow("shop", start, NOW - timedelta(minutes=1), "connection refused")
    assert wording.gap(closed, NOW) == "Redis unreachable 0:04:00: connection refused"
    still = GapRow("shop", start, None, "no qwatch daemon is sampling", GapKind.UNWATCHED)
    assert wording.gap(still, NOW) == "Not sampled 0:05:00, still: no qwatch daemon is sampling"
