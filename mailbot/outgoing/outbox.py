"""The outbox: every outgoing mail is a row before it is a connection.

`queue` adds a rendered mail inside the caller's transaction (so a ticket
and its acknowledgement commit together). `flush` sends due rows one by
one: each row is claimed, sent, and marked sent in one transaction, so a
duplicate can only come from a crash between the server's 250 and that
commit, and then carries the same Message-ID.

The claim is exclusive however many senders run: PostgreSQL locks the row
(`FOR UPDATE SKIP LOCKED`, held while it is sent); on SQLite every sender
holds `locks.SendLock` around claim, send and commit (see there why not
SQLite's write lock). When the server cannot be used at all (a
`TransportFault`: cannot connect, login refused), the flush stops at once,
the mail it had claimed stays as it was (no attempt counted), and the
result says how many due mails are held and why; `sendhealth` turns that
into one alert.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, literal
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from mailbot import clock, faults
from mailbot.config import OutgoingConfig, RepliesConfig
from mailbot.desk.replyguard import RecentReplies
from mailbot.identity import person
from mailbot.outgoing.render import Composed
from mailbot.outgoing.transports import PermanentFailure, TemporaryFailure, Transport, TransportFault
from mailbot.store.engine import is_postgres, transaction
from mailbot.store.locks import SendLock
from mailbot.store.states import EventKind, MailKind, OutboxState
from mailbot.store.tables import OutboxMail, Ticket, TicketEvent, format_ref

log = logging.getLogger(__name__)


def already_queued(session: Session, dedupe_key: str) -> bool:
    return session.exec(select(OutboxMail.id).where(OutboxMail.dedupe_key == dedupe_key)).first() is not None


def queue(session: Session, mail: Composed, *, kind: str, ticket_id: int | None,
          dedupe_key: str | None, now: datetime) -> OutboxMail | None:
    """Add a mail to the outbox; None when `dedupe_key` was already used."""
    if dedupe_key and already_queued(session, dedupe_key):
        return None
    row = OutboxMail(
        ticket_id=ticket_id, kind=kind, dedupe_key=dedupe_key, envelope_from=mail.envelope_from,
        recipients=",".join(mail.recipients), message_id=mail.message_id, subject=mail.subject,
        rcpt_domain=mail.recipients[0].rpartition("@")[2].lower() if mail.recipients else None,
        rcpt_person=person(mail.recipients[0]) if mail.recipients else None,
        raw=mail.raw, next_attempt_at=now, created_at=now,
    )
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        # Another worker queued the same dedupe_key first: the database says once.
        return None
    return row


AUTO_KINDS = (MailKind.ACK, MailKind.REDIRECT, MailKind.NEEDS_INFO, MailKind.CLOSED, MailKind.NOT_OURS,
              MailKind.NOT_A_BLOCK, MailKind.NOT_LISTED)
"""The mails mailbot sends on its own to a sender (the others go to staff, or are sent by a person)."""


def _count_auto(cap: str, *where: Any) -> Any:
    """Automatic replies matching `where`, counted up to the bind parameter `cap` only: the caps
    ask "at least this many?", so a mass event cannot make every count scan the whole day."""
    rows = (select(literal(1)).select_from(OutboxMail)
            .where(col(OutboxMail.kind).in_(AUTO_KINDS), *where).limit(bindparam(cap)).subquery())
    return select(func.count()).select_from(rows).scalar_subquery()


# Built once: three bounded counts, each on its own index, in one statement (one round trip).
_RECENT = select(
    _count_auto("recipient_cap", OutboxMail.rcpt_person == bindparam("recipient"),
                col(OutboxMail.created_at) >= bindparam("day")),
    _count_auto("domain_cap", OutboxMail.rcpt_domain == bindparam("domain"),
                col(OutboxMail.created_at) >= bindparam("day")),
    _count_auto("breaker_cap", col(OutboxMail.created_at) >= bindparam("hour")),
)


def recent_replies(session: Session, recipient: str, now: datetime, caps: RepliesConfig) -> RecentReplies:
    """How many automatic replies went lately to `recipient`, its domain, and anyone (for
    `replyguard.capped`); each count stops at its cap, which is all the caps need to know."""
    to_recipient, to_domain, last_hour = session.execute(_RECENT, {
        "recipient": person(recipient), "domain": recipient.rpartition("@")[2].lower(),
        "day": now - timedelta(hours=24), "hour": now - timedelta(hours=1),
        "recipient_cap": caps.per_recipient_daily, "domain_cap": caps.per_domain_daily,
        "breaker_cap": caps.breaker_per_hour}).one()
    return RecentReplies(to_recipient=int(to_recipient), to_domain=int(to_domain), last_hour=int(last_hour))


@dataclass
class FlushResult:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    held: int = 0
    """Due mails left queued, uncounted, because the server could not be used (see `fault`)."""
    fault: str | None = None
    """Why the server could not be used: one line naming it, its user, and the likely wrong setting."""

    def add(self, other: FlushResult) -> None:
        self.sent += other.sent
        self.retried += other.retried
        self.failed += other.failed
        self.held, self.fault = other.held, other.fault  # the later flush knows the server's state


_OUT = OutboxMail.__table__.c  # type: ignore[attr-defined]
_TICKET = Ticket.__table__  # type: ignore[attr-defined]
_EVENT = TicketEvent.__table__  # type: ignore[attr-defined]

# The send path in core SQL, built once: per mail it is a claim, the send, and three small
# statements in one commit; through the ORM those statements cost more than the SMTP send.
_DUE = (sa_select(_OUT.id, _OUT.ticket_id, _OUT.kind, _OUT.envelope_from, _OUT.recipients, _OUT.message_id,
                  _OUT.raw, _OUT.attempts)
        .where(_OUT.state == OutboxState.QUEUED, _OUT.next_attempt_at <= bindparam("now"))
        .order_by(_OUT.next_attempt_at, _OUT.id).limit(1))
_SENT = (OutboxMail.__table__.update()  # type: ignore[attr-defined]
         .where(_OUT.id == bindparam("oid"))
         .values(state=OutboxState.SENT, sent_at=bindparam("now"), attempts=bindparam("attempts"), last_error=None))
_ACKED = (_TICKET.update().where(_TICKET.c.id == bindparam("tid"), _TICKET.c.acked_at.is_(None))
          .values(acked_at=bindparam("now")))
_SENT_EVENT = _EVENT.insert().values(ticket_id=bindparam("tid"), at=bindparam("now"), kind=EventKind.MAIL_SENT,
                                     actor="mailbot", detail=bindparam("detail"))


def _claim(session: Session, engine: Engine, now: datetime, skip: set[int]) -> Row[Any] | None:
    stmt = _DUE
    if skip:
        stmt = stmt.where(_OUT.id.not_in(skip))
    if is_postgres(engine):
        stmt = stmt.with_for_update(skip_locked=True)
    return session.execute(stmt, {"now": now}).first()


def backoff(config: OutgoingConfig, attempts: int) -> timedelta:
    seconds = min(config.retry_base_seconds * 2 ** max(attempts - 1, 0), config.retry_max_seconds)
    return timedelta(seconds=seconds)


_FLUSHING = threading.Lock()
"""One flush at a time per process: the daemon flushes after a poll and on its own
schedule, in two threads, and their work would only interleave. Across processes
the claim itself is what keeps a mail from going twice (see the module docstring)."""


def flush(engine: Engine, transport: Transport, config: OutgoingConfig,
          should_stop: Callable[[], bool] = lambda: False, limit: int = 10000) -> FlushResult:
    with _FLUSHING:
        return _flush(engine, transport, config, should_stop, limit)


def _flush(engine: Engine, transport: Transport, config: OutgoingConfig,
           should_stop: Callable[[], bool], limit: int) -> FlushResult:
    result = FlushResult()
    # Sent and failed rows leave the queue, and a retry is due later: only a row retried
    # in this very flush (a tiny backoff) needs skipping, so the list stays short.
    skip: set[int] = set()
    lock = SendLock(engine)
    try:
        for _ in range(limit):
            if should_stop():
                break
            with lock.held(), transaction(engine) as session:
                now = clock.utcnow()
                due = _claim(session, engine, now, skip)
                if due is None:
                    break
                try:
                    if _send_one(session, due, transport, config, now, result):
                        skip.add(due.id)
                except TransportFault as e:
                    # Nothing was written for this mail: the commit only ends the claim.
                    result.fault = str(e)
                    break
    finally:
        lock.close()
        transport.close()
    if result.fault is not None:
        with Session(engine) as session:
            result.held = held_count(session, clock.utcnow())
    return result


def held_count(session: Session, now: datetime) -> int:
    """Queued mails that are due now (what a broken server holds back)."""
    return int(session.exec(select(func.count()).select_from(OutboxMail).where(
        OutboxMail.state == OutboxState.QUEUED, col(OutboxMail.next_attempt_at) <= now)).one())


def _send_one(session: Session, due: Row[Any], transport: Transport, config: OutgoingConfig,
              now: datetime, result: FlushResult) -> bool:
    """Send one claimed mail; whether it stays queued (a retry later). A `TransportFault`
    passes through with nothing written: it is the server's fault, not this mail's."""
    attempts = due.attempts + 1
    try:
        transport.send(due.envelope_from, due.recipients.split(","), due.raw)
    except (TemporaryFailure, PermanentFailure) as e:
        row = session.get(OutboxMail, due.id)  # the rare path keeps the ORM
        assert row is not None
        row.attempts = attempts
        if isinstance(e, PermanentFailure):
            _fail(session, row, str(e), now)
            result.failed += 1
            return False
        row.last_error = str(e)
        if row.attempts >= config.max_attempts:
            _fail(session, row, f"gave up after {row.attempts} attempts: {e}", now)
            result.failed += 1
            return False
        row.next_attempt_at = now + backoff(config, row.attempts)
        log.warning("outbox %s to %s: %s; retry at %s", row.message_id, row.recipients, e, row.next_attempt_at,
                    extra=_ctx(row))
        result.retried += 1
        return True
    faults.point("after_smtp_250")
    session.execute(_SENT, {"oid": due.id, "now": now, "attempts": attempts})
    result.sent += 1
    log.info("outbox %s sent to %s (%s)", due.message_id, due.recipients, due.kind, extra={
        "message_id": due.message_id, "outbox_id": due.id,
        "ticket": format_ref(due.ticket_id) if due.ticket_id else None})
    if due.ticket_id is not None:
        if due.kind in AUTO_KINDS:  # the first reply to the sender acknowledges the ticket
            session.execute(_ACKED, {"tid": due.ticket_id, "now": now})
        session.execute(_SENT_EVENT, {"tid": due.ticket_id, "now": now,
                                      "detail": f"{due.kind} to {due.recipients} ({due.message_id})"})
    return False


def _fail(session: Session, row: OutboxMail, error: str, now: datetime) -> None:
    row.state = OutboxState.FAILED
    row.last_error = error
    log.error("outbox %s to %s failed permanently: %s", row.message_id, row.recipients, error, extra=_ctx(row))
    if row.ticket_id is not None:
        session.add(TicketEvent(ticket_id=row.ticket_id, at=now, kind=EventKind.MAIL_FAILED, actor="mailbot",
                                detail=f"{row.kind} to {row.recipients}: {error}"))


def _ctx(row: OutboxMail) -> dict[str, object]:
    """What a log line about this mail concerns (fields of the JSON log)."""
    return {"message_id": row.message_id, "outbox_id": row.id,
            "ticket": format_ref(row.ticket_id) if row.ticket_id else None}
