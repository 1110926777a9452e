"""Unpickling a Django Q Stat without running anything the record chose.

Anyone holding the site's SECRET_KEY can sign a pickle that runs code under `pickle.loads`.
So a pickle is first walked against an opcode allow-list (`check_opcodes`), then loaded by an
unpickler that maps each allowed global to an inert stand-in or an immutable C type and
refuses every other: nothing in a record is ever imported, called or executed.

The fast path, `OpcodeLayout`, remembers where a walked pickle's structure is (opcodes,
length prefixes, GLOBAL text). It is safe because the walk reads nothing but those bytes: a
pickle of the same length that agrees on all of them takes exactly the same path through
the walk, so it would pass it. The unpickler, which is what actually refuses globals and
BUILD tricks, runs on every pickle either way.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, NoReturn
from uuid import UUID

from qwatch.errors import DecodeError

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


ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
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


class RecordUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise DecodeError(f"forbidden global {_printable(module)}.{_printable(name)}") from None

    def persistent_load(self, pid: object) -> NoReturn:
        raise DecodeError("forbidden persistent id")


class CacheUnpickler(RecordUnpickler):
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


def check_opcodes(data: bytes, marks: bytearray | None = None) -> None:
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
    """Where the structure is in a pickle that passed `check_opcodes`.

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
        check_opcodes(data, marks)
        mask = int.from_bytes(marks, "little")
        return cls(len(data), mask, int.from_bytes(data, "little") & mask)

    def admits(self, data: bytes) -> bool:
        """Whether `data` is laid out like this, so would pass the walk."""
        return len(data) == self.length and int.from_bytes(data, "little") & self.mask == self.bits


# --- loading --------------------------------------------------------------------------------

# A Python 2 writer's byte strings (datetime states, host) come back as str, decoded so
# (pickle_flow reads them the same way).
PY2_STR_ENCODING = "latin1"


def unpickle(data: bytes, unpickler: type[pickle.Unpickler]) -> object:
    """Run `unpickler` on `data`, whose opcodes the caller has checked."""
    try:
        return unpickler(io.BytesIO(data), encoding=PY2_STR_ENCODING).load()
    except DecodeError:
        raise
    except Exception:
        raise DecodeError("bad pickle") from None


def load(data: bytes, unpickler: type[pickle.Unpickler]) -> object:
    """Check the opcodes, then unpickle."""
    check_opcodes(data)
    return unpickle(data, unpickler)


def stat_state(data: bytes) -> dict[Any, Any]:
    """The pickled Stat's __dict__, from `data` whose opcodes the caller has checked."""
    obj = unpickle(data, RecordUnpickler)
    state = getattr(obj, "state", None)
    if type(obj) is not _StatState or not isinstance(state, dict) or type(state) is not dict:
        raise DecodeError("not a Django Q record")
    return state
