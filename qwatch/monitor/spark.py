"""Sparklines: a series of numbers as block characters (pure).

The pane's are drawn once when its data arrives. The table's are drawn when a row is on
screen (`table_sparkline`, cached by its values): a history read for 10,000 runs would
otherwise draw 10,000 sparklines in one go, for the forty rows a terminal shows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

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


@lru_cache(maxsize=4096)  # a few screens' worth: the rows on screen repeat frame after frame
def table_sparkline(values: tuple[float | None, ...], width: int) -> str:
    """A table row's sparkline: `sparkline(values, width)`, drawn once per distinct series."""
    return sparkline(values, width)


def peak(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
