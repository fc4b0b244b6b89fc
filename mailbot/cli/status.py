"""`mailbot status`: what a person on call wants to know, in one screen.

Daemons are shown as they are, not as their rows last said: one whose
heartbeat stopped is "stopped" (`health.is_running`), and a folder the desk
skips because it cannot be read is listed with its error.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot.source import folders as folder_health
from mailbot.staffing.health import is_running
from mailbot.store.states import MessageState, OutboxState, TicketState
from mailbot.store.tables import DaemonHealth, MailboxCursor, OutboxMail, OutgoingHealth, StoredMessage, Ticket

RECENT = timedelta(days=1)
"""Stopped daemons are listed for this long after their last heartbeat."""


def gather(engine: Engine, now: datetime, soon_hours: float) -> dict[str, Any]:
    def count(stmt: Any) -> int:
        return int(s.exec(stmt).one())

    with Session(engine) as s:
        outbox: dict[str, Any] = {
            state: count(select(func.count()).select_from(OutboxMail).where(OutboxMail.state == state))
            for state in (OutboxState.QUEUED, OutboxState.FAILED)}
        health = s.get(OutgoingHealth, "outgoing")  # see sendhealth: set while the server cannot be used
        outbox["failing_since"] = health.failing_since if health else None
        outbox["last_error"] = health.last_error if health and health.failing_since else None
        is_open = Ticket.state == TicketState.OPEN
        tickets = {
            "open": count(select(func.count()).select_from(Ticket).where(is_open)),
            "overdue": count(select(func.count()).select_from(Ticket).where(is_open, col(Ticket.due_at) <= now)),
            "due_soon": count(select(func.count()).select_from(Ticket).where(
                is_open, col(Ticket.due_at) > now, col(Ticket.due_at) <= now + timedelta(hours=soon_hours))),
            "needs_info": count(select(func.count()).select_from(Ticket).where(Ticket.state == TicketState.NEEDS_INFO)),
        }
        messages = {state: count(select(func.count()).select_from(StoredMessage).where(StoredMessage.state == state))
                    for state in (MessageState.STORED, MessageState.QUARANTINED)}
        cursors = [{"mailbox": c.mailbox, "last_poll_at": c.last_poll_at} for c in s.exec(select(MailboxCursor))]
        daemons = []
        for d in s.exec(select(DaemonHealth).order_by(col(DaemonHealth.started_at).desc())):
            running = is_running(d, now)
            last_seen = d.stopped_at or d.heartbeat_at or d.started_at
            if not running and _aware(last_seen, now) < now - RECENT:
                continue
            daemons.append({
                "name": d.name, "state": "running" if running else "stopped", "started_at": d.started_at,
                "heartbeat_at": d.heartbeat_at, "stopped_at": None if running else last_seen,
                "last_poll_ok_at": d.last_poll_ok_at, "errors_since_start": d.errors, "last_error": d.last_error,
                "last_error_at": d.last_error_at, "failing_since": d.failing_since, "alert_open": d.alert_open})
        daemons.sort(key=lambda d: d["state"] != "running")  # stable: running first, newest first
        folders = [{"mailbox": f.mailbox, "failing_since": f.failing_since, "last_error": f.last_error,
                    "last_error_at": f.last_error_at, "alert_open": f.alert_open}
                   for f in folder_health.failing(s)]
    return {"outbox": outbox, "tickets": tickets, "messages": messages, "mailboxes": cursors,
            "skipped_folders": folders, "daemons": daemons}


def _aware(dt: datetime, now: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=now.tzinfo)
