"""Which messages go out after a poll (qwatch.alerts.schedule.due), with no clock or I/O."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from qwatch.alerts.rules import Alert, Change
from qwatch.alerts.schedule import Sent, due
from qwatch.alerts.silences import Silence

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
REPEAT = 4 * 3600.0


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def alert(host: str = "web1", rule: str = "cluster_down", at: float = 0) -> Alert:
    return Alert(rule, "shop", host, "critical", f"down on {host}", t(at), host=host)


def shape(messages: list) -> list[tuple[str, list[str]]]:
    return [(m.status, [a.subject for a in m.alerts]) for m in messages]


def test_alerts_that_fire_in_one_poll_go_out_as_one_message() -> None:
    one, two = alert("web1"), alert("web2")
    change = Change(fired=(one, two), firing=(one, two))
    assert shape(due("shop", change, {}, at=t(0), repeat_s=REPEAT)) == [
        ("firing", ["web1", "web2"])
    ]


def test_sent_once_then_reminded_every_repeat() -> None:
    one = alert()
    sent = {one.key: Sent(one.started_at, "firing", t(0))}
    still = Change(firing=(one,))
    assert due("shop", still, sent, at=t(REPEAT - 1), repeat_s=REPEAT) == []
    assert shape(due("shop", still, sent, at=t(REPEAT), repeat_s=REPEAT)) == [("firing", ["web1"])]
    assert due("shop", still, sent, at=t(10 * REPEAT), repeat_s=0) == []  # no reminders


def test_resolved_is_sent_only_after_its_firing_was() -> None:
    one, two = alert("web1"), alert("web2")
    sent = {one.key: Sent(one.started_at, "firing", t(0))}
    change = Change(resolved=(replace(one, ended_at=t(60)), replace(two, ended_at=t(60))))
    assert shape(due("shop", change, sent, at=t(60), repeat_s=REPEAT)) == [("resolved", ["web1"])]


def test_an_alert_sent_for_an_earlier_start_is_a_new_one() -> None:
    new = alert(at=600)
    sent = {new.key: Sent(t(0), "resolved", t(300))}
    assert shape(due("shop", Change(firing=(new,)), sent, at=t(600), repeat_s=REPEAT)) == [
        ("firing", ["web1"])
    ]


def test_silenced_alerts_wait_for_the_silence_to_end_and_held_ones_for_their_time() -> None:
    one, two = alert("web1"), alert("web2")
    quiet = [Silence(1, "all", "shop", "web1", t(100), "upgrade", t(-10))]
    change = Change(fired=(one, two), firing=(one, two))
    assert shape(due("shop", change, {}, at=t(0), repeat_s=REPEAT, silences=quiet)) == [
        ("firing", ["web2"])
    ]
    later = Change(firing=(one, two))
    sent = {two.key: Sent(two.started_at, "firing", t(0))}
    assert due("shop", later, sent, at=t(50), repeat_s=REPEAT, silences=quiet) == []
    assert shape(due("shop", later, sent, at=t(100), repeat_s=REPEAT, silences=quiet)) == [
        ("firing", ["web1"])
    ]
    held = {one.key: t(160)}
    assert due("shop", later, sent, at=t(100), repeat_s=REPEAT, held=held) == []
    assert shape(due("shop", later, sent, at=t(160), repeat_s=REPEAT, held=held)) == [
        ("firing", ["web1"])
    ]
    # silenced at its end: no resolution is sent either
    sent = {one.key: Sent(one.started_at, "firing", t(0))}
    ended = Change(resolved=(replace(one, ended_at=t(50)),))
    assert due("shop", ended, sent, at=t(50), repeat_s=REPEAT, silences=quiet) == []
