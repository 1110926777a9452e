"""Backlog per queue: table `queue_samples` and report view `hourly_queue_backlog`.

Revision ID: 0008_queue_backlog
Revises: 0007_alerts_view
Create Date: 2026-12-03

`queue_samples` holds one row per queue of a site (the main cluster's and each
ALT_CLUSTERS one) per sample time: broker, length (NULL when the broker's backlog cannot be
read without side effects, or its database did not answer), the oldest waiting task's age
where the broker tells it (ORM), and the reason for a NULL length. The per-cluster
`samples.queued` and the rollups' queued_* columns stay: they now hold the site's total
over its known queues, so 0002's views keep their meaning for a one-queue site.
`hourly_queue_backlog` is one row per site, queue and UTC hour (docs/reporting.md).
0002's `_Dialect` supplies the hour expression, loaded from the 0002 script as 0007 does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Protocol

import sqlalchemy as sa
from alembic import op

revision: str = "0008_queue_backlog"
down_revision: str | Sequence[str] | None = "0007_alerts_view"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def _load_0002() -> ModuleType:
    path = Path(__file__).with_name("0002_report_views.py")
    spec = importlib.util.spec_from_file_location("qwatch_revision_0002", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_0002 = _load_0002()


class _Hour(Protocol):
    def hour(self, x: str) -> str: ...


def hourly_queue_backlog(d: _Hour) -> str:
    """Per site, queue and hour: samples, how many knew the length, its min/max/avg, and
    the oldest waiting task's greatest age."""
    return f"""
SELECT site, queue, broker, {d.hour("sampled_at")} AS hour,
  count(*) AS samples, count(length) AS known,
  min(length) AS length_min, max(length) AS length_max, avg(length) AS length_avg,
  max(oldest_age_s) AS oldest_age_max_s
FROM queue_samples
GROUP BY site, queue, broker, {d.hour("sampled_at")}
"""


def upgrade() -> None:
    op.create_table(
        "queue_samples",
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("queue", sa.String(), nullable=False),
        sa.Column("sampled_at", UTC_TIME, nullable=False),
        sa.Column("broker", sa.String(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=True),
        sa.Column("oldest_age_s", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("site", "queue", "sampled_at", name=op.f("pk_queue_samples")),
    )
    op.create_index(op.f("ix_queue_samples_sampled_at"), "queue_samples", ["sampled_at"])
    # get_context, not get_bind: it also answers in offline (--sql) mode.
    postgresql = op.get_context().dialect.name == "postgresql"
    dialect = _0002.POSTGRESQL if postgresql else _0002.SQLITE
    op.execute(f"CREATE VIEW hourly_queue_backlog AS {hourly_queue_backlog(dialect)}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS hourly_queue_backlog")
    op.drop_table("queue_samples")  # and its index
