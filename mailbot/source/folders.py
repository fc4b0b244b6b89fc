"""Folders read besides the inbox (the sent folders): one that cannot be read is
skipped, so the inbox keeps flowing, and it is reported: a log line per poll,
a line in `mailbot status`, and ONE alert mail to staff once it has failed for
`alerts.poll_failure_minutes`, then one "recovered" mail when it is read again.

The state is one `FolderHealth` row per failing folder, shared by every daemon
(on PostgreSQL whichever daemon fetches reads the sent folders); the alert's
dedupe key makes it once across daemons too.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.config import AlertsConfig
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.sanitize import db_text
from mailbot.store.engine import transaction
from mailbot.store.tables import FolderHealth

log = logging.getLogger(__name__)


def failed(engine: Engine, mailer: Mailer, alerts: AlertsConfig, folder: str, mailbox: str, error: str) -> None:
    """Folder `folder` (stored messages name it `mailbox`) could not be read in this poll."""
    now = clock.utcnow()
    log.warning("folder %s cannot be read, skipped (the inbox goes on): %s", folder, error,
                extra={"mailbox": mailbox})
    with transaction(engine) as session:
        row = session.get(FolderHealth, mailbox)
        if row is None:
            row = FolderHealth(mailbox=mailbox, failing_since=now, last_error="", last_error_at=now)
            session.add(row)
        row.last_error = db_text(error, 2000) or ""
        row.last_error_at = now
        limit = timedelta(minutes=alerts.poll_failure_minutes)
        if not row.alert_open and now - _aware(row.failing_since) >= limit:
            _alert(session, mailer, alerts, "failing", folder, row, now)
            row.alert_open = True


def ok(engine: Engine, mailer: Mailer, alerts: AlertsConfig, folder: str, mailbox: str) -> None:
    """Folder `folder` was read: if it was failing, it is no more (one read; a write only then)."""
    with Session(engine) as session:
        if session.get(FolderHealth, mailbox) is None:
            return
    now = clock.utcnow()
    with transaction(engine) as session:
        row = session.get(FolderHealth, mailbox)
        if row is None:
            return
        log.warning("folder %s is read again (it could not be since %s)", folder, row.failing_since,
                    extra={"mailbox": mailbox})
        if row.alert_open:
            _alert(session, mailer, alerts, "recovered", folder, row, now)
        session.delete(row)


def failing(session: Session) -> list[FolderHealth]:
    """The folders that cannot be read now, for `mailbot status`."""
    return list(session.exec(select(FolderHealth).order_by(col(FolderHealth.mailbox))).all())


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=clock.utcnow().tzinfo)


def _alert(session: Session, mailer: Mailer, alerts: AlertsConfig, kind: str, folder: str, row: FolderHealth,
           now: datetime) -> None:
    if not mailer.staff:
        return
    zone = mailer.desk.zone
    context = {"desk_name": mailer.desk.name, "ref": None, "kind": kind, "folder": folder, "mailbox": row.mailbox,
               "error": row.last_error, "since_local": clock.local(row.failing_since, zone),
               "now_local": clock.local(now, zone), "minutes": alerts.poll_failure_minutes}
    mailer.to_staff(
        session, "folder_alert", context, kind=f"alert_{kind}", now=now,
        # hashed: a mailbox name may be longer than the key's column
        dedupe=f"alert:folder:{hashlib.sha256(row.mailbox.encode()).hexdigest()[:24]}:{kind}:"
               f"{_aware(row.failing_since).isoformat()}")
