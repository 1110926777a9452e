"""What a Decoder remembers about one key between polls, to decode its next record faster.

A live cluster rewrites its record every 0.5 s. Two things usually stay put:

- its pickle's layout: a pickle that an `OpcodeLayout` of the key's latest ones admits
  skips the opcode walk (safe_pickle says why that is sound);
- everything but the timestamp: a pickle that differs from the key's last fully decoded
  one only in the timestamp datetime's 10 state bytes is decoded from those bytes alone.

The second is safe because it is only taken when the base pickle ends exactly as Django Q's
pickles end (`_TIMESTAMP_TAILS`) and the opcode walk read those bytes as those opcodes: then
the 10 bytes are a value the walk skips, they are the argument of the state's last
`datetime(...)` call, and nothing after them refers to it. Changing them can change the
timestamp and nothing else; the caller still range-checks the new datetime.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from datetime import datetime, tzinfo

from qwatch.safe_pickle import OpcodeLayout
from qwatch.stat_types import ClusterStat

_LAYOUTS_PER_KEY = 2
_DATETIME_STATE_LEN = 10  # a pickled datetime's state: y y m d H M S us us us

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


class KeyMemo:
    """What a Decoder remembers about one key (say a Redis key) between polls.

    `layouts`: the layouts of the key's latest pickles, newest first (up to two: a cluster
    flipping between Idle and Working has two, the status text differs in length).

    `stat` and what follows: the key's last pickle decoded in full, and where in it the
    `timestamp` datetime's 10 bytes are. A live cluster rewrites its record every 0.5 s
    and most often only that timestamp moved; such a pickle is decoded from those bytes
    alone (see `retimed`).
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

    def check_opcodes(self, data: bytes) -> OpcodeLayout:
        """safe_pickle.check_opcodes, skipped when `data` is laid out like one of the key's latest
        pickles; the layout that admits `data`, which is kept if it is new."""
        for layout in self.layouts:
            if layout.admits(data):
                return layout
        layout = OpcodeLayout.of(data)
        self.layouts = (layout, *self.layouts[: _LAYOUTS_PER_KEY - 1])
        return layout

    def remember(
        self, data: bytes, layout: OpcodeLayout, timestamp: datetime, stat: ClusterStat
    ) -> None:
        """Keep `data`, just decoded in full into `stat`, as the base for `retimed`, when it
        ends the way Django Q's pickles end (_TIMESTAMP_TAILS).

        The opcode walk's marks (`layout`) must agree byte for byte: then those bytes are those
        opcodes (no other parse of them passes the walk), so the state's "timestamp" is the
        value of that REDUCE of those 10 bytes, pushed after every other value and referenced
        by nothing after it. Whatever else those bytes hold cannot change another field.
        """
        self.stat = None
        for tail, length, marks in _TIMESTAMP_TAILS:
            start = len(data) - length
            match = tail.fullmatch(data, start) if start > 0 else None
            if match is None:
                continue
            if layout.mask >> (8 * start) != marks:
                return
            state_at = match.start(1)
            self.stat = stat
            self.base = int.from_bytes(data, "little")
            self.length = len(data)
            self.low_mask = (1 << (8 * state_at)) - 1
            self.high = state_at + _DATETIME_STATE_LEN
            self.tz = timestamp.tzinfo
            return

    def retimed(self, data: bytes) -> tuple[ClusterStat, datetime] | None:
        """When `data` differs from the base (see `remember`) only in the 10 bytes of its
        timestamp: the base's ClusterStat, and the timestamp `data` unpickles to, made by
        the same call the unpickler would make, `datetime(<bytes>, <tzinfo>)`, and not yet
        range-checked. Else None, and on any doubt too: a full decode then says what is wrong.
        """
        stat = self.stat
        if stat is None or len(data) != self.length:
            return None
        diff = int.from_bytes(data, "little") ^ self.base
        if diff & self.low_mask or diff >> (8 * self.high):
            return None
        state = data[self.high - _DATETIME_STATE_LEN : self.high]
        try:
            return stat, datetime(state) if self.tz is None else datetime(state, self.tz)
        except Exception:
            return None


DecodeMemo = dict[Hashable, KeyMemo]
