"""The press of "Delist IP": the delist, its audit, the ticket and the result mail.

`press(portal, token, client)`:

1. The link must be good, unexpired and unused (else the answer says which; a used link
   shows how it ended, so a second press or a reload is harmless).
2. A fresh lookup: not listed any more → nothing to delist ("not_listed"). A repeat
   (listed again within `listing.repeat_days` of its last delisting) or a listing outside the
   portal's categories cannot delist itself: it goes to staff ("to_staff").
3. Otherwise `Lister.delist(ip, key, "portal", note)` with the key `portal/<id>/<nonce>`,
   derived from the request: two presses at once, or a retry after a crash, delist once. A
   source that refuses for good (a network listing) sends it to staff; one that cannot answer
   now leaves the link unused ("unavailable": try again).
4. One transaction: the row marked used (a conditional update: one press wins), the ticket
   (the redirected ticket of the IP when there is one, else a new one), the request and
   the outcome as events with actor "portal" (the address and client address in them), the
   ticket's state (closed when done, open with an SLA clock when staff must decide), and
   the result mail to the address.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import update
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.desk import tickets
from mailbot.listing import ListingError, LookupFailed, PermanentListingError
from mailbot.listing.base import aware
from mailbot.outgoing.mailer import AUTOMATIC
from mailbot.portal import metrics
from mailbot.portal.service import Portal, in_portal_category
from mailbot.store.engine import transaction
from mailbot.store.portal_tables import PortalRequest
from mailbot.store.states import EventKind, MailKind, TicketState
from mailbot.store.tables import Ticket

log = logging.getLogger(__name__)
ACTOR = "portal"
Outcome = Literal["delisted", "not_listed", "to_staff"]


@dataclass(frozen=True)
class Pressed:
    state: Literal["bad", "expired", "used", "unavailable", "done"]
    ip: str = ""
    outcome: str | None = None
    ref: str | None = None
    retry_after: int = 0


_PRESSING: dict[int, threading.Lock] = {}
_PRESSING_GUARD = threading.Lock()


def _pressing(request_id: int) -> threading.Lock:
    """One press of a request at a time in this process: a double click that reaches two workers
    must not race the lookup and the delist (the later one would see the first one's delisting
    and hand a first listing to staff). Across portal processes the conditional update in
    `_record` still lets one outcome stand."""
    with _PRESSING_GUARD:
        if len(_PRESSING) > 10_000:
            _PRESSING.clear()
        return _PRESSING.setdefault(request_id, threading.Lock())


def press(portal: Portal, token: str, client: str) -> Pressed:
    row, seen = portal.read(token)
    if row is not None and row.id is not None and seen.state == "ready":
        with _pressing(row.id):
            return _press(portal, token, client)
    return _press(portal, token, client)


def _press(portal: Portal, token: str, client: str) -> Pressed:
    row, seen = portal.read(token)  # again, under the lock: an earlier press may have finished it
    if row is None or seen.state != "ready":
        metrics.REFUSALS.labels({"bad": "bad_link", "expired": "expired_link"}.get(seen.state, "used_link")).inc()
        return Pressed(seen.state if seen.state != "ready" else "bad", seen.ip, seen.outcome)
    assert row.id is not None
    listing = portal.lister.lookup(row.ip, fresh=True)
    if isinstance(listing, LookupFailed):
        metrics.REFUSALS.labels("unavailable").inc()
        return Pressed("unavailable", row.ip, retry_after=60)
    outcome: Outcome
    why: str
    if not listing.listed:
        outcome, why = "not_listed", f"{row.ip} was not listed when the button was pressed"
    elif listing.repeat:
        last = clock.in_utc(aware(listing.last_delisted)) if listing.last_delisted else "?"
        outcome, why = "to_staff", (f"a repeat: listed again within {portal.config.listing.repeat_days:g} days of its "
                                    f"last delisting ({last}); it cannot delist itself")
    elif not in_portal_category(listing.category, portal.categories):
        outcome, why = "to_staff", f"listed in category {listing.category or 'none'}, not one the portal may delist"
    else:
        note = f"portal request #{row.id}: {row.address} from client {client}"
        try:
            result = portal.lister.delist(row.ip, f"portal/{row.id}/{row.nonce}", ACTOR, note)
        except PermanentListingError as e:
            outcome, why = "to_staff", f"the listing source refused the delist: {e.operator_line()}"
        except ListingError:
            metrics.REFUSALS.labels("unavailable").inc()
            return Pressed("unavailable", row.ip, retry_after=300)
        else:
            outcome = "delisted" if result.delisted else "not_listed"
            why = (f"{result.status} at {result.source} (key {result.key}"
                   f"{', replayed' if result.replayed else ''}): {result.answer or ''}").rstrip(": ")
    return _record(portal, row, client, outcome, why)


def _record(portal: Portal, row: PortalRequest, client: str, outcome: Outcome, why: str) -> Pressed:
    now = clock.utcnow()
    with transaction(portal.engine) as s:
        won = s.execute(update(PortalRequest).where(col(PortalRequest.id) == row.id,
                                                    col(PortalRequest.used_at).is_(None))
                        .values(used_at=now, outcome=outcome)).rowcount  # type: ignore[attr-defined]
        if won != 1:  # another press finished first: its outcome stands
            s.rollback()
            done = s.get(PortalRequest, row.id)
            return Pressed("used", row.ip, done.outcome if done else None)
        ticket = _ticket_for(s, row, now, outcome)
        assert ticket.id is not None
        s.execute(update(PortalRequest).where(col(PortalRequest.id) == row.id).values(ticket_id=ticket.id))
        tickets.add_sender(s, ticket, row.address, None, {"ip": row.ip}, now)
        tickets.event(s, ticket, EventKind.PORTAL_REQUEST, ACTOR,
                      f"portal request #{row.id}: {row.address} from client {client} "
                      f"(asked {clock.in_utc(aware(row.created_at))})", now)
        tickets.event(s, ticket, EventKind.PORTAL_DELIST, ACTOR, f"{outcome}: {why}", now)
        _settle(s, ticket, outcome, now, portal.config.sla.hours)
        _mail_result(portal, s, row, ticket, outcome, now)
        ref = ticket.ref
    portal.kick()
    metrics.CONFIRMATIONS.inc()
    metrics.DELISTS.labels(outcome).inc()
    log.info("portal request #%s: %s %s on %s", row.id, outcome, row.ip, ref, extra={"ticket": ref})
    return Pressed("done", row.ip, outcome, ref)


def _ticket_for(s: Session, row: PortalRequest, now: datetime, outcome: Outcome) -> Ticket:
    """The IP's redirected ticket (the desk sent its sender here), else a new one."""
    found = s.exec(select(Ticket).where(Ticket.ip == row.ip, Ticket.state == TicketState.REDIRECTED)
                   .order_by(col(Ticket.id).desc())).first()
    if found is not None:
        return found
    state = TicketState.OPEN if outcome == "to_staff" else TicketState.REDIRECTED
    ticket = tickets.open_ticket(s, now=now, state=state, sender=row.address, ip=row.ip, rule="portal",
                                 kind="ip_block", subject=f"Self-service portal request for {row.ip}")
    tickets.event(s, ticket, EventKind.OPENED, ACTOR, f"opened by portal request #{row.id}", now)
    return ticket


