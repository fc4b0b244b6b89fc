"""How a daemon is doing, kept in the database: `mailbot status` reads it, and
staff get ONE alert mail when polling has failed for `alerts.poll_failure_minutes`
and one "recovered" mail when it works again (not one per failed poll).

A running daemon writes a heartbeat every `heartbeat_seconds(schedule.poll_seconds)`; a row
whose heartbeat is older than `STALE_BEATS` of them belongs to a daemon that
is gone (`is_running`), whatever else the row says.

The alert must not depend on what failed: when polling fails because of the
database, or the database cannot record the failure, the alert cannot go
through the outbox (a table of that database). It is then sent straight to the
SMTP server, once per outage, and logged at CRITICAL; the "recovered" mail
goes through the outbox again, once the database works.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from mailbot import clock
from mailbot.config import AlertsConfig
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.render import Composed
from mailbot.outgoing.sanitize import db_text
from mailbot.outgoing.transports import Transport
from mailbot.store.engine import fault_line, is_fault, transaction, where
from mailbot.store.tables import DaemonHealth

log = logging.getLogger(__name__)

STALE_BEATS = 3
"""Heartbeats a daemon may miss before `mailbot status` calls it stopped."""
STALE_MIN = timedelta(seconds=10)
"""Never stale sooner: a heartbeat may wait a few seconds for SQLite's write lock."""
FORGET_AFTER = timedelta(days=7)
"""Rows of daemons gone this long are deleted when a daemon starts."""


def daemon_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def heartbeat_seconds(poll_seconds: float) -> float:
    """How often a daemon writes its heartbeat: its poll interval, between 1 s and 30 s."""
    return max(1.0, min(poll_seconds, 30.0))


def is_running(row: DaemonHealth, now: datetime) -> bool:
    """Whether the daemon of `row` still runs: not stopped, and a heartbeat recent enough."""
    if row.stopped_at is not None or row.heartbeat_at is None:
        return False
    beat = row.heartbeat_at if row.heartbeat_at.tzinfo else row.heartbeat_at.replace(tzinfo=now.tzinfo)
    allowed = max(timedelta(seconds=STALE_BEATS * (row.heartbeat_seconds or 30.0)), STALE_MIN)
    return now - beat <= allowed


