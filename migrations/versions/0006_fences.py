"""Fencing tokens: a sampler that lost its site to another writes nothing after it.

Revision ID: 0006_fences
Revises: 0005_alerts
Create Date: 2026-12-02

`fences` keeps per site the token of its current sampler, an integer every takeover
bumps (issue 13). Every batch a daemon writes carries the token it took the site over
with, and is written only if the site's token is still that one, checked in the batch's
own transaction; an older token's batch is refused.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_fences"
down_revision: str | Sequence[str] | None = "0005_alerts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "fences",
        sa.Column("site", sa.String(), nullable=False),
        sa.Column("token", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("site", name=op.f("pk_fences")),
    )


def downgrade() -> None:
    op.drop_table("fences")
