"""Indexes for claiming: the next due outbox row and the next stored message are index lookups.

Without them each claim sorted every queued row (SQLite: "USE TEMP B-TREE FOR
ORDER BY"), so draining a backlog of N replies cost N^2 (issue #6).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_outbox_due", "outbox", ["state", "next_attempt_at", "id"])
    op.create_index("ix_message_claim", "message", ["state", "attempts", "id"])


def downgrade() -> None:
    op.drop_index("ix_message_claim", "message")
    op.drop_index("ix_outbox_due", "outbox")
