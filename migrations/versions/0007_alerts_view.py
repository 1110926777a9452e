"""Report view `alert_history`: every alert with how long it fired (docs/reporting.md).

Revision ID: 0007_alerts_view
Revises: 0006_fences
Create Date: 2026-12-02

One row per alert start from 0005's `alerts` table, with `duration_s` (start to resolved;
NULL while firing) computed as 0002's views compute durations. The view cannot be named
`alerts`: tables and views share one namespace on both engines, and 0005's table holds
that name; `qwatch report alerts` reads this view. 0002's `_Dialect` supplies
the engine-specific expression: loaded from the 0002 script, as 0004 does, since
revisions are frozen history.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Protocol

from alembic import op

revision: str = "0007_alerts_view"
down_revision: str | Sequence[str] | None = "0006_fences"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _load_0002() -> ModuleType:
    path = Path(__file__).with_name("0002_report_views.py")
    spec = importlib.util.spec_from_file_location("qwatch_revision_0002", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0002 = _load_0002()


class _Seconds(Protocol):
    """What this view needs of 0002's `_Dialect` (a class mypy cannot see through the
    module loaded at run time)."""

    def seconds(self, a: str, b: str) -> str: ...


def alerts(d: _Seconds) -> str:
    """Each alert: identity, labels, severity, summary, times and the last message sent."""
    return f"""
SELECT site, rule, subject, host, cluster_id, severity, summary, started_at, resolved_at,
  {d.seconds("started_at", "resolved_at")} AS duration_s,
  last_notified_status, last_notified_at
FROM alerts
"""


def upgrade() -> None:
    # get_context, not get_bind: it also answers in offline (--sql) mode.
    postgresql = op.get_context().dialect.name == "postgresql"
    dialect = _0002.POSTGRESQL if postgresql else _0002.SQLITE
    op.execute(f"CREATE VIEW alert_history AS {alerts(dialect)}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS alert_history")
