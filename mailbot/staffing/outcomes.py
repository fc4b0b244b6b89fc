"""Staff's outcomes, each one audited step (issue #17): delist, delist on a condition, decline.

    delist(ref, note)            the listing source's delist first, with the key
                                 `delist_key(ref, clock)`; only when it succeeds, in ONE
                                 transaction: the audit event (actor, time, the source's answer,
                                 the key), the outcome, and the `delisted` reply to each sender
    delist(ref, note, condition) the same, with the `conditional` reply stating the note
    decline(ref, reason)         the `declined` reply and the outcome
    by_template(ref, template)   `mailbot reply REF --template delisted|conditional|declined`: the same

Once per ticket and clock, however often or from how many processes it is run: the delist key
makes the source delist once (it returns its first answer to a repeat), and the outcome event's
unique `once` key (`TicketEvent.once`) lets one transaction record the outcome and queue the
reply; any other meets the key, rolls back, and reports the outcome as done already.

A source that refuses (`PermanentListingError`), or still fails after `listing.delist_attempts`
tries with backoff (`TemporaryListingError`, retried by `Lister`), leaves the ticket as it was,
with a `delist_failed` event naming the error that `show` prints; the error is raised on to the
command (exit 1 or 3). A source that did not list the IP when asked delisted nothing: the
ticket ends `not_listed` and the senders get that mail, not "removed".

Without a [listing] source, `delist` refuses (there is nothing to delist with), and the
templated replies record their outcome on staff's word.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from mailbot import clock
from mailbot.desk import tickets
from mailbot.listing import DelistResult, Lister, ListingError, delist_key
from mailbot.outgoing.sanitize import db_text
from mailbot.staffing.staff import StaffError, StaffSettings, queue_replies, ticket_of
from mailbot.store.engine import transaction
from mailbot.store.states import EventKind, MailKind, Outcome, TicketState
from mailbot.store.tables import Ticket, TicketEvent

TEMPLATES = {Outcome.DELISTED: "delisted", Outcome.CONDITIONAL: "conditional", Outcome.DECLINED: "declined",
             Outcome.NOT_LISTED: MailKind.NOT_LISTED.value}
"""The reply each staff outcome sends (the templates of the same names, in the desk's language)."""
BY_TEMPLATE = {v: k for k, v in TEMPLATES.items() if k != Outcome.NOT_LISTED}


@dataclass(frozen=True)
class Done:
    """What an outcome command did. `replayed`: it had been done before, and nothing was done again."""

    ref: str
    outcome: str
    recipients: list[str] = field(default_factory=list)
    answer: str | None = None
    """The listing source's answer (a delist)."""
    replayed: bool = False


def once_key(what: Outcome, ticket: Ticket) -> str:
    """A delist and a conditional delist share the delist's key: one of them per clock."""
    if what in (Outcome.DELISTED, Outcome.CONDITIONAL, Outcome.NOT_LISTED):
        return f"delist:{delist_key(ticket.ref, ticket.clock)}"
    return f"{what}:{ticket.ref}/clock-{ticket.clock}"


def _recorded(session: Session, key: str) -> TicketEvent | None:
    return session.exec(select(TicketEvent).where(TicketEvent.once == key)).first()


def _done_before(engine: Engine, ticket_id: int, key: str) -> Done:
    with Session(engine) as session:
        ticket = session.get(Ticket, ticket_id)
        event = _recorded(session, key)
        assert ticket is not None and event is not None
        return Done(ticket.ref, str(event.outcome), answer=event.detail, replayed=True)


def _record(engine: Engine, settings: StaffSettings, ticket_id: int, what: Outcome, actor: str,
            note: str | None, key: str, delisted: DelistResult | None, now: datetime) -> Done:
    """The outcome, its reply to each sender and (for a delist) the audit event, in one
    transaction; a second record with the same key rolls back and reports the first."""
    try:
        with transaction(engine) as session:
            ticket = session.get(Ticket, ticket_id)
            assert ticket is not None
            answer = None
            if delisted is not None:
                answer = delisted.answer or str(delisted.status)
                tickets.event(session, ticket, EventKind.DELIST, actor,
                              db_text(f"{delisted.source} said {delisted.status}"
                                      f"{' (a repeat of its first answer)' if delisted.replayed else ''} at "
                                      f"{delisted.at:%Y-%m-%d %H:%M:%S} UTC: {answer} (key {delisted.key})", 2000),
                              now)
            tickets.outcome(session, ticket, what, actor, db_text(note or answer, 2000), now, once=key)
            session.flush()  # the once key: a concurrent or repeated record stops here, before any mail
            sent_to = queue_replies(session, settings, ticket, TEMPLATES[what], actor, note, now,
                                    required=False)
            if what == Outcome.NOT_LISTED and ticket.state != TicketState.NOT_LISTED:
                tickets.not_listed(session, ticket, actor, f"{delisted.source if delisted else 'staff'}: "
                                   f"{ticket.ip} was not listed when delisted", now)
            elif ticket.state in tickets.ANSWERABLE:
                tickets.mark_answered(session, ticket, actor, f"outcome {what}", now)
            return Done(ticket.ref, what, sent_to, answer)
    except IntegrityError:
        with Session(engine) as session:
            if _recorded(session, key) is None:
                raise
        return _done_before(engine, ticket_id, key)


def _failed(engine: Engine, ticket_id: int, actor: str, key: str, e: ListingError, attempts: int) -> None:
    """The ticket stays as it was; staff see why in `show` (and the command's exit)."""
    if e.temporary:
        why = (f"temporary, still failing after {attempts} tries: {e.operator_line()}; run it again later "
               f"(the same key {key}: it never delists twice)")
    else:
        why = f"refused: {e.operator_line()} (key {key})"
    with transaction(engine) as session:
        ticket = session.get(Ticket, ticket_id)
        assert ticket is not None
        tickets.event(session, ticket, EventKind.DELIST_FAILED, actor, db_text(why, 2000), clock.utcnow())


def _target(engine: Engine, ref: str) -> tuple[int, str, str | None, Ticket]:
    with Session(engine, expire_on_commit=False) as session:
        ticket = ticket_of(session, ref)
        assert ticket.id is not None
        return ticket.id, ticket.ref, ticket.ip, ticket


def delist(engine: Engine, settings: StaffSettings, lister: Lister | None, ref: str, actor: str,
           note: str | None, condition: bool = False) -> Done:
    """Delist the ticket's IP at the source, then (only then) tell its senders. Raises
    StaffError, or the source's `ListingError` after recording it on the ticket."""
    what = Outcome.CONDITIONAL if condition else Outcome.DELISTED
    if condition and not (note or "").strip():
        raise StaffError("a conditional delisting needs its condition: --note \"...\"")
    tid, ref, ip, ticket = _target(engine, ref)
    if not ip:
        raise StaffError(f"{ref} has no IP address to delist")
    key = once_key(what, ticket)
    with Session(engine) as session:
        if _recorded(session, key) is not None:
            return _done_before(engine, tid, key)
    if lister is None:
        raise StaffError("no [listing] source is configured, so mailbot cannot delist: delist the IP where it "
                         f"is listed, then `mailbot reply {ref} --template {TEMPLATES[what]}`")
    source_key = delist_key(ref, ticket.clock)
    try:
        result = lister.delist(ip, source_key, actor, note)
    except ListingError as e:
        _failed(engine, tid, actor, source_key, e, settings.delist_attempts)
        raise
    if not result.delisted:
        what, note = Outcome.NOT_LISTED, None
    return _record(engine, settings, tid, what, actor, note, key, result, clock.utcnow())


def decline(engine: Engine, settings: StaffSettings, ref: str, actor: str, reason: str | None) -> Done:
    """Tell the senders the listing stays, and why (`reason` becomes the mail's note)."""
    tid, _ref, _ip, ticket = _target(engine, ref)
    return _record(engine, settings, tid, Outcome.DECLINED, actor, reason,
                   once_key(Outcome.DECLINED, ticket), None, clock.utcnow())


def by_template(engine: Engine, settings: StaffSettings, lister: Lister | None, ref: str,
                template: str, actor: str, note: str | None) -> Done:
    """`reply --template T` for an outcome's template: the delist first where a source is
    configured; without one, the outcome on staff's word (they delisted it elsewhere)."""
    what = BY_TEMPLATE[template]
    if what == Outcome.DECLINED:
        return decline(engine, settings, ref, actor, note)
    if lister is not None:
        return delist(engine, settings, lister, ref, actor, note, condition=what == Outcome.CONDITIONAL)
    if what == Outcome.CONDITIONAL and not (note or "").strip():
        raise StaffError("a conditional delisting needs its condition: --note \"...\"")
    tid, _ref, _ip, ticket = _target(engine, ref)
    return _record(engine, settings, tid, what, actor, note, once_key(what, ticket), None, clock.utcnow())
