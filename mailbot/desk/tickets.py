"""Tickets: find the one a message belongs to, open new ones, record events.

All functions take the caller's session and never commit: a message's
effects are one transaction, owned by `intake.process`. What the transaction
itself did (tickets it opened, their senders, tickets it changed) is kept in
`store.unit`, so a batch of messages is not asked about again one by one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import event as sa_event
from sqlalchemy import func, insert, text
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from mailbot.identity import person
from mailbot.source.inbound import Inbound
from mailbot.store import bulk, unit
from mailbot.store.states import EventKind, Outcome, TicketState
from mailbot.store.tables import OutboxMail, StoredMessage, Ticket, TicketEvent, TicketSender, parse_ref

REF_IN_SUBJECT = re.compile(r"\[(DL-\d{6,})\]", re.IGNORECASE)
ACTIVE = (TicketState.OPEN, TicketState.NEEDS_INFO)
"""States in which a ticket gathers further forwards for its IP."""


def by_reference(session: Session, msg: Inbound) -> Ticket | None:
    """The ticket a message names ([DL-…] in the subject) or threads to."""
    for ref in REF_IN_SUBJECT.findall(msg.subject or ""):
        tid = parse_ref(ref)
        ticket = session.get(Ticket, tid) if tid else None
        if ticket:
            return ticket
    parents = [*msg.in_reply_to, *reversed(msg.references)][:50]
    if not parents:
        return None
    out = session.exec(select(OutboxMail.ticket_id).where(col(OutboxMail.message_id).in_(parents))).first()
    if out:
        return session.get(Ticket, out)
    inbound = session.exec(
        select(StoredMessage.ticket_id).where(col(StoredMessage.message_id).in_(parents),
                                              col(StoredMessage.ticket_id).is_not(None))
    ).first()
    return session.get(Ticket, inbound) if inbound else None


def active_for_ip(session: Session, ip: str) -> Ticket | None:
    known = unit.of(session)
    if ip in known.ips:  # watched since the batch began: every candidate is in memory, current
        active = [t for t in known.tickets.values() if t.ip == ip and t.state in ACTIVE]
        return min(active, key=lambda t: t.id or 0) if active else None
    return session.exec(
        select(Ticket).where(Ticket.ip == ip, col(Ticket.state).in_(ACTIVE)).order_by(col(Ticket.id))
    ).first()


def watch_ips(session: Session, ips: Iterable[str], senders: Iterable[str] = ()) -> None:
    """Load the active tickets of `ips` (a batch's) in one query: `active_for_ip` then answers
    for them from memory for the rest of the transaction, with the tickets opened and changed
    in it (`open_ticket`, `change_state`). Changes committed meanwhile by another process are
    not seen, as if the batch had been read a moment earlier. With the batch's `senders` (their
    addresses), which of them are already senders of those tickets, in one query more: `sender`
    then answers for them without a query, which would first write everything pending."""
    known = unit.of(session)
    new = set(ips) - known.ips
    if not new:
        return
    loaded: list[int] = []
    for ticket in session.exec(select(Ticket).where(col(Ticket.ip).in_(new), col(Ticket.state).in_(ACTIVE))).all():
        assert ticket.id is not None
        known.tickets.setdefault(ticket.id, ticket)
        loaded.append(ticket.id)
    known.ips |= new
    persons = {person(a) for a in senders if a}
    if not loaded or not persons or known.senders_of or known.persons:
        return  # the senders of one batch are loaded once (a second call finds out by query)
    for i in range(0, len(loaded), _CHUNK):
        for row in session.exec(select(TicketSender).where(col(TicketSender.ticket_id).in_(loaded[i:i + _CHUNK]),
                                                           col(TicketSender.person).in_(persons))).all():
            known.senders.setdefault((row.ticket_id, row.person), row)
    known.senders_of.update(loaded)
    known.persons = frozenset(persons)


_CHUNK = 500
"""Ticket ids per sender query (SQLite allows 999 parameters in all, the persons among them)."""


_TICKET = Ticket.__table__  # type: ignore[attr-defined]
_INSERT = insert(_TICKET).returning(_TICKET.c.id)  # built once: its values are the execution's parameters
_INSERTED = tuple(c.name for c in _TICKET.columns if c.name != "id")


@sa_event.listens_for(Session, "before_flush")
def _write_first(session: Session, _context: object, _instances: object) -> None:
    """Tickets opened with a reserved id, written in one statement before anything else of the
    flush: the unit of work orders its inserts and updates by class name, not by foreign key
    (the tables have no relationships), and the batch's mails, events and messages name them.
    Then, in a batch, its events and mails (`store.bulk`)."""
    known = unit.peek(session)
    if known is None:
        return
    if known.unwritten:
        opened, known.unwritten = known.unwritten, []
        bulk.write(session, Ticket, opened, ids=True)
        for ticket in opened:  # written as they are now: what changes from here on is an update
            make_transient_to_detached(ticket)
            session.add(ticket)
    if known.bulk:
        bulk.write_added(session)


def reserve_ids(session: Session, requests: Sequence[tuple[str, str | None]]) -> None:
    """Reserve the ids of the tickets a batch's requests ((action, IP) of each decision) would
    open, if each is a new request (most are): one a request, but one an IP without an active
    ticket where the action joins by IP ("ticket"). Each is then written with the batch's other
    rows, where it would be inserted alone when opened: a round trip on PostgreSQL, and on
    SQLite the database's one write lock taken from then on to the commit, while the sending
    process waits to mark what it sent. PostgreSQL takes them from the table's sequence (one
    not used is a gap in the references, as a rollback leaves one). SQLite has none: they follow
    the highest id, and a ticket opened meanwhile by another process takes one first, which fails
    the batch's commit and has its messages done one by one, each without reserving."""
    if len(requests) < 2:
        return
    ips: set[str] = set()
    n = 0
    for action, ip in requests:
        if action == "ticket" and ip:
            if ip in ips or active_for_ip(session, ip) is not None:
                continue
            ips.add(ip)
        n += 1
    if not n:
        return
    if session.get_bind().dialect.name == "postgresql":
        ids = list(session.execute(text("SELECT nextval(pg_get_serial_sequence('ticket', 'id')) "
                                        "FROM generate_series(1, :n)"), {"n": n}).scalars())
    else:
        top = session.execute(text("SELECT coalesce(max(id), 0) FROM ticket")).scalar_one()
        ids = list(range(top + 1, top + 1 + n))
    unit.of(session).ticket_ids.extend(sorted(ids))


