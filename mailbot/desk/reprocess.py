"""Re-run extraction on stored raw mail after a parser improvement.

Each stored inbound message of the selection is read again; its findings
are replaced, and its ticket's facts (code, IP, rejection line) are updated
when the message is the one they came from. A ticket that waited for
information and now has what the policy needs moves on (open with a clock,
or redirected) and its sender gets that reply; every other mail is
suppressed by the outbox's once-per-ticket-and-recipient keys, so nothing
is sent twice. One transaction per message. Mail is read by the
triage's extraction (the desk's worker, within `[extraction]` limits); a
message that overruns them keeps its findings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.desk import replyguard, tickets
from mailbot.desk.extractor import ExtractionOverrun
from mailbot.desk.policy import AWAITING
from mailbot.desk.triage import Triage
from mailbot.extraction import Extraction
from mailbot.source import inbound
from mailbot.store.engine import transaction
from mailbot.store.states import EventKind, MessageState
from mailbot.store.tables import StoredMessage, Ticket

log = logging.getLogger(__name__)

@dataclass
class ReprocessResult:
    messages: int = 0
    changed: int = 0
    tickets_updated: int = 0


def selection(session: Session, ticket_id: int | None, since: datetime | None) -> list[int]:
    stmt = select(StoredMessage.id).where(StoredMessage.folder_kind == "inbox",
                                          StoredMessage.state == MessageState.PROCESSED)
    if ticket_id is not None:
        stmt = stmt.where(StoredMessage.ticket_id == ticket_id)
    if since is not None:
        stmt = stmt.where(col(StoredMessage.fetched_at) >= since)
    return [i for i in session.exec(stmt.order_by(col(StoredMessage.id))).all() if i is not None]


def reprocess(engine: Engine, triage: Triage, ids: list[int],
              progress: Callable[[Iterator[int]], Iterator[int]] = iter) -> ReprocessResult:
    result = ReprocessResult()
    for mid in progress(iter(ids)):
        with triage.counting(), transaction(engine) as session:
            msg = session.get(StoredMessage, mid)
            if msg is None:
                continue
            result.messages += 1
            try:
                extraction = triage.extract(msg.raw)  # the desk's worker, with its limits
            except ExtractionOverrun as e:
                log.warning("message %s (id %s) not re-read: %s", msg.message_id, mid, e.reason)
                continue
            findings = extraction.json_text()
            if findings == msg.findings:
                continue
            result.changed += 1
            msg.findings = findings
            ticket = session.get(Ticket, msg.ticket_id) if msg.ticket_id else None
            if ticket is not None and _update_ticket(triage, session, msg, ticket, extraction):
                result.tickets_updated += 1
    return result


def _update_ticket(triage: Triage, session: Session, msg: StoredMessage, ticket: Ticket,
                   extraction: Extraction) -> bool:
    now = clock.utcnow()
    decision = triage.policy.decide(extraction)
    if ticket.state in AWAITING and decision.action in ("ticket", "redirect"):
        head = inbound.parse(msg.raw)
        # the same guard as at intake, with the [replies] settings (Authentication-Results, caps)
        verdict = replyguard.verdict(head, triage.settings.own_addresses, triage.settings.replies)
        return triage.advance(session, msg, head, ticket, decision, verdict, "reprocess", now)
    first = session.exec(select(StoredMessage.id).where(StoredMessage.ticket_id == ticket.id)
                         .order_by(col(StoredMessage.id)).limit(1)).first()
    if first == msg.id and decision.finding is not None:
        facts = triage.facts_of(decision)
        changed = {k: v for k, v in facts.items() if getattr(ticket, k) != v and v is not None}
        if changed:
            for k, v in changed.items():
                setattr(ticket, k, v)
            tickets.event(session, ticket, EventKind.REPROCESSED, "reprocess",
                          "; ".join(f"{k} = {v}" for k, v in changed.items()), now)
            return True
    return False
