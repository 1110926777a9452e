"""Django Q status records: the `ClusterStat` value and the decoder (pure, no I/O).

A record is `"." + b64url(zlib(pickle(Stat))) + ":" + base62(time) + ":" + signature`, written
by Django's `TimestampSigner` (see shared/fixtures/README.md). Anyone holding the site's
SECRET_KEY can sign a pickle that runs code under `pickle.loads`, so the pickle is first
checked against an opcode allowlist and then loaded with every global mapped to an inert
stand-in: nothing in a record is ever imported, called or executed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import operator
import pickle
import re
import zlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, NoReturn
from uuid import UUID
from zoneinfo import ZoneInfo

from django.core.signing import BASE62_ALPHABET, BadSignature, Signer, TimestampSigner
from django.utils.encoding import force_bytes

STATES = ("Starting", "Idle", "Working", "Stopping", "Stopped")

# A real record is under 2 KB; anything near these is hostile or broken.
MAX_RECORD_BYTES = 64 * 1024
MAX_PICKLE_BYTES = 64 * 1024

# Signature length -> hash: Django >= 3.1 signs with sha256, older Django (or
# DEFAULT_HASHING_ALGORITHM = 'sha1') with sha1; both in unpadded base64.
_ALGORITHM_BY_SIG_LEN = {43: "sha256", 27: "sha1"}
_MAX_TIMESTAMP_LEN = 12  # base62 seconds; bounded so b62_decode stays cheap


class DecodeError(ValueError):
    """A record qwatch refuses; `reason` is short and safe to print (never a secret)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ClusterStat:
    name: str  # the site: Q_CLUSTER['name'], the signing salt
    cluster_id: str  # uuid4 text, or the pid as text for django-q < 1.2
    host: str
    pid: int | None  # qcluster main pid; None before django-q 1.2
    sentinel: int | None
    monitor: int | None
    pusher: int | None
    workers: tuple[int, ...]
    status: str  # one of STATES
    task_q_size: int
    done_q_size: int
    reincarnations: int
    tob: datetime  # aware, UTC
    timestamp: datetime  # aware, UTC

    @property
    def pool(self) -> int:
        return len(self.workers)

    @property
    def uptime_s(self) -> float:
        return (self.timestamp - self.tob).total_seconds()

    @property
    def short_id(self) -> str:
        """The last 8 characters, as Django Q's qmonitor shows the id."""
        return self.cluster_id[-8:]


# --- stand-ins for the globals a record may name -------------------------------------------


class _Inert:
    """Base of every stand-in: no attributes to set, and a pickle BUILD on it is refused,
    so a record cannot alter an object that outlives it."""

    __slots__ = ()

    def __setstate__(self, state: object) -> NoReturn:
        raise DecodeError("bad pickle")


class _StatState:
    """Stands in for django_q's Stat (NEWOBJ + BUILD): keeps the pickled __dict__, nothing else."""

    __slots__ = ("state",)

    def __setstate__(self, state: object) -> None:
        self.state = state


class _PytzUTC(_Inert):
    """`pytz._UTC()` means UTC; pytz itself is never imported."""

    __slots__ = ()

    def __call__(self) -> tzinfo:
        return UTC


# Not callable: only ever compared by identity inside _LazyText.
_GETTEXT = _Inert()
_STR = _Inert()


class _LazyText(_Inert):
    """`_lazy_proxy_unpickle(gettext, (text,), {}, str)`, Django's pickled `gettext_lazy`:
    yields the English text itself (Django Q always pickles the English state name)."""

    __slots__ = ()

    def __call__(self, func: object, args: object, kwargs: object, *resultclasses: object) -> str:
        if (
            func is _GETTEXT
            and type(args) is tuple
            and len(args) == 1
            and type(args[0]) is str
            and type(kwargs) is dict
            and not kwargs
            and resultclasses
            and all(cls is _STR for cls in resultclasses)
        ):
            return args[0]
        raise DecodeError("forbidden lazy call")


