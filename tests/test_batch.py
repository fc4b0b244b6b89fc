"""A batch of messages is read first and written together (issue #16): what the rules would ask
the database per message is asked once for the batch or known from the transaction itself, and
the outcomes are those of one message at a time: joins inside a batch and across batches, one
reply per ticket and person, the reply caps, and a bounded number of statements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from app import World, forward
from sqlalchemy import event

from mailbot.store.states import EventKind


@contextmanager
def statements(w: World) -> Iterator[list[str]]:
    """The statements the desk's engine sends to the database meanwhile (an executemany is one)."""
    seen: list[str] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split())[:60])

    event.listen(w.desk.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(w.desk.engine, "before_cursor_execute", before)


def test_a_batch_of_forwards_costs_about_one_statement_a_ticket(make_world: Callable[..., World],
                                                                database_url: str) -> None:
    n = 20
    w = make_world(mailbox={"process_batch": n})
    for i in range(n):
        w.deliver(forward(f"203.0.113.{10 + i}", f"batch-{i}", f"sender{i}@s{i}.example"))
    run = w.desk.processor.run
    counted: list[list[str]] = []

    def counting(*a: Any, **k: Any) -> Any:
        with statements(w) as seen:
            try:
                return run(*a, **k)
            finally:
                counted.append(seen)

    w.desk.processor.run = counting  # type: ignore[method-assign]
    w.run()
    assert len(w.tickets()) == n and len(w.smtp.wait_for(n)) == n
    used = sum(len(s) for s in counted)
    # Before: about ten a message (its ticket, event and sender each looked up or written, the
    # reply caps counted, the outbox key looked up in a savepoint, the message updated in steps).
    # Now, for the batch: the claim, the rows, the caps' counts, the IPs' tickets, the tickets' ids
    # (PostgreSQL's sequence, once), each table's rows written together, and the empty look-ups
    # that end the run. On SQLite the ORM inserts the senders row by row (no round trips there);
    # the events and mails go in one executemany each (store/bulk.py), as on PostgreSQL.
    per_message = 0 if database_url.startswith("postgresql") else 1
    assert used <= per_message * n + 20, "\n".join(s for c in counted for s in c)


def test_two_forwards_for_one_ip_in_one_batch_make_one_ticket_and_one_reply(world: World) -> None:
    sender = "dana@one.example"
    world.deliver(forward("203.0.113.10", "twice-1", sender))
    world.deliver(forward("203.0.113.10", "twice-2", sender))
    world.run()

    [ticket] = world.tickets()
    assert [m.ticket_id for m in world.messages()] == [ticket.id, ticket.id]
    assert [r.rcpt_tos for r in world.smtp.wait_for(1)] == [[sender]] and len(world.outbox()) == 1
    kinds = [(e.kind, e.detail) for e in world.events(ticket)]
    assert (EventKind.JOINED, "forward <twice-2@forwarder.example> for 203.0.113.10") in kinds
    assert (EventKind.NO_REPLY, f"ack already sent to {sender}") in kinds


def test_forwards_in_later_batches_join_the_open_ticket_and_a_key_used_before_is_refused(
        make_world: Callable[..., World]) -> None:
    w = make_world(mailbox={"process_batch": 1})
    w.deliver(forward("203.0.113.10", "first", "ann@one.example"))
    w.run()
    w.deliver(forward("203.0.113.10", "second", "bob@two.example"))
    w.deliver(forward("203.0.113.10", "again", "bob@two.example"))
    w.run()

    [ticket] = w.tickets()
    assert [m.ticket_id for m in w.messages()] == [ticket.id] * 3
    # bob's reply on a ticket of an earlier batch went in at once; his second forward found its
    # key taken (INSERT ... ON CONFLICT DO NOTHING) and got nothing more
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(2)) == ["ann@one.example", "bob@two.example"]
    assert len(w.outbox()) == 2
    assert (EventKind.NO_REPLY, "ack already sent to bob@two.example") in [
        (e.kind, e.detail) for e in w.events(ticket)]


