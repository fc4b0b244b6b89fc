"""`mailbot status`: what a person on call wants to know, in one screen."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot.models import DaemonHealth, MailboxCursor, OutboxMail, OutgoingHealth, StoredMessage, Ticket


def gather(engine: Engine, now: datetime, soon_hours: float) -> dict[str, Any]:
    def count(stmt: Any) -> int:
        return int(s.exec(stmt).one())

    with Session(engine) as s:
        outbox: dict[str, Any] = {
            state: count(select(func.count()).select_from(OutboxMail).where(OutboxMail.state == state))
            for state in ("queued", "failed")}
        health = s.get(OutgoingHealth, "outgoing")  # see sendhealth: set while the server cannot be used
        outbox["failing_since"] = health.failing_since if health else None
        outbox["last_error"] = health.last_error if health and health.failing_since else None
        is_open = Ticket.state == "open"
        tickets = {
            "open": count(select(func.count()).select_from(Ticket).where(is_open)),
            "overdue": count(select(func.count()).select_from(Ticket).where(is_open, col(Ticket.due_at) <= now)),
            "due_soon": count(select(func.count()).select_from(Ticket).where(
                is_open, col(Ticket.due_at) > now, col(Ticket.due_at) <= now + timedelta(hours=soon_hours))),
            "needs_info": count(select(func.count()).select_from(Ticket).where(Ticket.state == "needs_info")),
        }
        messages = {state: count(select(func.count()).select_from(StoredMessage).where(StoredMessage.state == state))
                    for state in ("stored", "quarantined")}
        cursors = [{"mailbox": c.mailbox, "last_poll_at": c.last_poll_at} for c in s.exec(select(MailboxCursor))]
        daemons = [{"name": d.name, "started_at": d.started_at, "last_poll_ok_at": d.last_poll_ok_at,
                    "errors_since_start": d.errors, "last_error": d.last_error, "last_error_at": d.last_error_at,
                    "failing_since": d.failing_since, "alert_open": d.alert_open}
                   for d in s.exec(select(DaemonHealth).order_by(col(DaemonHealth.started_at).desc()))]
    return {"outbox": outbox, "tickets": tickets, "messages": messages, "mailboxes": cursors, "daemons": daemons}
