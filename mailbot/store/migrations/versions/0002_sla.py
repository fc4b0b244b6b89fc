"""The 48-hour promise: SLA clocks, notices, digests, sent-folder answers.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("ticket") as t:
        t.add_column(sa.Column("clock", sa.Integer(), nullable=False, server_default="1"))
        t.add_column(sa.Column("sla_stage", sa.Integer(), nullable=False, server_default="0"))
        t.add_column(sa.Column("answered_at", TS, nullable=True))
        t.add_column(sa.Column("closed_at", TS, nullable=True))
    op.create_index("ix_ticket_sla", "ticket", ["state", "sla_stage", "due_at"])
    with op.batch_alter_table("message") as m:
        m.add_column(sa.Column("folder_kind", sa.String(10), nullable=False, server_default="inbox"))
    op.create_table(
        "sla_notice",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=False),
        sa.Column("clock", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("outbox_id", sa.Integer(), sa.ForeignKey("outbox.id"), nullable=True),
        sa.UniqueConstraint("ticket_id", "clock", "kind", name="uq_sla_notice"),
    )
    op.create_index("ix_sla_notice_ticket_id", "sla_notice", ["ticket_id"])
    op.create_table(
        "digest_run",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("slot", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("outbox_id", sa.Integer(), sa.ForeignKey("outbox.id"), nullable=True),
        sa.UniqueConstraint("slot"),
    )


def downgrade() -> None:
    op.drop_table("digest_run")
    op.drop_table("sla_notice")
    op.drop_index("ix_ticket_sla", "ticket")
    with op.batch_alter_table("message") as m:
        m.drop_column("folder_kind")
    with op.batch_alter_table("ticket") as t:
        for column in ("closed_at", "answered_at", "sla_stage", "clock"):
            t.drop_column(column)
