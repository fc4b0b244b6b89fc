"""The staff digest: what is waiting, how close each ticket is to the mark,
and what changed since the last digest. Text and HTML (email-client safe:
tables and inline styles, no images, no scripts, everything escaped).

`send(slot)` is once per schedule slot: `DigestRun.slot` is unique, so two
daemons firing the same cron slot send one digest.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.config import DeskConfig, SlaConfig
from mailbot.desk import commands
from mailbot.desk.expiry import EXPIRY_ACTOR
from mailbot.desk.listing_check import summary
from mailbot.desk.policy import code_family
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.render import Renderer
from mailbot.staffing.autodelist import ACTOR as AUTODELIST
from mailbot.staffing.sla import time_left
from mailbot.store.engine import transaction
from mailbot.store.states import EventKind, ListingState, MailKind, MessageState, OutboxState, Outcome, TicketState
from mailbot.store.tables import DigestRun, OutboxMail, StoredMessage, Ticket, TicketEvent, format_ref

log = logging.getLogger(__name__)
STATES = tuple(TicketState)
WAITING_FOR_STAFF = (TicketState.OPEN,)
"""What the digest calls "open": the states in which a ticket waits for staff, its clock running.
Every count and section of the digest uses this one definition (needs_info waits for the
sender; answered, redirected and closed tickets wait for nobody)."""
LIST_CAP = 500
"""Tickets listed per digest section (the most urgent first); counts are always complete."""
FAILED_MAIL_CAP = 50
"""Failed outgoing mails listed in the digest (the newest first); the count is complete."""


def _bar(due_at: datetime | None, now: datetime, hours: float) -> dict[str, Any]:
    """How much of the SLA window is used: a width (0-100) and a colour (grey: no clock runs)."""
    if due_at is None:
        return {"used": 0, "colour": "#8c959f", "ascii": "[" + "." * 20 + "]"}
    total = hours * 3600
    used = min(max(1 - (due_at - now).total_seconds() / total, 0.0), 1.0)
    pct = round(used * 100)
    colour = "#cf222e" if due_at <= now else "#bf8700" if used >= 0.75 else "#1a7f37"
    filled = round(used * 20)
    return {"used": pct, "colour": colour, "ascii": "[" + "#" * filled + "." * (20 - filled) + "]"}


ATTENTION: dict[str, str] = {
    EventKind.CLOSED_FOLLOW_UP: "the sender wrote to the closed ticket (no new rejection; told once how to reopen it)",
    EventKind.CITED: "cited by someone who is not its sender: changed nothing there",
    EventKind.UNVERIFIED_STAFF: "mail from a staff address that the trusted Authentication-Results do not vouch for: "
                        "not counted as an answer",
}
"""Event kinds the digest lists for a person to look at, with what each means."""


def flag(t: Ticket) -> str:
    """What the listing says that a person should see in a ticket's row: a repeat, a failed
    lookup, or an open ticket whose IP is not listed (answering is off, or the sender insists)."""
    if t.repeat and t.listing == ListingState.LISTED:
        return "REPEAT"
    if t.listing == ListingState.LOOKUP_FAILED:
        return "lookup failed"
    return "not listed" if t.listing == ListingState.NOT_LISTED and t.state in WAITING_FOR_STAFF else ""


def build(session: Session, desk: DeskConfig, sla: SlaConfig, now: datetime, since: datetime) -> dict[str, Any]:
    """Everything the digest shows. Each section's count is the number of tickets in it (the
    list may stop at LIST_CAP), and "open" is `WAITING_FOR_STAFF` everywhere."""
    zone = desk.zone
    by_state: dict[str, int] = dict.fromkeys(STATES, 0)
    for state, n in session.exec(select(Ticket.state, func.count()).group_by(col(Ticket.state))).all():
        by_state[state] = n
    is_open = col(Ticket.state).in_(WAITING_FOR_STAFF)
    families: Counter[str] = Counter()
    for status, n in session.exec(select(Ticket.status, func.count()).where(is_open)
                                  .group_by(col(Ticket.status))).all():
        families[code_family(status)] += n

    def listed(*where: Any, order: Any = None) -> tuple[list[Ticket], int]:
        """At most LIST_CAP tickets, the least time left first, and how many there are in all."""
        order = order if order is not None else col(Ticket.due_at).asc()
        rows = session.exec(select(Ticket).where(*where).order_by(order, col(Ticket.id)).limit(LIST_CAP)).all()
        total = len(rows) if len(rows) < LIST_CAP else session.exec(
            select(func.count()).select_from(Ticket).where(*where)).one()
        return list(rows), total

    open_rows, open_total = listed(is_open)
    breached_rows, breached_total = listed(is_open, col(Ticket.due_at) <= now)
    escalated_rows, escalated_total = listed(is_open, Ticket.sla_stage == 1, col(Ticket.due_at) > now)

    def row(t: Ticket) -> dict[str, Any]:
        waiting = t.state in WAITING_FOR_STAFF
        return {"ref": t.ref, "sender": t.sender or "-", "ip": t.ip or "-", "code": t.full_code or "-",
                "subject": t.subject or "", "state": t.state,
                "due_local": clock.local(t.due_at, zone) if waiting else "-",
                # a clock runs only while the ticket waits for staff: no "time left" for the others
                "time_left": time_left(t.due_at, now) if waiting else f"no clock ({t.state.replace('_', ' ')})",
                "bar": _bar(t.due_at if waiting else None, now, sla.hours),
                "reason": t.reason or "", "flag": flag(t), "listing": summary(t, zone)}

    # open tickets by who has them, with each one's latest staff-only note
    notes: dict[int, str] = {}
    open_ids = [t.id for t in open_rows if t.id is not None]
    if open_ids:
        for tid, detail in session.exec(select(TicketEvent.ticket_id, TicketEvent.detail).where(
                col(TicketEvent.ticket_id).in_(open_ids), TicketEvent.kind == EventKind.NOTE)
                .order_by(col(TicketEvent.id))).all():
            notes[tid] = detail or ""
    groups: dict[str, list[dict[str, str]]] = {}
    for t in open_rows:
        groups.setdefault(t.assignee or "nobody", []).append({"ref": t.ref, "note": notes.get(t.id or 0, "")})
    by_assignee = [{"who": who, "tickets": rows} for who, rows in sorted(
        groups.items(), key=lambda kv: (kv[0] == "nobody", kv[0]))]

    by_id = col(Ticket.id).asc()
    new, new_total = listed(col(Ticket.opened_at) >= since, order=by_id)
    answered_ids = set(session.exec(select(TicketEvent.ticket_id).where(
        col(TicketEvent.at) >= since, TicketEvent.kind == EventKind.STATE,
        TicketEvent.to_state == TicketState.ANSWERED)).all())
    answered, answered_total = listed(col(Ticket.id).in_(answered_ids), order=by_id)
    redirected, redirected_total = listed(col(Ticket.opened_at) >= since, Ticket.state == TicketState.REDIRECTED,
                                          order=by_id)
    needs_info, needs_info_total = listed(Ticket.state == TicketState.NEEDS_INFO, order=by_id)
    expired_total = session.exec(select(func.count()).select_from(TicketEvent).where(
        TicketEvent.kind == EventKind.STATE, TicketEvent.to_state == TicketState.CLOSED,
        TicketEvent.actor == EXPIRY_ACTOR, col(TicketEvent.at) >= since)).one()
    quarantined = [(m.id, m.sender, m.subject, m.outcome, m.fetched_at) for m in session.exec(
        select(StoredMessage).options(load_only(
            StoredMessage.id, StoredMessage.sender, StoredMessage.subject,  # type: ignore[arg-type]
            StoredMessage.outcome, StoredMessage.fetched_at))  # type: ignore[arg-type]
        .where(StoredMessage.state == MessageState.QUARANTINED).order_by(col(StoredMessage.id)).limit(LIST_CAP)).all()]
    quarantined_total = session.exec(select(func.count()).select_from(StoredMessage)
                                     .where(StoredMessage.state == MessageState.QUARANTINED)).one()
    failed_mail = session.exec(select(OutboxMail).options(load_only(
        OutboxMail.id, OutboxMail.ticket_id, OutboxMail.kind, OutboxMail.recipients,  # type: ignore[arg-type]
        OutboxMail.last_error, OutboxMail.created_at))  # type: ignore[arg-type]
        .where(OutboxMail.state == OutboxState.FAILED).order_by(col(OutboxMail.id).desc()).limit(FAILED_MAIL_CAP)).all()
    failed_total = session.exec(select(func.count()).select_from(OutboxMail)
                                .where(OutboxMail.state == OutboxState.FAILED)).one()
    # What mailbot refused to act on, or kept without acting: a person should look (fail closed, and tell)
    looks = session.exec(select(TicketEvent.ticket_id, TicketEvent.kind, TicketEvent.actor, TicketEvent.at)
                         .where(col(TicketEvent.kind).in_(list(ATTENTION)), col(TicketEvent.at) >= since)
                         .order_by(col(TicketEvent.id)).limit(LIST_CAP)).all()
    looks_total = session.exec(select(func.count()).select_from(TicketEvent).where(
        col(TicketEvent.kind).in_(list(ATTENTION)), col(TicketEvent.at) >= since)).one()
    auto = session.exec(select(Ticket.id, Ticket.ip, Ticket.listing_category, TicketEvent.at).join(
        TicketEvent, col(TicketEvent.ticket_id) == col(Ticket.id)).where(
        TicketEvent.kind == EventKind.OUTCOME, TicketEvent.actor == AUTODELIST, col(TicketEvent.at) >= since)
        .order_by(col(TicketEvent.id)).limit(LIST_CAP)).all()
    outcomes = dict.fromkeys(Outcome, 0)
    for what, n in session.exec(select(TicketEvent.outcome, func.count()).where(
            col(TicketEvent.outcome).is_not(None), col(TicketEvent.at) >= since).group_by(col(TicketEvent.outcome))):
        outcomes[Outcome(str(what))] = n
    repeats, repeats_total = listed(is_open, col(Ticket.repeat).is_(True))
    repeat_ips = session.exec(select(Ticket.ip, func.count()).where(col(Ticket.ip).is_not(None))
                              .group_by(col(Ticket.ip)).having(func.count() > 1)
                              .order_by(func.count().desc()).limit(20)).all()
    repeat_senders = session.exec(
        select(StoredMessage.sender, func.count(func.distinct(StoredMessage.ticket_id)))
        .where(col(StoredMessage.sender).is_not(None), StoredMessage.folder_kind == "inbox")
        .group_by(col(StoredMessage.sender)).having(func.count(func.distinct(StoredMessage.ticket_id)) > 1)
        .order_by(func.count(func.distinct(StoredMessage.ticket_id)).desc()).limit(20)).all()
    return {
        "desk_name": desk.name, "ref": None, "width": 760, "hours": sla.hours,
        "now_local": clock.local(now, zone), "since_local": clock.local(since, zone),
        "open_states": list(WAITING_FOR_STAFF),
        "by_state": by_state, "families": dict(sorted(families.items())),
        "open": [row(t) for t in open_rows], "breached": [row(t) for t in breached_rows],
        "escalated": [row(t) for t in escalated_rows], "open_total": open_total,
        "breached_total": breached_total, "escalated_total": escalated_total, "list_cap": LIST_CAP,
        "new": [row(t) for t in new], "new_total": new_total,
        "answered": [row(t) for t in answered], "answered_total": answered_total,
        "redirected": [row(t) for t in redirected], "redirected_total": redirected_total,
        "needs_info": [row(t) for t in needs_info], "needs_info_total": needs_info_total,
        "expired_total": expired_total, "needs_info_days": desk.needs_info_days,
        "quarantined": [{"id": q[0], "sender": q[1] or "-", "subject": q[2] or "", "outcome": q[3] or "",
                         "fetched_local": clock.local(q[4], zone)} for q in quarantined],
        "quarantined_total": quarantined_total,
        "failed_mail": [{"id": m.id, "ticket": format_ref(m.ticket_id) if m.ticket_id else "-", "kind": m.kind,
                         "to": m.recipients, "error": (m.last_error or "")[:160],
                         "queued_local": clock.local(m.created_at, zone)} for m in failed_mail],
        "failed_total": failed_total,
        "attention": [{"ref": format_ref(tid), "what": ATTENTION[kind], "who": actor or "-",
                       "at_local": clock.local(at, zone)} for tid, kind, actor, at in looks],
        "attention_total": looks_total,
        "by_assignee": by_assignee, "commands": commands.usage(TicketState.OPEN),
        "outcomes": {str(k): v for k, v in outcomes.items()}, "outcomes_total": sum(outcomes.values()),
        "autodelisted": [{"ref": format_ref(tid or 0), "ip": ip or "-", "category": cat or "-",
                          "at_local": clock.local(at, zone)} for tid, ip, cat, at in auto],
        "repeats": [row(t) for t in repeats], "repeats_total": repeats_total,
        "repeat_ips": [{"ip": ip, "count": n} for ip, n in repeat_ips],
        "repeat_senders": [{"sender": s, "count": n} for s, n in repeat_senders],
    }


def last_run(session: Session) -> datetime | None:
    return session.exec(select(func.max(DigestRun.created_at))).one()


def render(engine: Engine, renderer: Renderer, desk: DeskConfig, sla: SlaConfig,
           now: datetime | None = None) -> tuple[str, str, str]:
    now = now or clock.utcnow()
    with Session(engine) as session:
        since = last_run(session) or now - timedelta(days=1)
        return renderer.render(MailKind.DIGEST, build(session, desk, sla, now, since))


def send(engine: Engine, mailer: Mailer, sla: SlaConfig, slot: str, now: datetime | None = None) -> bool:
    """Queue the digest for `slot`; False when that slot's digest exists already (or no staff)."""
    now = now or clock.utcnow()
    if not mailer.staff:
        log.warning("digest: no desk.staff configured; nothing sent")
        return False
    try:
        with transaction(engine) as session:
            if session.exec(select(DigestRun.id).where(DigestRun.slot == slot)).first():
                return False
            since = last_run(session) or now - timedelta(days=1)
            run = DigestRun(slot=slot, created_at=now)
            session.add(run)
            session.flush()  # claim the slot before the work: a racing daemon stops here
            row = mailer.to_staff(session, MailKind.DIGEST, build(session, mailer.desk, sla, now, since), now=now,
                                  dedupe=f"digest:{slot}")
            run.outbox_id = row.id if row else None
    except IntegrityError:
        return False
    log.info("digest for slot %s queued", slot)
    return True
