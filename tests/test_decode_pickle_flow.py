"""qwatch.decode.pickle_flow: which bytes of a Stat pickle alone make one field, and the memo's
use of it.

- On real pickles: a slot for every number and datetime field; new bytes in a slot change,
  under the real unpickler, that key's value and nothing else, into what the memo makes.
- On crafted pickles that decode fine but share a value between keys, set a key twice,
  reach the state dict through the memo, build twice, or change an opcode in the same
  layout: no slot where the value is not the key's alone, and through the memo the same
  verdict as without it, on the full decode.
- Bytes the analysis never reads do not change it (the memo reuses it on that basis).
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any
from unittest import mock

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import qwatch.decode.memo
import qwatch.decode.safe_pickle
from qwatch.decode import DecodeError, DecodeMemo
from qwatch.decode import memo as record_memo
from qwatch.decode.memo import Base, layout_of
from qwatch.decode.pickle_flow import DATETIME_KEYS, INT_KEYS, TEXT_KEYS, Flow, Slot, analyse
from qwatch.decode.safe_pickle import OpcodeLayout, stat_state
from qwatch.values import ClusterStat
from tests.records import (
    BASE,
    CRAFTED,
    KEY,
    TEXT_CAPTURES,
    TOB,
    capture_pickle,
    duplicate_key,
    outcome,
    py2_stat_pickle,
    py2_state,
    shared_int,
    sign,
    stat_pickle,
    state,
    value_at,
)


@pytest.fixture(autouse=True)
def _fresh_shared_memo() -> None:
    """Each test starts with no layouts or analyses shared from another."""
    record_memo.forget_shared()


# --- the pickles (crafted ones in tests/records.py) -----------------------------------------


REAL = [
    *(capture_pickle(name) for name in TEXT_CAPTURES),
    BASE,
    py2_stat_pickle(py2_state()),  # GLOBAL, SHORT_BINSTRING datetimes, BININT
]


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_pickles_decode(name: str) -> None:
    """Each crafted pickle is a record the full decode accepts: a base the memo could keep."""
    assert isinstance(outcome(sign(CRAFTED[name][0]())), ClusterStat)


def test_crafted_pickles_mean_what_they_say() -> None:
    assert outcome(sign(duplicate_key())).task_q_size == 7
    shared = outcome(sign(shared_int()))
    assert shared.task_q_size == shared.done_q_size == 0
    for name in ("shared datetime", "shared datetime arguments", "shared datetime bytes"):
        stat = outcome(sign(CRAFTED[name][0]()))
        assert stat.timestamp == stat.tob == TOB, name


# --- the analysis ---------------------------------------------------------------------------


def slot_keys(flow: Flow | None) -> set[str]:
    assert flow is not None
    return {slot.key for slot in flow.slots}


def slotted(fields: dict[str, Any]) -> set[str]:
    """The keys of a plain Stat state that get slots: numbers, datetimes, the host, a
    non-empty workers list, the cluster id (a pid before django-q 1.2, a UUID after)."""
    numbers = {key for key in INT_KEYS & fields.keys() if type(fields[key]) in (int, uuid.UUID)}
    workers = {"workers"} if fields["workers"] else set()
    return numbers | DATETIME_KEYS | TEXT_KEYS | workers


@pytest.mark.parametrize("data", REAL, ids=[*TEXT_CAPTURES, "built", "python 2"])
def test_a_slot_for_every_field_a_value_makes(data: bytes) -> None:
    """Every field of a real record but its status; a slot per worker."""
    fields = stat_state(data)
    assert slot_keys(analyse(data)) == slotted(fields)
    assert "cluster_id" in slotted(fields)
    flow = analyse(data)
    assert flow is not None
    assert sum(slot.key == "workers" for slot in flow.slots) == len(fields["workers"])


@pytest.mark.parametrize("name", CRAFTED)
def test_no_slot_for_a_value_that_is_not_the_keys_alone(name: str) -> None:
    make, without = CRAFTED[name]
    data = make()
    flow = analyse(data)
    if without == {"*"}:
        assert flow is None
    else:
        keys = slot_keys(flow)
        assert not keys & without
        assert keys == slotted(stat_state(data)) - without  # the others still are


def test_analysis_gives_up_on_what_it_does_not_follow() -> None:
    tiny = [
        b"\x80\x04.",  # nothing to return
        b"\x80\x04K\x01(.",  # a MARK left open
        b"\x80\x04}\x94(\x8c\x01aK\x01s.",  # SETITEM reaching below the MARK
        b"\x80\x04h\x00.",  # BINGET of an unset memo index
        b"\x80\x04K\x01q\x05.",  # BINPUT skipping memo indices
        b"\x80\x04]\x94K\x01s.",  # SETITEM into a list
        b"\x80\x04K\x01",  # no STOP
        b"\x80\x04\x8c\x09ab.",  # a literal running past the end
    ]
    for data in tiny:
        assert analyse(data) is None, data
    assert analyse(b"\x80\x04K\x01.") is None  # no BUILD: not a Stat
    assert analyse(BASE.replace(b"\x8c\x03pid", b"\x8c\x03\xff\xfe\xfd")) is None  # not UTF-8


def slot_of(data: bytes, key: str) -> Slot:
    flow = analyse(data)
    assert flow is not None
    return next(slot for slot in flow.slots if slot.key == key)


def with_bytes(data: bytes, slot: Slot, new: bytes) -> bytes:
    return data[: slot.start] + new + data[slot.start + slot.width :]


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.sampled_from(REAL + [make() for make, _ in CRAFTED.values()]).flatmap(
        lambda data: st.tuples(
            st.just(data),
            st.sampled_from((analyse(data) or Flow((), ())).slots or (None,)),
            st.randoms(use_true_random=False),
        )
    )
)
def test_a_slot_changes_its_key_and_nothing_else(case: tuple[bytes, Slot | None, Any]) -> None:
    """The claim itself, under the real unpickler: new bytes in a slot give the state with
    that key's value replaced by what Base.changes makes of them, all else equal."""
    data, slot, rng = case
    if slot is None:
        return
    before = stat_state(data)
    stat = outcome(sign(data))
    if not isinstance(stat, ClusterStat):
        return
    bits = int.from_bytes(data, "little")
    base = Base.of(data, bits, layout_of(data, bits), before, stat)
    assert base is not None
    new = bytes(rng.randrange(256) for _ in range(slot.width))
    if rng.random() < 0.5 and slot.width == 10:  # mostly a valid datetime's state
        new = datetime(rng.randrange(1, 10000), 12, 31, 23, 59).__reduce__()[1][0]
    changed = with_bytes(data, slot, new)
    found = base.changes(changed, int.from_bytes(changed, "little"))
    try:
        after = stat_state(changed)
    except DecodeError:
        assert found is None  # what the unpickler refuses, the memo cannot make
        event("refused")
        return
    event(f"{slot.key} changed")
    assert found is not None
    made = dict(found[1])
    assert made.keys() <= {slot.key}
    value = made.get(slot.key, before[slot.key])
    assert value == after[slot.key]
    assert type(value) is type(after[slot.key])
    assert {k: v for k, v in after.items() if k != slot.key} == {
        k: v for k, v in before.items() if k != slot.key
    }


