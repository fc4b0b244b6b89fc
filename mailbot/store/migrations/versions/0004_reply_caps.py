"""Indexes for the reply caps: counts per recipient, per domain and per hour stay cheap.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as t:
        t.add_column(sa.Column("rcpt_domain", sa.String(255), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, recipients FROM outbox")).all()
    for row_id, recipients in rows:
        first = (recipients or "").split(",")[0]
        conn.execute(sa.text("UPDATE outbox SET rcpt_domain = :d WHERE id = :i"),
                     {"d": first.rpartition("@")[2].lower() or None, "i": row_id})
    op.create_index("ix_outbox_rcpt", "outbox", ["recipients", "created_at"])
    op.create_index("ix_outbox_domain", "outbox", ["rcpt_domain", "created_at"])
    op.create_index("ix_outbox_created", "outbox", ["created_at"])


def downgrade() -> None:
    for name in ("ix_outbox_created", "ix_outbox_domain", "ix_outbox_rcpt"):
        op.drop_index(name, "outbox")
    with op.batch_alter_table("outbox") as t:
        t.drop_column("rcpt_domain")