def test_forwards_joining_tickets_of_earlier_batches_know_their_senders_from_one_query(
        make_world: Callable[..., World]) -> None:
    from sqlmodel import Session, select

    from mailbot.store.tables import TicketSender

    n = 6
    w = make_world(mailbox={"process_batch": 2 * n})
    for i in range(n):
        w.deliver(forward(f"203.0.113.{10 + i}", f"first-{i}", "ann@one.example"))
    w.run()
    # the next batch: ann again on every ticket, and a newcomer on each
    for i in range(n):
        w.deliver(forward(f"203.0.113.{10 + i}", f"again-{i}", "ann@one.example"))
        w.deliver(forward(f"203.0.113.{10 + i}", f"new-{i}", f"bob{i}@two.example"))
    with statements(w) as seen:
        w.run()

    tickets = w.tickets()
    assert len(tickets) == n and all(m.ticket_id for m in w.messages())
    with Session(w.desk.engine) as session:
        rows = session.exec(select(TicketSender).order_by(TicketSender.ticket_id, TicketSender.person)).all()
    # one row a person a ticket: ann's second forward found her row, each newcomer got one
    assert [(r.ticket_id, r.address) for r in rows] == [
        pair for i, t in enumerate(tickets) for pair in ((t.id, "ann@one.example"), (t.id, f"bob{i}@two.example"))]
    # ann's row now names her latest forward
    again = {m.id for m in w.messages() if (m.message_id or "").startswith("<again-")}
    assert {r.message_id for r in rows if r.address == "ann@one.example"} == again
    # whether each of the 12 is a sender already was asked once for the batch, not per forward
    # (which would also have written everything pending before each question)
    asked = [s for s in seen if s.startswith("SELECT ticket_sender.")]
    assert len(asked) == 1, asked
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(2 * n))[-n:] == [f"bob{i}@two.example" for i in range(n)]


def test_the_reply_caps_count_across_batches_as_one_message_at_a_time_did(make_world: Callable[..., World]) -> None:
    w = make_world(mailbox={"process_batch": 2}, replies={"per_recipient_daily": 3, "per_domain_daily": 4})
    senders = ["ann@one.example"] * 4 + ["bob@one.example", "cid@one.example", "dan@two.example"]
    for i, sender in enumerate(senders):
        w.deliver(forward(f"203.0.113.{10 + i}", f"cap-{i}", sender))
    w.run()

    assert len(w.tickets()) == len(senders)
    # ann's first three (two batches), bob's (the domain's fourth), not cid's (the fifth), dan's
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(5)) == [
        "ann@one.example", "ann@one.example", "ann@one.example", "bob@one.example", "dan@two.example"]
    reasons = sorted(e.detail or "" for t in w.tickets() for e in w.events(t) if e.kind == EventKind.NO_REPLY)
    assert reasons == [
        "ack not sent: 3 automatic replies to ann@one.example in 24 hours (replies.per_recipient_daily = 3)",
        "ack not sent: 4 automatic replies to one.example in 24 hours (replies.per_domain_daily = 4)"]


def test_the_next_batch_is_handed_to_extraction_ahead_without_being_claimed(make_world: Callable[..., World]) -> None:
    from sqlmodel import Session, select

    from mailbot.store.tables import StoredMessage

    w = make_world(mailbox={"process_batch": 2})
    for i in range(5):
        w.deliver(forward(f"203.0.113.{40 + i}", f"ahead-{i}", f"sender{i}@a{i}.example"))
    handed: list[tuple[int, int, list[int]]] = []
    given = w.desk.processor.read_ahead

    def read_ahead(now: Any, later: Any) -> None:
        with Session(w.desk.engine) as session:  # what the database says at that moment
            attempts = {m.raw: m.attempts for m in session.exec(select(StoredMessage)).all()}
        handed.append((len(now), len(later), [attempts[raw] for raw in later]))
        given(now, later)

    w.desk.processor.read_ahead = read_ahead
    polled, _ = w.run()
    assert polled.process.processed == 5 and len(w.tickets()) == 5
    # batches of 2, 2, 1: each handed with the next, whose attempts are still 0 (counted when claimed)
    assert handed == [(2, 2, [0, 0]), (2, 1, [0]), (1, 0, [])]
    assert w.desk.extractor.started == 2  # two mails at once: both workers read


