"""What a Decoder remembers between records, to decode the next ones faster.

A live cluster rewrites its record every 0.5 s, and most of it stays put; a fleet's
clusters differ from one another in little more than their values:

- a pickle's layout: a pickle that an `OpcodeLayout` of an earlier one admits skips the
  opcode walk (safe_pickle says why that is sound). Layouts are shared by all keys: a
  fleet's clusters have a few dozen between them (their pickles differ in the lengths of
  hosts and pids), so the walk runs about once per layout, not once per cluster.
- everything but its values. A pickle that differs from a fully decoded one (a "base") only
  in the base's slots (qwatch.decode.pickle_flow: bytes that alone make one field's value:
  the timestamp, queue sizes, reincarnations, pids, host, cluster id) is decoded from those
  bytes alone: the base's ClusterStat, with the fields whose bytes changed made again as
  the unpickler would make them, and checked again by the decoder. A key's own latest
  pickles are its bases (`KeyMemo`); a key seen for the first time takes the site's base of
  its shape, another cluster's (`fleet_base`). The analysis that finds the slots is shared
  by every pickle of the same flow, whatever its key.

That is the verdict of the full decode: outside the slots the pickle is the base's bytes,
which parse and run exactly as they did, and each slot's object is used once, as the value
of its key (pickle_flow says why). The signature is still verified on every record.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from uuid import UUID, SafeUUID

from qwatch.decode.pickle_flow import (
    DATETIME_BYTES,
    DATETIME_KEYS,
    LIST_KEYS,
    SINT,
    TEXT_LATIN1,
    TEXT_UTF8,
    UINT,
    UUID_INT,
    Flow,
    analyse,
)
from qwatch.decode.safe_pickle import PY2_STR_ENCODING, OpcodeLayout
from qwatch.values import ClusterStat

# datetime's pickle form, datetime(state[, tz]) with the 10 state bytes: the unpickler's
# call, which typeshed does not describe.
_from_state: Callable[..., datetime] = datetime
_set = object.__setattr__  # as UUID.__setstate__ sets its (frozen) attributes
_UNKNOWN_SAFETY = SafeUUID.unknown
# Two bases: a cluster flipping between Idle and Working has a pickle of each length.
_BASES_PER_KEY = 2

# The shared tables are bounded: past a bound (a fleet of very many kinds of pickle, or a
# writer of ever new ones) the oldest entries go, which only costs a walk or an analysis.
_LAYOUTS_PER_LENGTH = 8
_SHAPES_PER_LAYOUT = 8
_MAX_LENGTHS = 512
_MAX_FLEET = 1024  # bases per site and shape

# How struct reads the int slots, as the unpickler reads them (pickle_flow's kinds, widths).
_INT_CODES = {(UINT, 1): "B", (UINT, 2): "H", (SINT, 4): "i"}
_ITEMS = -1  # the kind of a _Shape field that is a list's items


def _mask(length: int, ranges: Iterable[tuple[int, int]]) -> int:
    """0xFF at every byte of `length` but those of `ranges` ((start, width), ...), little-endian."""
    marks = bytearray(b"\xff") * length
    for start, width in ranges:
        marks[start : start + width] = bytes(width)
    return int.from_bytes(marks, "little")


@dataclass(frozen=True, slots=True, eq=False)
class _Shape:
    """One analysis (pickle_flow.Flow) as masks, for every pickle of its flow."""

    # Every slot in one call, in the pickle's order: the ints as the unpickler reads them,
    # the other slots' bytes as they are.
    unpack: Callable[[bytes], tuple[Any, ...]]
    # Per state key with slots, (key, lo, hi, kind): its slots are unpack's items lo:hi,
    # one of `kind`, or (kind _ITEMS) a list's items.
    fields: tuple[tuple[str, int, int, int], ...]
    fixed: int  # 0xFF at every byte outside the slots
    flow: int  # 0xFF at every byte the analysis read
    bits: int  # the analysed pickle's bytes there: the same there, the same flow

    @classmethod
    def of(cls, data: bytes, bits: int, flow: Flow) -> _Shape:
        cuts = [(slot.start, slot.width) for slot in flow.slots]
        read = _mask(len(data), [*cuts, *flow.unread])
        codes, at = ["<"], 0
        spans: dict[str, list[int]] = {}
        for index, slot in enumerate(sorted(flow.slots, key=lambda slot: slot.start)):
            codes.append(f"{slot.start - at}x" if slot.start > at else "")
            codes.append(_INT_CODES.get((slot.kind, slot.width), f"{slot.width}s"))
            at = slot.start + slot.width
            span = spans.setdefault(slot.key, [index, index, slot.kind])
            span[1] = index + 1
        fields = tuple(
            (key, lo, hi, _ITEMS if key in LIST_KEYS else kind)
            for key, (lo, hi, kind) in spans.items()
        )
        unpack = struct.Struct("".join(codes)).unpack_from
        return cls(unpack, fields, _mask(len(data), cuts), read, bits & read)


class Layout:
    """A layout the opcode walk passed, and the analyses of pickles of that layout, newest
    first. Compared by identity: no hashing of its big numbers per record."""

    __slots__ = ("layout", "shapes")

    def __init__(self, layout: OpcodeLayout) -> None:
        self.layout = layout
        self.shapes: list[_Shape] = []

    def shape_of(self, bits: int) -> _Shape | None:
        """The analysis made of a pickle of the same flow as the one whose bytes are `bits`."""
        for shape in self.shapes:
            if bits & shape.flow == shape.bits:
                return shape
        return None


# Layouts by pickle length, newest first: shared by all keys (and all decoders: what they
# hold is a property of pickles, not of a site).
_LAYOUTS: dict[int, list[Layout]] = {}


def layout_of(data: bytes, bits: int) -> Layout:
    """safe_pickle.check_opcodes, skipped when a known layout admits `data` (whose bytes are
    `bits`); the layout that admits it, made by walking it (DecodeError if that fails) when
    none did."""
    known = _LAYOUTS.get(len(data))
    if known is not None:
        for entry in known:
            if bits & entry.layout.mask == entry.layout.bits:  # OpcodeLayout.admits
                return entry
    elif len(_LAYOUTS) >= _MAX_LENGTHS:
        del _LAYOUTS[next(iter(_LAYOUTS))]  # the oldest
    entry = Layout(OpcodeLayout.of(data))
    known = _LAYOUTS.setdefault(len(data), [])
    known.insert(0, entry)
    del known[_LAYOUTS_PER_LENGTH:]
    return entry


def _shape(data: bytes, bits: int, layout: Layout) -> _Shape | None:
    """The analysis of `data` (whose layout is `layout`): a known one of the same flow, or a
    new one (None if pickle_flow cannot analyse it)."""
    shape = layout.shape_of(bits)
    if shape is not None:
        return shape
    try:
        flow = analyse(data)
    except Exception:  # the record decoded: no analysis must change that verdict
        return None
    if flow is None:
        return None
    shape = _Shape.of(data, bits, flow)
    layout.shapes.insert(0, shape)
    del layout.shapes[_SHAPES_PER_LAYOUT:]
    return shape


# What `Base.changes` finds: the base's ClusterStat, and the (key, value) of each key whose
# slots changed, the value made as the unpickler makes it.
Changes = tuple[ClusterStat, list[tuple[str, object]]]


@dataclass(frozen=True, slots=True)
class Base:
    """A pickle decoded in full (or rebuilt from one), and what it decoded to."""

    bits: int  # the pickle, little-endian: one object, compared in a few big-int operations
    length: int
    shape: _Shape
    stat: ClusterStat
    tz: dict[str, tzinfo | None]  # the tzinfo of each datetime slot's value, as unpickled
    slots: tuple[Any, ...]  # shape.unpack of the pickle

    @classmethod
    def of(
        cls, data: bytes, bits: int, layout: Layout, state: dict[Any, Any], stat: ClusterStat
    ) -> Base | None:
        """`data` (whose bytes are `bits`), just decoded in full into `state` and `stat`, as
        a base; None when pickle_flow cannot analyse it."""
        shape = _shape(data, bits, layout)
        if shape is None:
            return None
        # A datetime's tzinfo is the unpickler's call's second argument, made by bytes
        # outside the slots: the same for every pickle this base admits.
        tz = {key: state[key].tzinfo for key, *_ in shape.fields if key in DATETIME_KEYS}
        return cls(bits, len(data), shape, stat, tz, shape.unpack(data))

    def rebased(self, data: bytes, bits: int, stat: ClusterStat) -> Base:
        """A base for `data` (whose bytes are `bits`), which `changes` turned into `stat`."""
        return Base(bits, len(data), self.shape, stat, self.tz, self.shape.unpack(data))

    def changes(self, data: bytes, bits: int) -> Changes | None:
        """When `data` (whose bytes are `bits`) differs from this base only in its slots:
        the base's ClusterStat, and the (key, value) of each key whose slots changed, made
        as the unpickler makes it (the caller still checks it as a field). None otherwise,
        and on any doubt: a full decode then says what is wrong."""
        if len(data) != self.length or (bits ^ self.bits) & self.shape.fixed:
            return None
        slots, mine = self.shape.unpack(data), self.slots
        changed: list[tuple[str, object]] = []
        try:
            for key, lo, hi, kind in self.shape.fields:
                if kind == _ITEMS:
                    if slots[lo:hi] != mine[lo:hi]:
                        changed.append((key, list(slots[lo:hi])))
                elif slots[lo] != mine[lo]:
                    slot = slots[lo]
                    if kind != UINT and kind != SINT:  # an int is as struct read it
                        slot = _make(slot, kind, self.tz.get(key))
                    changed.append((key, slot))
        except Exception:  # what the unpickler would raise making the value
            return None
        return self.stat, changed


def _make(slot: bytes, kind: int, tz: tzinfo | None) -> object:
    """A text, UUID or datetime slot's value, as the unpickler makes it from its bytes."""
    if kind == TEXT_UTF8:
        return slot.decode("utf-8", "surrogatepass")
    if kind == TEXT_LATIN1:
        return slot.decode(PY2_STR_ENCODING)
    if kind == UUID_INT:
        # NEWOBJ, then BUILD calling UUID.__setstate__ with {"int": number}: what that
        # sets (an `is_safe` absent from the state is SafeUUID.unknown), without its dict
        # and its enum lookup, a third of the cost.
        uuid = UUID.__new__(UUID)
        _set(uuid, "int", int.from_bytes(slot, "little", signed=True))
        _set(uuid, "is_safe", _UNKNOWN_SAFETY)
        return uuid
    state: bytes | str = slot if kind == DATETIME_BYTES else slot.decode(PY2_STR_ENCODING)
    return _from_state(state) if tz is None else _from_state(state, tz)


