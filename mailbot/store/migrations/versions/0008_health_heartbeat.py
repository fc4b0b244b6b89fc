"""Daemon heartbeats (so `mailbot status` shows a daemon that is gone as stopped) and the
health of folders read besides the inbox (a sent folder that cannot be read is skipped
and reported, issue #12).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("daemon_health") as t:
        t.add_column(sa.Column("heartbeat_at", TS, nullable=True))
        t.add_column(sa.Column("heartbeat_seconds", sa.Float(), nullable=True))
        t.add_column(sa.Column("stopped_at", TS, nullable=True))
    # Rows of daemons from before heartbeats cannot say whether they still run: the
    # daemons that do write a new row when they start again.
    op.execute(sa.text("UPDATE daemon_health SET stopped_at = COALESCE(last_error_at, last_poll_ok_at, started_at)"))
    op.create_table(
        "folder_health",
        sa.Column("mailbox", sa.Text(), primary_key=True),
        sa.Column("failing_since", TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("last_error_at", TS, nullable=False),
        sa.Column("alert_open", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("folder_health")
    with op.batch_alter_table("daemon_health") as t:
        t.drop_column("stopped_at")
        t.drop_column("heartbeat_seconds")
        t.drop_column("heartbeat_at")
