"""The decoder's fast paths give the verdicts the slow paths would, and are actually taken.

- signature.Verifier (HMAC keys derived once) against Django's TimestampSigner.unsign;
- safe_pickle.OpcodeLayout (the opcode walk remembered per layout) against the walk;
- record_memo.KeyMemo (a rewrite that changed only slots, bytes that alone make one field,
  rebuilt from those bytes) against a decoder that keeps no memo. Which bytes are slots
  (qwatch.decode.pickle_flow), and crafted pickles that share values, are tested in
  the pickle_flow tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from django.core.signing import BASE62_ALPHABET, BadSignature, Signer, TimestampSigner
from django.utils.translation import gettext_lazy
from hypothesis import event, given, settings
from hypothesis import strategies as st

import qwatch.decode.safe_pickle
import qwatch.decode.signature
from qwatch.decode import DecodeError, DecodeMemo, Decoder
from qwatch.decode import memo as record_memo
from qwatch.decode.pickle_flow import analyse
from qwatch.decode.safe_pickle import OpcodeLayout, check_opcodes
from qwatch.decode.signature import MAX_TIMESTAMP_LEN, Verifier
from qwatch.values import ClusterStat
from tests.helpers import CAPTURE_ROTATED_SECRET as ROTATED
from tests.helpers import CAPTURE_SECRET as SECRET
from tests.helpers import CAPTURE_SITE as NAME
from tests.helpers import EXPECTED
from tests.records import (
    CRAFTED,
    DECODER,
    KEY,
    NOTZ,
    TEXT_CAPTURES,
    Ops,
    capture_pickle,
    hostile_calls,
    outcome,
    py2_stat_pickle,
    py2_state,
    read_record,
    reframed,
    sign,
    stat_pickle,
    state,
    whole,
)


@pytest.fixture(autouse=True)
def _fresh_shared_memo() -> None:
    """Each test starts with no layouts or analyses shared from another."""
    record_memo.forget_shared()


# --- signature: derived HMAC keys ----------------------------------------------------------


def django_verdict(text: str, name: str, secret: str, fallbacks: list[str]) -> tuple[str, ...]:
    """What Django's TimestampSigner says, with either hash (the signature's length picks)."""
    verdicts = []
    for algorithm in ("sha256", "sha1"):
        signer = TimestampSigner(
            key=secret, salt=name, algorithm=algorithm, fallback_keys=fallbacks
        )
        try:
            return ("ok", signer.unsign(text))
        except BadSignature:
            verdicts.append("bad signature")
        except (ValueError, IndexError):  # what b62_decode raises
            verdicts.append("bad timestamp")
    return ("bad timestamp",) if "bad timestamp" in verdicts else ("bad signature",)


def qwatch_verdict(verifier: Verifier, text: str) -> tuple[str, ...]:
    try:
        return ("ok", verifier.unsign(text))
    except DecodeError as err:
        return (err.reason,)


def timestamp_field(text: str) -> str:
    """The base62 time of a signed value: between its last two ":" (or from the start)."""
    return text.rpartition(":")[0].rpartition(":")[2]


SECRETS = st.text(min_size=1, max_size=30)
TAMPER_CHARS = "aAzZ09-_:=.é\x00"


@st.composite
def signed_values(draw: Callable[..., Any]) -> tuple[str, str, list[str], str]:
    """(site name, secret, fallbacks, a value signed by one of them or by another key,
    sometimes with a timestamp of our choosing, sometimes tampered with afterwards)."""
    name = draw(st.text(min_size=1, max_size=20))
    secret = draw(SECRETS)
    fallbacks = draw(st.lists(SECRETS, max_size=2))
    key = draw(st.sampled_from([secret, *fallbacks, "not-one-of-the-keys"]))
    algorithm = draw(st.sampled_from(["sha256", "sha1"]))
    value = draw(st.text(max_size=40))
    if draw(st.booleans()):
        text = TimestampSigner(key=key, salt=name, algorithm=algorithm, fallback_keys=[]).sign(
            value
        )
    else:  # signed, so that only the check of the time decides
        stamp = draw(st.text(BASE62_ALPHABET, min_size=1, max_size=MAX_TIMESTAMP_LEN))
        where = draw(st.integers(0, len(stamp)))
        change = draw(st.sampled_from(["none", "sign", "bad character", "long", "empty"]))
        if change == "sign":  # "-" and "-0" are numbers to Django's b62_decode, so here too
            stamp = "-" + stamp[: draw(st.integers(0, len(stamp)))]
        elif change == "bad character":
            stamp = stamp[:where] + draw(st.sampled_from("!é +/=.-")) + stamp[where:]
        elif change == "long":
            stamp += "0" * draw(st.integers(1, 3))
        elif change == "empty":
            stamp = ""
        signer = Signer(key=key, salt=name, algorithm=algorithm, fallback_keys=[])
        text = signer.sign(f"{value}:{stamp}")
    chars = list(text)
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        where = draw(st.integers(0, len(chars)))
        new = draw(st.sampled_from(["", *TAMPER_CHARS]))
        chars[where : where + draw(st.integers(0, 1))] = new
    return name, secret, fallbacks, "".join(chars)


@pytest.mark.parametrize("derived", [True, False], ids=["derived keys", "django signers"])
@settings(max_examples=300, deadline=None, database=None)
@given(signed_values())
def test_signature_verdicts_are_djangos(
    derived: bool, case: tuple[str, str, list[str], str]
) -> None:
    name, secret, fallbacks, text = case
    if derived:
        verifier = Verifier(name, secret, fallbacks)
        assert set(verifier._fast) == {43, 27}  # the fast path is what is tested here
    else:  # as if Django derived its keys some other way
        with mock.patch.object(qwatch.decode.signature, "derive_hmac_keys", return_value=None):
            verifier = Verifier(name, secret, fallbacks)
        assert not verifier._fast
    ours = qwatch_verdict(verifier, text)
    theirs = django_verdict(text, name, secret, fallbacks)
    event(ours[0])
    signature_length = len(text) - text.rfind(":") - 1
    too_long = len(timestamp_field(text)) > MAX_TIMESTAMP_LEN
    if ":" in text and signature_length in (43, 27) and too_long:
        # Refused before any HMAC: no real time is that long (Django would take it).
        assert ours == ("bad timestamp",)
    else:
        assert ours == theirs


def test_derived_keys_sign_as_django_does() -> None:
    for algorithm in ("sha256", "sha1"):
        keys = qwatch.decode.signature.derive_hmac_keys(NAME, [SECRET, ROTATED], algorithm)
        assert keys is not None
        for key, hmac_key in zip([SECRET, ROTATED], keys, strict=True):
            ours = qwatch.decode.signature.b64_signature(hmac_key, b"value:1xWyAG", algorithm)
            signer = Signer(key=key, salt=NAME, algorithm=algorithm, fallback_keys=[])
            assert ours.decode() == signer.signature("value:1xWyAG")


def test_a_django_deriving_keys_otherwise_falls_back_to_its_signers() -> None:
    class OtherSigner(Signer):
        def signature(self, value: str | bytes, key: str | bytes | None = None) -> str:
            return "not what qwatch computes"

    with mock.patch.object(qwatch.decode.signature, "Signer", OtherSigner):
        decoder = Decoder(NAME, SECRET, fallback_keys=[ROTATED])
    assert not decoder._verifier._fast
    for name in EXPECTED:  # every capture still verifies, through Django's TimestampSigner
        assert isinstance(outcome(read_record(name), decoder=decoder), ClusterStat)
    assert outcome(read_record("q2_url_tz_idle.txt"), decoder=Decoder(NAME, "wrong")) == (
        "bad signature"
    )


# --- OpcodeLayout: the walk remembered per layout ------------------------------------------

LAYOUT_PICKLES = [
    *(capture_pickle(name) for name in TEXT_CAPTURES),
    stat_pickle(state(), protocol=4),
    stat_pickle(state(tob=datetime(2026, 1, 2, 12, 0), timestamp=datetime(2026, 1, 2, 12, 30))),
    py2_stat_pickle(py2_state()),  # GLOBAL opcodes, whose text is structure
]


@st.composite
def same_length_mutations(draw: Callable[..., Any], original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[where] ^= 1 << draw(st.integers(0, 7))
        else:
            data[where] = draw(st.integers(0, 255))
    length_change = draw(st.sampled_from(["none"] * 8 + ["truncated", "extended"]))
    if length_change == "truncated":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif length_change == "extended":  # b"\0" leaves the little-endian int as it was
        data += draw(st.binary(min_size=1, max_size=3))
    return bytes(data)


def check_layout_sound(original: bytes, data: bytes) -> bool:
    """A pickle the layout admits walks exactly as the original did; True if admitted."""
    layout = OpcodeLayout.of(original)
    if not layout.admits(data):
        return False
    check_opcodes(data)  # the walk passes it ...
    assert OpcodeLayout.of(data) == layout  # ... reading the same bytes as structure
    return True


@settings(max_examples=400, deadline=None, database=None)
@given(
    st.sampled_from(LAYOUT_PICKLES).flatmap(
        lambda data: st.tuples(st.just(data), same_length_mutations(data))
    )
)
def test_layout_admits_nothing_the_walk_refuses(case: tuple[bytes, bytes]) -> None:
    check_layout_sound(*case)


def test_layout_admits_value_changes_and_refuses_structure_changes() -> None:
    """The property above is not vacuous: many mutations are admitted (values), many not."""
    rng = random.Random(15)
    admitted = refused = 0
    for _ in range(3000):
        original = rng.choice(LAYOUT_PICKLES)
        data = bytearray(original)
        for _ in range(rng.choice((1, 1, 2, 3))):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if check_layout_sound(original, bytes(data)):
            admitted += 1
        else:
            refused += 1
    assert admitted > 1000 and refused > 500


@pytest.mark.parametrize("data", LAYOUT_PICKLES)
def test_layout_admits_only_its_own_length(data: bytes) -> None:
    layout = OpcodeLayout.of(data)
    assert layout.admits(data)
    for other in (data + b"\0", data + b".", data[:-1], data[:-1] + b"\0\0"):
        assert not layout.admits(other)
        with pytest.raises(DecodeError):
            check_opcodes(other)


# --- KeyMemo: rewrites of the slots -----------------------------------------------------------


def timestamp_at(data: bytes) -> int:
    """Where the timestamp's 10 state bytes are in a Django Q pickle of protocol 4 or 5."""
    at = data.rindex(b"\x8c\x09timestamp\x94h") + 16
    assert data[at - 2 : at] == b"C\x0a"
    return at


