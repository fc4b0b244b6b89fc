"""The desk's own block list: `listing` (what is listed now) and `listing_history` (issue #17).

The `table` listing source reads them; `mailbot listing add|remove|import` write them, and
a delist records its idempotency key in the history, unique, so that a repeated delist
never delists twice. Nothing existing changes.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def _range_columns() -> list[sa.Column[object]]:
    return [sa.Column("network", sa.String(64), nullable=False),
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("first", sa.LargeBinary(16), nullable=False),
            sa.Column("last", sa.LargeBinary(16), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "listing",
        sa.Column("id", sa.Integer(), primary_key=True),
        *_range_columns(),
        sa.Column("prefix", sa.Integer(), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("category", sa.String(100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("origin", sa.String(100), nullable=True),
        sa.Column("added_by", sa.Text(), nullable=False),
        sa.UniqueConstraint("network"),
    )
    op.create_index("ix_listing_range", "listing", ["version", "first", "last"])
    op.create_table(
        "listing_history",
        sa.Column("id", sa.Integer(), primary_key=True),
        *_range_columns(),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("why", sa.Text(), nullable=True),
        sa.Column("category", sa.String(100), nullable=True),
        sa.Column("origin", sa.String(100), nullable=True),
        sa.Column("since", TS, nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_index("ix_listing_history_range", "listing_history", ["version", "first", "last"])
    op.create_index("ix_listing_history_network", "listing_history", ["network", "action"])


def downgrade() -> None:
    op.drop_index("ix_listing_history_network", "listing_history")
    op.drop_index("ix_listing_history_range", "listing_history")
    op.drop_table("listing_history")
    op.drop_index("ix_listing_range", "listing")
    op.drop_table("listing")