class Health:
    """One daemon's row. Nothing is written until `start()` (or the first poll): a daemon
    refused by the SQLite lock never appears."""

    def __init__(self, engine: Engine, mailer: Mailer, alerts: AlertsConfig, *, poll_seconds: float, mailbox: str,
                 database_url: str, transport: Callable[[], Transport], name: str | None = None) -> None:
        """`mailbox` and `database_url` are what the alerts name (the URL's password is never
        shown: `where`); `transport` opens the SMTP connection the database alert goes by."""
        self.engine, self.mailer, self.alerts = engine, mailer, alerts
        self.poll_seconds, self.mailbox, self.transport = poll_seconds, mailbox, transport
        self.name = name or daemon_name()
        self.url = database_url
        self.down_since: datetime | None = None
        """When this daemon first saw the database fail, in this outage (kept here: not there)."""
        self.alerted_directly = False
        """The alert of this outage went straight to the SMTP server (or there was nobody to send it to)."""

    def _row(self, session: Session, now: datetime) -> DaemonHealth:
        row = session.get(DaemonHealth, self.name)
        if row is None:
            row = DaemonHealth(name=self.name, started_at=now)
            session.add(row)
        row.heartbeat_at = now
        row.heartbeat_seconds = heartbeat_seconds(self.poll_seconds)
        return row

    def start(self) -> None:
        """The daemon runs (it holds the daemon lock): a fresh row; rows of long-gone daemons go."""
        now = clock.utcnow()
        with transaction(self.engine) as session:
            session.execute(delete(DaemonHealth).where(
                func.coalesce(DaemonHealth.heartbeat_at, DaemonHealth.started_at) < now - FORGET_AFTER,
                col(DaemonHealth.name) != self.name))
            row = self._row(session, now)
            row.started_at, row.stopped_at, row.errors = now, None, 0
            row.failing_since, row.alert_open, row.last_error, row.last_error_at = None, False, None, None

    def beat(self) -> None:
        with transaction(self.engine) as session:
            self._row(session, clock.utcnow())

    def stop(self) -> None:
        now = clock.utcnow()
        with transaction(self.engine) as session:
            self._row(session, now).stopped_at = now

    def ok(self) -> None:
        now = clock.utcnow()
        with transaction(self.engine) as session:
            row = self._row(session, now)
            row.last_poll_ok_at = now
            if row.alert_open:
                self._queue("poll_alert", "recovered", session, now, row.failing_since or now,
                            row.last_error or "")
                row.alert_open = False
            row.failing_since = None
            if self.down_since is not None and self.alerted_directly:
                self._queue("database_alert", "recovered", session, now, self.down_since, "")
        if self.down_since is not None:
            log.warning("the database %s works again (it failed since %s)", where(self.url), self.down_since)
        self.down_since, self.alerted_directly = None, False

    def failed(self, error: str, database_fault: bool = False) -> None:
        """A poll failed with `error`. `database_fault`: it failed because of the database, so
        the alert does not go through it."""
        now = clock.utcnow()
        try:
            self._record(error, now, alert=not database_fault)
        except Exception as e:
            if not is_fault(e):
                raise
            if not database_fault:
                error = f"{error}; recording it failed too: {fault_line(self.url, e)}"
            database_fault = True
        if database_fault:
            self._database_down(error, now)

    def _record(self, error: str, now: datetime, alert: bool) -> None:
        with transaction(self.engine) as session:
            row = self._row(session, now)
            row.errors += 1
            row.last_error = db_text(error, 2000)
            row.last_error_at = now
            row.failing_since = row.failing_since or now
            limit = timedelta(minutes=self.alerts.poll_failure_minutes)
            if alert and not row.alert_open and now - row.failing_since >= limit:
                self._queue("poll_alert", "failing", session, now, row.failing_since, row.last_error or "")
                row.alert_open = True

    def _database_down(self, error: str, now: datetime) -> None:
        """The database fails: after the alert minutes, one alert straight to the SMTP server."""
        self.down_since = self.down_since or now
        limit = timedelta(minutes=self.alerts.poll_failure_minutes)
        if self.alerted_directly or now - self.down_since < limit:
            return
        since = clock.local(self.down_since, self.mailer.desk.zone)
        if not self.mailer.staff:
            log.critical("the database fails since %s and nobody can be alerted (desk.staff is empty): %s",
                         since, error)
            self.alerted_directly = True
            return
        mail = self._compose("database_alert", "failing", now, self.down_since, error)
        from mailbot.outgoing.transports import DeliveryError

        transport = self.transport()
        try:
            transport.send(mail.envelope_from, list(mail.recipients), mail.raw)
        except (DeliveryError, OSError) as e:
            log.critical("the database fails since %s, and the alert to %s could not be sent either (%s; tried "
                         "again at the next failed poll): %s", since, ", ".join(mail.recipients), e, error)
            return
        finally:
            transport.close()
        self.alerted_directly = True
        log.critical("the database fails since %s; alert sent to %s directly, not through the outbox in that "
                     "database (%s): %s", since, ", ".join(mail.recipients), mail.message_id, error)

    def _compose(self, template: str, kind: str, now: datetime, since: datetime, error: str) -> Composed:
        return self.mailer.compose(template, self._context(kind, now, since, error), self.mailer.staff, now=now)

    def _context(self, kind: str, now: datetime, since: datetime, error: str) -> dict[str, Any]:
        context = {"desk_name": self.mailer.desk.name, "ref": None, "kind": kind, "daemon": self.name,
                   "mailbox": self.mailbox,
                   "database": where(self.url), "error": error,
                   "since_local": clock.local(since, self.mailer.desk.zone),
                   "now_local": clock.local(now, self.mailer.desk.zone),
                   "minutes": self.alerts.poll_failure_minutes}
        return context

    def _queue(self, template: str, kind: str, session: Session, now: datetime, since: datetime,
               error: str) -> None:
        what = "mailbox polling" if template == "poll_alert" else f"the database {where(self.url)}"
        log.warning("%s %s (daemon %s)", what, "is failing" if kind == "failing" else "works again", self.name)
        if not self.mailer.staff:
            return
        prefix = "alert" if template == "poll_alert" else "alert:database"
        self.mailer.to_staff(session, template, self._context(kind, now, since, error), kind=f"alert_{kind}", now=now,
                             dedupe=f"{prefix}:{self.name}:{kind}:{since.isoformat()}")
