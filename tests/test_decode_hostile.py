"""Hostile records: most are correctly signed (whoever holds SECRET_KEY can sign anything),
yet each is refused with a short reason and nothing in it is imported or run."""

from __future__ import annotations

import base64
import io
import pickle
import random
import struct
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from django.core.signing import Signer
from django.utils.translation import gettext_lazy
from hypothesis import given, settings
from hypothesis import strategies as st

import qwatch.decode.record
import qwatch.decode.safe_pickle
from qwatch.decode import DecodeError, Decoder
from qwatch.values import STATES, ClusterStat
from tests.helpers import CAPTURE_ROTATED_SECRET as ROTATED
from tests.helpers import CAPTURE_SECRET as SECRET
from tests.helpers import CAPTURE_SITE as NAME
from tests.helpers import EXPECTED
from tests.records import (
    DECODER,
    TEXT_CAPTURES,
    Ops,
    args_ops,
    call_ops,
    capture_pickle,
    global_op,
    hostile_calls,
    py2_stat_pickle,
    py2_state,
    read_record,
    sign,
    stack_global_op,
    stat_pickle,
    state,
    unicode_op,
    whole,
)

FUZZ = settings(max_examples=400, deadline=None, database=None)


def refused(raw: Any, decoder: Decoder = DECODER) -> str:
    """The reason `decoder` gives for refusing `raw` (which must be refused)."""
    with pytest.raises(DecodeError) as err:
        decoder.decode(raw)
    assert SECRET not in err.value.reason and ROTATED not in err.value.reason
    return err.value.reason


# --- hand-made pickles ----------------------------------------------------------------------


HOSTILE_KINDS = sorted(hostile_calls(Path("/nonexistent")))


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_call_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    ops, reason = hostile_calls(marker)[kind]
    assert refused(sign(whole(ops))) == reason
    assert refused(sign(whole(ops, protocol=5), algorithm="sha1")) == reason
    assert not marker.exists()


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_call_inside_a_stat_refused(tmp_path: Path, kind: str) -> None:
    marker = tmp_path / "marker"
    ops, reason = hostile_calls(marker)[kind]
    assert refused(sign(py2_stat_pickle(py2_state(host=Ops(ops))))) == reason
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "builtins.getattr"])
def test_control_plain_pickle_would_run_them(tmp_path: Path, kind: str) -> None:
    """The same bytes under plain pickle.loads do create the marker: the payloads are live."""
    marker = tmp_path / "marker"
    ops, _ = hostile_calls(marker)[kind]
    pickle.loads(whole(ops))
    assert marker.exists()


