"""Whether outgoing mail can leave, and the one alert when it could not.

A `TransportFault` (cannot connect, TLS that does not match, login refused
or required) is the server's fault, not any mail's: the outbox holds its
queue, counts nothing against any mail and fails none. This module

- records the outage in `outgoing_health`, shared by every sender; the first
  one to see it logs it at ERROR, naming the server, the user, the error, the
  setting most likely wrong and how many mails are held; later tries log a
  WARNING;
- spaces this process's tries (for the daemon): `outgoing.retry_base_seconds`,
  doubling, at most `FAULT_MAX_WAIT`, so a wrong password is not hammered
  into a lock-out, and a fixed server or password file is picked up within
  minutes without a restart;
- when a sender gets through again, closes the outage and queues ONE mail to
  staff saying what happened: from when to when, the error, how many mails
  waited and that they are being sent now.

The alert cannot go through the server that is broken, so it is queued for
when the server works again. Until then an operator learns of an outage from
the log (ERROR), `mailbot status`, `mailbot check`, the metric
`mailbot_outgoing_failing`, and the exit code 3 of `mailbot flush`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from mailbot import clock
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.sanitize import db_text
from mailbot.staffing.sla import human_delta
from mailbot.store.engine import transaction
from mailbot.store.tables import OutgoingHealth

log = logging.getLogger(__name__)
NAME = "outgoing"
FAULT_MAX_WAIT = 300.0
"""Seconds, at most, between a daemon's tries of a server that could not be used."""


def current(session: Session) -> OutgoingHealth | None:
    """The outage in progress, or None when outgoing mail is not known to be failing."""
    row = session.get(OutgoingHealth, NAME)
    return row if row is not None and row.failing_since is not None else None


class SendHealth:
    def __init__(self, engine: Engine, mailer: Mailer) -> None:
        """The outgoing settings (server, retry base) are the mailer's: the ones the outbox sends by."""
        self.engine, self.mailer = engine, mailer
        self.tries = 0
        self.next_try = 0.0
        self.last_fault: str | None = None

    def should_wait(self) -> bool:
        """Whether this process tried the broken server too recently to try again (the daemon asks)."""
        return self.tries > 0 and time.monotonic() < self.next_try

    def failed(self, fault: str, held: int) -> None:
        """A sender found the server unusable, with `held` due mails waiting."""
        now = clock.utcnow()
        self.tries += 1
        self.last_fault = fault
        wait = min(self.mailer.outgoing.retry_base_seconds * 2 ** (self.tries - 1), FAULT_MAX_WAIT)
        self.next_try = time.monotonic() + wait
        with transaction(self.engine) as session:
            if session.get(OutgoingHealth, NAME) is None:
                try:
                    with session.begin_nested():
                        session.add(OutgoingHealth(name=NAME))
                except IntegrityError:
                    pass  # another sender made the row first
            # the first sender to set failing_since opens the outage; the database decides who
            opened = session.connection().execute(
                update(OutgoingHealth).where(col(OutgoingHealth.name) == NAME,
                                             col(OutgoingHealth.failing_since).is_(None))
                .values(failing_since=now, tries=0)).rowcount == 1
            session.connection().execute(update(OutgoingHealth).where(col(OutgoingHealth.name) == NAME).values(
                tries=OutgoingHealth.tries + 1, held=held, last_error=db_text(fault, 2000), last_error_at=now))
        if opened:
            log.error("outgoing mail stopped: %s. %d mail(s) held in the outbox, none counted as failed; "
                      "sending resumes by itself when the server works again (this process tries again in "
                      "%.0fs; `mailbot check` tests the settings, `mailbot flush` sends at once). Staff get "
                      "one mail about it then.", fault, held, wait, extra={"outgoing_fault": fault})
        else:
            log.warning("outgoing mail still failing (try %d here): %s; %d mail(s) held; next try in %.0fs",
                        self.tries, fault, held, wait, extra={"outgoing_fault": fault})

    def works(self) -> bool:
        """A sender got through: close an outage if one is open. True when this call closed it
        (and queued the alert to staff, due now)."""
        self.tries, self.next_try, self.last_fault = 0, 0.0, None
        with Session(self.engine) as session:
            if current(session) is None:
                return False
        now = clock.utcnow()
        with transaction(self.engine) as session:
            row = current(session)
            if row is None:
                return False
            since, error, tries, held = row.failing_since, row.last_error, row.tries, row.held
            assert since is not None
            closed = session.connection().execute(
                update(OutgoingHealth).where(col(OutgoingHealth.name) == NAME,
                                             col(OutgoingHealth.failing_since) == since)
                .values(failing_since=None, recovered_at=now, held=0)).rowcount == 1
            if not closed:
                return False  # another sender closed it (and alerted) first
            log.warning("outgoing mail works again after %s (failing since %s: %s); the %d held mail(s) "
                        "are being sent", human_delta(now - since), since.isoformat(), error, held)
            self._alert(session, since, now, error or "", tries, held)
        return True

    def _alert(self, session: Session, since: datetime, now: datetime, error: str, tries: int, held: int) -> None:
        if not self.mailer.staff:
            log.warning("outgoing outage over: no desk.staff configured, so no alert mail")
            return
        out, zone = self.mailer.outgoing, self.mailer.desk.zone
        context = {"desk_name": self.mailer.desk.name, "ref": None, "error": error, "tries": tries, "held": held,
                   "since_local": clock.local(since, zone), "now_local": clock.local(now, zone),
                   "duration": human_delta(now - since),
                   "server": f"{out.host}:{out.port}" if out.transport == "smtp" else out.maildir_path}
        self.mailer.to_staff(
            session, "send_alert", context, kind="alert_outgoing", now=now,
            dedupe=f"alert:outgoing:{since.isoformat()}")