def packed(when: datetime) -> bytes:
    """A datetime's pickled state: its wall time in 10 bytes."""
    state: bytes = when.replace(tzinfo=None).__reduce__()[1][0]
    return state


def retimed(data: bytes, state: bytes) -> bytes:
    at = timestamp_at(data)
    return data[:at] + state + data[at + 10 :]


@pytest.fixture
def walks(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The pickles walked to mark their layout (OpcodeLayout.of)."""
    calls: list[bytes] = []
    real = OpcodeLayout.of.__func__  # type: ignore[attr-defined]

    def counting(cls: type[OpcodeLayout], data: bytes) -> OpcodeLayout:
        calls.append(data)
        return real(cls, data)  # type: ignore[no-any-return]

    monkeypatch.setattr(OpcodeLayout, "of", classmethod(counting))
    return calls


def warm(memo: DecodeMemo, data: bytes, key: Hashable = KEY, decoder: Decoder = DECODER) -> None:
    """Two reads of the key: the first decoded in full (the base), the second from its slots."""
    start = datetime(2026, 11, 27, 15, 0, 0)
    for seconds in (0, 1):
        raw = sign(retimed(data, packed(start + timedelta(seconds=seconds))))
        assert isinstance(outcome(raw, memo, key, decoder), ClusterStat)
    assert memo[key].bases


@pytest.mark.parametrize("name", TEXT_CAPTURES)
def test_timestamp_only_rewrites_take_the_fast_path(name: str, full_decodes: list[bytes]) -> None:
    data = capture_pickle(name)
    memo: DecodeMemo = {}
    warm(memo, data)
    assert len(full_decodes) == 1
    start = DECODER.decode(read_record(name)).timestamp.replace(tzinfo=None)
    for step in range(1, 6):
        when = start + timedelta(seconds=step / 2)
        raw = sign(retimed(data, packed(when)))
        before = len(full_decodes)
        fast = DECODER.decode(raw, memo, KEY)
        assert len(full_decodes) == before  # rebuilt from the 10 bytes alone
        assert fast == DECODER.decode(raw)
        assert fast.timestamp == when.replace(tzinfo=UTC)  # the captures' times are UTC


def test_naive_rewrite_read_in_the_site_time_zone(full_decodes: list[bytes]) -> None:
    paris = Decoder(NAME, SECRET, time_zone="Europe/Paris")
    data = capture_pickle(NOTZ)
    memo: DecodeMemo = {}
    warm(memo, data, decoder=paris)
    summer = datetime(2026, 7, 1, 12, 0, 0, 250000)  # UTC+2, where the base was UTC+1
    raw = sign(retimed(data, packed(summer)))
    before = len(full_decodes)
    fast = paris.decode(raw, memo, KEY)
    assert len(full_decodes) == before
    assert fast == paris.decode(raw)
    assert fast.timestamp == datetime(2026, 7, 1, 10, 0, 0, 250000, tzinfo=UTC)


def slot_bytes(data: bytes, key: str) -> tuple[int, int]:
    """(start, end) of the slot making `key` in `data`."""
    flow = analyse(data)
    assert flow is not None
    slot = next(slot for slot in flow.slots if slot.key == key)
    return slot.start, slot.start + slot.width


def with_value(data: bytes, key: str, new: bytes) -> bytes:
    start, end = slot_bytes(data, key)
    assert len(new) == end - start
    return data[:start] + new + data[end:]


def test_queue_sizes_and_reincarnations_take_the_fast_path(full_decodes: list[bytes]) -> None:
    data = capture_pickle("q2_url_tz_working.txt")
    expected = EXPECTED["q2_url_tz_working.txt"]
    memo: DecodeMemo = {}
    warm(memo, data)
    for step in range(1, 4):
        busier = retimed(data, packed(datetime(2026, 11, 27, 16, 0, step)))
        busier = with_value(busier, "task_q_size", bytes([expected["task_q_size"] + step]))
        busier = with_value(busier, "done_q_size", bytes([step]))
        busier = with_value(busier, "reincarnations", bytes([step]))
        before = len(full_decodes)
        stat = DECODER.decode(sign(busier), memo, KEY)
        assert len(full_decodes) == before  # rebuilt from the changed bytes alone
        assert stat == DECODER.decode(sign(busier))
        assert (stat.task_q_size, stat.done_q_size, stat.reincarnations) == (
            expected["task_q_size"] + step,
            step,
            step,
        )
        assert stat.timestamp == datetime(2026, 11, 27, 16, 0, step, tzinfo=UTC)


def test_worker_host_and_cluster_id_changes_take_the_fast_path(full_decodes: list[bytes]) -> None:
    """A worker's pid (a list item), the host (same length), the cluster id (the UUID's
    LONG1): slots, rebuilt from their bytes."""
    data = capture_pickle("q2_url_tz_working.txt")
    worker = data.index(b"]\x94(M") + 4
    host = data.index(b"\x8c\x02vm") + 2
    uuid_int = data.index(b"\x8a\x10") + 2
    changes = {
        "worker": data[:worker] + b"\x01\x02" + data[worker + 2 :],
        "host": data[:host] + b"VM" + data[host + 2 :],
        "cluster id": data[:uuid_int] + b"\xab" + data[uuid_int + 1 :],
    }
    for kind, changed in changes.items():
        memo: DecodeMemo = {}
        warm(memo, data)
        before = len(full_decodes)
        stat = DECODER.decode(sign(changed), memo, KEY)
        assert len(full_decodes) == before, kind
        assert stat == DECODER.decode(sign(changed)), kind
        assert stat != DECODER.decode(sign(data)), kind


def test_other_changes_are_decoded_in_full(full_decodes: list[bytes]) -> None:
    """The status text (same length), a pid's width: not slots, so the full decode runs."""
    data = capture_pickle("q2_url_tz_working.txt")
    pusher = data.index(b"pusher\x94M") + 7
    changes = {
        "status": data.replace(b"\x8c\x07Working", b"\x8c\x07Stopped"),
        "pusher's width": reframed(data[:pusher] + b"K\x07" + data[pusher + 3 :]),
    }
    for kind, changed in changes.items():
        assert changed != data
        memo: DecodeMemo = {}
        warm(memo, data)
        before = len(full_decodes)
        stat = DECODER.decode(sign(changed), memo, KEY)
        assert len(full_decodes) == before + 1, kind
        assert stat == DECODER.decode(sign(changed)), kind


