"""What the list says of a ticket's IP: at processing, and again in the sweep (issue #17).

- `ListingCheck.settle(session, ticket, kind, now)`: triage's one call, just before it queues
  the reply of `kind` to the sender of the message in hand. It records the outcome a ticket
  opened with (redirected, not ours) and, for an open ticket about to be acknowledged, looks
  its IP up: the answer goes on the ticket (`record`), and an IP the source does not list
  (with `listing.answer_not_listed`) ends the ticket as `not_listed`: the reply becomes the
  `not_listed` mail, and the ticket's earlier senders get it too.
- `recheck(...)`: the sweep's part: open tickets looked up afresh (at most
  `listing.recheck_per_sweep`, the longest unchecked first). A lookup that had failed is
  retried; an IP seen listed (or never answered for) that is now not listed was delisted
  elsewhere, and its ticket is answered the same way.

Never blocking a message: a lookup that fails or times out is recorded as "lookup failed"
and the sweep asks again; after a temporary failure the processing path does not ask the
source for `BREAKER_SECONDS` (a dead service would otherwise cost each message its timeout),
and a sweep stops at its first temporary failure. Without a `[listing]` source nothing here
runs: no lookups, and never a "not listed" answer.

The listing's reason is for staff: it is kept on the ticket and shown in `show` and the
escalations, never put in a sender's mail.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import metrics
from mailbot.clock import local
from mailbot.config import ListingConfig
from mailbot.desk import tickets
from mailbot.identity import person
from mailbot.listing import Lister, Listing, LookupFailed
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.sanitize import db_text
from mailbot.store.engine import is_postgres, transaction
from mailbot.store.states import EventKind, ListingState, MailKind, Outcome, TicketState
from mailbot.store.tables import OutboxMail, StoredMessage, Ticket, TicketEvent

log = logging.getLogger(__name__)
BREAKER_SECONDS = 60.0
"""After a temporary lookup failure, processing records "lookup failed" without asking for this long."""
ACTOR = "mailbot"
OPENED_AS = {TicketState.REDIRECTED: Outcome.REDIRECTED, TicketState.NOT_OURS: Outcome.NOT_OURS}
"""Tickets that end as they open: their outcome is recorded when they do."""
ANSWER_AFTER = (None, ListingState.LISTED, ListingState.LOOKUP_FAILED)
"""What a ticket's listing may have been for "not listed" to be answered: never answered for,
seen listed (then delisted elsewhere), or failed. An open ticket already known as not listed
(answering is off, or its sender wrote again with a new rejection) waits for staff."""

Answer = Listing | LookupFailed


def once_key(what: Outcome, ticket: Ticket) -> str:
    return f"{what}:{ticket.ref}/clock-{ticket.clock}"


def record_once(session: Session, ticket: Ticket, what: Outcome, detail: str | None, now: datetime,
                actor: str = ACTOR, check: bool = True) -> bool:
    """The outcome, unless this ticket's clock has it already. `check=False` where the caller's
    state change makes a second one impossible (processing: a ticket opens or leaves `open`
    once), so the batch's pending writes are not flushed early for the look."""
    key = once_key(what, ticket)
    if check and session.exec(select(TicketEvent.id).where(TicketEvent.once == key)).first() is not None:
        return False
    tickets.outcome(session, ticket, what, actor, detail, now, once=key)
    return True


def summary(ticket: Ticket, zone: ZoneInfo, checked: bool = True) -> str:
    """The listing in one line for staff (show, escalations, the digest); "" when never asked.
    `checked`: with the time of the lookup (an event has its own)."""
    history = ""
    if ticket.listed_before:
        history = f"; listed {ticket.listed_before} time{'s' if ticket.listed_before != 1 else ''} before"
        if ticket.last_delisted:
            history += f", last delisted {local(ticket.last_delisted, zone)}"
    repeat = "; REPEAT" if ticket.repeat else ""
    at = local(ticket.listing_checked_at, zone)
    when = f" (checked {at})" if checked else ""
    if ticket.listing == ListingState.LISTED:
        since = f" since {local(ticket.listed_since, zone)}" if ticket.listed_since else ""
        category = f" ({ticket.listing_category})" if ticket.listing_category else ""
        return f"listed{since}{category}{history}{repeat}{when}"
    if ticket.listing == ListingState.NOT_LISTED:
        return f"not listed{when}{history}"
    if ticket.listing == ListingState.LOOKUP_FAILED:
        return f"lookup failed{f' at {at}' if checked else ''}: {ticket.listing_error or 'no answer'}; " \
               "the sweep asks again"
    return ""