@settings(max_examples=300, deadline=None, database=None)
@given(st.sampled_from(REAL), st.randoms(use_true_random=False))
def test_bytes_the_analysis_does_not_read_do_not_change_it(data: bytes, rng: Any) -> None:
    """What the memo's reuse of an analysis rests on."""
    flow = analyse(data)
    assert flow is not None
    ranges = [*flow.unread, *((slot.start, slot.width) for slot in flow.slots)]
    changed = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        start, width = rng.choice(ranges)
        changed[start + rng.randrange(width)] = rng.randrange(256)
    assert analyse(bytes(changed)) == flow


# --- through the memo -----------------------------------------------------------------------


def agrees(memo: DecodeMemo, data: bytes) -> Any:
    """Decode `data` through the memo and without: the same verdict; that verdict."""
    raw = sign(data)
    verdict = outcome(raw, memo)
    assert verdict == outcome(raw)
    return verdict


def test_a_shared_value_is_decoded_in_full(full_decodes: list[bytes]) -> None:
    """done_q_size's int is task_q_size's too: new bytes there change both, so no fast path."""
    data = shared_int()
    memo: DecodeMemo = {}
    agrees(memo, data)
    agrees(memo, data)
    assert memo[KEY].bases  # analysed: the other fields are slots
    done = value_at(data, "done_q_size") + 1
    for value in (5, 0xFF):
        before = len(full_decodes)
        data = data[:done] + bytes([value]) + data[done + 1 :]
        stat = agrees(memo, data)
        assert stat.task_q_size == stat.done_q_size == value
        assert len(full_decodes) == before + 2  # the memo's and the memo-less decode
    # The fields that are theirs alone still take the fast path.
    pusher = slot_of(data, "pusher")
    before = len(full_decodes)
    assert agrees(memo, with_bytes(data, pusher, b"\x10\x27")).pusher == 10000
    assert len(full_decodes) == before + 1


