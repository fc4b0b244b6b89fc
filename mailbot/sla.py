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

from sqlalchemy import and_, case, exists
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.config import Config
from mailbot.db import is_postgres, transaction
from mailbot.models import SlaNotice, StoredMessage, Ticket
from mailbot.outbox import queue
from mailbot.render import Renderer, compose

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    escalated: list[str] = field(default_factory=list)
    breached: list[str] = field(default_factory=list)
    mailed: bool = False


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


def _crossing(session: Session, now: datetime, warn: timedelta) -> list[tuple[Ticket, str]]:
    kind = case((col(Ticket.due_at) <= now, "breach"), else_="escalation")
    noticed = exists().where(and_(col(SlaNotice.ticket_id) == col(Ticket.id),
                                  col(SlaNotice.clock) == col(Ticket.clock), col(SlaNotice.kind) == kind))
    rows = session.exec(
        select(Ticket).where(Ticket.state == "open", col(Ticket.due_at).is_not(None),
                             col(Ticket.due_at) <= now + warn, ~noticed)
        .order_by(col(Ticket.due_at))
    ).all()
    return [(t, "breach" if t.due_at is not None and t.due_at <= now else "escalation") for t in rows]


def _record(session: Session, engine: Engine, crossing: list[tuple[Ticket, str]],
            now: datetime) -> set[tuple[int, str]]:
    """Insert the notices; only those this sweep inserted come back (the others were another sweep's)."""
    values = [{"ticket_id": t.id, "clock": t.clock, "kind": k, "created_at": now} for t, k in crossing]
    insert = pg_insert if is_postgres(engine) else sqlite_insert
    stmt = (insert(SlaNotice).values(values).on_conflict_do_nothing()
            .returning(col(SlaNotice.ticket_id), col(SlaNotice.kind)))
    return {(r[0], r[1]) for r in session.execute(stmt)}


def original_text(session: Session, ticket: Ticket, limit: int = 1500) -> str:
    """The sender's first message as staff should read it (text part, trimmed)."""
    from mailbot.followup import own_words

    first = session.exec(select(StoredMessage).where(StoredMessage.ticket_id == ticket.id,
                                                     StoredMessage.folder_kind == "inbox")
                         .order_by(col(StoredMessage.id)).limit(1)).first()
    if first is None:
        return ""
    text = own_words(first.raw)
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def ticket_facts(session: Session, t: Ticket, config: Config, now: datetime) -> dict[str, Any]:
    return {
        "ref": t.ref, "sender": t.sender or "unknown", "ip": t.ip or "-", "full_code": t.full_code or "-",
        "text": t.text or "", "subject": t.subject or "", "due_local": clock.local(t.due_at, config.desk.zone),
        "time_left": time_left(t.due_at, now), "opened_local": clock.local(t.opened_at, config.desk.zone),
        "original": original_text(session, t),
    }


def sweep(engine: Engine, config: Config, renderer: Renderer, now: datetime | None = None) -> SweepResult:
    now = now or clock.utcnow()
    result = SweepResult()
    with transaction(engine) as session:
        crossing = _crossing(session, now, timedelta(hours=config.sla.escalate_before))
        if not crossing:
            return result
        mine = _record(session, engine, crossing, now)
        ours = [(t, k) for t, k in crossing if (t.id, k) in mine]
        if not ours:
            return result
        result.escalated = [t.ref for t, k in ours if k == "escalation"]
        result.breached = [t.ref for t, k in ours if k == "breach"]
        for t, k in ours:
            log.warning("ticket %s: %s (%s)", t.ref, "SLA breached" if k == "breach" else "escalated",
                        time_left(t.due_at, now))
        if not config.desk.staff:
            log.warning("no desk.staff configured: %d SLA notices not mailed", len(ours))
            return result
        context = {
            "desk_name": config.desk.name, "hours": config.sla.hours, "ref": None,
            "escalations": [ticket_facts(session, t, config, now) for t, k in ours if k == "escalation"],
            "breaches": [ticket_facts(session, t, config, now) for t, k in ours if k == "breach"],
            "now_local": clock.local(now, config.desk.zone),
        }
        subject, text, html = renderer.render("sla_notice", context)
        out = config.outgoing
        mail = compose(from_address=out.from_address, from_name=out.from_name, to=list(config.desk.staff),
                       subject=subject, text=text, html=html, auto_submitted="auto-generated", now=now)
        first = min(t.id or 0 for t, _ in ours)
        row = queue(session, mail, kind="sla_notice", ticket_id=None, now=now,
                    dedupe_key=f"sla:{first}:{now.isoformat()}")
        result.mailed = row is not None
    return result
