"""Sparklines: a series of numbers as block characters (pure).

Computed once when data arrives, never at render time: a frame for 200 clusters must
stay cheap.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

BLOCKS = "▁▂▃▄▅▆▇█"
NO_DATA = " "


def slots(points: Iterable[tuple[int, float | None]], count: int) -> list[float | None]:
    """(slot index, value) pairs as a list of `count` slots; missing or out-of-range -> None.

    A slot seen twice keeps its largest value: the sparkline shows peaks, not averages.
    """
    values: list[float | None] = [None] * count
    for index, value in points:
        if value is None or not 0 <= index < count:
            continue
        current = values[index]
        values[index] = value if current is None else max(current, value)
    return values


def level(value: float, top: float) -> int:
    """0 for nothing, 7 for the top; any positive value shows at least level 1.

    Zero keeps its own level so an idle queue never looks like a small backlog.
    """
    if value <= 0 or top <= 0:
        return 0
    return max(1, min(7, math.ceil(value / top * 7)))


def sparkline(values: Sequence[float | None], width: int | None = None) -> str:
    """One character per value, newest at the right, scaled to the series' own maximum.

    With `width`, the newest `width` values are kept, or the line is padded on the left.
    """
    if width is not None:
        values = values[-width:] if width > 0 else ()
    known = [v for v in values if v is not None]
    top = max(known, default=0.0)
    line = "".join(NO_DATA if v is None else BLOCKS[level(v, top)] for v in values)
    if width is not None:
        line = line.rjust(width, NO_DATA)
    return line


def peak(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
