"""Automatic delisting of first listings, with a veto (issue #18). Off unless `[autodelist]`
enabled is true.

Each sweep delists, through the listing source and the same audited outcome a person's
`mailbot delist` records (`staffing.outcomes.delist`), the IP of every open ticket that:

- has waited `hold_minutes` since it opened (staff may stop it meanwhile: `mailbot hold REF`
  or `#hold` by mail, a `hold` event on the ticket, for good);
- the source says is listed, as a first listing: never delisted before (`listed_before`
  is 0; a source that cannot tell, such as a DNS list, never qualifies) and not a repeat;
- is listed in one of `categories` (an empty list allows none);
- fits the hourly and daily limits, counted over the automatic outcomes already recorded.

Fail closed: anything unknown (no listing, lookup failed, no category) leaves the ticket to a
person. Every delist is an outcome event with actor `autodelist` and the rule that allowed it;
`#reopen` with `#decline` (or `mailbot decline`) undoes a wrong one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import exists, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot.config import AutodelistConfig
from mailbot.listing import Lister, ListingError
from mailbot.staffing import outcomes
from mailbot.staffing.staff import StaffError, StaffSettings
from mailbot.store.states import EventKind, ListingState, TicketState
from mailbot.store.tables import Ticket, TicketEvent

log = logging.getLogger(__name__)
ACTOR = "autodelist"


@dataclass
class AutoResult:
    delisted: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    limited: int = 0
    """Tickets that qualified but waited for the hourly or daily limit."""


def _done_since(session: Session, since: datetime) -> int:
    return session.exec(select(func.count()).select_from(TicketEvent).where(
        TicketEvent.kind == EventKind.OUTCOME, TicketEvent.actor == ACTOR, col(TicketEvent.at) > since)).one()


def candidates(session: Session, a: AutodelistConfig, now: datetime) -> list[Ticket]:
    """The open tickets the rule allows now, oldest first (before the limits)."""
    if not a.categories:
        return []
    held = exists().where(col(TicketEvent.ticket_id) == col(Ticket.id), col(TicketEvent.kind) == EventKind.HOLD)
    done = exists().where(col(TicketEvent.ticket_id) == col(Ticket.id), col(TicketEvent.kind) == EventKind.OUTCOME)
    return list(session.exec(select(Ticket).where(
        Ticket.state == TicketState.OPEN, Ticket.listing == ListingState.LISTED,
        col(Ticket.ip).is_not(None), Ticket.listed_before == 0, col(Ticket.repeat).is_(False),
        col(Ticket.listing_category).in_(list(a.categories)),
        col(Ticket.opened_at) <= now - timedelta(minutes=a.hold_minutes), ~held, ~done,
    ).order_by(col(Ticket.opened_at), col(Ticket.id))).all())


def run(engine: Engine, settings: StaffSettings, a: AutodelistConfig, lister: Lister | None,
        now: datetime) -> AutoResult:
    result = AutoResult()
    if not a.enabled or lister is None:
        return result
    with Session(engine) as session:
        found = candidates(session, a, now)
        room = min(a.per_hour - _done_since(session, now - timedelta(hours=1)),
                   a.per_day - _done_since(session, now - timedelta(days=1)))
    for ticket in found:
        if room <= 0:
            result.limited += 1
            continue
        rule = (f"autodelist: a first listing in {ticket.listing_category}, held {a.hold_minutes:g} min "
                "without a veto")
        try:
            done = outcomes.delist(engine, settings, lister, ticket.ref, ACTOR, rule)
        except (ListingError, StaffError) as e:  # recorded on the ticket by outcomes; a person looks
            log.warning("autodelist of %s failed: %s", ticket.ref, e)
            result.failed.append(ticket.ref)
            continue
        if not done.replayed:
            room -= 1
            result.delisted.append(ticket.ref)
    if result.limited:
        log.warning("autodelist: %d ticket(s) wait for the hourly or daily limit", result.limited)
    return result
