"""Ticket senders and reply caps that count people (issue #11).

`ticket_sender` records who forwarded for each ticket, with the facts read
from their own forward: only they (and verified staff) may act on the
ticket, and each sees only their own facts. Existing tickets get their
opener and every forward that opened or joined them.

`outbox.rcpt_person` is the recipient folded to a person (case, `+tag`):
the per-recipient cap counts it, so spelling one address thirty ways no
longer earns thirty replies.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mailbot.identity import person

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ticket_sender",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("ticket_id", sa.Integer(), sa.ForeignKey("ticket.id"), nullable=False),
        sa.Column("person", sa.Text(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("message.id"), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("reply_code", sa.String(8), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("ticket_id", "person", name="uq_ticket_sender"),
    )
    op.create_index("ix_ticket_sender_ticket_id", "ticket_sender", ["ticket_id"])
    with op.batch_alter_table("outbox") as t:
        t.add_column(sa.Column("rcpt_person", sa.Text(), nullable=True))
    conn = op.get_bind()
    for row_id, recipients in conn.execute(sa.text("SELECT id, recipients FROM outbox")).all():
        first = (recipients or "").split(",")[0]
        conn.execute(sa.text("UPDATE outbox SET rcpt_person = :p WHERE id = :i"),
                     {"p": person(first) if "@" in first else None, "i": row_id})
    op.drop_index("ix_outbox_rcpt", "outbox")
    op.create_index("ix_outbox_person", "outbox", ["rcpt_person", "created_at"])

    # Backfill: the forwards that opened or joined a ticket are its senders; the facts of each
    # sender are the ticket's (the only facts recorded before), which is what they were shown.
    seen: set[tuple[int, str]] = set()
    rows = conn.execute(sa.text(
        "SELECT m.id, m.ticket_id, m.sender, m.fetched_at, t.ip, t.reply_code, t.status, t.text "
        "FROM message m JOIN ticket t ON t.id = m.ticket_id "
        "WHERE m.folder_kind = 'inbox' AND m.sender LIKE '%@%' "
        "AND (m.outcome LIKE 'opened %' OR m.outcome LIKE 'joined %') ORDER BY m.id")).all()
    for mid, tid, sender, at, ip, reply_code, status, text in rows:
        key = (tid, person(sender))
        if key in seen or " " in sender.strip() or "<" in sender:
            continue
        seen.add(key)
        conn.execute(sa.text(
            "INSERT INTO ticket_sender (ticket_id, person, address, message_id, ip, reply_code, status, text, "
            "added_at) VALUES (:t, :p, :a, :m, :ip, :rc, :st, :tx, :at)"),
            {"t": tid, "p": key[1], "a": sender.strip(), "m": mid, "ip": ip, "rc": reply_code, "st": status,
             "tx": text, "at": at})


def downgrade() -> None:
    op.drop_index("ix_outbox_person", "outbox")
    op.create_index("ix_outbox_rcpt", "outbox", ["recipients", "created_at"])
    with op.batch_alter_table("outbox") as t:
        t.drop_column("rcpt_person")
    op.drop_index("ix_ticket_sender_ticket_id", "ticket_sender")
    op.drop_table("ticket_sender")
