"""Tracker and SampleClock: polls in, events out; no Redis, no clock."""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from qwatch.events import Event, SampleClock, Tracker, key_of
from qwatch.values import (
    APPEARED,
    REINCARNATED,
    RESTARTED,
    STATE_CHANGED,
    STATES,
    VANISHED,
    ClusterStat,
)
from tests.helpers import cluster_stat

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
SITE = "shop"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stat(
    cluster_id: str = "c1",
    *,
    host: str = "web1",
    status: str = "Idle",
    rc: int = 0,
    tob: float = 0.0,
    ts: float | None = None,
) -> ClusterStat:
    born = t(tob)
    return cluster_stat(
        cluster_id,
        name=SITE,
        host=host,
        status=status,
        rc=rc,
        tob=born,
        timestamp=born if ts is None else t(ts),
    )


def kinds(events: list[Event]) -> list[tuple[str, str]]:
    return [(e.cluster_id, e.kind) for e in events]


def changed(before: str, after: str) -> tuple[str, dict[str, str]]:
    return (STATE_CHANGED, {"from": before, "to": after})


def test_first_observe_of_an_empty_tracker_reports_every_cluster():
    tracker = Tracker(SITE)
    events = tracker.observe([stat("b", host="web2"), stat("a", host="web2"), stat("c")], t(1))
    assert [(e.host, e.cluster_id, e.kind) for e in events] == [
        ("web1", "c", APPEARED),
        ("web2", "a", APPEARED),
        ("web2", "b", APPEARED),
    ]
    assert events[0] == Event(t(1), SITE, "c", T0, "web1", APPEARED, {"status": "Idle"})
    assert set(tracker.live) == {key_of(s) for s in (stat("a"), stat("b"), stat("c"))}


def test_unchanged_poll_is_quiet():
    tracker = Tracker(SITE)
    tracker.observe([stat(ts=1)], t(1))
    assert tracker.observe([stat(ts=2)], t(2)) == []
    assert tracker.live[key_of(stat())].timestamp == t(2)


@pytest.mark.parametrize(
    "before,after,expected",
    [
        (dict(status="Starting"), dict(status="Idle"), [changed("Starting", "Idle")]),
        (dict(status="Idle"), dict(status="Working"), [changed("Idle", "Working")]),
        (dict(status="Working"), dict(status="Stopping"), [changed("Working", "Stopping")]),
        (dict(status="Stopping"), dict(status="Stopped"), [changed("Stopping", "Stopped")]),
        (dict(rc=3), dict(rc=5), [(REINCARNATED, {"by": 2, "total": 5})]),
        (dict(rc=5), dict(rc=4), []),
        (dict(rc=5), dict(rc=5), []),
        (
            dict(status="Idle", rc=0),
            dict(status="Working", rc=1),
            [changed("Idle", "Working"), (REINCARNATED, {"by": 1, "total": 1})],
        ),
    ],
)
def test_changes_between_two_polls(before, after, expected):
    tracker = Tracker(SITE)
    tracker.observe([stat(ts=1, **before)], t(1))
    events = tracker.observe([stat(ts=2, **after)], t(2))
    assert [(e.kind, e.detail) for e in events] == expected
    assert all(e.at == t(2) and e.cluster_id == "c1" for e in events)


def test_a_reincarnation_count_that_dips_and_recovers_is_not_counted_twice():
    tracker = Tracker(SITE)
    tracker.observe([stat(rc=5)], t(1))
    assert tracker.observe([stat(rc=4)], t(2)) == []
    assert tracker.observe([stat(rc=5)], t(3)) == []
    [event] = tracker.observe([stat(rc=7)], t(4))
    assert event.detail == {"by": 2, "total": 7}