_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("django_q.status", "Stat"): _StatState,
    ("django_q.monitor", "Stat"): _StatState,  # django-q 0.4-0.5
    # Immutable C types and a pure value class: constructing them runs nothing of the record's.
    ("datetime", "datetime"): datetime,
    ("datetime", "timezone"): timezone,
    ("datetime", "timedelta"): timedelta,
    ("uuid", "UUID"): UUID,
    ("pytz", "_UTC"): _PytzUTC(),
    ("django.utils.functional", "_lazy_proxy_unpickle"): _LazyText(),
    ("django.utils.translation", "gettext"): _GETTEXT,
    ("django.utils.translation", "ugettext"): _GETTEXT,  # Django < 4 on Python 2
    ("builtins", "str"): _STR,
    ("__builtin__", "unicode"): _STR,  # Python 2 writers
}


def _printable(text: str) -> str:
    """Record-chosen text made fit for a reason: short, no control or bidi characters."""
    return "".join(c if c.isprintable() else "?" for c in text[:60])


class _RecordUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise DecodeError(f"forbidden global {_printable(module)}.{_printable(name)}") from None

    def persistent_load(self, pid: object) -> NoReturn:
        raise DecodeError("forbidden persistent id")


class _CacheUnpickler(_RecordUnpickler):
    """Django's Redis cache pickles the signed str once more: no global belongs there."""

    def find_class(self, module: str, name: str) -> NoReturn:
        raise DecodeError(f"forbidden global {_printable(module)}.{_printable(name)}")


# --- the opcode allowlist -------------------------------------------------------------------

# Opcode -> argument width: >= 0 is a fixed number of bytes; < 0 is a little-endian length of
# -width bytes followed by that many bytes. These are the opcodes any Stat writer emits
# (protocols 2-5). Left out on purpose: PUT/LONG_BINPUT (an index of 2**30 makes the C
# unpickler allocate and zero gigabytes), INST/OBJ/NEWOBJ_EX/EXT*, persistent ids,
# out-of-band buffers, and the text opcodes of protocols 0-1.
_ARG_WIDTH: dict[int, int] = {
    opcode[0]: width
    for opcode, width in (
        (pickle.PROTO, 1),
        (pickle.FRAME, 8),
        (pickle.MARK, 0),
        (pickle.POP, 0),
        (pickle.POP_MARK, 0),
        (pickle.DUP, 0),
        (pickle.NONE, 0),
        (pickle.NEWTRUE, 0),
        (pickle.NEWFALSE, 0),
        (pickle.BININT, 4),
        (pickle.BININT1, 1),
        (pickle.BININT2, 2),
        (pickle.LONG1, -1),
        (pickle.LONG4, -4),
        (pickle.BINFLOAT, 8),
        (pickle.SHORT_BINSTRING, -1),  # Python 2 str
        (pickle.BINSTRING, -4),
        (pickle.SHORT_BINUNICODE, -1),
        (pickle.BINUNICODE, -4),
        (pickle.BINUNICODE8, -8),
        (pickle.SHORT_BINBYTES, -1),
        (pickle.BINBYTES, -4),
        (pickle.BINBYTES8, -8),
        (pickle.EMPTY_TUPLE, 0),
        (pickle.TUPLE, 0),
        (pickle.TUPLE1, 0),
        (pickle.TUPLE2, 0),
        (pickle.TUPLE3, 0),
        (pickle.EMPTY_LIST, 0),
        (pickle.LIST, 0),
        (pickle.APPEND, 0),
        (pickle.APPENDS, 0),
        (pickle.EMPTY_DICT, 0),
        (pickle.DICT, 0),
        (pickle.SETITEM, 0),
        (pickle.SETITEMS, 0),
        (pickle.STACK_GLOBAL, 0),
        (pickle.REDUCE, 0),
        (pickle.NEWOBJ, 0),
        (pickle.BUILD, 0),
        (pickle.BINPUT, 1),
        (pickle.MEMOIZE, 0),
        (pickle.BINGET, 1),
    )
}
# Indexed by opcode byte: a list lookup is what keeps the walk near 15 us per record.
_ARG_WIDTH_BY_OPCODE: tuple[int | None, ...] = tuple(_ARG_WIDTH.get(op) for op in range(256))
_GLOBAL = pickle.GLOBAL[0]  # "module\nname\n": what protocol 2 (Python 2) writers use
_STOP = pickle.STOP[0]