def record(session: Session, ticket: Ticket, answer: Answer, now: datetime) -> None:
    """The source's answer on the ticket. A failure keeps what an earlier answer said of the
    listing (since, category...) and says it failed; an event marks each change of state."""
    before = ticket.listing
    ticket.listing_checked_at = now
    if isinstance(answer, LookupFailed):
        ticket.listing, ticket.listing_error = ListingState.LOOKUP_FAILED, db_text(answer.error, 1000)
    else:
        ticket.listing = ListingState.LISTED if answer.listed else ListingState.NOT_LISTED
        ticket.listing_error = None
        ticket.listed_since = answer.since if answer.listed else None
        ticket.listing_category = db_text(answer.category, 100) if answer.listed else None
        ticket.listing_reason = db_text(answer.reason, 2000) if answer.listed else None
        ticket.listed_before, ticket.last_delisted = answer.times_listed_before, answer.last_delisted
        ticket.repeat = answer.repeat
    if ticket.listing != before:
        detail = summary(ticket, ZoneInfo("UTC"), checked=False)
        tickets.event(session, ticket, EventKind.LISTING, f"{ACTOR} ({answer.source})", detail, now)


def senders_we_wrote_to(session: Session, ticket: Ticket) -> set[str]:
    """The people (`identity.person`) this ticket has had mail from the desk for: only they are
    told "not listed" by the sweep (one whose acknowledgement the reply guard held back is not)."""
    rows = session.exec(select(OutboxMail.rcpt_person).where(OutboxMail.ticket_id == ticket.id)).all()
    return {p for p in rows if p}


def tell_not_listed(session: Session, mailer: Mailer, own_addresses: frozenset[str], ticket: Ticket, now: datetime,
                    skip: str | None = None) -> list[str]:
    """Queue the `not_listed` mail to each of the ticket's senders we wrote to before (but
    `skip`, a person answered by the caller), each shown their own forward and threaded to it.
    The reply guard passed them when they were first answered; this is once per sender and
    clock (the dedupe key), so the daily caps are not asked again."""
    assert ticket.id is not None
    wrote = senders_we_wrote_to(session, ticket)
    told = []
    for who in tickets.senders(session, ticket):
        if who.person == skip or who.person not in wrote or who.address.lower() in own_addresses:
            continue
        theirs = [m for m in session.exec(select(StoredMessage.message_id, StoredMessage.sender).where(
            StoredMessage.ticket_id == ticket.id, StoredMessage.folder_kind == "inbox")
            .order_by(col(StoredMessage.id))).all() if m[0] and m[1] and person(m[1]) == who.person]
        context = {"ref": ticket.ref, "ip": who.ip or ticket.ip, "full_code": who.full_code,
                   "rejection_text": who.text, "desk_name": mailer.desk.name,
                   "delisted_local": local(ticket.last_delisted, mailer.desk.zone) if ticket.last_delisted else None}
        row = mailer.to_person(session, MailKind.NOT_LISTED, context, who.address, kind=MailKind.NOT_LISTED,
                               ticket_id=ticket.id, ticket_ref=ticket.ref, now=now,
                               in_reply_to=theirs[-1][0] if theirs else None, references=[m[0] for m in theirs],
                               dedupe=f"{MailKind.NOT_LISTED}:{ticket.id}:{ticket.clock}:{who.person}")
        if row is not None:
            told.append(who.address)
    return told


def resolve_not_listed(session: Session, ticket: Ticket, answer: Listing, why: str, now: datetime,
                       check: bool = True) -> None:
    tickets.not_listed(session, ticket, f"{ACTOR} ({answer.source})", why, now)
    record_once(session, ticket, Outcome.NOT_LISTED, f"{answer.source}: {ticket.ip} is not listed ({why})", now,
                check=check)