def test_a_batchs_tickets_take_their_ids_at_once_and_are_written_together_and_replies_name_them(
        make_world: Callable[..., World], database_url: str) -> None:
    w = make_world(mailbox={"process_batch": 10})
    w.deliver(forward("203.0.113.60", "earlier", "old@o.example"))
    w.run()
    [earlier] = w.tickets()
    w.deliver(forward("203.0.113.61", "new-1", "a@a.example"))
    w.deliver(forward("203.0.113.60", "joins", "b@b.example"))  # joins the earlier ticket: no id reserved
    w.deliver(forward("203.0.113.62", "new-2", "c@c.example"))
    w.deliver(forward("203.0.113.61", "joins-new", "d@d.example"))  # joins one opened in this batch
    with statements(w) as seen:
        w.run()
    assert not [s for s in seen if s.startswith("INSERT INTO ticket (") and "RETURNING" in s]
    if database_url.startswith("postgresql"):
        assert len([s for s in seen if "nextval" in s]) == 1
    else:  # SQLite: the rows are written at the end, the tickets first
        writes = [s for s in seen if s.split()[0] in ("INSERT", "UPDATE", "DELETE")]
        claimed = max(i for i, s in enumerate(writes) if s.startswith("UPDATE message SET attempts"))
        # but for b's reply, whose key names a ticket of before: asked at once (INSERT ... ON CONFLICT)
        assert writes[claimed + 1].startswith("INSERT INTO outbox ("), writes[claimed:]
        assert writes[claimed + 2].startswith("INSERT INTO ticket ("), writes[claimed:]
    tickets = w.tickets()
    assert [t.ip for t in tickets] == ["203.0.113.60", "203.0.113.61", "203.0.113.62"]
    assert [t.id for t in tickets] == [earlier.id, earlier.id + 1, earlier.id + 2]  # two reserved, two used
    refs = {m.rcpt_tos[0]: m for m in w.smtp.wait_for(5)}
    for address, ticket in (("a@a.example", tickets[1]), ("b@b.example", tickets[0]), ("c@c.example", tickets[2]),
                            ("d@d.example", tickets[1])):
        assert ticket.ref in refs[address].data.decode(), address
    by_message = {m.message_id: m.ticket_id for m in w.messages()}
    assert by_message["<joins-new@forwarder.example>"] == tickets[1].id


def test_a_ticket_opened_meanwhile_by_another_process_costs_the_batch_its_reservation_not_its_mail(
        make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch, database_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    # SQLite's reserved ids follow the highest one: the portal (say) may take one before the commit
    from sqlmodel import Session

    from mailbot.clock import utcnow
    from mailbot.desk import tickets as tickets_module
    from mailbot.store.tables import Ticket

    w = make_world(mailbox={"process_batch": 10})
    for i in range(3):
        w.deliver(forward(f"203.0.113.{70 + i}", f"meanwhile-{i}", f"s{i}@m{i}.example"))
    reserve = tickets_module.reserve_ids
    interloper: list[int] = []

    def reserve_then_someone_opens_one(session: Any, requests: Any) -> None:
        reserve(session, requests)
        if not interloper:
            with Session(w.desk.engine) as other:  # another process's own transaction, committed
                now = utcnow()
                t = Ticket(state="open", sender="portal@p.example", opened_at=now, updated_at=now, ip="198.51.100.9")
                other.add(t)
                other.commit()
                assert t.id is not None
                interloper.append(t.id)

    monkeypatch.setattr(tickets_module, "reserve_ids", reserve_then_someone_opens_one)
    polled, _ = w.run()
    assert polled.process.processed == 3 and polled.process.failed_attempts == 0
    redone = "a batch of 3 messages failed; doing them one by one" in caplog.text
    assert redone == database_url.startswith("sqlite")  # PostgreSQL's sequence never gives an id twice
    assert all(m.attempts == 1 and m.last_error is None for m in w.messages())
    ips = {t.id: t.ip for t in w.tickets()}
    assert len(ips) == 4 and ips[interloper[0]] == "198.51.100.9"
    refs = {m.rcpt_tos[0]: m.data.decode() for m in w.smtp.wait_for(3)}
    for t in w.tickets():
        if t.ip != "198.51.100.9":
            [address] = [m.sender for m in w.messages() if m.ticket_id == t.id]
            assert t.ref in refs[address]
