"""How polling goes, kept in the database: `mailbot status` reads it, and
staff get ONE alert mail when polling has failed for `alerts.poll_failure_minutes`
and one "recovered" mail when it works again (not one per failed poll).
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from mailbot import clock
from mailbot.config import Config
from mailbot.db import transaction
from mailbot.models import DaemonHealth
from mailbot.outbox import queue
from mailbot.render import Renderer, compose
from mailbot.sanitize import db_text

log = logging.getLogger(__name__)


def daemon_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Health:
    def __init__(self, engine: Engine, config: Config, renderer: Renderer, name: str | None = None) -> None:
        self.engine, self.config, self.renderer = engine, config, renderer
        self.name = name or daemon_name()
        with transaction(engine) as session:
            row = session.get(DaemonHealth, self.name) or DaemonHealth(name=self.name, started_at=clock.utcnow())
            row.started_at = clock.utcnow()
            row.errors = 0
            session.add(row)

    def ok(self) -> None:
        now = clock.utcnow()
        with transaction(self.engine) as session:
            row = session.get(DaemonHealth, self.name)
            assert row is not None
            row.last_poll_ok_at = now
            if row.alert_open:
                self._mail(session, "recovered", row, now)
                row.alert_open = False
            row.failing_since = None

    def failed(self, error: str) -> None:
        now = clock.utcnow()
        with transaction(self.engine) as session:
            row = session.get(DaemonHealth, self.name)
            assert row is not None
            row.errors += 1
            row.last_error = db_text(error, 2000)
            row.last_error_at = now
            row.failing_since = row.failing_since or now
            limit = timedelta(minutes=self.config.alerts.poll_failure_minutes)
            if not row.alert_open and now - row.failing_since >= limit:
                self._mail(session, "failing", row, now)
                row.alert_open = True

    def _mail(self, session: object, kind: str, row: DaemonHealth, now: datetime) -> None:
        from sqlmodel import Session

        assert isinstance(session, Session)
        log.warning("mailbox polling %s (daemon %s)", "is failing" if kind == "failing" else "recovered", self.name)
        if not self.config.desk.staff:
            return
        m = self.config.mailbox
        context = {"desk_name": self.config.desk.name, "ref": None, "kind": kind, "daemon": self.name,
                   "mailbox": f"{m.user}@{m.host}:{m.port}/{m.folder}" if m.source == "imap" else m.maildir_path,
                   "error": row.last_error or "", "since_local": clock.local(row.failing_since, self.config.desk.zone),
                   "now_local": clock.local(now, self.config.desk.zone),
                   "minutes": self.config.alerts.poll_failure_minutes}
        subject, text, html = self.renderer.render("poll_alert", context)
        out = self.config.outgoing
        mail = compose(from_address=out.from_address, from_name=out.from_name, to=list(self.config.desk.staff),
                       subject=subject, text=text, html=html, auto_submitted="auto-generated", now=now)
        queue(session, mail, kind=f"alert_{kind}", ticket_id=None, now=now,
              dedupe_key=f"alert:{self.name}:{kind}:{(row.failing_since or now).isoformat()}")