def open_ticket(session: Session, *, now: datetime, state: TicketState, sender: str | None, **facts: object) -> Ticket:
    ticket = Ticket(state=state, sender=sender, opened_at=now, updated_at=now, **facts)  # type: ignore[arg-type]
    known = unit.of(session)
    if known.ticket_ids:  # reserved for the batch: the row is written with the others, first
        ticket.id = known.ticket_ids.pop(0)
        known.unwritten.append(ticket)
        known.fresh_tickets[ticket.id] = known.tickets[ticket.id] = ticket
        return ticket
    if known.unwritten:  # more tickets than reserved: those first, or SQLite gives this one an id of theirs
        session.flush()
    # Its id (the reference the reply shows) is needed now: the row is inserted alone. A flush
    # would first write everything pending in the batch, row by row; that goes at the commit.
    held = ticket.__dict__  # every column is there: a row is built with each field's default (store/rows.py)
    values = {name: held[name] for name in _INSERTED}
    with session.no_autoflush:  # nothing pending is needed by this row
        ticket.id = session.execute(_INSERT, values).scalar_one()
    make_transient_to_detached(ticket)
    session.add(ticket)
    known.fresh_tickets[ticket.id] = known.tickets[ticket.id] = ticket
    return ticket


def start_clock(ticket: Ticket, now: datetime, sla_hours: float) -> None:
    ticket.due_at = now + timedelta(hours=sla_hours)


def event(session: Session, ticket: Ticket, kind: str, actor: str, detail: str | None, now: datetime,
          once: str | None = None) -> None:
    """Record what happened; `once` is the event's unique key (a second one fails at flush)."""
    assert ticket.id is not None
    session.add(TicketEvent(ticket_id=ticket.id, at=now, kind=kind, actor=actor, detail=detail, once=once))
    ticket.updated_at = now


# -- who may act on a ticket ----------------------------------------------------
# Its senders (the people who forwarded for it, as `identity.person` compares them) and
# verified staff. References are sequential and a From line is anyone's to write, so a
# reference alone gives no right to a ticket: the sender list is the access list.