def test_hostile_call_in_cache_wrapper(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    ops, _ = hostile_calls(marker)["os.system"]
    # The wrapper itself hostile (no signature needed to get this far) ...
    assert refused(whole(ops, protocol=5)) == "forbidden global os.system"
    # ... or a hostile signed record inside an honest wrapper.
    assert refused(pickle.dumps(sign(whole(ops)))) == "forbidden global os.system"
    assert not marker.exists()


@pytest.mark.parametrize(
    ("wrapped", "reason"),
    [
        (pickle.dumps(b"bytes, not str"), "not a Django Q record"),
        (pickle.dumps(["a list"]), "not a Django Q record"),
        (pickle.dumps(None), "not a Django Q record"),
        (pickle.dumps("not signed"), "bad signature"),
        (pickle.dumps(pickle.dumps("twice").decode("latin1")), "bad signature"),
        (pickle.dumps("x")[:-1], "bad pickle"),
        (pickle.dumps("x") + b"trailing", "bad pickle"),
        (
            b"\x80\x05" + global_op("datetime", "datetime") + b".",
            "forbidden global datetime.datetime",
        ),
    ],
)
def test_bad_cache_wrapper(wrapped: bytes, reason: str) -> None:
    assert refused(wrapped) == reason


def test_forbidden_global_reason_is_short_and_printable() -> None:
    ops = stack_global_op("os\x1b[2J\u202e", "system" + "x" * 500) + args_ops("x") + b"R"
    reason = refused(sign(whole(ops, protocol=4)))
    assert reason.startswith("forbidden global os?[2J?.system")
    assert reason.isprintable() and len(reason) < 150


# --- BUILD: a record may not alter objects that outlive it ----------------------------------


def _build(target: bytes, state: bytes) -> bytes:
    return target + state + b"b"


def _slotstate(name: str, value: bytes) -> bytes:
    return b"N}" + unicode_op(name) + value + b"s\x86"


PYTZ = global_op("pytz", "_UTC")


@pytest.mark.parametrize(
    "ops",
    [
        # on a datetime: it has neither __setstate__ nor a __dict__
        _build(call_ops("datetime", "datetime", 2026, 1, 1), b"}" + unicode_op("year") + b"K\x05s"),
        _build(call_ops("datetime", "datetime", 2026, 1, 1), _slotstate("year", b"K\x05")),
        _build(call_ops("datetime", "datetime", 2026, 1, 1), _slotstate("__setstate__", PYTZ)),
        # on the datetime and UUID classes themselves, to patch them for everyone
        _build(global_op("datetime", "datetime"), _slotstate("now", PYTZ)),
        _build(global_op("datetime", "datetime"), b"}" + unicode_op("now") + PYTZ + b"s"),
        _build(global_op("uuid", "UUID"), _slotstate("__str__", PYTZ)),
        _build(global_op("uuid", "UUID"), b"}" + unicode_op("__str__") + PYTZ + b"s"),
        _build(global_op("datetime", "timezone"), _slotstate("utc", PYTZ)),
        # on the stand-ins
        _build(PYTZ, b"}" + unicode_op("x") + b"Ns"),
        _build(global_op("django.utils.translation", "gettext"), _slotstate("x", b"N")),
        _build(global_op("django.utils.functional", "_lazy_proxy_unpickle"), b"}"),
        _build(global_op("django_q.status", "Stat"), _slotstate("__setstate__", PYTZ)),
        _build(global_op("django_q.status", "Stat"), b"}" + unicode_op("x") + b"Ns"),
    ],
)
def test_build_tricks_refused(ops: bytes) -> None:
    before = _class_attributes()
    assert refused(sign(whole(ops))) == "bad pickle"
    assert refused(sign(py2_stat_pickle(py2_state(host=Ops(ops))))) == "bad pickle"
    assert _class_attributes() == before
    assert (
        DECODER.decode(read_record("q2_url_tz_idle.txt")).cluster_id
        == EXPECTED["q2_url_tz_idle.txt"]["cluster_id"]
    )


def _class_attributes() -> dict[tuple[str, str], dict[str, Any]]:
    """The attributes of every class a record can reach: real ones and stand-ins."""
    return {
        key: dict(vars(obj if isinstance(obj, type) else type(obj)))
        for key, obj in qwatch.decode.safe_pickle.ALLOWED_GLOBALS.items()
    }


def _uuid_with_state(state_ops: bytes) -> Ops:
    return Ops(global_op("uuid", "UUID") + b")\x81" + state_ops + b"b")


@pytest.mark.parametrize(
    "cluster_id",
    [
        _uuid_with_state(b"}" + unicode_op("int") + unicode_op("not a number") + b"s"),
        _uuid_with_state(b"}" + unicode_op("int") + pickle.dumps(1 << 130, 2)[2:-1] + b"s"),
        _uuid_with_state(b"}" + unicode_op("int") + b"J\xff\xff\xff\xffs"),  # -1
        _uuid_with_state(b"}" + unicode_op("int") + b"\x88s"),  # True
        Ops(global_op("uuid", "UUID") + b")\x81"),  # never given its int
    ],
)
def test_uuid_with_a_bad_int(cluster_id: Ops) -> None:
    assert refused(sign(py2_stat_pickle(py2_state(cluster_id=cluster_id)))) == (
        "bad field cluster_id"
    )


@pytest.mark.parametrize(
    "build_state",
    [b"](e", b"N}" + unicode_op("host") + unicode_op("h") + b"s\x86", unicode_op("x")],
)
def test_stat_state_that_is_not_a_dict(build_state: bytes) -> None:
    ops = global_op("django_q.status", "Stat") + b")\x81" + build_state + b"b"
    assert refused(sign(whole(ops))) == "not a Django Q record"


@pytest.mark.parametrize(
    "ops",
    [
        global_op("django_q.status", "Stat"),  # the class, never instantiated
        global_op("django_q.status", "Stat") + b")\x81",  # never given its state
        b"}",
        b"](K\x01e",
        unicode_op("Idle"),
        b"N",
        call_ops("datetime", "datetime", 2026, 1, 1),
    ],
)
def test_signed_pickle_that_is_not_a_stat(ops: bytes) -> None:
    assert refused(sign(whole(ops))) == "not a Django Q record"


# --- opcodes outside the allowlist ----------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        whole(unicode_op("pid") + b"Q"),  # BINPERSID
        whole(b"Pfoo\n"),  # PERSID
        whole(b"\x82\x01"),  # EXT1: the copyreg extension registry
        whole(b"\x83\x01\x00"),  # EXT2
        whole(b"(" + b"ios\nsystem\n"),  # INST
        whole(b"(" + global_op("os", "system") + b"o"),  # OBJ
        whole(global_op("uuid", "UUID") + b")}\x92", protocol=4),  # NEWOBJ_EX
        whole(b"\x8f", protocol=4),  # EMPTY_SET
        whole(b"\x97", protocol=5),  # NEXT_BUFFER
        whole(b"S'x'\n"),  # STRING (text)
        whole(b"I1\n"),  # INT (text)
        whole(b"Np0\n"),  # PUT (text)
        b"cos\nsystem\n(S'true'\ntR.",  # protocol 0: no PROTO at all
        b"\x80\x06N.",  # a protocol that does not exist
        b"\x80\x01N.",
        b"\x80\x02N.N.",  # data after STOP
        b"\x80\x02N",  # no STOP
        b"\x80\x02",
        b"",
        b"\x80\x02c" + b"os system no newlines",
        b"\x80\x05\x8d" + struct.pack("<Q", 1 << 62) + b"x.",  # BINUNICODE8 of 4 EiB
        b"\x80\x05\x8e" + struct.pack("<Q", 1 << 40) + b"x.",  # BINBYTES8 of 1 TiB
        b"\x80\x05\x95" + struct.pack("<Q", 1 << 62) + b"N.",  # FRAME of 4 EiB
        b"\x80\x02T\xff\xff\xff\xffx.",  # BINSTRING of length -1
    ],
)
def test_opcode_outside_allowlist(data: bytes) -> None:
    assert refused(sign(data)) == "bad pickle"