@pytest.mark.parametrize("name", CRAFTED)
def test_crafted_pickles_through_the_memo(name: str) -> None:
    """Every byte of each crafted pickle changed in turn (most such records are refused):
    the memo's verdict is the memo-less one."""
    data = CRAFTED[name][0]()
    rng = random.Random(name)
    memo: DecodeMemo = {}
    agrees(memo, data)
    agrees(memo, data)
    for at in range(len(data)):
        changed = bytearray(data)
        changed[at] = rng.choice([changed[at] ^ 1, changed[at] ^ 0x80, rng.randrange(256)])
        agrees(memo, bytes(changed))


def test_an_opcode_changed_in_a_slots_place_is_decoded_in_full(full_decodes: list[bytes]) -> None:
    """Same length, same slot bytes: a BININT1 made BINGET (same width) or BINPUT is a change
    outside the slots, whatever it does to the types."""
    memo: DecodeMemo = {}
    agrees(memo, BASE)
    agrees(memo, BASE)
    task = value_at(BASE, "task_q_size")
    for opcode in (b"h", b"q", b"K"):
        for payload in (b"\x00", b"\x03", b"\x04"):
            data = BASE[:task] + opcode + payload + BASE[task + 2 :]
            before = len(full_decodes)
            verdict = agrees(memo, data)
            if opcode != b"K":
                assert len(full_decodes) == before + 2, (opcode, payload, verdict)


def test_a_negative_int_in_a_signed_slot_is_refused_as_the_full_decode_does() -> None:
    data = py2_stat_pickle(py2_state())
    memo: DecodeMemo = {}
    agrees(memo, data)
    agrees(memo, data)
    task = slot_of(data, "task_q_size")
    assert agrees(memo, with_bytes(data, task, b"\xff\xff\xff\xff")) == "bad field task_q_size"
    assert agrees(memo, with_bytes(data, task, b"\x07\x00\x00\x00")).task_q_size == 7


def test_a_slot_that_fails_its_check_falls_back_to_the_full_decode(
    full_decodes: list[bytes],
) -> None:
    """Two bad fields at once: the reason is the full decode's (its first, in field order)."""
    data = py2_stat_pickle(py2_state())
    memo: DecodeMemo = {}
    agrees(memo, data)
    agrees(memo, data)
    both = with_bytes(data, slot_of(data, "task_q_size"), b"\xff\xff\xff\xff")
    both = with_bytes(both, slot_of(data, "sentinel"), b"\xfe\xff\xff\xff")
    before = len(full_decodes)
    assert agrees(memo, both) == "bad field sentinel"
    assert len(full_decodes) == before + 2