def test_vanished_reports_the_last_record_and_when_it_was_noticed():
    tracker = Tracker(SITE)
    tracker.observe([stat(status="Stopped", ts=9.5), stat("other")], t(10))
    [event] = tracker.observe([stat("other")], t(11))
    assert event == Event(
        t(11),
        SITE,
        "c1",
        T0,
        "web1",
        VANISHED,
        {"last_status": "Stopped", "last_seen": t(9.5).isoformat(), "during_gap": False},
    )
    assert tracker.ended() == (stat(status="Stopped", ts=9.5),)
    assert list(tracker.live) == [key_of(stat("other"))]
    tracker.observe([stat("other")], t(12))
    assert tracker.ended() == ()


def test_restart_on_the_same_host_reports_the_downtime():
    tracker = Tracker(SITE)
    tracker.observe([stat("old", ts=9.5)], t(10))
    tracker.observe([], t(11))
    events = tracker.observe([stat("new", tob=14.0, ts=14.2)], t(15))
    assert kinds(events) == [("new", APPEARED), ("new", RESTARTED)]
    assert events[1].detail == {
        "previous": "old",
        "previous_tob": T0.isoformat(),
        "downtime_s": 4.5,
    }
    # The pairing is consumed: the next newcomer on that host is no restart.
    tracker.observe([stat("new", tob=14.0), stat("third", tob=20.0)], t(21))
    assert tracker.observe([], t(22))  # both vanish
    events = tracker.observe([stat("fourth", tob=30.0)], t(31))
    assert events[1].detail["previous"] == "third"


def test_restart_within_one_poll():
    tracker = Tracker(SITE)
    tracker.observe([stat("old", ts=10.0)], t(10))
    events = tracker.observe([stat("new", tob=10.2)], t(11))
    assert kinds(events) == [("new", APPEARED), ("new", RESTARTED), ("old", VANISHED)]
    assert events[1].detail["downtime_s"] == pytest.approx(0.2)


def test_downtime_is_never_negative():
    tracker = Tracker(SITE)
    tracker.observe([stat("old", ts=10.0)], t(10))
    tracker.observe([], t(11))
    [_, restarted] = tracker.observe([stat("new", tob=8.0)], t(12))
    assert restarted.detail["downtime_s"] == 0.0


@pytest.mark.parametrize(
    "newcomer",
    [
        stat("new", host="web2", tob=20.0),  # another host
        stat("new", tob=-5.0),  # born before the one that vanished: not its replacement
    ],
)
def test_no_restart_without_a_matching_predecessor(newcomer):
    tracker = Tracker(SITE)
    tracker.observe([stat("old", ts=10.0)], t(10))
    tracker.observe([], t(11))
    assert kinds(tracker.observe([newcomer], t(21))) == [("new", APPEARED)]


def test_two_clusters_on_one_host_pair_with_the_most_recently_vanished():
    tracker = Tracker(SITE)
    tracker.observe([stat("a", ts=9.5), stat("b", ts=9.5)], t(10))
    tracker.observe([stat("b", ts=19.5)], t(20))  # a vanishes first
    tracker.observe([], t(21))  # then b
    events = tracker.observe([stat("c", tob=30.0)], t(31))
    assert events[1].detail["previous"] == "b"
    events = tracker.observe([stat("c", tob=30.0), stat("d", tob=40.0)], t(41))
    assert kinds(events) == [("d", APPEARED), ("d", RESTARTED)]
    assert events[1].detail["previous"] == "a"


def test_two_newcomers_at_once_the_first_born_takes_the_place():
    tracker = Tracker(SITE)
    tracker.observe([stat("old", ts=9.5)], t(10))
    events = tracker.observe([stat("y", tob=10.5), stat("x", tob=10.8)], t(11))
    assert kinds(events) == [
        ("old", VANISHED),
        ("x", APPEARED),
        ("y", APPEARED),
        ("y", RESTARTED),
    ]


