"""What a Decoder remembers between polls, to decode the next records faster.

A live cluster rewrites its record every 0.5 s, and most of it stays put:

- its pickle's layout: a pickle that an `OpcodeLayout` of an earlier one admits skips the
  opcode walk (safe_pickle says why that is sound). Layouts are shared by all keys: a
  fleet's clusters have a few dozen between them (their pickles differ in the lengths of
  hosts and pids), so the walk runs about once per layout, not once per cluster.
- everything but a few values: the timestamp, the queue sizes, now and then the
  reincarnations. A pickle that differs from one of its key's last fully decoded ones (a
  "base") only in the base's slots (qwatch.decode.pickle_flow: bytes that alone make one field's
  value) is decoded from those bytes alone: the base's ClusterStat, with the fields whose
  bytes changed made again as the unpickler would make them, and checked again by the
  decoder. The analysis that finds the slots is shared by every pickle of the same flow,
  whatever its key.

That is the verdict of the full decode: outside the slots the pickle is the base's bytes,
which parse and run exactly as they did, and each slot's object is used once, as the value
of its key (pickle_flow says why). The signature is still verified on every record.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from qwatch.decode.pickle_flow import DATETIME_BYTES, DATETIME_LATIN1, SINT, UINT, Flow, analyse
from qwatch.decode.safe_pickle import PY2_STR_ENCODING, OpcodeLayout
from qwatch.values import ClusterStat

_DATETIMES = (DATETIME_BYTES, DATETIME_LATIN1)
# datetime's pickle form, datetime(state[, tz]) with the 10 state bytes: the unpickler's
# call, which typeshed does not describe.
_from_state: Callable[..., datetime] = datetime
# Two bases: a cluster flipping between Idle and Working has a pickle of each length.
_BASES_PER_KEY = 2

# The shared tables are bounded: past a bound (a fleet of very many kinds of pickle, or a
# writer of ever new ones) the oldest entries go, which only costs a walk or an analysis.
_LAYOUTS_PER_LENGTH = 8
_SHAPES_PER_LAYOUT = 8
_MAX_LENGTHS = _MAX_LAYOUTS = 512


def _mask(length: int, ranges: Iterable[tuple[int, int]]) -> int:
    """0xFF at every byte of `length` but those of `ranges` ((start, width), ...), little-endian."""
    marks = bytearray(b"\xff") * length
    for start, width in ranges:
        marks[start : start + width] = bytes(width)
    return int.from_bytes(marks, "little")


@dataclass(frozen=True, slots=True)
class _Shape:
    """One analysis (pickle_flow.Flow) as masks, for every pickle of its flow."""

    slots: tuple[tuple[int, int, int, str], ...]  # (start, end, kind, key) of each slot
    fixed: int  # 0xFF at every byte outside the slots
    flow: int  # 0xFF at every byte the analysis read
    bits: int  # the analysed pickle's bytes there: the same there, the same flow

    @classmethod
    def of(cls, data: bytes, bits: int, flow: Flow) -> _Shape:
        cuts = [(slot.start, slot.width) for slot in flow.slots]
        read = _mask(len(data), [*cuts, *flow.unread])
        return cls(
            tuple((s.start, s.start + s.width, s.kind, s.key) for s in flow.slots),
            _mask(len(data), cuts),
            read,
            bits & read,
        )


# Layouts by pickle length, and shapes by layout, newest first: shared by all keys (and all
# decoders: what they hold is a property of pickles, not of a site).
_LAYOUTS: dict[int, list[OpcodeLayout]] = {}
_SHAPES: dict[OpcodeLayout, list[_Shape]] = {}


def _remember(
    table: dict[Any, list[Any]], key: Hashable, item: object, most: int, keys: int
) -> None:
    """Put `item` first in table[key], keeping at most `most` there and `keys` keys."""
    if key not in table and len(table) >= keys:
        del table[next(iter(table))]  # the oldest
    entries = table.setdefault(key, [])
    entries.insert(0, item)
    del entries[most:]


def layout_of(data: bytes) -> OpcodeLayout:
    """safe_pickle.check_opcodes, skipped when a known layout admits `data`; the layout that
    admits it, made by walking it (DecodeError if that fails) when none did."""
    for layout in _LAYOUTS.get(len(data), ()):
        if layout.admits(data):
            return layout
    layout = OpcodeLayout.of(data)
    _remember(_LAYOUTS, len(data), layout, _LAYOUTS_PER_LENGTH, _MAX_LENGTHS)
    return layout


def _shape(data: bytes, bits: int, layout: OpcodeLayout) -> _Shape | None:
    """The analysis of `data` (whose layout is `layout`): a known one of the same flow, or a
    new one (None if pickle_flow cannot analyse it)."""
    for shape in _SHAPES.get(layout, ()):
        if bits & shape.flow == shape.bits:
            return shape
    try:
        flow = analyse(data)
    except Exception:  # the record decoded: no analysis must change that verdict
        return None
    if flow is None:
        return None
    shape = _Shape.of(data, bits, flow)
    _remember(_SHAPES, layout, shape, _SHAPES_PER_LAYOUT, _MAX_LAYOUTS)
    return shape


def forget_shared() -> None:
    """Drop the layouts and analyses shared by all keys (for tests)."""
    _LAYOUTS.clear()
    _SHAPES.clear()


@dataclass(frozen=True, slots=True)
class _Base:
    """A pickle of the key decoded in full, and what it decoded to."""

    bits: int  # the pickle, little-endian: one object, compared in a few big-int operations
    length: int
    shape: _Shape
    stat: ClusterStat
    tz: dict[str, tzinfo | None]  # the tzinfo of each datetime slot's value, as unpickled


class KeyMemo:
    """What a Decoder remembers about one key (say a Redis key) between polls: `bases`, the
    key's latest fully decoded pickles of different shapes, newest first."""

    __slots__ = ("bases",)

    def __init__(self) -> None:
        self.bases: tuple[_Base, ...] = ()

    def remember(
        self, data: bytes, layout: OpcodeLayout, state: dict[Any, Any], stat: ClusterStat
    ) -> None:
        """Keep `data`, just decoded in full into `state` and `stat`, as a base: it replaces the
        base of the same shape, else the oldest. No base when pickle_flow cannot analyse it."""
        bits = int.from_bytes(data, "little")
        shape = _shape(data, bits, layout)
        if shape is None:
            return
        # A datetime's tzinfo is the unpickler's call's second argument, made by bytes
        # outside the slots: the same for every pickle this base admits.
        tz = {key: state[key].tzinfo for *_, kind, key in shape.slots if kind in _DATETIMES}
        base = _Base(bits, len(data), shape, stat, tz)
        others = tuple(other for other in self.bases if other.shape is not shape)
        self.bases = (base, *others)[:_BASES_PER_KEY]

    def changes(self, data: bytes) -> tuple[ClusterStat, list[tuple[str, object]]] | None:
        """When `data` differs from a base only in its slots: the base's ClusterStat, and the
        (key, value) of each slot whose bytes changed, made as the unpickler makes it (the
        caller still checks it as a field). None otherwise, and on any doubt: a full decode
        then says what is wrong."""
        length = len(data)
        for base in self.bases:
            if base.length != length:
                continue
            diff = int.from_bytes(data, "little") ^ base.bits
            if diff & base.shape.fixed:
                continue
            changed: list[tuple[str, object]] = []
            delta = diff.to_bytes(length, "little")  # zero where nothing changed
            for start, end, kind, key in base.shape.slots:
                if delta.count(0, start, end) < end - start:
                    try:
                        changed.append((key, _read(data[start:end], kind, base.tz.get(key))))
                    except Exception:  # what the unpickler's datetime() call would raise
                        return None
            return base.stat, changed
        return None


def _read(raw: bytes, kind: int, tz: tzinfo | None) -> object:
    """A slot's value, as the unpickler makes it from those bytes (pickle_flow's kinds)."""
    if kind == UINT:
        return int.from_bytes(raw, "little")
    if kind == SINT:
        return int.from_bytes(raw, "little", signed=True)
    state: bytes | str = raw if kind == DATETIME_BYTES else raw.decode(PY2_STR_ENCODING)
    return _from_state(state) if tz is None else _from_state(state, tz)


DecodeMemo = dict[Hashable, KeyMemo]
