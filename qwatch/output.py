"""Rows out as a text table, CSV or JSON: the one writer of `status`, `history` and `report`.

Cells arrive formatted (`qwatch.fmt`); this module only lays them out. CSV leaves an empty
cell for None; JSON is compact unless asked `pretty` (two-space indents), UTF-8 (text beyond
ASCII as itself, control characters escaped). Neither ends with a newline: `print` adds it.
"""

from __future__ import annotations

import csv as _csv
import io
import json as _json
from collections.abc import Iterable, Sequence

import orjson

FORMATS = ("table", "csv", "json")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: set[int]) -> str:
    """Columns padded to their widest cell; `right` holds the indexes of numeric columns."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def csv(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A header line, then one line per row; None is an empty cell."""
    out = io.StringIO()
    writer = _csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    for row in rows:
        writer.writerow(["" if cell is None else cell for cell in row])
    return out.getvalue().rstrip("\n")


def json(document: object, *, pretty: bool = False) -> str:
    """One JSON document: compact, or indented two spaces for people when `pretty`.

    orjson, not the standard library: json's C encoder takes a tenth of `status --json` at
    10,000 clusters and any `indent` makes it fall back to its pure-Python encoder, 10x
    slower; orjson writes both forms in a few ms (docs/performance.md, section 11). The text
    is json.dumps' but for text beyond ASCII, written as itself (json escapes it). Datetimes
    are written as `datetime.isoformat()` writes them (qwatch.fmt.iso's form for UTC times).
    """
    option = orjson.OPT_NON_STR_KEYS | (orjson.OPT_INDENT_2 if pretty else 0)
    return orjson.dumps(document, option=option).decode()


def json_cell(value: object) -> str:
    """A nested value (an event's detail) as compact JSON with sorted keys, for one CSV cell."""
    return _json.dumps(value, sort_keys=True)