def _check_opcodes(data: bytes, marks: bytearray | None = None) -> None:
    """Walk the opcodes (without running them): only allowlisted ones, ending in one STOP.

    With `marks` (len(data) zero bytes), set to 0xFF every byte the walk reads as structure:
    opcodes, length prefixes, GLOBAL's text, the protocol number. Everything else is a
    value (a fixed-size argument, or what a length prefix counts), which the walk skips.
    """
    if len(data) < 2 or data[0] != pickle.PROTO[0] or not 2 <= data[1] <= 5:
        raise DecodeError("bad pickle")
    arg_width = _ARG_WIDTH_BY_OPCODE
    i, end = 0, len(data)
    if marks is not None:
        marks[1] = 0xFF
    while i < end:
        op = data[i]
        if marks is not None:
            marks[i] = 0xFF
        i += 1
        width = arg_width[op]
        if width is None:
            if op == _STOP and i == end:
                return
            module_end = data.find(b"\n", i)
            name_end = data.find(b"\n", module_end + 1)
            if op != _GLOBAL or module_end < 0 or name_end < 0:
                break
            if marks is not None:
                marks[i : name_end + 1] = b"\xff" * (name_end + 1 - i)
            i = name_end + 1
        elif width < 0:
            if marks is not None:
                marks[i : i - width] = b"\xff" * -width
            i -= width
            i += int.from_bytes(data[i + width : i], "little")
        else:
            i += width
    raise DecodeError("bad pickle")


@dataclass(frozen=True, slots=True)
class OpcodeLayout:
    """Where the structure is in a pickle that passed `_check_opcodes`.

    A pickle of the same length with the same bytes at every structural position walks
    exactly the same way (same opcodes, same lengths, same jumps) and so passes too: its
    differences are all in values the walk skips. Django Q rewrites each record every
    0.5 s with a new timestamp and queue sizes but the same layout, so this comparison
    (two big-int operations, about 1 us) stands in for the walk (about 15 us).
    """

    length: int
    mask: int  # 0xFF at the structural bytes, little-endian
    bits: int  # the pickle's bytes there

    @classmethod
    def of(cls, data: bytes) -> OpcodeLayout:
        """Walk `data` (DecodeError if it fails) and return its layout."""
        marks = bytearray(len(data))
        _check_opcodes(data, marks)
        mask = int.from_bytes(marks, "little")
        return cls(len(data), mask, int.from_bytes(data, "little") & mask)

    def admits(self, data: bytes) -> bool:
        """Whether `data` is laid out like this, so would pass the walk."""
        return len(data) == self.length and int.from_bytes(data, "little") & self.mask == self.bits


class KeyMemo:
    """What a Decoder remembers about one key (say a Redis key) between polls.

    `layouts`: the layouts of the key's latest pickles, newest first (up to two: a cluster
    flipping between Idle and Working has two, the status text differs in length).

    `stat` and what follows: the key's last pickle decoded in full, and where in it the
    `timestamp` datetime's 10 bytes are. A live cluster rewrites its record every 0.5 s
    and most often only that timestamp moved; such a pickle is decoded from those bytes
    alone (see Decoder._retimed).
    """

    __slots__ = ("base", "high", "layouts", "length", "low_mask", "stat", "tz")

    def __init__(self) -> None:
        self.layouts: tuple[OpcodeLayout, ...] = ()
        self.stat: ClusterStat | None = None  # None: no full decode to start from
        self.base = 0  # that pickle, as a little-endian int
        self.length = -1
        self.low_mask = 0  # the bytes before the timestamp's 10
        self.high = 0  # the byte after them
        self.tz: tzinfo | None = None  # the timestamp's tzinfo, as unpickled


DecodeMemo = dict[Hashable, KeyMemo]
_LAYOUTS_PER_KEY = 2


def _check_opcodes_memo(data: bytes, seen: KeyMemo, first: bool) -> OpcodeLayout | None:
    """`_check_opcodes`, skipped when `data` is laid out like one of the key's latest
    pickles; the layout that admits `data`, or None on the key's first pickle.

    A key's first pickle is only walked (a one-off read pays nothing for the memo); from
    its second on, a pickle no layout admits is walked marking its layout, which is kept.
    """
    if first:
        _check_opcodes(data)
        return None
    for layout in seen.layouts:
        if layout.admits(data):
            return layout
    layout = OpcodeLayout.of(data)
    seen.layouts = (layout, *seen.layouts[: _LAYOUTS_PER_KEY - 1])
    return layout