def add_sender(session: Session, ticket: Ticket, address: str, message_id: int | None,
               facts: dict[str, object], now: datetime) -> TicketSender:
    """Record `address` as one of the ticket's senders, with the facts of their own forward
    (kept from an earlier forward where this one has none)."""
    assert ticket.id is not None
    row = sender(session, ticket, address)
    if row is None:
        row = TicketSender(ticket_id=ticket.id, person=person(address), address=address, added_at=now)
        session.add(row)
        known = unit.of(session)
        if ticket.id in known.fresh_tickets or ticket.id in known.senders_of:
            known.senders[(ticket.id, row.person)] = row
    row.address = address
    if row.message_id is None or any(facts.get(k) for k in ("ip", "status", "reply_code")):
        row.message_id = message_id
        for key in ("ip", "reply_code", "status", "text"):
            setattr(row, key, facts.get(key))
    return row


def sender(session: Session, ticket: Ticket, address: str | None) -> TicketSender | None:
    """`address` as one of the ticket's senders (compared as one person), or None: not theirs."""
    if not address or ticket.id is None:
        return None
    known = unit.of(session)
    who = person(address)
    if ticket.id in known.fresh_tickets or (ticket.id in known.senders_of and who in known.persons):
        # opened in this transaction (all its senders were added here), or loaded for the batch
        return known.senders.get((ticket.id, who))
    return session.exec(select(TicketSender).where(TicketSender.ticket_id == ticket.id,
                                                   TicketSender.person == who)).first()


def is_sender(session: Session, ticket: Ticket, address: str | None) -> bool:
    return sender(session, ticket, address) is not None


def senders(session: Session, ticket: Ticket) -> list[TicketSender]:
    return list(session.exec(select(TicketSender).where(TicketSender.ticket_id == ticket.id)
                             .order_by(col(TicketSender.id))).all())


# -- lifecycle ------------------------------------------------------------
# open ──answer──► answered ──close──► closed
#   ▲                 │                  │
#   └──── reopen (sender follow-up, operator; a new SLA clock) ◄──┘
# needs_info ──facts arrive──► open;  needs_info ──redirect──► redirected
#
# Every change of `Ticket.state` after opening goes through `change_state`, so each one
# leaves a "state" event with from_state/to_state that the digest and `show` read.

ANSWERABLE = (TicketState.OPEN, TicketState.NEEDS_INFO)


def change_state(session: Session, ticket: Ticket, to: TicketState, actor: str, detail: str | None,
                 now: datetime) -> TicketState:
    """Move `ticket` to `to` and record a "state" event: from_state, to_state, actor and
    `detail` (why; the change itself is in the two columns, not the text). Returns the state
    it left. Timestamps and the SLA clock are the callers' (below)."""
    previous = TicketState(ticket.state)
    ticket.state = to
    assert ticket.id is not None
    unit.of(session).tickets[ticket.id] = ticket  # its state (and IP) as they are now, for `active_for_ip`
    session.add(TicketEvent(ticket_id=ticket.id, at=now, kind=EventKind.STATE, actor=actor,
                            detail=detail or None, from_state=previous, to_state=to))
    ticket.updated_at = now
    return previous


def note(session: Session, ticket: Ticket, actor: str, text: str, now: datetime) -> None:
    """A note only staff see: in `show` and the digest, never in a mail to a sender."""
    event(session, ticket, EventKind.NOTE, actor, text, now)


def hold(session: Session, ticket: Ticket, actor: str, why: str, now: datetime) -> None:
    """No automatic delisting for this ticket, ever: a person decides (staffing/autodelist.py)."""
    event(session, ticket, EventKind.HOLD, actor, why or "held: a person decides", now)


def assign(session: Session, ticket: Ticket, assignee: str, actor: str, now: datetime) -> None:
    previous = ticket.assignee
    ticket.assignee = assignee or None
    event(session, ticket, EventKind.ASSIGNED, actor, f"{previous or 'nobody'} → {ticket.assignee or 'nobody'}", now)


def mark_answered(session: Session, ticket: Ticket, actor: str, detail: str, now: datetime) -> bool:
    """Stop the clock: staff answered. False when the ticket was not waiting for an answer."""
    if ticket.state not in ANSWERABLE:
        event(session, ticket, EventKind.STAFF_MAIL, actor, detail, now)
        return False
    ticket.answered_at = now
    change_state(session, ticket, TicketState.ANSWERED, actor, detail, now)
    return True


def close(session: Session, ticket: Ticket, actor: str, detail: str, now: datetime) -> None:
    ticket.closed_at = now
    change_state(session, ticket, TicketState.CLOSED, actor, detail, now)