def test_pid_style_ids_repeat_with_a_new_tob():
    tracker = Tracker(SITE)
    tracker.observe([stat("4321", status="Idle", ts=10.0)], t(10))
    events = tracker.observe([stat("4321", status="Starting", tob=10.5)], t(11))
    assert [(e.tob, e.kind) for e in events] == [
        (T0, VANISHED),
        (t(10.5), APPEARED),
        (t(10.5), RESTARTED),
    ]
    assert events[2].detail == {
        "previous": "4321",
        "previous_tob": T0.isoformat(),
        "downtime_s": 0.5,
    }
    assert list(tracker.live) == [("4321", t(10.5))]


def test_the_same_run_coming_back_is_no_restart():
    tracker = Tracker(SITE)
    tracker.observe([stat("a", ts=9.5)], t(10))
    tracker.observe([], t(11))  # its record lapsed, e.g. a stalled host
    events = tracker.observe([stat("a", ts=14.0)], t(15))
    assert [(e.kind, e.detail) for e in events] == [
        (APPEARED, {"status": "Idle", "returned": True})
    ]
    # ... and it no longer waits to be paired with a newcomer.
    events = tracker.observe([stat("a", ts=14.0), stat("b", tob=18.0)], t(18))
    assert kinds(events) == [("b", APPEARED)]


def test_a_gap_invents_no_vanished_or_appeared():
    tracker = Tracker(SITE)
    tracker.observe([stat("a"), stat("b"), stat("c", rc=1)], t(10))
    tracker.gap(t(11))
    tracker.gap(t(12))
    assert tracker.gap_since == t(11)
    events = tracker.observe(
        [stat("a"), stat("c", status="Working", rc=2), stat("d", host="web2", tob=30.0)], t(40)
    )
    # b is held, not vanished, while a restarted Redis may still be waiting for its record.
    assert [(e.cluster_id, e.kind) for e in events] == [
        ("c", STATE_CHANGED),
        ("c", REINCARNATED),
        ("d", APPEARED),
    ]
    assert tracker.gap_since is None
    after = [stat("a"), stat("c", status="Working", rc=2), stat("d", host="web2", tob=30.0)]
    assert tracker.observe(after, t(42)) == []
    # Past the record's expiry it is gone, and it went while nobody watched.
    [event] = tracker.observe(after, t(44))
    assert (event.cluster_id, event.kind, event.detail["during_gap"]) == ("b", VANISHED, True)
    # The gap is over: the next vanishing was watched.
    [event] = tracker.observe([stat("a"), stat("c", status="Working", rc=2)], t(45))
    assert event.detail["during_gap"] is False


def test_a_restarted_redis_brings_records_back_without_events():
    tracker = Tracker(SITE)
    tracker.observe([stat("a"), stat("b")], t(10))
    tracker.gap(t(11))
    # Redis came back empty; the clusters rewrite their records within half a second.
    assert tracker.observe([], t(20)) == []
    assert tracker.observe([stat("a"), stat("b")], t(21)) == []
    assert tracker.observe([stat("a"), stat("b")], t(30)) == []


def test_a_cluster_restarted_during_a_gap_pairs_as_usual():
    tracker = Tracker(SITE, gap_grace_s=0)
    tracker.observe([stat("old", ts=9.5)], t(10))
    tracker.gap(t(11))
    events = tracker.observe([stat("new", tob=20.0)], t(30))
    assert kinds(events) == [("new", APPEARED), ("new", RESTARTED), ("old", VANISHED)]
    assert events[1].detail["downtime_s"] == 10.5
    assert events[2].detail["during_gap"] is True


def test_seeded_live_clusters_are_not_reported_again():
    tracker = Tracker(SITE, live=[stat("a", status="Idle", rc=2), stat("b", ts=5.0)], gap_grace_s=0)
    assert set(tracker.live) == {key_of(stat("a")), key_of(stat("b"))}
    events = tracker.observe([stat("a", status="Working", rc=2)], t(60))
    # b went while the daemon was down: when, nobody saw.
    assert [(e.cluster_id, e.kind) for e in events] == [("a", STATE_CHANGED), ("b", VANISHED)]
    assert events[1].detail == {
        "last_status": "Idle",
        "last_seen": t(5).isoformat(),
        "during_gap": True,
    }


