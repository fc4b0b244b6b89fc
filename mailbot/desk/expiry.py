"""Requests that wait for the sender end: a needs_info ticket the sender has not added to for
`desk.needs_info_days` is closed, with a state event whose actor is `EXPIRY_ACTOR`.

"Not added to" means no forward joined it and no follow-up came from its senders since
the cutoff (mailbot's own mail and staff notes do not keep it alive). A sender who writes
later opens a new request or, with a new rejection, reopens this one as any closed ticket.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import exists
from sqlmodel import Session, col, select

from mailbot.desk import tickets
from mailbot.store.states import EventKind, TicketState
from mailbot.store.tables import Ticket, TicketEvent

EXPIRY_ACTOR = "mailbot (no reply)"
SENDER_EVENTS = (EventKind.OPENED, EventKind.JOINED, EventKind.FOLLOW_UP)
BATCH = 500
"""Tickets closed per call: a backlog of thousands is worked off over a few sweeps."""


def expire_needs_info(session: Session, days: float, now: datetime) -> list[str]:
    """Close the needs_info tickets idle for `days`; their references, oldest first."""
    cutoff = now - timedelta(days=days)
    recent = exists().where(col(TicketEvent.ticket_id) == col(Ticket.id),
                            col(TicketEvent.kind).in_(list(SENDER_EVENTS)), col(TicketEvent.at) > cutoff)
    stale = session.exec(select(Ticket).where(Ticket.state == TicketState.NEEDS_INFO,
                                              col(Ticket.opened_at) <= cutoff, ~recent)
                         .order_by(col(Ticket.id)).limit(BATCH)).all()
    for ticket in stale:
        tickets.close(session, ticket, EXPIRY_ACTOR,
                      f"no reply from the sender in {days:g} days to the request for the full notice", now)
    return [t.ref for t in stale]