def _unpickle(data: bytes, unpickler: type[pickle.Unpickler]) -> object:
    try:
        # latin1: a Python 2 writer's byte strings (datetime states, host) come back as str.
        return unpickler(io.BytesIO(data), encoding="latin1").load()
    except DecodeError:
        raise
    except Exception:
        raise DecodeError("bad pickle") from None


def _load(data: bytes, unpickler: type[pickle.Unpickler]) -> object:
    _check_opcodes(data)
    return _unpickle(data, unpickler)


# --- the layers around the pickle -----------------------------------------------------------

# Map the urlsafe alphabet to the standard one and make "+" and "/" invalid, so that strict
# decoding refuses anything Django's urlsafe encoder could not have written.
_B64URL = bytes.maketrans(b"-_+/", b"+/!!")


def _b64decode(text: str) -> bytes:
    try:
        data = text.encode("ascii").translate(_B64URL)
        return binascii.a2b_base64(data + b"=" * (-len(data) % 4), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise DecodeError("bad base64") from None


def _inflate(data: bytes) -> bytes:
    # Bounded: signing.loads would inflate a zip bomb whole.
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_PICKLE_BYTES)
        # Output still to come (from unread input or zlib's window) means over the bound.
        more = not inflater.eof and inflater.decompress(inflater.unconsumed_tail, 1)
    except zlib.error:
        raise DecodeError("bad zlib") from None
    if more:
        raise DecodeError("too large")
    if not inflater.eof or inflater.unused_data:
        raise DecodeError("bad zlib")
    return out


def _signed_text(raw: object) -> str:
    value = raw
    if type(value) is bytes:
        if len(value) > MAX_RECORD_BYTES:
            raise DecodeError("too large")
        if value[:1] == pickle.PROTO:  # never how a signed value starts: Django's cache wrapped it
            value = _load(value, _CacheUnpickler)
        else:
            try:
                value = value.decode("ascii")
            except UnicodeDecodeError:
                raise DecodeError("not a Django Q record") from None
    if type(value) is not str:
        raise DecodeError("not a Django Q record")
    if len(value) > MAX_RECORD_BYTES:
        raise DecodeError("too large")
    # Tolerated for records read from files; Redis values never carry it.
    text = value.rstrip()
    if not text:
        raise DecodeError("not a Django Q record")
    return text


# --- the decoded state ----------------------------------------------------------------------


def _field(state: dict[Any, Any], key: str) -> Any:
    try:
        return state[key]
    except KeyError:
        raise DecodeError(f"missing field {key}") from None


def _int(value: object, key: str) -> int:
    if type(value) is not int or value < 0:  # `type is`: refuses bools, which are ints
        raise DecodeError(f"bad field {key}")
    return value


def _count(state: dict[Any, Any], key: str) -> int:
    return _int(_field(state, key), key)


def _pid(value: object, key: str) -> int | None:
    # None while a process is not up yet (django-q 0.5 Starting).
    return None if value is None else _int(value, key)


def _cluster_id(state: dict[Any, Any]) -> str:
    value = _field(state, "cluster_id")
    if type(value) is int and value >= 0:  # the pid, before django-q 1.2
        return str(value)
    if type(value) is UUID:
        # A BUILD can set a UUID's `int` to anything: check it, and format it afresh.
        number = getattr(value, "int", None)
        if type(number) is int and 0 <= number < 1 << 128:
            text = f"{number:032x}"  # str(UUID(int=number)), without building one
            return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    raise DecodeError("bad field cluster_id")


def _host(state: dict[Any, Any]) -> str:
    value = _field(state, "host")
    # Printable: the host is shown in terminals, where an escape sequence would be obeyed.
    if type(value) is not str or len(value) > 255 or not value.isprintable():
        raise DecodeError("bad field host")
    return value


def _workers(state: dict[Any, Any]) -> tuple[int, ...]:
    value = _field(state, "workers")
    if type(value) not in (list, tuple) or not {*map(type, value)} <= {int}:
        raise DecodeError("bad field workers")
    if value and min(value) < 0:
        raise DecodeError("bad field workers")
    return tuple(value)


