"""Daemon health, for `mailbot status` and the poll-failure alert.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "daemon_health",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("last_poll_ok_at", TS, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", TS, nullable=True),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("failing_since", TS, nullable=True),
        sa.Column("alert_open", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("daemon_health")
