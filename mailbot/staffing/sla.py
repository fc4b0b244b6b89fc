"""The SLA sweep: no open ticket crosses the 48-hour mark unnoticed.

Each sweep finds the open tickets whose escalation point (due minus
`sla.escalate_before`) or due time has passed and that have no notice of
that kind for their current clock, records one `SlaNotice` per ticket
(unique on ticket, clock and kind: the database, not luck, makes it once,
even with two sweeps racing), and queues ONE mail to staff listing all of
them. Answered, redirected, closed and needs-info tickets have no running
clock and never escalate. The query walks the (state, due_at) index.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.config import SlaConfig
from mailbot.desk import commands
from mailbot.desk.listing_check import summary
from mailbot.outgoing import sanitize
from mailbot.outgoing.mailer import Mailer
from mailbot.store.engine import is_postgres, transaction
from mailbot.store.states import MailKind, TicketState
from mailbot.store.tables import OutboxMail, SlaNotice, StoredMessage, Ticket, format_ref

log = logging.getLogger(__name__)
MAIL_DETAIL = 100
"""Tickets described in full in one notice mail; the rest are counted."""


@dataclass
class SweepResult:
    escalated: list[str] = field(default_factory=list)
    breached: list[str] = field(default_factory=list)
    mailed: bool = False
    autodelisted: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    """needs_info tickets closed for want of a reply (desk.needs_info_days)."""
    rechecked: int = 0
    """Open tickets whose IP was looked up afresh (listing.recheck_per_sweep)."""
    not_listed: list[str] = field(default_factory=list)
    """Open tickets whose IP the source no longer lists: answered so, ended `not_listed`."""


def human_delta(delta: timedelta) -> str:
    minutes = int(abs(delta.total_seconds()) // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = ([f"{days}d"] if days else []) + ([f"{hours}h"] if hours or days else []) + [f"{mins}m"]
    return " ".join(parts)


def time_left(due: datetime | None, now: datetime) -> str:
    if due is None:
        return "no clock"
    delta = due - now
    return f"{human_delta(delta)} left" if delta.total_seconds() > 0 else f"overdue by {human_delta(delta)}"


def _crossing(session: Session, now: datetime, warn: timedelta) -> list[tuple[int, int, datetime, str]]:
    """(id, clock, due, kind) of open tickets past a point they have no notice for.

    Two index range scans on (state, sla_stage, due_at): tickets with no notice
    whose escalation point passed, and escalated ones whose due time passed.
    """
    due = col(Ticket.due_at)
    stage0 = select(Ticket.id, Ticket.clock, Ticket.due_at).where(
        Ticket.state == TicketState.OPEN, Ticket.sla_stage == 0, due.is_not(None), due <= now + warn)
    stage1 = select(Ticket.id, Ticket.clock, Ticket.due_at).where(
        Ticket.state == TicketState.OPEN, Ticket.sla_stage == 1, due <= now)
    out = []
    for tid, clk, due_at in [*session.exec(stage0).all(), *session.exec(stage1).all()]:
        assert tid is not None and due_at is not None
        out.append((tid, clk, due_at, "breach" if due_at <= now else "escalation"))
    return sorted(out, key=lambda r: r[2])


def _record(session: Session, engine: Engine, crossing: list[tuple[int, int, datetime, str]],
            now: datetime) -> set[tuple[int, str]]:
    """Insert the notices; only those this sweep inserted come back (the others were another sweep's)."""
    values = [{"ticket_id": tid, "clock": clk, "kind": k, "created_at": now} for tid, clk, _, k in crossing]
    insert = pg_insert if is_postgres(engine) else sqlite_insert
    table = SlaNotice.__table__  # type: ignore[attr-defined]
    # executemany with RETURNING: SQLAlchemy batches it into bounded multi-row statements
    stmt = insert(table).on_conflict_do_nothing().returning(table.c.ticket_id, table.c.kind)
    return {(r[0], r[1]) for r in session.connection().execute(stmt, values)}


def original_text(session: Session, ticket: Ticket, limit: int = 1500) -> str:
    """The sender's first message as staff should read it (text part, trimmed)."""
    from mailbot.desk.followup import own_words

    first = session.exec(select(StoredMessage).where(StoredMessage.ticket_id == ticket.id,
                                                     StoredMessage.folder_kind == "inbox")
                         .order_by(col(StoredMessage.id)).limit(1)).first()
    if first is None:
        return ""
    text = own_words(first.raw)
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _load(session: Session, ids: list[int]) -> list[Ticket]:
    rows = {t.id: t for t in session.exec(select(Ticket).where(col(Ticket.id).in_(ids))).all()}
    return [rows[i] for i in ids if i in rows]


def ticket_facts(session: Session, t: Ticket, zone: ZoneInfo, now: datetime) -> dict[str, Any]:
    return {
        "ref": t.ref, "sender": t.sender or "unknown", "ip": t.ip or "-", "full_code": t.full_code or "-",
        "text": t.text or "", "subject": t.subject or "", "due_local": clock.local(t.due_at, zone),
        "time_left": time_left(t.due_at, now), "opened_local": clock.local(t.opened_at, zone),
        "original": original_text(session, t),
        # staff mail: the listing and its reason (never in a sender's mail)
        "listing": summary(t, zone), "listing_reason": t.listing_reason or "", "repeat": t.repeat,
    }


def sweep(engine: Engine, mailer: Mailer, sla: SlaConfig, now: datetime | None = None) -> SweepResult:
    now = now or clock.utcnow()
    result = SweepResult()
    with transaction(engine) as session:
        crossing = _crossing(session, now, timedelta(hours=sla.escalate_before))
        if not crossing:
            return result
        mine = _record(session, engine, crossing, now)
        for stage, kind in ((1, "escalation"), (2, "breach")):
            ids = [tid for tid, _, _, k in crossing if k == kind]
            for i in range(0, len(ids), 1000):
                session.execute(update(Ticket).where(col(Ticket.id).in_(ids[i:i + 1000]),
                                                     col(Ticket.sla_stage) < stage).values(sla_stage=stage)
                                .execution_options(synchronize_session=False))
        ours = [(tid, k) for tid, _, _, k in crossing if (tid, k) in mine]
        if not ours:
            return result
        result.escalated = [format_ref(tid) for tid, k in ours if k == "escalation"]
        result.breached = [format_ref(tid) for tid, k in ours if k == "breach"]
        for kind, refs in (("escalated", result.escalated), ("past the mark", result.breached)):
            if refs:
                log.warning("SLA: %d ticket(s) %s: %s%s", len(refs), kind, " ".join(refs[:20]),
                            " ..." if len(refs) > 20 else "")
        if not mailer.staff:
            log.warning("no desk.staff configured: %d SLA notices not mailed", len(ours))
            return result
        breach_ids = [tid for tid, k in ours if k == "breach"]
        escalation_ids = [tid for tid, k in ours if k == "escalation"]
        # An escalation goes to the ticket's assignee first (when that is an address); the staff
        # list gets the unassigned ones and every breach.
        by_assignee = _assigned(session, escalation_ids)
        for assignee, theirs in sorted(by_assignee.items()):
            _notice(session, sla, mailer, now, [], theirs, f"sla:{assignee}:{min(theirs)}:{now.isoformat()}",
                    to=[assignee])
        assigned = {tid for theirs in by_assignee.values() for tid in theirs}
        escalation_ids = [tid for tid in escalation_ids if tid not in assigned]
        if not breach_ids and not escalation_ids:
            result.mailed = bool(by_assignee)
            return result
        first = min(tid for tid, _ in ours)
        row = _notice(session, sla, mailer, now, breach_ids, escalation_ids, f"sla:{first}:{now.isoformat()}")
        result.mailed = row is not None
    return result


def _assigned(session: Session, ids: list[int]) -> dict[str, list[int]]:
    """The tickets among `ids` whose assignee is a mail address, by that address."""
    out: dict[str, list[int]] = {}
    for i in range(0, len(ids), 1000):
        for tid, who in session.exec(select(Ticket.id, Ticket.assignee).where(
                col(Ticket.id).in_(ids[i:i + 1000]), col(Ticket.assignee).is_not(None))).all():
            address = sanitize.address(who or "")
            if tid is not None and address:
                out.setdefault(address, []).append(tid)
    return out


def _notice(session: Session, sla: SlaConfig, mailer: Mailer, now: datetime, breach_ids: list[int],
            escalation_ids: list[int], dedupe: str, to: list[str] | None = None) -> OutboxMail | None:
    # A mass block can cross thousands at once: the mail details the first ones and counts the rest.
    breaches = _load(session, breach_ids[:MAIL_DETAIL])
    escalations = _load(session, escalation_ids[:MAIL_DETAIL])
    context = {
        "desk_name": mailer.desk.name, "hours": sla.hours, "ref": None,
        "escalations": [ticket_facts(session, t, mailer.desk.zone, now) for t in escalations[:MAIL_DETAIL]],
        "breaches": [ticket_facts(session, t, mailer.desk.zone, now) for t in breaches[:MAIL_DETAIL]],
        "more_escalations": max(len(escalation_ids) - MAIL_DETAIL, 0),
        "more_breaches": max(len(breach_ids) - MAIL_DETAIL, 0),
        "now_local": clock.local(now, mailer.desk.zone),
        "commands": commands.usage(TicketState.OPEN),  # every escalated ticket is open
    }
    return mailer.to_staff(session, MailKind.SLA_NOTICE, context, now=now, dedupe=dedupe, to=to)
