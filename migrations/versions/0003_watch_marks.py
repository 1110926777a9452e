"""Watch marks and gap kinds: time no daemon sampled a site is unknown, not downtime.

Revision ID: 0003_watch_marks
Revises: 0002_report_views
Create Date: 2026-11-27

`watches` keeps per site the time of the newest poll a daemon wrote and the id of the
newest batch (every batch sets them; the daemon writes one at least every 30 s). A daemon
taking a site over records the time since the previous mark as a gap of kind
'unwatched'; readers treat a mark older than two minutes as a daemon that is not
running. `gaps.kind` tells those gaps from Redis outages ('redis', what every existing
row is).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_watch_marks"
down_revision: str | Sequence[str] | None = "0002_report_views"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "watches",
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("watched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("batch", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("site", name=op.f("pk_watches")),
    )
    op.add_column("gaps", sa.Column("kind", sa.String(), server_default="redis", nullable=False))


def downgrade() -> None:
    # SQLite drops a column in place since 3.35; a batch rebuild would trip on the views.
    op.drop_column("gaps", "kind")
    op.drop_table("watches")
