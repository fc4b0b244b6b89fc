"""The outbox: every outgoing mail is a row before it is a connection.

`queue` adds a rendered mail inside the caller's transaction (so a ticket
and its acknowledgement commit together). `flush` sends due rows one by
one: each row is claimed, sent, and marked sent in one transaction, so a
duplicate can only come from a crash between the server's 250 and that
commit, and then carries the same Message-ID. (Those commits do not wait
for the disk: a crash of the machine may also lose the last marks, and
resend those mails; see `_marking_connection`.)

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, func, literal, union_all
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import Session, col, select

from mailbot import clock, faults
from mailbot.config import OutgoingConfig, RepliesConfig
from mailbot.desk.replyguard import RecentReplies
from mailbot.identity import person
from mailbot.outgoing.render import Composed
from mailbot.outgoing.transports import PermanentFailure, TemporaryFailure, Transport, TransportFault
from mailbot.store import unit
from mailbot.store.engine import is_postgres
from mailbot.store.locks import SendLock
from mailbot.store.states import EventKind, MailKind, OutboxState
from mailbot.store.tables import OutboxMail, Ticket, TicketEvent, format_ref
from mailbot.store.unit import ReplyCounts

log = logging.getLogger(__name__)


def already_queued(session: Session, dedupe_key: str) -> bool:
    return session.exec(select(OutboxMail.id).where(OutboxMail.dedupe_key == dedupe_key)).first() is not None


def queue(session: Session, mail: Composed, *, kind: str, ticket_id: int | None,
          dedupe_key: str | None, now: datetime) -> OutboxMail | None:
    """Add a mail to the outbox; None when `dedupe_key` was already used.

    A mail whose key names a ticket opened in this transaction (`store.unit`: nobody else can
    see that ticket, so only this transaction can have used the key), or that has no key, is
    written with the rest of the transaction at its commit: a batch's mails in one statement.
    Any other key is tried at once, `INSERT ... ON CONFLICT DO NOTHING`: the database says
    whether it was used, by this desk or another daemon, in one statement (issue #16)."""
    known = unit.of(session)
    if dedupe_key and dedupe_key in known.dedupe_keys:
        return None
    row = OutboxMail(
        ticket_id=ticket_id, kind=kind, dedupe_key=dedupe_key, envelope_from=mail.envelope_from,
        recipients=",".join(mail.recipients), message_id=mail.message_id, subject=mail.subject,
        rcpt_domain=mail.recipients[0].rpartition("@")[2].lower() if mail.recipients else None,
        rcpt_person=person(mail.recipients[0]) if mail.recipients else None,
        raw=mail.raw, next_attempt_at=now, created_at=now,
    )
    if dedupe_key and not (ticket_id in known.fresh_tickets and str(ticket_id) in dedupe_key.split(":")):
        values = {c.name: getattr(row, c.name) for c in _OUT if c.name != "id"}
        insert = _INSERT_ONCE["postgresql" if session.get_bind().dialect.name == "postgresql" else "sqlite"]
        with session.no_autoflush:  # the keys pending in this session are in `known.dedupe_keys`
            oid = session.execute(insert, values).scalar()
        if oid is None:
            return None  # queued before (or by another daemon just now): the database says once
        row.id = oid
        make_transient_to_detached(row)
    session.add(row)
    if dedupe_key:
        known.dedupe_keys.add(dedupe_key)
    if known.replies is not None and kind in AUTO_KINDS:
        known.replies.add(row.rcpt_person, row.rcpt_domain)
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
_LAST_HOUR = _count_auto("breaker_cap", col(OutboxMail.created_at) >= bindparam("hour"))
_RECENT = select(
    _count_auto("recipient_cap", OutboxMail.rcpt_person == bindparam("recipient"),
                col(OutboxMail.created_at) >= bindparam("day")),
    _count_auto("domain_cap", OutboxMail.rcpt_domain == bindparam("domain"),
                col(OutboxMail.created_at) >= bindparam("day")),
    _LAST_HOUR,
)


def recent_replies(session: Session, recipient: str, now: datetime, caps: RepliesConfig) -> RecentReplies:
    """How many automatic replies went lately to `recipient`, its domain, and anyone (for
    `replyguard.capped`); each count stops at its cap, which is all the caps need to know.
    Answered from `count_replies`' counts where the transaction has them."""
    who, domain = person(recipient), recipient.rpartition("@")[2].lower()
    counted = unit.of(session).replies
    if counted is not None and who in counted.persons and domain in counted.domains:
        return RecentReplies(to_recipient=min(counted.persons[who], caps.per_recipient_daily),
                             to_domain=min(counted.domains[domain], caps.per_domain_daily),
                             last_hour=min(counted.last_hour, caps.breaker_per_hour))
    to_recipient, to_domain, last_hour = session.execute(_RECENT, {
        "recipient": who, "domain": domain,
        "day": now - timedelta(hours=24), "hour": now - timedelta(hours=1),
        "recipient_cap": caps.per_recipient_daily, "domain_cap": caps.per_domain_daily,
        "breaker_cap": caps.breaker_per_hour}).one()
    return RecentReplies(to_recipient=int(to_recipient), to_domain=int(to_domain), last_hour=int(last_hour))


def count_replies(session: Session, recipients: Iterable[str], now: datetime, caps: RepliesConfig) -> None:
    """Count for a batch, in one statement, the automatic replies of the last 24 hours to each of
    `recipients` and to each of their domains, and those of the last hour (up to the breaker's
    cap); `recent_replies` answers from these for the rest of the transaction, adding each reply
    `queue` queues. A person's and a domain's rows of a day are few (the caps stop replies), so
    the per-recipient counts are exact. Replies another process queues meanwhile are not seen,
    as if the batch had been read a moment earlier (the caps are daily and hourly)."""
    persons = {person(r) for r in recipients}
    domains = {r.rpartition("@")[2].lower() for r in recipients}
    if not persons:
        return
    day, auto = now - timedelta(hours=24), _OUT.kind.in_(AUTO_KINDS)
    stmt = union_all(
        sa_select(literal("p"), _OUT.rcpt_person, func.count()).where(
            auto, _OUT.rcpt_person.in_(persons), _OUT.created_at >= day).group_by(_OUT.rcpt_person),
        sa_select(literal("d"), _OUT.rcpt_domain, func.count()).where(
            auto, _OUT.rcpt_domain.in_(domains), _OUT.created_at >= day).group_by(_OUT.rcpt_domain),
        sa_select(literal("h"), literal(""), _LAST_HOUR))
    counted = ReplyCounts(dict.fromkeys(persons, 0), dict.fromkeys(domains, 0), 0)
    for what, key, n in session.execute(stmt, {"hour": now - timedelta(hours=1), "breaker_cap": caps.breaker_per_hour}):
        if what == "p":
            counted.persons[key] = int(n)
        elif what == "d":
            counted.domains[key] = int(n)
        else:
            counted.last_hour = int(n)
    unit.of(session).replies = counted


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


_OUTBOX = OutboxMail.__table__  # type: ignore[attr-defined]
_OUT = _OUTBOX.c
_INSERT_ONCE = {"postgresql": pg_insert(_OUTBOX).on_conflict_do_nothing().returning(_OUT.id),
                "sqlite": sqlite_insert(_OUTBOX).on_conflict_do_nothing().returning(_OUT.id)}
"""A mail whose key may have been used: one statement, and no row when it was (built once)."""
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
_SENT_ALL = {acks: _SENT_EVENT.add_cte(*((_SENT.cte("sent"), _ACKED.cte("acked")) if acks else (_SENT.cte("sent"),)))
             for acks in (True, False)}
"""PostgreSQL: the row marked sent, the ticket acknowledged (for a reply to its sender) and the
event, as one statement (data-modifying CTEs all run, referenced or not)."""


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
    # One connection for the flush, one transaction per mail (claim, send, mark, commit): a session
    # on the engine gives its connection back at each commit, and PostgreSQL's checkout pings.
    conn = _marking_connection(engine)
    session = Session(bind=conn, expire_on_commit=False)
    try:
        for _ in range(limit):
            if should_stop():
                break
            with lock.held():
                try:
                    now = clock.utcnow()
                    due = _claim(session, engine, now, skip)
                    if due is None:
                        session.commit()
                        break
                    try:
                        if _send_one(session, due, transport, config, now, result):
                            skip.add(due.id)
                    except TransportFault as e:
                        # Nothing was written for this mail: the commit only ends the claim.
                        result.fault = str(e)
                        session.commit()
                        break
                    session.commit()
                except BaseException:
                    session.rollback()
                    raise
                session.expunge_all()  # the rare failure path loads rows: keep none across mails
    finally:
        session.close()
        _release_marking_connection(conn)
        lock.close()
        transport.close()
    if result.fault is not None:
        with Session(engine) as session:
            result.held = held_count(session, clock.utcnow())
    return result


_DURABILITY = {"sqlite": ("PRAGMA synchronous=NORMAL", "PRAGMA synchronous=FULL"),
               "postgresql": ("SET synchronous_commit = off", "RESET synchronous_commit")}
"""Per dialect: the statement that lets a commit skip waiting for the disk, and the one that undoes it."""


def _durability(conn: Connection, *, relaxed: bool) -> None:
    statements = _DURABILITY.get(conn.dialect.name)
    if statements is not None:
        conn.exec_driver_sql(statements[0] if relaxed else statements[1])


def _marking_connection(engine: Engine) -> Connection:
    """A connection whose commits do not wait for the disk (SQLite `synchronous=NORMAL` in WAL mode,
    PostgreSQL `synchronous_commit = off`): what the flush commits is "this mail was sent", and
    losing that to a crash of the machine or of the database server (never to one of mailbot's:
    the database has the commit by then) only sends the mail again, with the same Message-ID,
    the one duplicate the outbox allows. Every commit that makes a mail (processing, queueing)
    keeps waiting for the disk, and with it flushes the log written before it, these marks
    included. An fsync per mail cost more than its SMTP conversation (issue #16)."""
    conn = engine.connect()
    try:
        _durability(conn, relaxed=True)
        conn.commit()
    except BaseException:
        conn.invalidate()
        conn.close()
        raise
    return conn


def _release_marking_connection(conn: Connection) -> None:
    """Back to the pool with the engine's durability, or never reused when that cannot be restored."""
    try:
        if not conn.invalidated:
            conn.rollback()
            _durability(conn, relaxed=False)
            conn.commit()
    except Exception:
        conn.invalidate()
    finally:
        conn.close()


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
    result.sent += 1
    log.info("outbox %s sent to %s (%s)", due.message_id, due.recipients, due.kind, extra={
        "message_id": due.message_id, "outbox_id": due.id,
        "ticket": format_ref(due.ticket_id) if due.ticket_id else None})
    sent = {"oid": due.id, "now": now, "attempts": attempts}
    if due.ticket_id is None:
        session.execute(_SENT, sent)
        return False
    # the first reply to the sender acknowledges the ticket; the ticket's history says it went
    acks = due.kind in AUTO_KINDS
    sent.update(tid=due.ticket_id, detail=f"{due.kind} to {due.recipients} ({due.message_id})")
    if session.get_bind().dialect.name == "postgresql":
        session.execute(_SENT_ALL[acks], sent)  # one round trip for the three
        return False
    session.execute(_SENT, sent)
    if acks:
        session.execute(_ACKED, sent)
    session.execute(_SENT_EVENT, sent)
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
