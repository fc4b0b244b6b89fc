"""Who on staff has a ticket (issue #18): ticket.assignee, NULL for nobody.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.add_column(sa.Column("assignee", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ticket") as batch:
        batch.drop_column("assignee")
