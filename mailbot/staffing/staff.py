"""What staff do to a ticket from the command line: answer, close, reopen,
and reply from a template (threaded to the sender's messages, which marks
the ticket answered). Each is one transaction with its event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.desk import tickets
from mailbot.errors import CommandFailed
from mailbot.identity import person
from mailbot.outgoing import sanitize
from mailbot.outgoing.mailer import Mailer
from mailbot.store.engine import transaction
from mailbot.store.states import EventKind, MailKind, TicketState
from mailbot.store.tables import StoredMessage, Ticket, TicketSender, parse_ref


class StaffError(CommandFailed):
    """The action cannot be done; the message says why."""


@dataclass(frozen=True)
class StaffSettings:
    """What staff's actions read of the configuration, and no more: the mailer (who the desk
    is and writes as), the desk's own addresses (never written to as a sender), the SLA's
    hours (a reopened ticket's new clock) and the delist attempts (named when one fails)."""

    mailer: Mailer
    own_addresses: frozenset[str]
    sla_hours: float
    delist_attempts: int


def ticket_of(session: Session, ref: str) -> Ticket:
    """The ticket `ref` names, or StaffError."""
    tid = parse_ref(ref)
    ticket = session.get(Ticket, tid) if tid else None
    if ticket is None:
        raise StaffError(f"no ticket {ref}")
    return ticket


def answer(engine: Engine, ref: str, actor: str, note: str | None) -> Ticket:
    with transaction(engine) as session:
        ticket = ticket_of(session, ref)
        if not tickets.mark_answered(session, ticket, actor, note or "answered (command line)", clock.utcnow()):
            raise StaffError(f"{ticket.ref} is {ticket.state}, not waiting for an answer")
        return ticket


def close(engine: Engine, ref: str, actor: str, note: str | None) -> Ticket:
    with transaction(engine) as session:
        ticket = ticket_of(session, ref)
        if ticket.state == TicketState.CLOSED:
            raise StaffError(f"{ticket.ref} is already closed")
        tickets.close(session, ticket, actor, note or "", clock.utcnow())
        return ticket


def assign(engine: Engine, ref: str, who: str, actor: str) -> Ticket:
    with transaction(engine) as session:
        ticket = ticket_of(session, ref)
        tickets.assign(session, ticket, sanitize.db_text(who, 200) or "", actor, clock.utcnow())
        return ticket


def hold(engine: Engine, ref: str, why: str | None, actor: str) -> Ticket:
    with transaction(engine) as session:
        ticket = ticket_of(session, ref)
        tickets.hold(session, ticket, actor, sanitize.db_text(why, 2000) or "held (command line)", clock.utcnow())
        return ticket


def note(engine: Engine, ref: str, text: str, actor: str) -> Ticket:
    if not text.strip():
        raise StaffError("say what the note is")
    with transaction(engine) as session:
        ticket = ticket_of(session, ref)
        tickets.note(session, ticket, actor, sanitize.db_text(text, 4000) or "", clock.utcnow())
        return ticket


def reopen(engine: Engine, sla_hours: float, ref: str, actor: str, note: str | None) -> Ticket:
    with transaction(engine) as session:
        ticket = ticket_of(session, ref)
        if ticket.state == TicketState.OPEN:
            raise StaffError(f"{ticket.ref} is already open")
        tickets.reopen(session, ticket, actor, note or "reopened (command line)", clock.utcnow(), sla_hours)
        return ticket


def reply(engine: Engine, settings: StaffSettings, ref: str, template: str, actor: str,
          note: str | None) -> list[str]:
    """Queue the templated reply to each sender of the ticket; returns the recipients."""
    renderer = settings.mailer.renderer
    if template.startswith("_") or template not in renderer.names():
        raise StaffError(f"no template {template!r} (have: {', '.join(renderer.names())})")
    now = clock.utcnow()
    with transaction(engine) as session:
        ticket = ticket_of(session, ref)
        sent_to = queue_replies(session, settings, ticket, template, actor, note, now)
        if ticket.state in tickets.ANSWERABLE:
            tickets.mark_answered(session, ticket, actor, f"templated reply {template}", now)
        return sent_to


def queue_replies(session: Session, settings: StaffSettings, ticket: Ticket, template: str, actor: str,
                  note: str | None, now: datetime, required: bool = True) -> list[str]:
    """Queue `template` to each sender of the ticket, in the caller's transaction, and record
    it (a staff_reply event); returns the recipients. Nobody to write to: StaffError, or [] when
    not `required` (an outcome that happened stands without its mail)."""
    # Only the ticket's own senders, each shown what was read from their own forward and
    # threaded to their own messages: nobody sees another sender's address, code or text.
    recipients = [s for s in tickets.senders(session, ticket) if s.address.lower() not in settings.own_addresses]
    if not recipients and sanitize.address(ticket.sender):
        recipients = [TicketSender(ticket_id=ticket.id or 0, person=person(str(ticket.sender)),
                                   address=str(ticket.sender), ip=ticket.ip, reply_code=ticket.reply_code,
                                   status=ticket.status, text=ticket.text, added_at=now)]
    if not recipients:
        if not required:
            return []
        raise StaffError(f"{ticket.ref} has no sender address to reply to")
    inbound = session.exec(select(StoredMessage).where(
        StoredMessage.ticket_id == ticket.id, StoredMessage.folder_kind == "inbox")
        .order_by(col(StoredMessage.id))).all()
    sent_to = []
    for who in recipients:
        theirs = [m.message_id for m in inbound if m.message_id and m.sender and person(m.sender) == who.person]
        context = {"ref": ticket.ref, "ip": who.ip or ticket.ip or "the IP address",
                   "full_code": who.full_code or "", "rejection_text": who.text or "",
                   "desk_name": settings.mailer.desk.name, "note": note or ""}
        # written by a person: no Auto-Submitted, so the sender's client treats it as an answer
        assert ticket.id is not None
        settings.mailer.to_person(session, template, context, who.address, kind=MailKind.STAFF_REPLY,
                                  ticket_id=ticket.id, ticket_ref=ticket.ref, now=now, dedupe=None,
                                  in_reply_to=theirs[-1] if theirs else None, references=theirs, auto_submitted=None)
        sent_to.append(who.address)
    tickets.event(session, ticket, EventKind.STAFF_REPLY, actor, f"template {template} to {', '.join(sent_to)}", now)
    return sent_to
