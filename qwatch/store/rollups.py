"""The rollup merge in SQL, generated from `qwatch.rollup.MERGE_RULES` (its one definition).

Two shapes of the same rules: `merge_pair` folds an incoming minute row into the stored
one (the writer's upsert), `merge_group` aggregates many minute rows into one (the hour
roll-up's GROUP BY). tests/test_store_rollups.py holds both to `qwatch.rollup.combine`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Float, case, cast, func

from qwatch.rollup import MERGE_RULES, Merge
from qwatch.store import models as m
from qwatch.store.dialect import Dialect

assert tuple(MERGE_RULES) == m.ROLLUP_FIELDS, "the rollup tables and MinuteRow disagree"


def merge_pair(dialect: Dialect, old: Any, new: Any) -> dict[str, ColumnElement[Any]]:
    """SET clauses folding row `new` (the upsert's `excluded`) into row `old`."""
    total = old.n + new.n
    sets: dict[str, ColumnElement[Any]] = {}
    for name, rule in MERGE_RULES.items():
        a, b = getattr(old, name), getattr(new, name)
        expr: ColumnElement[Any]
        if rule.how is Merge.SUM:
            expr = a + b
        elif rule.how is Merge.MIN:
            expr = dialect.least(a, b)
        elif rule.how is Merge.MAX:
            expr = dialect.greatest(a, b)
        else:
            expr = (a * old.n + b * new.n) / cast(total, Float)
        if rule.nullable:  # an unknown value yields to a known one
            expr = case((a.is_(None), b), (b.is_(None), a), else_=expr)
        sets[name] = expr
    return sets


def merge_group(rows: Any) -> dict[str, ColumnElement[Any]]:
    """Aggregates combining every row of a GROUP BY over the columns `rows` into one.

    SQL's aggregates skip NULLs, so a nullable column is combined over the rows that know
    it, and is NULL when none does: the rules' meaning with no CASE needed but the weight.
    """
    n = func.sum(rows.n)
    columns: dict[str, ColumnElement[Any]] = {}
    for name, rule in MERGE_RULES.items():
        column = getattr(rows, name)
        if rule.how is Merge.SUM:
            columns[name] = func.sum(column)
        elif rule.how is Merge.MIN:
            columns[name] = func.min(column)
        elif rule.how is Merge.MAX:
            columns[name] = func.max(column)
        else:
            weight = func.sum(case((column.is_not(None), rows.n))) if rule.nullable else n
            columns[name] = func.sum(column * rows.n) / cast(weight, Float)
    return columns