def test_seeded_vanished_clusters_pair_with_newcomers():
    tracker = Tracker(SITE, vanished=[stat("old", ts=50.0), stat("older", ts=20.0)])
    events = tracker.observe([stat("new", tob=55.0)], t(60))
    assert kinds(events) == [("new", APPEARED), ("new", RESTARTED)]
    assert events[1].detail["previous"] == "old"
    assert events[1].detail["downtime_s"] == 5.0


def test_old_candidates_are_forgotten_after_the_window():
    tracker = Tracker(SITE, vanished=[stat("old", ts=0.0)], pair_window_s=3600)
    assert kinds(tracker.observe([stat("new", tob=3601.0)], t(3601))) == [("new", APPEARED)]
    tracker = Tracker(SITE, vanished=[stat("old", ts=0.0)], pair_window_s=None)
    events = tracker.observe([stat("new", tob=86400.0 * 7)], t(86400 * 7))
    assert events[1].detail["downtime_s"] == 86400.0 * 7


def test_duplicate_records_of_one_cluster_keep_the_newest():
    tracker = Tracker(SITE)
    tracker.observe([stat(ts=1)], t(1))
    events = tracker.observe([stat(ts=2, status="Working"), stat(ts=1.5)], t(2))
    assert kinds(events) == [("c1", STATE_CHANGED)]
    assert tracker.live[key_of(stat())].timestamp == t(2)


def test_event_details_are_json():
    tracker = Tracker(SITE)
    tracker.observe([stat("old", rc=1, ts=9.0)], t(10))
    events = tracker.observe([stat("new", tob=12.0)], t(13))
    events += tracker.observe([stat("new", tob=12.0, rc=2, status="Working")], t(14))
    assert {e.kind for e in events} == {APPEARED, RESTARTED, VANISHED, STATE_CHANGED, REINCARNATED}
    for event in events:
        assert json.loads(json.dumps(event.detail)) == event.detail


# A small universe of clusters: ids repeat across tobs (pid style), two hosts.
UNIVERSE = [(cid, host, tob) for cid in ("1", "2") for host in ("h1", "h2") for tob in (0.0, 5.0)]
polls = st.lists(
    st.tuples(
        st.sets(st.sampled_from(range(len(UNIVERSE)))),
        st.dictionaries(
            st.sampled_from(range(len(UNIVERSE))),
            st.tuples(st.sampled_from(STATES), st.integers(0, 3)),
        ),
        st.booleans(),  # a gap before this poll
    ),
    max_size=12,
)


@given(polls)
def test_events_follow_the_set_difference_of_polls(sequence):
    tracker = Tracker(SITE, gap_grace_s=0)  # the grace after a gap has its own tests
    previous: dict = {}
    for i, (members, changes, gap) in enumerate(sequence):
        at = t(10 + i)
        if gap:
            tracker.gap(at)
        clusters = []
        for index in members:
            status, rc = changes.get(index, ("Idle", 0))
            cluster_id, host, tob = UNIVERSE[index]
            clusters.append(stat(cluster_id, host=host, tob=tob, status=status, rc=rc))
        random.Random(i).shuffle(clusters)
        events = tracker.observe(clusters, at)
        current = {key_of(c): c for c in clusters}

        by_kind: dict[str, set] = {}
        for e in events:
            by_kind.setdefault(e.kind, set()).add(e.key)
        assert by_kind.get(APPEARED, set()) == current.keys() - previous.keys()
        assert by_kind.get(VANISHED, set()) == previous.keys() - current.keys()
        assert by_kind.get(RESTARTED, set()) <= by_kind.get(APPEARED, set())
        assert by_kind.get(STATE_CHANGED, set()) <= current.keys() & previous.keys()
        assert all(e.detail["during_gap"] is gap for e in events if e.kind == VANISHED)
        assert [(e.host, e.cluster_id, e.tob) for e in events] == sorted(
            (e.host, e.cluster_id, e.tob) for e in events
        )
        assert tracker.live.keys() == current.keys()
        assert {key_of(s) for s in tracker.ended()} == previous.keys() - current.keys()
        previous = current


