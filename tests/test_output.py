"""qwatch.output: rows as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from qwatch import output


def test_table_pads_and_right_aligns() -> None:
    text = output.table(("name", "n"), [("a", 1), ("long", None)], right={1})
    assert text.splitlines() == ["name  n", "a     1", "long"]


def test_csv_round_trips_and_leaves_none_empty() -> None:
    text = output.csv(("a", "b"), [(1, None), ("x,y", 'say "hi"')])
    assert not text.endswith("\n")
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["1", ""], ["x,y", 'say "hi"']]


def test_json() -> None:
    moment = datetime(2025, 3, 1, 10, 0, 5, tzinfo=UTC)
    document = {"a": [1, None], "b": {"c": "é\x1b[2J"}, 3: moment}
    compact = output.json(document)
    # One line, text beyond ASCII as itself, a control character escaped (never obeyed by a
    # terminal that shows the output), a datetime as isoformat() writes it.
    assert compact == '{"a":[1,null],"b":{"c":"é\\u001b[2J"},"3":"2025-03-01T10:00:05+00:00"}'
    pretty = output.json(document, pretty=True)
    assert pretty.splitlines()[:3] == ["{", '  "a": [', "    1,"]
    expected = json.loads(json.dumps(document, default=datetime.isoformat))
    assert json.loads(compact) == json.loads(pretty) == expected
    # Indented as json.dumps(indent=2) indents, but for the text beyond ASCII.
    assert pretty == json.dumps(document, indent=2, ensure_ascii=False, default=datetime.isoformat)
    assert output.json_cell({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
