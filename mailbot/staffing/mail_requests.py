"""Staff's #delist, #conditional and #decline by mail, carried out after the mail is processed.

Triage records such commands of a verified staff mail as a `staff_request` event (never
calling the listing source inside the mail's transaction). `run` carries out each request
not yet done through the same audited outcomes as `mailbot delist|conditional|decline`
(`staffing.outcomes`: once per ticket and clock, whoever runs it and however often), then
in one transaction marks it done (a unique key: two daemons finish it once) and queues the
staff member's one confirmation with the result of every command of their mail.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import String, cast, exists, literal
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.desk import tickets
from mailbot.listing import Lister, ListingError
from mailbot.staffing import outcomes
from mailbot.staffing.staff import StaffError, StaffSettings
from mailbot.store.engine import is_fault, transaction
from mailbot.store.states import EventKind, MailKind
from mailbot.store.tables import Ticket, TicketEvent

log = logging.getLogger(__name__)
BATCH = 50


def _key(request_id: int) -> str:
    return f"staff-request:{request_id}"


def pending(session: Session) -> list[TicketEvent]:
    """The oldest requests not yet finished (a finished one has an event keyed `_key(its id)`)."""
    done = aliased(TicketEvent)
    finished = exists().where(col(done.once) == literal("staff-request:").concat(cast(col(TicketEvent.id), String)))
    return list(session.exec(select(TicketEvent).where(TicketEvent.kind == EventKind.STAFF_REQUEST, ~finished)
                             .order_by(col(TicketEvent.id)).limit(BATCH)).all())


def _one(engine: Engine, settings: StaffSettings, lister: Lister | None, ref: str, actor: str,
         name: str, argument: str) -> str:
    try:
        if name == "decline":
            done = outcomes.decline(engine, settings, ref, actor, argument or None)
        else:
            done = outcomes.delist(engine, settings, lister, ref, actor, argument or None,
                                   condition=name == "conditional")
    except (StaffError, ListingError) as e:
        return f"#{name}: not done: {e}"
    told = f"; told {', '.join(done.recipients)}" if done.recipients else ""
    return f"#{name}: {done.ref} {done.outcome}{' (done before)' if done.replayed else ''}{told}"


def run(engine: Engine, settings: StaffSettings, lister: Lister | None) -> int:
    """Carry out what is pending; how many requests were finished by this call."""
    with Session(engine) as session:
        todo = [(r.id or 0, r.ticket_id, r.actor, r.detail or "{}") for r in pending(session)]
    finished = 0
    for request_id, ticket_id, actor, detail in todo:
        try:
            data: dict[str, Any] = json.loads(detail)
        except ValueError:
            data = {}
        with Session(engine) as session:
            ticket = session.get(Ticket, ticket_id)
            ref = ticket.ref if ticket else ""
        lines = list(data.get("done", []))
        try:
            lines += [_one(engine, settings, lister, ref, actor, str(name), str(arg))
                      for name, arg in data.get("later", [])]
        except Exception as e:
            if is_fault(e):
                raise  # the database: the poll fails and alerts, the request waits
            # a bug must not stall the desk: this request waits for a person, the others go on
            log.exception("staff request %s on %s could not be carried out", request_id, ref)
            continue
        if _finish(engine, settings, ticket_id, request_id, actor, data, lines):
            finished += 1
    return finished


def _finish(engine: Engine, settings: StaffSettings, ticket_id: int, request_id: int, actor: str,
            data: dict[str, Any], lines: list[str]) -> bool:
    now = clock.utcnow()
    try:
        with transaction(engine) as session:
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None and ticket.id is not None
            tickets.event(session, ticket, EventKind.STAFF_REQUEST_DONE, actor, "; ".join(lines)[:2000], now,
                          once=_key(request_id))
            session.flush()  # another daemon finished it first: stop before a second confirmation
            to = data.get("to")
            if isinstance(to, str) and to:
                settings.mailer.to_person(
                    session, MailKind.STAFF_CONFIRMATION,
                    {"ref": ticket.ref, "results": lines, "desk_name": settings.mailer.desk.name}, to,
                    kind=MailKind.STAFF_CONFIRMATION, ticket_id=ticket.id, ticket_ref=ticket.ref, now=now,
                    dedupe=f"confirm:{data.get('message')}", in_reply_to=data.get("in_reply_to"),
                    references=[str(r) for r in data.get("references", [])])
    except IntegrityError:
        return False
    log.info("staff request on ticket %s carried out: %s", ticket_id, "; ".join(lines))
    return True
