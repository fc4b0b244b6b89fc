"""The outbox as an operator sees it: what is queued, failed or bounced, and
putting failed mail back in the queue (`mailbot outbox`, `mailbot outbox retry`).

Recipients, subjects and server answers come from mail and from remote
servers: everything printed passes `printable` first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.outgoing.sanitize import printable
from mailbot.staffing.sla import human_delta
from mailbot.store.engine import transaction
from mailbot.store.states import EventKind, OutboxState
from mailbot.store.tables import OutboxMail, OutgoingHealth, TicketEvent, format_ref

log = logging.getLogger(__name__)
STATES = tuple(OutboxState)
SHOWN_BY_DEFAULT = (OutboxState.QUEUED, OutboxState.FAILED, OutboxState.BOUNCED)

@dataclass
class OutboxFilter:
    states: tuple[str, ...] = SHOWN_BY_DEFAULT
    ticket_id: int | None = None
    recipient: str | None = None
    """Recipient address contains this (any case)."""
    kind: str | None = None
    older_than: timedelta | None = None
    limit: int = 100


_LISTED = (OutboxMail.id, OutboxMail.ticket_id, OutboxMail.kind, OutboxMail.recipients, OutboxMail.subject,
           OutboxMail.message_id, OutboxMail.state, OutboxMail.attempts, OutboxMail.next_attempt_at,
           OutboxMail.last_error, OutboxMail.created_at, OutboxMail.sent_at)


def find(session: Session, f: OutboxFilter, now: datetime) -> list[OutboxMail]:
    """Mails matching `f`, oldest first (the raw bytes are not read)."""
    stmt = select(OutboxMail).options(load_only(*_LISTED))  # type: ignore[arg-type]
    stmt = stmt.where(col(OutboxMail.state).in_(f.states))
    if f.ticket_id is not None:
        stmt = stmt.where(OutboxMail.ticket_id == f.ticket_id)
    if f.recipient:
        stmt = stmt.where(func.lower(OutboxMail.recipients).contains(f.recipient.lower()))
    if f.kind:
        stmt = stmt.where(OutboxMail.kind == f.kind)
    if f.older_than is not None:
        stmt = stmt.where(col(OutboxMail.created_at) <= now - f.older_than)
    return list(session.exec(stmt.order_by(col(OutboxMail.created_at), col(OutboxMail.id)).limit(f.limit)).all())


def counts(session: Session) -> dict[str, int]:
    """Mails per state, all of them."""
    found: dict[str, int] = dict.fromkeys(STATES, 0)
    for state, n in session.exec(select(OutboxMail.state, func.count()).group_by(col(OutboxMail.state))).all():
        found[state] = int(n)
    return found


def _iso(dt: datetime | None) -> str | None:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if dt else None


def mail_dict(m: OutboxMail, now: datetime) -> dict[str, Any]:
    return {"id": m.id, "state": m.state, "kind": m.kind, "ticket": format_ref(m.ticket_id) if m.ticket_id else None,
            "to": m.recipients, "subject": m.subject, "message_id": m.message_id, "attempts": m.attempts,
            "created_at": _iso(m.created_at), "age_seconds": int((now - m.created_at).total_seconds()),
            "next_attempt_at": _iso(m.next_attempt_at) if m.state == OutboxState.QUEUED else None,
            "sent_at": _iso(m.sent_at), "error": m.last_error}


def _note(m: OutboxMail, now: datetime) -> str:
    if m.state == OutboxState.QUEUED:
        wait = m.next_attempt_at - now
        when = f"next try in {human_delta(wait)}" if wait.total_seconds() > 0 else "due now"
        return f"{when}; last error: {m.last_error}" if m.last_error else when
    return m.last_error or ""


def print_outbox(rows: list[OutboxMail], totals: dict[str, int], outage: OutgoingHealth | None, zone: ZoneInfo,
                 now: datetime, echo: Callable[[str], None]) -> None:
    if outage is not None and outage.failing_since is not None:
        echo(f"outgoing mail FAILING since {clock.local(outage.failing_since, zone)}: "
             f"{printable(outage.last_error, True)}")
    if not rows:
        echo("no outgoing mail matches")
    else:
        echo(f"{'id':>6}  {'state':<8} {'age':<10} {'kind':<12} {'ticket':<10} {'tries':>5}  {'recipient':<32} note")
        for m in rows:
            echo(f"{m.id:>6}  {m.state:<8} {human_delta(now - m.created_at):<10} {printable(m.kind, True)[:12]:<12} "
                 f"{format_ref(m.ticket_id) if m.ticket_id else '-':<10} {m.attempts:>5}  "
                 f"{printable(m.recipients, True)[:32]:<32} {printable(_note(m, now), True)[:160]}")
    echo(f"in all: {totals['queued']} queued, {totals['failed']} failed, {totals['bounced']} bounced"
         + ("; send failed mail again with: mailbot outbox retry --all (or IDs, or --ticket REF)"
            if totals["failed"] else ""))


@dataclass
class RetryResult:
    requeued: list[OutboxMail] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    """One line per selected mail that was not requeued, saying why."""


def requeue(engine: Engine, actor: str, *, ids: tuple[int, ...] = (), ticket_id: int | None = None,
            every: bool = False) -> RetryResult:
    """Put failed mails back in the queue, due now, with a fresh count of attempts; each ticket
    gets a `mail_requeued` event. Selected mails that are not failed are left alone and named."""
    result = RetryResult()
    now = clock.utcnow()
    with transaction(engine) as session:
        stmt = select(OutboxMail).options(load_only(*_LISTED))  # type: ignore[arg-type]
        if ids:
            stmt = stmt.where(col(OutboxMail.id).in_(ids))
        elif ticket_id is not None:
            stmt = stmt.where(OutboxMail.ticket_id == ticket_id, OutboxMail.state == OutboxState.FAILED)
        elif every:
            stmt = stmt.where(OutboxMail.state == OutboxState.FAILED)
        else:
            raise ValueError("say which mails: ids, a ticket, or every failed one")
        chosen = list(session.exec(stmt.order_by(col(OutboxMail.id))).all())
        for missing in sorted(set(ids) - {m.id for m in chosen}):
            result.refused.append(f"no outgoing mail {missing}")
        for m in chosen:
            if m.state != OutboxState.FAILED:
                why = ("it came back from the recipient's system" if m.state == OutboxState.BOUNCED
                       else "nothing to retry")
                result.refused.append(f"mail {m.id} to {printable(m.recipients, True)} is {m.state}, not failed: {why}")
                continue
            # the state in the WHERE: of two operators retrying at once, one requeues each mail
            if session.connection().execute(update(OutboxMail).where(col(OutboxMail.id) == m.id,
                                                                     col(OutboxMail.state) == OutboxState.FAILED)
                               .values(state=OutboxState.QUEUED, attempts=0, next_attempt_at=now, last_error=None)
                               ).rowcount != 1:
                continue
            result.requeued.append(m)
            detail = f"{m.kind} to {m.recipients} ({m.message_id}) queued again; it had failed: {m.last_error}"
            if m.ticket_id is not None:
                session.add(TicketEvent(ticket_id=m.ticket_id, at=now, kind=EventKind.MAIL_REQUEUED, actor=actor[:200],
                                        detail=detail))
            log.info("outbox %s requeued by %s: %s", m.id, actor, detail,
                     extra={"outbox_id": m.id, "message_id": m.message_id,
                            "ticket": format_ref(m.ticket_id) if m.ticket_id else None})
    return result
