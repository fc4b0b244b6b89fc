"""Indexes for claiming, marking done and the reply breaker: lookups, not scans, under a backlog.

Without them each outbox claim sorted every queued row (SQLite: "USE TEMP
B-TREE FOR ORDER BY"), so draining a backlog of N replies cost N^2, and the
breaker's count of the last hour's automatic replies read every such row
(the kind is not in ix_outbox_created); now it reads the index only, and
stops at the cap; and the messages finished but not yet marked on the
server are found without reading the mailbox's whole history, which the
desk now asks after every fetched batch (issue #6).

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
    op.create_index("ix_message_unmarked", "message", ["server_done", "mailbox"])
    op.drop_index("ix_outbox_created", "outbox")
    op.create_index("ix_outbox_created", "outbox", ["created_at", "kind"])


def downgrade() -> None:
    op.drop_index("ix_outbox_created", "outbox")
    op.create_index("ix_outbox_created", "outbox", ["created_at"])
    op.drop_index("ix_message_unmarked", "message")
    op.drop_index("ix_message_claim", "message")
    op.drop_index("ix_outbox_due", "outbox")
