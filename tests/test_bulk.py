"""A batch's events and mails are written at each flush, one executemany a table, in the order
they were added, and behave as rows the unit of work wrote: seen by the next query, and a
unique key they break fails the flush (issue #16)."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from mailbot.clock import utcnow
from mailbot.store import unit
from mailbot.store.engine import transaction
from mailbot.store.tables import OutboxMail, Ticket, TicketEvent


def opened(engine: Engine, now: datetime) -> int:
    with transaction(engine) as session:
        ticket = Ticket(state="open", sender="ann@one.example", opened_at=now, updated_at=now)
        session.add(ticket)
        session.flush()
        assert ticket.id is not None
        return ticket.id


def mail(tid: int, n: int, now: datetime) -> OutboxMail:
    return OutboxMail(ticket_id=tid, kind="ack", envelope_from="desk@example.org", recipients="ann@one.example",
                      message_id=f"<m{n}@example.org>", subject="s", raw=b"mail", next_attempt_at=now, created_at=now)


def test_a_batchs_events_and_mails_go_in_one_statement_a_table_in_the_order_added(engine: Engine) -> None:
    now = utcnow()
    tid = opened(engine, now)
    written: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda _c, _cu, stmt, *_: written.append(stmt.split("(")[0]))
    with transaction(engine) as session:
        unit.of(session).bulk = True
        for n in range(5):
            session.add(TicketEvent(ticket_id=tid, at=now, kind="note", actor="mailbot", detail=f"event {n}"))
            session.add(mail(tid, n, now))
        # a query flushes first, as for rows of the unit of work: it sees them, in the order added
        seen = [d for (d,) in session.execute(select(TicketEvent.detail).order_by(TicketEvent.id)).all()]
        assert seen == [f"event {n}" for n in range(5)]
        assert not session.new  # written, and no longer held
    inserts = [s.strip() for s in written if s.startswith("INSERT")]
    assert inserts == ["INSERT INTO ticket_event", "INSERT INTO outbox"]
    with Session(engine) as session:
        assert [m for (m,) in session.execute(select(OutboxMail.message_id).order_by(OutboxMail.id))] == [
            f"<m{n}@example.org>" for n in range(5)]


def test_an_event_whose_once_key_was_used_fails_the_flush_and_the_transaction_leaves_nothing(
        engine: Engine) -> None:
    now = utcnow()
    tid = opened(engine, now)
    with pytest.raises(IntegrityError), transaction(engine) as session:
        unit.of(session).bulk = True
        session.add(mail(tid, 1, now))
        for _ in range(2):
            session.add(TicketEvent(ticket_id=tid, at=now, kind="outcome", actor="mailbot", once="delisted:1"))
        session.flush()
    with Session(engine) as session:
        assert session.execute(select(TicketEvent.id)).all() == []
        assert session.execute(select(OutboxMail.id)).all() == []


def test_outside_a_batch_the_unit_of_work_writes_them_and_they_keep_their_ids(engine: Engine) -> None:
    now = utcnow()
    tid = opened(engine, now)
    with transaction(engine) as session:
        row = TicketEvent(ticket_id=tid, at=now, kind="note", actor="cli:ann")
        session.add(row)
        session.flush()
        assert row.id is not None and row in session
