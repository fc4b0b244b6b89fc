"""Schema changes go through migrations: from empty, and from the first
released schema with its data intact, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import Session, SQLModel, select

from mailbot import schema
from mailbot.db import make_engine
from mailbot.models import Ticket


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