def test_memo_index_cannot_allocate_gigabytes() -> None:
    # Under the C unpickler LONG_BINPUT 2**30 allocates and zeroes 16 GiB of memo.
    for data in (b"\x80\x02Nr\x00\x00\x00\x40.", b"\x80\x02Np1073741824\n."):
        started = time.perf_counter()
        assert refused(sign(data)) == "bad pickle"
        assert time.perf_counter() - started < 0.5


def test_persistent_id_refused_by_the_unpickler_too() -> None:
    # The opcode walk already refuses persistent ids; the unpickler refuses them on its own.
    unpickler = qwatch.decode.safe_pickle.RecordUnpickler(
        io.BytesIO(whole(unicode_op("pid") + b"Q"))
    )
    with pytest.raises(DecodeError, match=r"^forbidden persistent id$"):
        unpickler.load()


def test_deep_nesting_is_just_a_bad_field() -> None:
    nested = Ops(b"]" * 30_000 + b"a" * 29_999)
    assert refused(sign(py2_stat_pickle(py2_state(host=nested)))) == "bad field host"


# --- the layers around the pickle -----------------------------------------------------------


def _zeros_deflated(size: int) -> bytes:
    deflater = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [deflater.compress(chunk) for _ in range(size >> 20)]
    return b"".join([*parts, deflater.flush()])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def sign_payload(payload: str, algorithm: str = "sha256") -> str:
    """Sign an arbitrary payload string, so that only the layers below the signature fail."""
    return Signer(key=SECRET, salt=NAME, algorithm=algorithm, fallback_keys=[]).sign(
        payload + ":" + "1xWyAG"
    )