def reopen(session: Session, ticket: Ticket, actor: str, detail: str, now: datetime, sla_hours: float) -> None:
    """Back to open with a fresh SLA clock (escalations are once per clock)."""
    ticket.clock += 1
    ticket.sla_stage = 0
    ticket.answered_at = None
    ticket.closed_at = None
    start_clock(ticket, now, sla_hours)
    change_state(session, ticket, TicketState.OPEN, actor, f"(clock {ticket.clock}): {detail}", now)


def upgrade(session: Session, ticket: Ticket, actor: str, detail: str, now: datetime, sla_hours: float) -> None:
    """needs_info → open: the missing facts arrived, so the SLA clock starts."""
    start_clock(ticket, now, sla_hours)
    change_state(session, ticket, TicketState.OPEN, actor, detail, now)


def redirect(session: Session, ticket: Ticket, actor: str, detail: str | None, now: datetime) -> None:
    """needs_info → redirected: the facts show the sender is in the wrong place."""
    change_state(session, ticket, TicketState.REDIRECTED, actor, detail, now)


def not_listed(session: Session, ticket: Ticket, actor: str, detail: str, now: datetime) -> None:
    """open → not_listed: the list does not hold the IP, and the sender was told so (no clock runs)."""
    ticket.due_at = None
    change_state(session, ticket, TicketState.NOT_LISTED, actor, detail, now)


def outcome(session: Session, ticket: Ticket, what: Outcome, actor: str, detail: str | None, now: datetime,
            once: str | None = None) -> TicketEvent:
    """Record how the request ended: an "outcome" event (with the seconds since the forward,
    for the metrics' histogram) and the ticket's latest outcome. `once`: the event's unique key;
    a second record with it fails at flush (IntegrityError), so the caller's transaction with it."""
    assert ticket.id is not None
    opened = ticket.opened_at if ticket.opened_at.tzinfo else ticket.opened_at.replace(tzinfo=now.tzinfo)
    row = TicketEvent(ticket_id=ticket.id, at=now, kind=EventKind.OUTCOME, actor=actor, detail=detail,
                      outcome=what, outcome_seconds=max(0.0, (now - opened).total_seconds()), once=once)
    session.add(row)
    ticket.outcome, ticket.outcome_at, ticket.updated_at = what, now, now
    return row


# -- finding tickets (mailbot tickets) -----------------------------------


@dataclass(frozen=True)
class TicketFilter:
    state: TicketState | None = None
    family: str | None = None
    ip: str | None = None
    sender: str | None = None
    assignee: str | None = None
    unassigned: bool = False
    overdue: bool = False
    due_within_hours: float | None = None
    sort: str = "due"
    """due (least time left first, tickets without a clock last) or id."""
    limit: int | None = None


def find(session: Session, f: TicketFilter, now: datetime) -> list[Ticket]:
    stmt = select(Ticket)
    if f.state:
        stmt = stmt.where(Ticket.state == f.state)
    if f.ip:
        stmt = stmt.where(Ticket.ip == f.ip)
    if f.sender:
        stmt = stmt.where(col(Ticket.sender).ilike(f"%{f.sender}%"))
    if f.assignee:
        stmt = stmt.where(func.lower(col(Ticket.assignee)) == f.assignee.lower())
    if f.unassigned:
        stmt = stmt.where(col(Ticket.assignee).is_(None))
    if f.family == "5.7.511":
        stmt = stmt.where(Ticket.status == "5.7.511")
    elif f.family == "5.7.606-649":
        stmt = stmt.where(col(Ticket.status).in_([f"5.7.{n}" for n in range(606, 650)]))
    elif f.family == "none":
        stmt = stmt.where(col(Ticket.status).is_(None))
    elif f.family == "other":
        stmt = stmt.where(col(Ticket.status).is_not(None),
                          col(Ticket.status).not_in(["5.7.511", *(f"5.7.{n}" for n in range(606, 650))]))
    if f.overdue or f.due_within_hours is not None:
        stmt = stmt.where(Ticket.state == TicketState.OPEN, col(Ticket.due_at).is_not(None))
        limit = now if f.overdue else now + timedelta(hours=f.due_within_hours or 0)
        stmt = stmt.where(col(Ticket.due_at) <= limit)
    if f.sort == "due":
        stmt = stmt.order_by(col(Ticket.due_at).is_(None), col(Ticket.due_at), col(Ticket.id))
    else:
        stmt = stmt.order_by(col(Ticket.id))
    if f.limit:
        stmt = stmt.limit(f.limit)
    return list(session.exec(stmt).all())