class KeyMemo:
    """What a Decoder remembers about one key (say a Redis key) between polls: `bases`, the
    key's latest pickles of different shapes, newest first."""

    __slots__ = ("bases",)

    def __init__(self) -> None:
        self.bases: tuple[Base, ...] = ()

    def keep(self, base: Base) -> None:
        """Keep `base`, of one of this key's pickles: it replaces the base of the same shape,
        else the oldest."""
        others = tuple(other for other in self.bases if other.shape is not base.shape)
        self.bases = (base, *others)[:_BASES_PER_KEY]

    def changes(self, data: bytes, bits: int) -> Changes | None:
        """Base.changes from the first of the key's bases that admits `data`."""
        for base in self.bases:
            found = base.changes(data, bits)
            if found is not None:
                return found
        return None


DecodeMemo = dict[Hashable, KeyMemo]

# One base per site and shape, the first decoded: a fleet's clusters differ from one another
# mostly in their slots (hosts of the same length, pids, ids, times), so a cluster seen for
# the first time is rebuilt from another's base rather than unpickled. Keyed by what a
# base's ClusterStat owes to its decoder and not to its bytes (the site's name and time
# zone), and by the shape, which the base keeps alive so that its id is not reused.
_FLEET: dict[tuple[Hashable, int], Base] = {}


def fleet_base(site: Hashable, bits: int, layout: Layout) -> Base | None:
    """The site's base of the shape of the pickle whose bytes are `bits` and whose layout is
    `layout`, if it has one."""
    shape = layout.shape_of(bits)
    if shape is None:
        return None
    base = _FLEET.get((site, id(shape)))
    return base if base is not None and base.shape is shape else None


def share(site: Hashable, base: Base) -> None:
    """Make `base` the site's base of its shape, if the site has none."""
    key = (site, id(base.shape))
    if key in _FLEET:
        return
    if len(_FLEET) >= _MAX_FLEET:
        del _FLEET[next(iter(_FLEET))]  # the oldest
    _FLEET[key] = base


def forget_shared() -> None:
    """Drop the layouts, analyses and bases shared by all keys (for tests)."""
    _LAYOUTS.clear()
    _FLEET.clear()