class ListingCheck:
    """The processing path's listing lookups; `lister` opens the desk's `Lister` (None: no source)."""

    def __init__(self, listing: ListingConfig, own_addresses: frozenset[str], lister: Callable[[], Lister | None],
                 mailer: Mailer | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings, self.own_addresses = listing, own_addresses
        self.lister, self.mailer, self.monotonic = lister, mailer, monotonic
        self.failing_until = 0.0

    def lookup(self, lister: Lister, ip: str) -> Answer:
        if self.monotonic() < self.failing_until:
            metrics.LOOKUPS.labels("skipped").inc()
            return LookupFailed(ip=ip, source=lister.name, temporary=True,
                                error="not asked: the source failed less than a minute ago")
        answer = lister.lookup(ip)
        if isinstance(answer, LookupFailed):
            metrics.LOOKUPS.labels("failed").inc()
            if answer.temporary:
                self.failing_until = self.monotonic() + BREAKER_SECONDS
        else:
            metrics.LOOKUPS.labels("listed" if answer.listed else "not_listed").inc()
        return answer

    def settle(self, session: Session, ticket: Ticket, kind: str, now: datetime, sender: str | None) -> str:
        """The reply to send `sender` instead of `kind` (itself, or `not_listed`), after recording
        what the ticket's state and its IP's listing say of how it ends."""
        opened_as = OPENED_AS.get(TicketState(ticket.state))
        if opened_as is not None:
            record_once(session, ticket, opened_as, f"{ticket.state} by rule {ticket.rule}", now, check=False)
            return kind
        if kind != MailKind.ACK or ticket.state != TicketState.OPEN or not ticket.ip:
            return kind
        if ticket.listing in (ListingState.LISTED, ListingState.NOT_LISTED):
            return kind  # known: a forward joining it, or its sender insisting after "not listed"
        lister = self.lister()
        if lister is None:
            return kind
        previous, answer = ticket.listing, self.lookup(lister, ticket.ip)
        record(session, ticket, answer, now)
        if not isinstance(answer, Listing) or answer.listed or not self.settings.answer_not_listed \
                or previous not in ANSWER_AFTER:
            return kind
        resolve_not_listed(session, ticket, answer, "answered at once", now, check=False)
        if self.mailer is not None and ticket.opened_at != now:
            # the sender in hand gets the reply from triage; earlier senders of a joined ticket from here
            # (a ticket opened by this very message has none)
            tell_not_listed(session, self.mailer, self.own_addresses, ticket, now,
                            skip=person(sender) if sender else None)
        return MailKind.NOT_LISTED


def due_for_recheck(session: Session, now: datetime, cache_seconds: float, limit: int) -> list[int]:
    """Open tickets with an IP whose last lookup is older than the cache (never asked first)."""
    checked = col(Ticket.listing_checked_at)
    stale = checked.is_(None) | (checked <= now - timedelta(seconds=cache_seconds))
    return list(session.exec(select(Ticket.id).where(
        Ticket.state == TicketState.OPEN, col(Ticket.ip).is_not(None), stale)
        .order_by(checked.is_not(None), checked, col(Ticket.id)).limit(limit)).all())  # type: ignore[arg-type]


def recheck(engine: Engine, listing: ListingConfig, own_addresses: frozenset[str], mailer: Mailer, lister: Lister,
            now: datetime) -> tuple[int, list[str]]:
    """The sweep's fresh lookups: (tickets looked up, refs answered "not listed")."""
    limit = listing.recheck_per_sweep
    if limit <= 0:
        return 0, []
    with Session(engine) as session:
        due = due_for_recheck(session, now, listing.cache_seconds, limit)
    checked, answered = 0, []
    for tid in due:
        with Session(engine) as session:
            ip = session.exec(select(Ticket.ip).where(Ticket.id == tid)).first()
        if not ip:
            continue
        answer = lister.lookup(ip, fresh=True)
        metrics.LOOKUPS.labels("failed" if isinstance(answer, LookupFailed) else
                               "listed" if answer.listed else "not_listed").inc()
        checked += 1
        with transaction(engine) as session:
            stmt = select(Ticket).where(Ticket.id == tid)
            ticket = session.exec(stmt.with_for_update() if is_postgres(engine) else stmt).first()
            if ticket is None or ticket.state != TicketState.OPEN or ticket.ip != ip:
                continue  # answered, closed or changed while we asked
            previous = ticket.listing
            record(session, ticket, answer, now)
            if isinstance(answer, Listing) and not answer.listed and listing.answer_not_listed \
                    and previous in ANSWER_AFTER:
                why = "delisted elsewhere" if previous == ListingState.LISTED else "found not listed by the sweep"
                resolve_not_listed(session, ticket, answer, why, now)
                tell_not_listed(session, mailer, own_addresses, ticket, now)
                answered.append(ticket.ref)
        if isinstance(answer, LookupFailed) and answer.temporary:
            log.warning("listing re-check stopped after %d lookup(s): %s", checked, answer.error)
            break
    return checked, answered