def test_layouts_skip_the_walk_for_every_key(walks: list[bytes]) -> None:
    """Clusters flipping between Idle and Working, their queues moving: two layouts, walked
    once each; then every pickle, of any key, is admitted by one of them."""
    memo: DecodeMemo = {}
    records = [
        sign(stat_pickle(state(status=gettext_lazy(status), task_q_size=size)))
        for size in range(3, 9)
        for status in ("Idle", "Working")
    ]
    for n, raw in enumerate(records):
        assert outcome(raw, memo, key=n % 3) == outcome(raw)
        assert len(walks) == min(n + 1, 2)  # Idle's layout marked, then Working's
    assert sum(map(len, record_memo._LAYOUTS.values())) == 2


@pytest.mark.parametrize(
    ("state_bytes", "reason"),
    [
        (b"\x07\xea\x0b\x1b\x1e\x00\x00\x00\x00\x00", "bad field timestamp"),  # 30 o'clock
        (b"\x07\xea\x0b\x1b\x0f\x3c\x00\x00\x00\x00", "bad field timestamp"),  # minute 60
        (b"\x07\xea\x02\x1f\x00\x00\x00\x00\x00\x00", "bad field timestamp"),  # 31 February
        (b"\x07\xea\x0b\x1b\x0f\x00\x00\xff\xff\xff", "bad field timestamp"),  # 16777215 us
        (b"\x00\x00\x0b\x1b\x0f\x00\x00\x00\x00\x00", "bad field timestamp"),  # year 0
        (b"\x07\xea\x0d\x1b\x0f\x00\x00\x00\x00\x00", None),  # month 13: as the full decode says
        (b"\x07\xea\x00\x1b\x0f\x00\x00\x00\x00\x00", None),  # month 0
    ],
)
def test_invalid_timestamp_on_a_warm_key_is_refused(
    state_bytes: bytes, reason: str | None, full_decodes: list[bytes]
) -> None:
    data = capture_pickle("q2_url_tz_idle.txt")
    memo: DecodeMemo = {}
    warm(memo, data)
    raw = sign(retimed(data, state_bytes))
    verdict = outcome(raw, memo)
    assert isinstance(verdict, str)
    assert verdict == outcome(raw)
    if reason is not None:
        assert verdict == reason
    # The refused record left the key's base as it was: the next rewrite is fast again.
    before = len(full_decodes)
    raw = sign(retimed(data, packed(datetime(2026, 11, 27, 16, 0))))
    assert outcome(raw, memo) == outcome(raw)
    assert len(full_decodes) == before + 1  # the memo-less decode only


