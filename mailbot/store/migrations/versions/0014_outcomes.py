"""Every ticket knows the listing, and how it ended (issue #17).

`ticket` gains what the listing source said of its IP (listed / not listed / lookup failed,
since, category, the reason for staff, earlier listings, last delisting, repeat, the last
lookup error) and its latest outcome; `ticket_event` gains the outcome of an "outcome" event,
the seconds from the forward to it, and `once`, the unique key that makes a delist's outcome
happen once per ticket and clock. All NULL (repeat false) on what exists.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("listing", sa.String(20), nullable=True))
        batch.add_column(sa.Column("listing_checked_at", TS, nullable=True))
        batch.add_column(sa.Column("listed_since", TS, nullable=True))
        batch.add_column(sa.Column("listing_category", sa.String(100), nullable=True))
        batch.add_column(sa.Column("listing_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("listed_before", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("last_delisted", TS, nullable=True))
        batch.add_column(sa.Column("repeat", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("listing_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("outcome", sa.String(20), nullable=True))
        batch.add_column(sa.Column("outcome_at", TS, nullable=True))
        batch.create_index("ix_ticket_listing", ["state", "listing_checked_at"])
    with op.batch_alter_table("ticket_event") as batch:
        batch.add_column(sa.Column("outcome", sa.String(20), nullable=True))
        batch.add_column(sa.Column("outcome_seconds", sa.Float(), nullable=True))
        batch.add_column(sa.Column("once", sa.String(200), nullable=True))
        batch.create_unique_constraint("uq_ticket_event_once", ["once"])
        batch.create_index("ix_ticket_event_outcome", ["outcome", "at"])


def downgrade() -> None:
    with op.batch_alter_table("ticket_event") as batch:
        batch.drop_index("ix_ticket_event_outcome")
        batch.drop_constraint("uq_ticket_event_once", type_="unique")
        batch.drop_column("once")
        batch.drop_column("outcome_seconds")
        batch.drop_column("outcome")
    with op.batch_alter_table("ticket") as batch:
        batch.drop_index("ix_ticket_listing")
        for name in ("outcome_at", "outcome", "listing_error", "repeat", "last_delisted", "listed_before",
                     "listing_reason", "listing_category", "listed_since", "listing_checked_at", "listing"):
            batch.drop_column(name)