def _status(state: dict[Any, Any]) -> str:
    value = _field(state, "status")
    if type(value) is not str or value not in STATES:
        raise DecodeError("bad field status")
    return value


def _hmac_keys(name: str, keys: Sequence[str], algorithm: str) -> tuple[bytes, ...] | None:
    """The HMAC keys Django's `Signer(key, salt=name, algorithm)` derives, one per secret:
    `salted_hmac(name + "signer", value, key, algorithm)` hashes `salt + secret` into the key
    on every call; deriving it once saves most of the cost of verifying a record.

    None unless signatures made with them equal Django's own for a probe value, so a Django
    that derives keys differently falls back to its Signer instead of refusing every record.
    """
    salt = force_bytes(name + "signer")
    derived = tuple(getattr(hashlib, algorithm)(salt + force_bytes(key)).digest() for key in keys)
    probe = "qwatch:self-check"
    for key, hmac_key in zip(keys, derived, strict=True):
        theirs = Signer(key=key, salt=name, algorithm=algorithm, fallback_keys=[]).signature(probe)
        if theirs.encode() != _b64_signature(hmac_key, probe.encode(), algorithm):
            return None
    return derived


def _check_b62(text: str) -> None:
    """Raise as django.core.signing.b62_decode would (IndexError, ValueError), without
    computing the number: one optional "-", then base62 digits only ("-" alone passes)."""
    if not text:
        raise IndexError("empty base62 number")
    if (text[1:] if text[0] == "-" else text).strip(BASE62_ALPHABET):
        raise ValueError("not a base62 number")


def _b64_signature(hmac_key: bytes, value: bytes, algorithm: str) -> bytes:
    # django.core.signing.b64_encode: urlsafe base64 without padding.
    return base64.urlsafe_b64encode(hmac.digest(hmac_key, value, algorithm)).rstrip(b"=")


_DATETIME_STATE_LEN = 10  # a pickled datetime's state: y y m d H M S us us us
# ClusterStat's fields but its last, timestamp: dataclasses.replace() costs twice as much.
_FIELD_NAMES = tuple(f.name for f in fields(ClusterStat))
assert _FIELD_NAMES[-1] == "timestamp"
_ALL_BUT_TIMESTAMP = operator.attrgetter(*_FIELD_NAMES[:-1])

# How every Django Q writer from protocol 4 on ends its pickle (timestamp is the state's last
# key): "timestamp", then datetime(<10 state bytes>, <tzinfo>) — or datetime(<bytes>) when
# naive — memoized, SETITEMS, BUILD, STOP. Beside each, which of its bytes the opcode walk
# reads as structure (0xFF) and which as values (0x00): the 10 state bytes must be values.
_HEAD_MARKS = [0xFF] * 2 + [0] * 9 + [0xFF, 0xFF, 0, 0xFF, 0xFF] + [0] * _DATETIME_STATE_LEN
_TIMESTAMP_TAILS = tuple(
    (re.compile(pattern, re.DOTALL), len(marks), int.from_bytes(bytes(marks), "little"))
    for pattern, marks in (
        (  # aware: the tzinfo by reference (BINGET), TUPLE2
            rb"\x8c\x09timestamp\x94h.C\x0a(.{10})\x94h.\x86\x94R\x94ub\.",
            _HEAD_MARKS + [0xFF, 0xFF, 0] + [0xFF] * 7,
        ),
        (  # naive (USE_TZ=False): TUPLE1
            rb"\x8c\x09timestamp\x94h.C\x0a(.{10})\x94\x85\x94R\x94ub\.",
            _HEAD_MARKS + [0xFF] * 8,
        ),
    )
)