def hostile_pickles(marker: Path) -> Iterator[tuple[str, bytes]]:
    """Pickles that must be refused, some laid out exactly like the warm key's."""
    data = capture_pickle("q2_url_tz_idle.txt")
    for kind, (ops, _) in hostile_calls(marker).items():
        yield kind, py2_stat_pickle(py2_state(host=Ops(ops)))
    # Same length, same structure: only the text of STACK_GLOBAL's strings (values) differs.
    yield "builtins global", data.replace(b"\x8c\x08datetime", b"\x8c\x08builtins", 1)
    yield (
        "multiprocessing.Pool",
        data.replace(
            b"\x8c\x0fdjango_q.status\x94\x8c\x04Stat", b"\x8c\x0fmultiprocessing\x94\x8c\x04Pool"
        ),
    )
    # Next to the timestamp's 10 bytes: the memo index of its tzinfo (a value to the walk,
    # here the Stat class), and TUPLE2 made TUPLE1.
    at = timestamp_at(data)
    yield "tzinfo from the memo", data[: at + 12] + b"\x02" + data[at + 13 :]
    yield "TUPLE1", data[: at + 13] + b"\x85" + data[at + 14 :]


def test_hostile_records_on_a_warm_key(tmp_path: Path, full_decodes: list[bytes]) -> None:
    marker = tmp_path / "marker"
    data = capture_pickle("q2_url_tz_idle.txt")
    genuine = sign(retimed(data, packed(datetime(2026, 11, 27, 16, 0))))
    same_layout = []
    for kind, pickled in hostile_pickles(marker):
        memo: DecodeMemo = {}
        warm(memo, data)
        known = record_memo._LAYOUTS.get(len(pickled), [])
        if any(entry.layout.admits(pickled) for entry in known):
            same_layout.append(kind)
        raw = sign(pickled)
        verdict = outcome(raw, memo)
        assert isinstance(verdict, str), kind
        assert verdict == outcome(raw), kind
        # Under a key never seen, where the site's base of the warm key's shape is tried.
        assert outcome(raw, memo, key="never seen") == verdict, kind
        # The key's base survived it: a genuine rewrite still takes the fast path.
        before = len(full_decodes)
        assert isinstance(outcome(genuine, memo), ClusterStat)
        assert len(full_decodes) == before, kind
    # Refused by the unpickler although the walk was skipped.
    assert {"builtins global", "multiprocessing.Pool", "tzinfo from the memo"} <= set(same_layout)
    assert not marker.exists()