class ScanningTracker(Tracker):
    """The Tracker before the per-poll index: every record scanned for each newcomer."""

    def _take_stopping(self, stat, current):
        stopping = [
            c
            for key, c in current.items()
            if c.host == stat.host
            and c.status in ("Stopping", "Stopped")
            and c.tob < stat.tob
            and key in self._live
            and key not in self._replaced
        ]
        if not stopping:
            return None
        chosen = max(stopping, key=lambda c: (c.timestamp, c.tob, c.cluster_id))
        self._replaced.add(key_of(chosen))
        return chosen


@given(polls)
def test_the_stopping_index_gives_the_events_of_the_full_scan(sequence):
    fast, slow = Tracker(SITE, gap_grace_s=0), ScanningTracker(SITE, gap_grace_s=0)
    for i, (members, changes, gap) in enumerate(sequence):
        at = t(10 + i)
        clusters = []
        for index in members:
            status, rc = changes.get(index, ("Idle", 0))
            cluster_id, host, tob = UNIVERSE[index]
            clusters.append(stat(cluster_id, host=host, tob=tob, status=status, rc=rc))
        for tracker in (fast, slow):
            if gap:
                tracker.gap(at)
        got, want = fast.observe(clusters, at), slow.observe(clusters, at)
        assert got == want


def test_the_stopping_index_pairs_a_supervisor_restart():
    tracker = Tracker(SITE)
    tracker.observe([stat("1", tob=0.0, status="Stopping")], t(10))
    events = tracker.observe([stat("1", tob=0.0, status="Stopped"), stat("2", tob=9.0)], t(11))
    assert ("2", RESTARTED) in kinds(events)


@pytest.mark.parametrize(
    "marks,at,due",
    [
        ([], 0, True),  # first sight
        ([0], 0, False),
        ([0], 9.9, False),
        ([0], 10, True),
        ([0], 10.5, True),
        ([0, 4], 10, False),  # an event forced a sample at 4
        ([0, 4], 14, True),
        ([100], 50, True),  # the clock stepped back
    ],
)
def test_sample_clock(marks, at, due):
    clock = SampleClock(10)
    for mark in marks:
        clock.mark("k", t(mark))
    assert clock.due("k", t(at)) is due
    assert clock.due("other", t(at)) is True


def test_sample_clock_due_does_not_mark_and_forget_resets():
    clock = SampleClock(10)
    assert clock.due("k", t(0))
    assert clock.due("k", t(1))
    clock.mark("k", t(1))
    assert not clock.due("k", t(2))
    clock.forget("k")
    assert clock.due("k", t(2))
    with pytest.raises(ValueError):
        SampleClock(0)


def sampled_times(
    interval_s: float, every_s: float, polls: int, late: random.Random, clock: SampleClock
) -> list[float]:
    """The times the daemon stores a sample: polls start on a fixed grid of `interval_s`
    and end (poll.at) a jittery while later, mostly milliseconds, now and then most of it."""
    stored = []
    for n in range(polls):
        lateness = late.uniform(0.002, 0.05) if late.random() < 0.9 else late.uniform(0, 0.45)
        at = t(n * interval_s + lateness * interval_s)
        if clock.due("k", at):
            clock.mark("k", at)
            stored.append((at - T0).total_seconds())
    return stored


@pytest.mark.parametrize(
    "interval_s,every_s", [(1.0, 10.0), (1.0, 1.0), (0.5, 10.0), (1.0, 2.5), (2.0, 60.0)]
)
@pytest.mark.parametrize("seed", range(3))
def test_samples_keep_to_their_grid_on_average(interval_s, every_s, seed):
    # As the daemon builds it: half a poll interval of slack for polls that end early.
    clock = SampleClock(every_s, slack_s=interval_s / 2)
    polls = round(3600 / interval_s)
    stored = sampled_times(interval_s, every_s, polls, random.Random(seed), clock)
    gaps = [b - a for a, b in itertools.pairwise(stored)]
    mean = sum(gaps) / len(gaps)
    assert abs(mean - every_s) <= 0.02 * every_s, mean
    assert min(gaps) >= every_s - interval_s  # never two samples for one slot