def _remember(
    seen: KeyMemo, data: bytes, layout: OpcodeLayout | None, timestamp: datetime, stat: ClusterStat
) -> None:
    """Keep `data`, just decoded in full into `stat`, as the key's base for
    Decoder._retimed, when it ends the way Django Q's pickles end (_TIMESTAMP_TAILS).

    The opcode walk's marks (`layout`) must agree byte for byte: then those bytes are those
    opcodes (no other parse of them passes the walk), so the state's "timestamp" is the
    value of that REDUCE of those 10 bytes, pushed after every other value and referenced
    by nothing after it. Whatever else those bytes hold cannot change another field.
    """
    seen.stat = None
    if layout is None:  # the key's first pickle: its opcodes were walked without marks
        return
    for tail, length, marks in _TIMESTAMP_TAILS:
        start = len(data) - length
        match = tail.fullmatch(data, start) if start > 0 else None
        if match is None:
            continue
        if layout.mask >> (8 * start) != marks:
            return
        state_at = match.start(1)
        seen.stat = stat
        seen.base = int.from_bytes(data, "little")
        seen.length = len(data)
        seen.low_mask = (1 << (8 * state_at)) - 1
        seen.high = state_at + _DATETIME_STATE_LEN
        seen.tz = timestamp.tzinfo
        return


