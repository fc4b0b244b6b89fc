"""No column length decides whether mail is processed; fetch failures are counted per message.

What comes from a message (Message-ID, sender addresses, the actor of an
event, the recipient's domain, the outbox's once-only key) was stored in
bounded VARCHAR columns: PostgreSQL refused a 700-character Message-ID at
fetch on every poll, and a valid 220-character From as an event's actor
(SQLite ignores lengths and took both). They become TEXT; the Message-ID
and ticket sender indexes become hash indexes on PostgreSQL (a btree entry
may not exceed 2,704 bytes). A Message-ID longer than 250 bytes is now
identified by its hash (the unique key must fit); rows stored under the old
rule (SQLite only) are re-keyed the same way, so a copy fetched again is
still recognised.

`fetch_attempt` counts the failed fetches of each message (quarantined
after three) and `mailbox_cursor.fetching` names the batch being fetched,
so a batch that kills the process is found at the next poll; a Maildir
source's waiting files are looked up by name (`ix_message_location`)
before any is read (issue #12).

On SQLite the altered tables are rebuilt (Alembic batch mode): upgrading a
large database takes a while and needs free space about the size of the
message table.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TEXT = {  # table -> (column, old length, nullable)
    "message": [("message_id", 1000, True), ("sender", 500, True)],
    "ticket": [("sender", 500, True)],
    "ticket_event": [("actor", 200, False)],
    "outbox": [("dedupe_key", 300, True), ("rcpt_domain", 255, True)],
}
HASHED = [("ix_message_message_id", "message", "message_id"), ("ix_ticket_sender", "ticket", "sender")]
IDENTITY_BYTES = 250  # as mailbot.source.storing.identity_key, copied: a migration must not change with the code


def _identity_key(mid: str) -> str:
    data = mid.encode("utf-8", "surrogatepass")
    return mid if len(data) <= IDENTITY_BYTES else "msgid-sha256:" + hashlib.sha256(data).hexdigest()


def upgrade() -> None:
    for name, table, _ in HASHED:
        op.drop_index(name, table)
    for table, columns in TEXT.items():
        with op.batch_alter_table(table) as t:
            for column, length, nullable in columns:
                t.alter_column(column, type_=sa.Text(), existing_type=sa.String(length), existing_nullable=nullable)
    for name, table, column in HASHED:
        op.create_index(name, table, [column], postgresql_using="hash")
    op.create_index("ix_message_location", "message", ["mailbox", "location"])
    with op.batch_alter_table("mailbox_cursor") as c:
        c.add_column(sa.Column("fetching", sa.Text(), nullable=True))
    op.create_table(
        "fetch_attempt",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("mailbox", sa.String(500), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("key", sa.String(600), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("mailbox", "uidvalidity", "key", name="uq_fetch_attempt"),
    )
    _rekey_long_identities()


def _rekey_long_identities() -> None:
    conn = op.get_bind()
    # 62 characters may already be 250 bytes of UTF-8; the exact test is in Python
    rows = conn.execute(sa.text(
        "SELECT id, identity, message_id, digest FROM message WHERE message_id IS NOT NULL "
        "AND length(identity) > 62")).all()
    for row_id, identity, mid, digest in rows:
        key = _identity_key(mid)
        if identity == mid and key != mid:
            new = key
        elif identity == f"{mid[:500]}|{digest}" and key != mid:
            new = f"{key}|{digest}"
        else:
            continue
        conn.execute(sa.text("UPDATE message SET identity = :n WHERE id = :i"), {"n": new, "i": row_id})


def downgrade() -> None:
    op.drop_index("ix_message_location", "message")
    op.drop_table("fetch_attempt")
    with op.batch_alter_table("mailbox_cursor") as c:
        c.drop_column("fetching")
    for name, table, _ in HASHED:
        op.drop_index(name, table)
    for table, columns in TEXT.items():
        with op.batch_alter_table(table) as t:
            for column, length, nullable in columns:
                t.alter_column(column, type_=sa.String(length), existing_type=sa.Text(), existing_nullable=nullable)
    for name, table, column in HASHED:
        op.create_index(name, table, [column])
