"""Outgoing-server health: a server that cannot be used holds the queue and alerts once.

Before, a refused SMTP login failed every queued mail for good. Now such a
fault is the transport's, recorded here (once for all senders), and the
queue waits for the server to work again (issue #12).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "outgoing_health",
        sa.Column("name", sa.String(40), primary_key=True),
        sa.Column("failing_since", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", TS, nullable=True),
        sa.Column("tries", sa.Integer(), nullable=False),
        sa.Column("held", sa.Integer(), nullable=False),
        sa.Column("recovered_at", TS, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("outgoing_health")