def _settle(s: Session, ticket: Ticket, outcome: Outcome, now: datetime, sla_hours: float) -> None:
    if outcome != "to_staff":
        tickets.close(s, ticket, ACTOR, "delisted through the self-service portal" if outcome == "delisted"
                      else "not listed when the portal's button was pressed", now)
    elif ticket.state == TicketState.OPEN:
        tickets.start_clock(ticket, now, sla_hours)
    else:
        tickets.reopen(s, ticket, ACTOR, "the portal cannot delist this IP: staff decide", now, sla_hours)


def _mail_result(portal: Portal, s: Session, row: PortalRequest, ticket: Ticket, outcome: Outcome,
                 now: datetime) -> None:
    assert ticket.id is not None
    config = portal.config
    context = {"desk_name": config.desk.name, "ip": row.ip, "ref": ticket.ref, "outcome": outcome,
               "delist_address": config.outgoing.from_address, "hours": f"{config.sla.hours:g}",
               "due_local": clock.local(ticket.due_at, config.desk.zone)}
    mailer = portal.mailers.get(row.language, portal.mailers["en"])
    mailer.to_person(s, MailKind.PORTAL_RESULT, context, row.address, kind=MailKind.PORTAL_RESULT,
                     ticket_id=ticket.id, ticket_ref=ticket.ref, now=now, dedupe=f"portal_result:{row.id}",
                     auto_submitted=AUTOMATIC)
