"""The first released schema: messages, tickets, events, outbox.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "mailbox_cursor",
        sa.Column("mailbox", sa.String(500), primary_key=True),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("last_poll_at", TS, nullable=True),
    )
    op.create_table(
        "ticket",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("sender", sa.String(500), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("reply_code", sa.String(8), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("rule", sa.String(100), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("due_at", TS, nullable=True),
        sa.Column("acked_at", TS, nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
    )
    for column in ("state", "sender", "ip", "due_at"):
        op.create_index(f"ix_ticket_{column}", "ticket", [column])
    op.create_table(
        "message",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mailbox", sa.String(500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=True),
        sa.Column("uid", sa.BigInteger(), nullable=True),
        sa.Column("location", sa.String(500), nullable=True),
        sa.Column("identity", sa.String(600), nullable=False),
        sa.Column("message_id", sa.String(1000), nullable=True),
        sa.Column("digest", sa.String(80), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.Column("fetched_at", TS, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("processed_at", TS, nullable=True),
        sa.Column("server_done", sa.Boolean(), nullable=False),
        sa.Column("sender", sa.String(500), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("findings", sa.Text(), nullable=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=True),
        sa.UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_message_coords"),
        sa.UniqueConstraint("mailbox", "identity", name="uq_message_identity"),
    )
    for column in ("mailbox", "message_id", "digest", "state", "ticket_id"):
        op.create_index(f"ix_message_{column}", "message", [column])
    op.create_table(
        "ticket_event",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_ticket_event_ticket_id", "ticket_event", ["ticket_id"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("dedupe_key", sa.String(300), nullable=True),
        sa.Column("envelope_from", sa.String(500), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(300), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("sent_at", TS, nullable=True),
        sa.UniqueConstraint("dedupe_key"),
        sa.UniqueConstraint("message_id"),
    )
    op.create_index("ix_outbox_ticket_id", "outbox", ["ticket_id"])
    op.create_index("ix_outbox_state", "outbox", ["state"])
    op.create_index("ix_outbox_next_attempt_at", "outbox", ["next_attempt_at"])


def downgrade() -> None:
    for table in ("outbox", "ticket_event", "message", "ticket", "mailbox_cursor"):
        op.drop_table(table)
