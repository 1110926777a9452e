"""qwatch.output: rows as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json

from qwatch import output


def test_table_pads_and_right_aligns() -> None:
    text = output.table(("name", "n"), [("a", 1), ("long", None)], right={1})
    assert text.splitlines() == ["name  n", "a     1", "long"]


def test_csv_round_trips_and_leaves_none_empty() -> None:
    text = output.csv(("a", "b"), [(1, None), ("x,y", 'say "hi"')])
    assert not text.endswith("\n")
    assert list(csv.reader(io.StringIO(text))) == [["a", "b"], ["1", ""], ["x,y", 'say "hi"']]


def test_json() -> None:
    document = {"a": [1, None], "b": {"c": "é"}}
    compact = output.json(document)
    assert compact == '{"a":[1,null],"b":{"c":"\\u00e9"}}'  # one line, C encoder's output
    pretty = output.json(document, pretty=True)
    assert pretty.splitlines()[:3] == ["{", '  "a": [', "    1,"]
    assert json.loads(compact) == json.loads(pretty) == document
    assert output.json_cell({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