class Decoder:
    """Verifies and decodes one site's records. Build once per site, reuse for every record."""

    __slots__ = ("_hmac_keys", "_local_tz", "_name", "_signers")

    def __init__(
        self,
        name: str,
        secret_key: str,
        fallback_keys: Sequence[str] = (),
        time_zone: str = "UTC",
    ) -> None:
        # Empty values would make Django's Signer read (unconfigured) settings instead.
        if not name or not secret_key:
            raise ValueError("Decoder needs a site name and a secret key")
        self._name = name
        fallbacks = [key for key in fallback_keys if key]
        self._signers = {
            sig_len: TimestampSigner(
                key=secret_key, salt=name, algorithm=algorithm, fallback_keys=fallbacks
            )
            for sig_len, algorithm in _ALGORITHM_BY_SIG_LEN.items()
        }
        # Signature length -> (algorithm, derived keys), where the fast path matches Django.
        self._hmac_keys: dict[int, tuple[str, tuple[bytes, ...]]] = {}
        for sig_len, algorithm in _ALGORITHM_BY_SIG_LEN.items():
            derived = _hmac_keys(name, [secret_key, *fallbacks], algorithm)
            if derived is not None:
                self._hmac_keys[sig_len] = (algorithm, derived)
        # Naive datetimes are local time in the site's TIME_ZONE (USE_TZ=False).
        self._local_tz: tzinfo = UTC if time_zone == "UTC" else ZoneInfo(time_zone)

    def decode(
        self, raw: bytes | str, memo: DecodeMemo | None = None, key: Hashable = None
    ) -> ClusterStat:
        """Return the record's ClusterStat or raise DecodeError; never anything else.

        A caller that reads the same keys again and again (a poll loop) passes a `memo` it
        keeps, and the `key` the record was read from: a pickle that differs from that
        key's previous one only in its timestamp is then decoded from that alone, and one
        laid out like its previous ones skips the opcode walk. Same verdicts either way.
        """
        try:
            return self._decode(raw, memo, key)
        except DecodeError:
            raise
        except Exception:  # whatever a hostile record provokes, callers see only DecodeError
            raise DecodeError("bad record") from None

    def _decode(self, raw: bytes | str, memo: DecodeMemo | None, key: Hashable) -> ClusterStat:
        text = _signed_text(raw)
        payload = self._unsign(text)
        compressed = payload[:1] == "."
        data = _b64decode(payload[1:] if compressed else payload)
        if compressed:
            data = _inflate(data)
        if memo is None:
            _check_opcodes(data)
            return self._load_stat(data)
        seen = memo.get(key)
        if seen is None:
            seen = memo[key] = KeyMemo()
            layout = _check_opcodes_memo(data, seen, first=True)
        else:
            stat = self._retimed(seen, data)
            if stat is not None:
                return stat
            layout = _check_opcodes_memo(data, seen, first=False)
        state = self._load_state(data)
        stat = self._stat(state)
        _remember(seen, data, layout, state["timestamp"], stat)
        return stat

    def _load_stat(self, data: bytes) -> ClusterStat:
        return self._stat(self._load_state(data))

    def _load_state(self, data: bytes) -> dict[Any, Any]:
        """Unpickle (the opcodes are checked): the Stat's __dict__."""
        obj = _unpickle(data, _RecordUnpickler)
        if type(obj) is not _StatState or type(getattr(obj, "state", None)) is not dict:
            raise DecodeError("not a Django Q record")
        return obj.state

    def _retimed(self, seen: KeyMemo, data: bytes) -> ClusterStat | None:
        """The record, when `data` differs from the key's base (its last pickle decoded in
        full, see _remember) only in the 10 bytes of its timestamp; else None, and on any
        doubt too: the full decode then says what is wrong.

        Those bytes are a value to the opcode walk, so `data` walks as the base did, and
        unpickles to the same state but for a timestamp made by the same call this makes,
        `datetime(<bytes>, <tzinfo>)`; every other field validates as it did.
        """
        stat = seen.stat
        if stat is None or len(data) != seen.length:
            return None
        diff = int.from_bytes(data, "little") ^ seen.base
        if diff & seen.low_mask or diff >> (8 * seen.high):
            return None
        state = data[seen.high - _DATETIME_STATE_LEN : seen.high]
        try:
            value = datetime(state) if seen.tz is None else datetime(state, seen.tz)
            return ClusterStat(*_ALL_BUT_TIMESTAMP(stat), self._utc_value(value, "timestamp"))
        except Exception:
            return None

    def _unsign(self, text: str) -> str:
        sig_sep = text.rfind(":")
        sig_len = len(text) - sig_sep - 1
        signer = self._signers.get(sig_len)
        if sig_sep < 0 or signer is None:
            raise DecodeError("bad signature")
        if sig_sep - text.rfind(":", 0, sig_sep) - 1 > _MAX_TIMESTAMP_LEN:
            raise DecodeError("bad timestamp")
        fast = self._hmac_keys.get(sig_len)
        try:
            if fast is None:
                return signer.unsign(text)
            # TimestampSigner.unsign, with the keys derived once: the signature over
            # everything before the last ":", by any of the keys; then the base62 time.
            algorithm, keys = fast
            value = text[:sig_sep]
            message, signature = value.encode(), text[sig_sep + 1 :].encode()  # force_bytes
            for key in keys:
                if hmac.compare_digest(signature, _b64_signature(key, message, algorithm)):
                    break
            else:
                raise BadSignature("signature does not match")
            payload, timestamp = value.rsplit(":", 1)
            _check_b62(timestamp)
            return payload
        except BadSignature:
            raise DecodeError("bad signature") from None
        except (ValueError, IndexError):  # signed, but the base62 time is not a number
            raise DecodeError("bad timestamp") from None

    def _utc(self, state: dict[Any, Any], key: str) -> datetime:
        return self._utc_value(_field(state, key), key)

    def _utc_value(self, value: object, key: str) -> datetime:
        if type(value) is not datetime:
            raise DecodeError(f"bad field {key}")
        try:
            # Rebuilt through the checking constructor: unpickling does not range-check an
            # hour of 30. Naive is local time in the site's TIME_ZONE; fold=0 (the writer's)
            # reads an ambiguous local time (DST fall-back) as its first occurrence.
            value = datetime(
                value.year,
                value.month,
                value.day,
                value.hour,
                value.minute,
                value.second,
                value.microsecond,
                tzinfo=self._local_tz if value.tzinfo is None else value.tzinfo,
                fold=value.fold,
            )
            return value.astimezone(UTC)
        except (OverflowError, ValueError):
            raise DecodeError(f"bad field {key}") from None

    def _stat(self, state: dict[Any, Any]) -> ClusterStat:
        return ClusterStat(
            name=self._name,
            cluster_id=_cluster_id(state),
            host=_host(state),
            pid=_pid(state.get("pid"), "pid"),  # no pid before django-q 1.2
            sentinel=_pid(_field(state, "sentinel"), "sentinel"),
            monitor=_pid(_field(state, "monitor"), "monitor"),
            pusher=_pid(_field(state, "pusher"), "pusher"),
            workers=_workers(state),
            status=_status(state),
            task_q_size=_count(state, "task_q_size"),
            done_q_size=_count(state, "done_q_size"),
            reincarnations=_count(state, "reincarnations"),
            tob=self._utc(state, "tob"),
            timestamp=self._utc(state, "timestamp"),
        )


def decode(
    raw: bytes | str,
    *,
    name: str,
    secret_key: str,
    fallback_keys: Sequence[str] = (),
    time_zone: str = "UTC",
) -> ClusterStat:
    """Decode one record. For many records build a `Decoder` once: it holds the signers."""
    return Decoder(name, secret_key, fallback_keys, time_zone).decode(raw)
