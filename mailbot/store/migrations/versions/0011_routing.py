"""What a ticket's rejection is and whose (issue #15): kind, issuer, and the family inferred
from the provider's words when the mail had no code. NULL on tickets from before.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("kind", sa.String(20), nullable=True))
        batch.add_column(sa.Column("issuer", sa.String(40), nullable=True))
        batch.add_column(sa.Column("inferred", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.drop_column("inferred")
        batch.drop_column("issuer")
        batch.drop_column("kind")