def test_captures_in_sequence_decode_as_without_a_memo() -> None:
    rng = random.Random(27)
    names = sorted(EXPECTED)
    by_key: dict[str, list[str]] = {}
    for name in names:  # each cluster's captures, in the order they were taken
        by_key.setdefault(str(EXPECTED[name]["redis_key"]).split(" ")[0], []).append(name)
    orders = [
        *by_key.values(),
        names,
        names[::-1],
        *(rng.sample(names, len(names)) for _ in range(3)),
    ]
    for order in orders:
        memo: DecodeMemo = {}
        for name in order * 2:
            raw = read_record(name)
            assert outcome(raw, memo) == outcome(raw) == DECODER.decode(raw), name


SEQUENCE_BASES = [
    *(capture_pickle(name) for name in TEXT_CAPTURES),
    stat_pickle(state(), protocol=4),
    stat_pickle(state(tob=datetime(2026, 1, 2, 12, 0), timestamp=datetime(2026, 1, 2, 12, 30))),
    py2_stat_pickle(py2_state()),  # protocol 2: GLOBAL, latin1 datetimes, signed BININT
    *(make() for make, _ in CRAFTED.values()),  # values shared between keys, keys set twice
]


@st.composite
def rewrites(draw: Callable[..., Any], base: bytes) -> bytes:
    """What may follow `base` on its key: new values in its slots (valid or not, as a live
    cluster's queue sizes, reincarnations and timestamp move), another timestamp, any bytes
    changed (mostly in and around the slots), or another record altogether."""
    kind = draw(st.sampled_from(["slots", "slots", "retimed", "state bytes", "mutated", "other"]))
    if kind == "other":
        return draw(st.sampled_from(SEQUENCE_BASES))
    flow = analyse(base)
    slots = flow.slots if flow is not None else ()
    tail = base.rfind(b"\x8c\x09timestamp\x94h") + 16
    retimable = tail > 16 and base[tail - 2 : tail] == b"C\x0a"
    data = bytearray(base)
    if kind == "slots" and slots:
        for slot in draw(st.lists(st.sampled_from(slots), min_size=1, max_size=4)):
            if slot.width == 1 or draw(st.booleans()):
                new = draw(st.binary(min_size=slot.width, max_size=slot.width))
            else:  # a small number, as queue sizes are (little-endian)
                new = draw(st.integers(0, 300)).to_bytes(slot.width, "little", signed=False)
            data[slot.start : slot.start + slot.width] = new
    elif kind in ("retimed", "state bytes") and retimable:
        if kind == "retimed":
            when = draw(
                st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1))
            )
            state_bytes = packed(when)
        else:
            state_bytes = draw(st.binary(min_size=10, max_size=10))
        data = bytearray(retimed(base, state_bytes))
    else:
        near = [
            st.integers(max(0, slot.start - 3), min(len(data) - 1, slot.start + slot.width + 2))
            for slot in slots
        ] or [st.integers(max(0, len(data) - 45), len(data) - 1)]
        for _ in range(draw(st.integers(1, 4))):
            where = draw(st.one_of(*near, st.integers(0, len(data) - 1)))
            data[where] = draw(st.integers(0, 255))
        if draw(st.integers(0, 9)) == 0:
            del data[draw(st.integers(0, len(data) - 1))]
    return bytes(data)