@pytest.mark.parametrize("megabytes", [100, 40])
def test_decompression_bomb(megabytes: int) -> None:
    # 100 MB deflates past the raw-size bound; 40 MB fits in it and hits the inflate bound.
    raw = sign_payload("." + _b64(_zeros_deflated(megabytes << 20)))
    started = time.perf_counter()
    assert refused(raw) == "too large"
    assert refused(raw.encode()) == "too large"
    assert time.perf_counter() - started < 0.5


def test_pickle_just_over_the_bound() -> None:
    data = whole(unicode_op("x" * qwatch.decode.record.MAX_PICKLE_BYTES))
    assert refused(sign_payload("." + _b64(zlib.compress(data)))) == "too large"


def test_oversized_input() -> None:
    assert refused("a" * (qwatch.decode.record.MAX_RECORD_BYTES + 1)) == "too large"
    assert refused(b"a" * (qwatch.decode.record.MAX_RECORD_BYTES + 1)) == "too large"


def _real_payload() -> str:
    return read_record("q2_url_tz_idle.txt").decode().rsplit(":", 2)[0]


def test_truncated_base64() -> None:
    body = _real_payload()[1:]
    cut = (len(body) - 2) // 4 * 4 + 1  # leaves a lone character of a 4-character group
    assert cut < len(body) and cut % 4 == 1
    assert refused(sign_payload("." + body[:cut])) == "bad base64"


@pytest.mark.parametrize("bad", ["+", "/", "=", "!", " ", "\u00e9", "\n"])
def test_base64_with_characters_django_never_writes(bad: str) -> None:
    payload = _real_payload()
    assert refused(sign_payload(payload[:40] + bad + payload[41:])) == "bad base64"


@pytest.mark.parametrize("keep", [0, 1, 10, 100, -4, -1])
def test_truncated_zlib(keep: int) -> None:
    deflated = zlib.compress(stat_pickle(state()))
    payload = "." + _b64(deflated[:keep])
    assert refused(sign_payload(payload)) == "bad zlib"


def test_zlib_with_trailing_data() -> None:
    deflated = zlib.compress(stat_pickle(state())) + b"more"
    assert refused(sign_payload("." + _b64(deflated))) == "bad zlib"


def test_not_zlib_at_all() -> None:
    assert refused(sign_payload("." + _b64(stat_pickle(state())))) == "bad zlib"


def test_uncompressed_garbage_is_bad_pickle() -> None:
    assert refused(sign_payload(_b64(b"not a pickle"))) == "bad pickle"


def test_signature_problems() -> None:
    raw = read_record("q2_url_tz_idle.txt").decode()
    payload, stamp, sig = raw.rsplit(":", 2)
    flipped = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    assert refused(f"{payload}:{stamp}") == "bad signature"  # signature cut off
    assert refused(payload) == "bad signature"  # never signed
    assert refused(f"{payload}:{stamp}:{flipped}") == "bad signature"
    assert refused(f"{payload}:{stamp}:{sig[:-1]}") == "bad signature"  # 42 characters
    assert refused(f"{payload}:{stamp}:{sig}A") == "bad signature"  # 44 characters
    assert refused(f"{payload}:{stamp}:") == "bad signature"
    assert refused(f"{payload}x:{stamp}:{sig}") == "bad signature"
    assert refused(f"{payload}:{stamp}:{sig[:27]}") == "bad signature"  # sha1-sized, wrong
    assert refused(":" * 43) == "bad signature"