def test_analysis_is_reused_for_the_same_flow(full_decodes: list[bytes]) -> None:
    """The status text changed for one of the same length (a value, not a slot): decoded in
    full, but the key's analysis is reused; then rewrites of the slots are fast again."""
    data = capture_pickle("q2_url_tz_working.txt")
    memo: DecodeMemo = {}
    with mock.patch.object(
        qwatch.decode.memo, "analyse", wraps=qwatch.decode.memo.analyse
    ) as analysed:
        agrees(memo, data)
        agrees(memo, data)
        assert analysed.call_count == 1
        replaced = data.replace(b"\x8c\x07Working", b"\x8c\x07Stopped")
        before = len(full_decodes)
        assert agrees(memo, replaced).status == "Stopped"
        assert len(full_decodes) == before + 2
        assert analysed.call_count == 1
        assert len(memo[KEY].bases) == 1  # it replaced the base of the same flow
        assert memo[KEY].bases[0].bits == int.from_bytes(replaced, "little")
        busier = with_bytes(replaced, slot_of(replaced, "task_q_size"), b"\x21")
        before = len(full_decodes)
        assert agrees(memo, busier).task_q_size == 0x21
        assert len(full_decodes) == before + 1  # only the memo-less decode
        assert analysed.call_count == 1


def test_a_key_keeps_a_base_per_flow(full_decodes: list[bytes]) -> None:
    """A cluster flipping between Idle and Working, its queues moving: after one full
    decode of each, every rewrite takes the fast path."""
    memo: DecodeMemo = {}
    records = [
        stat_pickle(state(status=status, task_q_size=size, timestamp=TOB.replace(second=size)))
        for size in range(3, 12)
        for status in ("Idle", "Working")
    ]
    memo_decodes = 0
    for data in records:
        before = len(full_decodes)
        agrees(memo, data)
        memo_decodes += len(full_decodes) - before - 1
    assert memo_decodes == 2  # the first Idle, the first Working
    assert len(memo[KEY].bases) == 2


def test_key_memo_keeps_nothing_it_cannot_analyse() -> None:
    data = duplicate_key()
    bits = int.from_bytes(data, "little")
    stat = outcome(sign(data))
    assert isinstance(stat, ClusterStat)
    assert Base.of(data, bits, layout_of(data, bits), stat_state(data), stat) is None


def test_an_analysis_serves_every_key_of_the_same_flow(full_decodes: list[bytes]) -> None:
    """Clusters on other hosts (same length), with other pids and ids: their pickles differ
    only in values and unread text, so one analysis (and one walk) serves them all."""
    records = [
        stat_pickle(state(host=f"worker-{n}", pid=4000 + n, cluster_id=uuid.UUID(int=n << 64)))
        for n in range(1, 6)
    ]
    assert len({len(data) for data in records}) == 1
    memo: DecodeMemo = {}
    with (
        mock.patch.object(qwatch.decode.memo, "analyse", wraps=analyse) as analysed,
        mock.patch.object(OpcodeLayout, "of", wraps=OpcodeLayout.of) as walked,
    ):
        for n, data in enumerate(records):
            assert outcome(sign(data), memo, key=n) == outcome(sign(data))
            assert memo[n].bases
        assert analysed.call_count == 1
        assert walked.call_count == 1
    # And each key's next rewrite takes the fast path.
    for n, data in enumerate(records):
        busier = with_bytes(data, slot_of(data, "task_q_size"), b"\x09")
        before = len(full_decodes)
        assert outcome(sign(busier), memo, key=n).task_q_size == 9
        assert len(full_decodes) == before


def test_shared_tables_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record_memo, "_MAX_LENGTHS", 3)
    monkeypatch.setattr(record_memo, "_LAYOUTS_PER_LENGTH", 2)
    memo: DecodeMemo = {}
    for n in range(1, 12):  # hosts of 11 lengths: 11 pickle lengths
        assert isinstance(outcome(sign(stat_pickle(state(host="h" * n))), memo, key=n), ClusterStat)
    assert len(record_memo._LAYOUTS) == 3
    assert all(len(layouts) <= 2 for layouts in record_memo._LAYOUTS.values())