@settings(max_examples=500, deadline=None, database=None)
@given(
    st.sampled_from(SEQUENCE_BASES).flatmap(
        lambda base: st.tuples(st.just(base), st.lists(rewrites(base), min_size=1, max_size=6))
    )
)
def test_memo_never_changes_a_verdict(case: tuple[bytes, list[bytes]]) -> None:
    base, rest = case
    memo: DecodeMemo = {}
    with mock.patch.object(
        qwatch.decode.safe_pickle, "unpickle", wraps=qwatch.decode.safe_pickle.unpickle
    ) as unpickle:
        for data in [base, base, *rest, base]:
            raw = sign(data)
            calls = unpickle.call_count
            with_memo = outcome(raw, memo)
            event("fast path" if unpickle.call_count == calls else "full decode")
            assert with_memo == outcome(raw)


def test_a_new_key_takes_another_keys_base_of_its_shape(full_decodes: list[bytes]) -> None:
    """Two keys, each warm with its own cluster (another host, other pids and ids): a
    record of the second read under the first is rebuilt from a base, not unpickled."""
    idle, other = capture_pickle("q2_url_tz_idle.txt"), capture_pickle("q2_die_idle.txt")
    memo: DecodeMemo = {}
    warm(memo, idle, key="a")
    warm(memo, other, key="b")
    raw = sign(retimed(other, packed(datetime(2026, 11, 27, 16, 0))))
    before = len(full_decodes)
    assert outcome(raw, memo, "a") == outcome(raw, memo, "b") == outcome(raw)
    assert len(full_decodes) == before + 1  # the memo-less decode only
    # A decoder of another site (another name) has no base of it: decoded in full.
    elsewhere = Decoder("elsewhere", SECRET)
    assert isinstance(outcome(sign(other), {}, "c", elsewhere), str)  # signed for NAME


