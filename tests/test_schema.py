"""Schema changes go through migrations: from empty, and from the first
released schema with its data intact, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import Session, SQLModel, select

sys.path.insert(0, str(Path(__file__).resolve().parent))

from app import imap_toml, mailbot_cli

from mailbot.store import schema
from mailbot.store.engine import make_engine
from mailbot.store.tables import Ticket


def test_migrations_from_empty_give_exactly_the_models_schema(database_url: str) -> None:
    engine = make_engine(database_url)
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []
    schema.upgrade(engine)  # again: nothing to do
    engine.dispose()


def test_a_database_of_the_first_released_schema_upgrades_with_its_data(database_url: str) -> None:
    engine = make_engine(database_url)
    schema.upgrade(engine, "0001")
    opened = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO ticket (state, sender, ip, reply_code, status, opened_at, due_at, updated_at, verified) "
            "VALUES ('open', 'erik@contoso.example', '203.0.113.45', '550', '5.7.511', :o, :d, :o, :v)"),
            {"o": opened, "d": opened.replace(day=22), "v": True})
        conn.execute(text(
            "INSERT INTO message (mailbox, identity, digest, raw, size, truncated, fetched_at, state, attempts,"
            " server_done, ticket_id) VALUES ('m', '<a@b>', 'x', :raw, 3, :f, :o, 'processed', 1, :t, 1)"),
            {"raw": b"abc", "f": False, "o": opened, "t": True})
    schema.upgrade(engine)
    with Session(engine) as s:
        [ticket] = s.exec(select(Ticket)).all()
        assert (ticket.ref, ticket.state, ticket.ip, ticket.status) == ("DL-000001", "open", "203.0.113.45", "5.7.511")
        assert (ticket.clock, ticket.sla_stage, ticket.due_at) == (1, 0, opened.replace(day=22))
        assert s.exec(text("SELECT folder_kind FROM message")).one()[0] == "inbox"  # type: ignore[call-overload]
    engine.dispose()


def test_a_database_of_the_previous_release_upgrades_with_its_queue_and_backlog_intact(database_url: str) -> None:
    """0004 is what the first landing shipped; 0005 adds three indexes and rebuilds one."""
    from sqlalchemy import inspect

    from mailbot.store.tables import OutboxMail, StoredMessage

    engine = make_engine(database_url)
    schema.upgrade(engine, "0004")
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO message (mailbox, identity, digest, raw, size, truncated, fetched_at, state, attempts,"
            " server_done, folder_kind) VALUES ('m', '<waiting@b>', 'x', :raw, 3, :f, :o, 'stored', 0, :f, 'inbox')"),
            {"raw": b"abc", "f": False, "o": at})
        conn.execute(text(
            "INSERT INTO outbox (kind, envelope_from, recipients, rcpt_domain, message_id, subject, raw, state,"
            " attempts, next_attempt_at, created_at) VALUES ('ack', 'delist@example.org', 'ann@one.example',"
            " 'one.example', '<q@example.org>', 's', :raw, 'queued', 0, :o, :o)"), {"raw": b"mail", "o": at})
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    indexes = {i["name"]: i["column_names"] for t in ("message", "outbox") for i in inspect(engine).get_indexes(t)}
    assert indexes["ix_message_claim"] == ["state", "attempts", "id"]
    assert indexes["ix_message_unmarked"] == ["server_done", "mailbox"]
    assert indexes["ix_outbox_due"] == ["state", "next_attempt_at", "id"]
    assert indexes["ix_outbox_created"] == ["created_at", "kind"]
    with Session(engine) as s:
        [msg] = s.exec(select(StoredMessage).where(StoredMessage.state == "stored")).all()
        assert (msg.identity, msg.attempts, msg.raw) == ("<waiting@b>", 0, b"abc")
        [mail] = s.exec(select(OutboxMail).where(OutboxMail.state == "queued")).all()
        assert (mail.recipients, mail.message_id, mail.raw) == ("ann@one.example", "<q@example.org>", b"mail")
    engine.dispose()


def test_0007_makes_mail_text_unbounded_and_keeps_the_data_and_its_references(database_url: str) -> None:
    """0005 is what the last landing shipped. SQLite took long values all along (it ignores lengths):
    a long Message-ID stored then is re-keyed as the new code keys it, so the same mail fetched
    again is still recognised."""
    from sqlalchemy import inspect

    from mailbot.source.base import Fetched
    from mailbot.source.storing import identity_key, store_batch
    from mailbot.store.tables import StoredMessage, TicketEvent

    engine = make_engine(database_url)
    schema.upgrade(engine, "0005")
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    long_id = "<" + "x" * 300 + "@forwarder.example>"
    raw = f"Message-ID: {long_id}\r\nFrom: ann@one.example\r\n\r\nhi\r\n".encode()
    sqlite = engine.dialect.name == "sqlite"
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO ticket (state, sender, opened_at, updated_at, verified, clock, sla_stage) "
            "VALUES ('open', 'ann@one.example', :o, :o, :v, 1, 0)"), {"o": at, "v": True})
        conn.execute(text(
            "INSERT INTO ticket_event (ticket_id, at, kind, actor, detail) VALUES (1, :o, 'opened', 'ann@one.example',"
            " 'x')"), {"o": at})
        conn.execute(text(
            "INSERT INTO message (mailbox, uidvalidity, uid, identity, message_id, digest, raw, size, truncated,"
            " fetched_at, state, attempts, server_done, folder_kind, ticket_id) VALUES ('m', 7, 1, :i, :mid, :d,"
            " :raw, 3, :f, :o, 'processed', 1, :t, 'inbox', 1)"),
            {"i": long_id if sqlite else "<short@b>", "mid": long_id if sqlite else "<short@b>",
             "d": hashlib.sha256(raw).hexdigest(), "raw": raw, "f": False, "o": at, "t": True})
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    columns = {(t, c["name"]): c["type"] for t in ("message", "ticket", "ticket_event", "outbox")
               for c in inspect(engine).get_columns(t)}
    for key in (("message", "message_id"), ("message", "sender"), ("ticket", "sender"), ("ticket_event", "actor"),
                ("outbox", "dedupe_key"), ("outbox", "rcpt_domain")):
        assert getattr(columns[key], "length", None) is None, key  # TEXT: no length
    if not sqlite:  # a btree entry may not exceed 2,704 bytes; a hash index has no such limit
        with engine.connect() as conn:
            defs = dict(conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE indexname IN "
                                          "('ix_message_message_id', 'ix_ticket_sender')")).all())
        assert len(defs) == 2 and all("USING hash" in d for d in defs.values()), defs
    with Session(engine) as s:
        [msg] = s.exec(select(StoredMessage)).all()
        [event] = s.exec(select(TicketEvent)).all()
        assert (msg.ticket_id, event.ticket_id, msg.raw) == (1, 1, raw)
        if sqlite:
            assert msg.identity == identity_key(long_id) != long_id and msg.message_id == long_id
            # fetched again (e.g. after a UIDVALIDITY reset): a duplicate, not a second message
            stored, dups = store_batch(s, "m", 8, [Fetched(5, None, raw, len(raw))])
            assert (stored, len(dups)) == (0, 1)
    engine.dispose()


def test_0010_gives_old_state_events_their_from_and_to_and_leaves_other_events_alone(database_url: str) -> None:
    """Before 0010 a state change lived only in the event text ("open → answered: why"), which the
    digest searched: old rows get the two columns parsed once, so the digest still counts them."""
    from mailbot.store.tables import TicketEvent

    engine = make_engine(database_url)
    schema.upgrade(engine, "0009")
    at = datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO ticket (state, sender, opened_at, updated_at, verified, clock, sla_stage) "
            "VALUES ('open', 'ann@one.example', :o, :o, :v, 2, 0)"), {"o": at, "v": True})
        for kind, detail in (("state", "open → answered: answer in the sent folder <s@x>"),
                             ("state", "answered → closed"),
                             ("state", "closed → open (clock 2): the sender wrote again"),
                             ("opened", "ticket by rule x → y"), ("state", "something else")):
            conn.execute(text("INSERT INTO ticket_event (ticket_id, at, kind, actor, detail) "
                              "VALUES (1, :o, :k, 'staff', :d)"), {"o": at, "k": kind, "d": detail})
    schema.upgrade(engine)
    with Session(engine) as s:
        rows = [(e.kind, e.from_state, e.to_state, e.detail)
                for e in s.exec(select(TicketEvent).order_by(TicketEvent.id)).all()]  # type: ignore[arg-type]
    assert rows == [("state", "open", "answered", "answer in the sent folder <s@x>"),
                    ("state", "answered", "closed", None),
                    ("state", "closed", "open", "(clock 2): the sender wrote again"),
                    ("opened", None, None, "ticket by rule x → y"),
                    ("state", None, None, "something else")]
    engine.dispose()


READ_ONLY = [["show", "DL-000001"], ["tickets"], ["status"], ["outbox"], ["digest", "--preview", "digest.html"]]


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: c[0])
def test_a_read_only_command_leaves_an_older_schema_alone_and_says_to_upgrade(
        command: list[str], tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    """Building a desk migrated, so even `mailbot show` changed the schema under a daemon of the
    previous release. A command that only reads refuses in one line instead."""
    engine = make_engine(database_url)
    schema.upgrade(engine, "0005")
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    r = mailbot_cli("-c", str(path), *command, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        f"mailbot: the database schema is 0005, this mailbot reads {schema.head()}: run `mailbot db upgrade` "
        "(the daemon also upgrades when it starts)"]
    assert schema.current(engine) == "0005"
    assert not (tmp_path / "digest.html").exists()
    engine.dispose()


def test_after_db_upgrade_the_read_only_commands_work(tmp_path: Path, dovecot: Any, smtp_server: Any,
                                                      database_url: str) -> None:
    engine = make_engine(database_url)
    schema.upgrade(engine, "0005")
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    up = mailbot_cli("-c", str(path), "db", "upgrade")
    assert up.returncode == 0 and f"schema 0005 -> {schema.head()}" in up.stdout, up.stderr
    r = mailbot_cli("-c", str(path), "tickets")
    assert r.returncode == 0, r.stderr
    engine.dispose()


def test_mail_bytes_are_compressed_with_lz4_on_postgresql_and_read_back_whole(database_url: str) -> None:
    # pglz, PostgreSQL's default, cost the server 0.45 s a 2,000-forward poll; LZ4 0.03 s (issue #16)
    if not database_url.startswith("postgresql"):
        pytest.skip("a PostgreSQL setting")
    from mailbot.store.tables import StoredMessage

    engine = make_engine(database_url)
    schema.upgrade(engine)
    with engine.connect() as conn:
        if not conn.execute(text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings "
                                 "WHERE name = 'default_toast_compression'")).scalar():
            pytest.skip("this PostgreSQL is built without LZ4")
        methods = dict(conn.execute(text(
            "SELECT attrelid::regclass::text, attcompression FROM pg_attribute "
            "WHERE attname = 'raw' AND attrelid IN ('message'::regclass, 'outbox'::regclass)")).all())
    assert methods == {"message": "l", "outbox": "l"}
    raw = b"Subject: big\n\n" + b"".join(b"line %d of a forwarded report\n" % i for i in range(2000))
    with Session(engine) as session:
        msg = StoredMessage(mailbox="imap://t", uid=1, uidvalidity=1, message_id="<lz4@t>", identity="lz4",
                            digest="lz4", size=len(raw), raw=raw, fetched_at=datetime.now(UTC))
        session.add(msg)
        session.commit()
        mid = msg.id
    with engine.connect() as conn:
        method = conn.execute(text("SELECT pg_column_compression(raw) FROM message WHERE id = :id"), {"id": mid})
        assert method.scalar() == "lz4"
    with Session(engine) as session:
        stored = session.get(StoredMessage, mid)
        assert stored is not None and stored.raw == raw
    engine.dispose()


def test_head_names_the_newest_migration() -> None:
    assert schema.head() == schema.HEAD, "a migration was added: set HEAD in mailbot/store/schema.py to its revision"


def test_a_database_at_the_newest_schema_is_recognised_without_loading_the_migrations(database_url: str) -> None:
    engine = make_engine(database_url)
    schema.upgrade(engine)
    engine.dispose()
    # a fresh process, as the daemon or a command starts: upgrading and requiring find nothing to do
    code = ("import sys; from mailbot.store.engine import make_engine, create_schema, require_schema; "
            f"e = make_engine({database_url!r}); create_schema(e); require_schema(e); e.dispose(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_database_behind_is_refused_until_upgraded(database_url: str) -> None:
    engine = make_engine(database_url)
    schema.upgrade(engine, "0015")
    with pytest.raises(schema.SchemaBehind):
        schema.require(engine)
    schema.upgrade(engine)
    assert schema.current(engine) == schema.HEAD
    schema.require(engine)
    engine.dispose()
