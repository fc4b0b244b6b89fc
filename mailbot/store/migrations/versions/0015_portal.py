"""The self-service portal's requests (issue #19): `portal_request`. Nothing existing changes.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "portal_request",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("client", sa.String(64), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("person", sa.Text(), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("answer", sa.String(20), nullable=False),
        sa.Column("nonce", sa.String(64), nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("used_at", TS, nullable=True),
        sa.Column("outcome", sa.String(20), nullable=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=True),
    )
    for name, column in (("client", "client"), ("person", "person"), ("ip", "ip"), ("network", "network")):
        op.create_index(f"ix_portal_request_{name}", "portal_request", [column, "created_at"])
    op.create_index("ix_portal_request_ticket_id", "portal_request", ["ticket_id"])


def downgrade() -> None:
    op.drop_table("portal_request")