# --- a one-shot decoder: remembers nothing -----------------------------------------------------

ONE_SHOT = Decoder(NAME, SECRET, fallback_keys=[ROTATED], remember=False)


@settings(max_examples=300, deadline=None, database=None)
@given(
    st.sampled_from(SEQUENCE_BASES).flatmap(
        lambda base: st.lists(rewrites(base), min_size=1, max_size=6).map(lambda r: [base, *r])
    )
)
def test_one_shot_decoder_gives_the_full_decodes_verdicts(datas: list[bytes]) -> None:
    memo: DecodeMemo = {}
    for data in datas:
        raw = sign(data)
        assert outcome(raw, memo, decoder=ONE_SHOT) == outcome(raw)
    assert memo == {}  # nothing kept for a next poll that will not come


def test_one_shot_decoder_on_captures_and_hostile_records(tmp_path: Path) -> None:
    memo: DecodeMemo = {}
    for name in sorted(EXPECTED) * 2:  # the second time, every layout is known
        raw = read_record(name)
        assert outcome(raw, memo, decoder=ONE_SHOT) == outcome(raw) == DECODER.decode(raw), name
    marker = tmp_path / "ran"
    for ops, reason in hostile_calls(marker).values():
        for data in (whole(ops), py2_stat_pickle(py2_state(host=Ops(ops)))):
            raw = sign(data)
            assert outcome(raw, memo, decoder=ONE_SHOT) == reason == outcome(raw)
    assert not marker.exists() and memo == {}