def test_signed_without_or_with_bad_timestamp() -> None:
    payload = _real_payload()
    plain = Signer(key=SECRET, salt=NAME, algorithm="sha256", fallback_keys=[])
    assert refused(plain.sign(payload)) == "bad timestamp"  # Signer, not TimestampSigner
    assert refused(plain.sign(payload + ":!!")) == "bad timestamp"
    assert refused(plain.sign(payload + ":")) == "bad timestamp"
    assert refused(plain.sign(payload + ":" + "9" * 5000)) == "bad timestamp"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "not a Django Q record"),
        ("", "not a Django Q record"),
        ("\n", "not a Django Q record"),
        (b"   ", "not a Django Q record"),
        (b"\xff\xfe\x00garbage", "not a Django Q record"),
        ("\x00", "bad signature"),
    ],
)
def test_empty_or_not_text(raw: bytes | str, reason: str) -> None:
    assert refused(raw) == reason


@pytest.mark.parametrize("raw", [None, 42, 1.5, bytearray(b"x"), ["x"], object()])
def test_not_bytes_or_str(raw: Any) -> None:
    assert refused(raw) == "not a Django Q record"


def test_random_bytes() -> None:
    rng = random.Random(20261127)
    for _ in range(300):
        refused(rng.randbytes(rng.randrange(1, 2000)))


# --- the decoded state ----------------------------------------------------------------------

REQUIRED = sorted(
    set(state()) - {"pid"}  # pid is absent before django-q 1.2
)


@pytest.mark.parametrize("field", REQUIRED)
def test_missing_field(field: str) -> None:
    fields = state()
    del fields[field]
    assert refused(sign(stat_pickle(fields))) == f"missing field {field}"


def test_missing_pid_is_none() -> None:
    fields = state()
    del fields["pid"]
    assert DECODER.decode(sign(stat_pickle(fields))).pid is None


