"""Structured state changes: a "state" event names the state left and the state entered.

Before, the digest found answered tickets by searching event text for an arrow.
Events recorded before this revision get both columns parsed once from that text
("<from> → <to>: why"), which then keeps only the why, as new events do; a text that
does not parse is left as it is, with NULLs (issue #14).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

ARROW = re.compile(r"^(\w{1,20}) → (\w{1,20})(?::\s*)?(.*)$", re.DOTALL)


def upgrade() -> None:
    with op.batch_alter_table("ticket_event") as batch:
        batch.add_column(sa.Column("from_state", sa.String(20), nullable=True))
        batch.add_column(sa.Column("to_state", sa.String(20), nullable=True))
    events = sa.table("ticket_event", sa.column("id", sa.Integer), sa.column("kind", sa.String),
                      sa.column("detail", sa.Text), sa.column("from_state", sa.String),
                      sa.column("to_state", sa.String))
    bind = op.get_bind()
    rows = bind.execute(sa.select(events.c.id, events.c.detail).where(events.c.kind == "state")).all()
    for event_id, detail in rows:
        m = ARROW.match(detail or "")
        if m:
            bind.execute(events.update().where(events.c.id == event_id)
                         .values(from_state=m.group(1), to_state=m.group(2), detail=m.group(3).strip() or None))


def downgrade() -> None:
    with op.batch_alter_table("ticket_event") as batch:
        batch.drop_column("to_state")
        batch.drop_column("from_state")