def test_a_sample_between_slots_restarts_the_grid_and_an_outage_skips_slots():
    clock = SampleClock(10, slack_s=0.5)
    clock.mark("k", t(0))
    assert clock.due("k", t(9.6)) and not clock.due("k", t(9.4))  # within the slack
    clock.mark("k", t(9.6))  # fills the slot at 10: the next is at 20, not 19.6
    assert not clock.due("k", t(19.4)) and clock.due("k", t(19.5))
    clock.mark("k", t(47))  # slots 20, 30 and 40 passed in an outage; 50 is next
    assert not clock.due("k", t(49.4)) and clock.due("k", t(49.5))
    clock.mark("k", t(49.5))
    clock.mark("k", t(53))  # an event's sample between slots: the next is ten seconds on
    assert not clock.due("k", t(62)) and clock.due("k", t(62.5))
    with pytest.raises(ValueError):
        SampleClock(10, slack_s=10)


def test_a_supervisor_restart_pairs_while_the_old_record_is_still_listed():
    tracker = Tracker(SITE)
    tracker.observe([stat("old", tob=0.0, ts=9.0)], t(9))
    tracker.observe([stat("old", status="Stopped", tob=0.0, ts=10.0)], t(10))
    # The new run is up before the old one's Stopped record has expired.
    events = tracker.observe(
        [stat("old", status="Stopped", tob=0.0, ts=10.0), stat("new", tob=10.5, ts=11.0)], t(11)
    )
    assert kinds(events) == [("new", APPEARED), ("new", RESTARTED)]
    assert events[1].detail["previous"] == "old"
    assert events[1].detail["downtime_s"] == 0.5
    # When the old record expires it vanishes, and is not paired a second time.
    events = tracker.observe([stat("new", tob=10.5, ts=14.0)], t(14))
    assert kinds(events) == [("old", VANISHED)]
    events = tracker.observe([stat("new", tob=10.5), stat("third", tob=20.0)], t(20))
    assert kinds(events) == [("third", APPEARED)]


def test_a_running_neighbour_is_not_a_restart():
    tracker = Tracker(SITE)
    tracker.observe([stat("a", tob=0.0)], t(5))
    events = tracker.observe([stat("a", tob=0.0), stat("b", tob=4.0)], t(6))
    assert kinds(events) == [("b", APPEARED)]


def test_a_cluster_found_late_appeared_at_its_birth_within_the_window():
    """Poll.late: a shared keyspace's discovery found these after they started."""
    tracker = Tracker(SITE)
    tracker.observe([stat("old")], t(0))
    found = [
        stat("old"),
        stat("born", tob=40),  # born inside [since, poll]: dated by its tob
        stat("fast", host="web2", tob=90),  # host clock ahead of the daemon's: the poll time
        stat("slow", host="web3", tob=-5),  # behind: no earlier than the window allows
        stat("plain", host="web4", tob=50),  # not late: found at this poll, as before
    ]
    late = {"born": t(30), "fast": t(30), "slow": t(30)}

    events = tracker.observe(found, t(60), late)

    at = {e.cluster_id: e.at for e in events if e.kind == APPEARED}
    assert at == {"born": t(40), "fast": t(60), "slow": t(30), "plain": t(60)}
    # A restart found late pairs as it would have: its events share the birth time.
    tracker = Tracker(SITE)
    tracker.observe([stat("a", tob=0)], t(1))
    tracker.observe([], t(10))
    events = tracker.observe([stat("b", tob=20)], t(50), {"b": t(12)})
    assert [(e.kind, e.at) for e in events] == [(APPEARED, t(20)), (RESTARTED, t(20))]