BAD_VALUES: list[tuple[str, Any]] = [
    ("cluster_id", "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
    ("cluster_id", None),
    ("cluster_id", -3),
    ("cluster_id", 1.5),
    ("cluster_id", True),
    ("host", 5),
    ("host", None),
    ("host", b"vm"),
    ("host", "vm\x1b]0;pwned\x07"),  # a terminal escape
    ("host", "vm\u202e"),  # bidi override
    ("host", "h" * 256),
    ("pid", "4099"),
    ("pid", -1),
    ("pid", 4099.0),
    ("pid", False),
    ("sentinel", "x"),
    ("monitor", [1]),
    ("pusher", -2),
    ("workers", "4102"),
    ("workers", None),
    ("workers", [4102, "4103"]),
    ("workers", [4102, None]),
    ("workers", [True]),
    ("workers", [[4102]]),
    ("workers", {"a": 1}),
    ("status", "Running"),
    ("status", "idle"),
    ("status", None),
    ("status", 1),
    ("status", gettext_lazy("Sleeping")),
    ("task_q_size", None),
    ("task_q_size", "3"),
    ("task_q_size", -1),
    # Beyond what the history's INTEGER columns and the JSON encoder hold.
    ("task_q_size", 2**31),
    ("reincarnations", 2**70),
    ("pid", 2**64),
    ("workers", [4102, 2**31]),
    ("done_q_size", 0.0),
    ("reincarnations", True),
    ("tob", None),
    ("tob", "2026-01-02T03:04:05+00:00"),
    ("tob", 1767323045),
    ("timestamp", timedelta(days=5)),
    ("timestamp", UUID(int=5)),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_bad_field(field: str, value: Any) -> None:
    assert refused(sign(stat_pickle(state(**{field: value})))) == f"bad field {field}"


@pytest.mark.parametrize("zone", [b"", b"cpytz\n_UTC\n)R"])
@pytest.mark.parametrize(
    "packed",
    [
        b"\x07\xea\x01\x02\x1e\x00\x00\x00\x00\x00",  # 30 o'clock
        b"\x07\xea\x02\x1f\x00\x00\x00\x00\x00\x00",  # 31 February
        b"\x07\xea\x01\x02\x03\x04\x05\xff\xff\xff",  # 16777215 microseconds
        b"\xff\xff\x01\x02\x03\x04\x05\x00\x00\x00",  # year 65535
    ],
)
def test_datetime_state_out_of_range(packed: bytes, zone: bytes) -> None:
    # Unpickling builds these without complaint; only the checking constructor refuses them.
    tob = Ops(b"cdatetime\ndatetime\n(U\x0a" + packed + zone + b"tR")
    assert refused(sign(py2_stat_pickle(py2_state(tob=tob)))) == "bad field tob"


def test_time_that_overflows_in_utc() -> None:
    fields = state(tob=datetime(1, 1, 1))
    tokyo = Decoder(NAME, SECRET, time_zone="Asia/Tokyo")
    assert refused(sign(stat_pickle(fields)), tokyo) == "bad field tob"


# --- fuzzing --------------------------------------------------------------------------------


def check_outcome(raw: bytes | str) -> None:
    """Whatever `raw` is: a valid ClusterStat, or a DecodeError with a safe reason."""
    try:
        stat = DECODER.decode(raw)
    except DecodeError as err:
        assert err.reason and SECRET not in err.reason and ROTATED not in err.reason
    else:
        assert isinstance(stat, ClusterStat)
        assert stat.status in STATES and stat.host.isprintable()
        assert stat.tob.tzinfo is UTC and stat.timestamp.tzinfo is UTC
        assert all(type(pid) is int for pid in stat.workers)


@st.composite
def mutated(draw: Callable[..., Any], original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if kind == "truncate":
            del data[where:]
        elif kind == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=8))
        elif where < len(data):
            if kind == "flip":
                data[where] ^= 1 << draw(st.integers(0, 7))
            elif kind == "set":  # pickle opcodes and lengths live in single bytes
                data[where] = draw(st.integers(0, 255))
            else:
                del data[where]
    return bytes(data)


ALL_CAPTURES = sorted(EXPECTED)


@FUZZ
@given(st.binary(max_size=3000))
def test_fuzz_random_bytes(raw: bytes) -> None:
    check_outcome(raw)


@FUZZ
@given(st.text(max_size=3000))
def test_fuzz_random_text(raw: str) -> None:
    check_outcome(raw)


@FUZZ
@given(st.sampled_from(ALL_CAPTURES).flatmap(lambda name: mutated(read_record(name))))
def test_fuzz_mutated_capture(raw: bytes) -> None:
    check_outcome(raw)


def _unframed(data: bytes) -> bytes:
    return data[:2] + data[11:] if data[2] == pickle.FRAME[0] else data


# Also without their FRAME, so that a mutation gets past the frame length, and from Python 2.
FUZZ_PICKLES = [
    *(capture_pickle(name) for name in TEXT_CAPTURES),
    *(_unframed(capture_pickle(name)) for name in TEXT_CAPTURES),
    py2_stat_pickle(py2_state()),
]


@FUZZ
@given(st.sampled_from(FUZZ_PICKLES).flatmap(mutated), st.booleans())
def test_fuzz_mutated_pickle_signed_again(data: bytes, compress: bool) -> None:
    # Signed after mutating, so every mutation reaches the unpickler.
    check_outcome(sign(data, compress=compress))


@FUZZ
@given(st.sampled_from(TEXT_CAPTURES).flatmap(lambda name: mutated(read_record(name))))
def test_fuzz_mutated_text_signed_again(raw: bytes) -> None:
    # Re-signing the mutated base64 payload exercises the base64 and zlib layers.
    payload = raw.decode("latin1").rsplit(":", 2)[0]
    check_outcome(sign_payload(payload))


def test_mutations_do_reach_the_unpickler() -> None:
    """A sanity check on the fuzzing: re-signed mutated pickles give varied reasons."""
    rng = random.Random(7)
    reasons = set()
    original = capture_pickle("q2_url_tz_idle.txt")
    for _ in range(500):
        data = bytearray(_unframed(original))
        data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            DECODER.decode(sign(bytes(data)))
        except DecodeError as err:
            reasons.add(" ".join(err.reason.split()[:2]))
    assert {"bad pickle", "forbidden global", "missing field"} <= reasons


def test_expected_decode_still_works_after_everything() -> None:
    # Guards against any hostile record above having altered shared state.
    stat = DECODER.decode(read_record("q2_url_tz_working.txt"))
    assert stat.tob == datetime.fromisoformat(EXPECTED["q2_url_tz_working.txt"]["tob"])
    assert stat.tob.tzinfo is UTC
