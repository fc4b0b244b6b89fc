"""Intake step 2, process: stored messages, every effect of a message in the same transaction.

Claim stored messages (counting the attempt first, so a message that kills
the process is still counted), read each one's outer headers and its NDR,
apply the policy, open or join a ticket, queue the reply in the outbox and
record the outcome. Fresh messages go in batches (`mailbox.process_batch`)
with one commit per batch; a message that failed or died before is retried
alone. After three failed attempts the message is quarantined: kept, marked,
listed for staff. Processing a processed message does nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

from mailbot import clock, faults, metrics
from mailbot.clock import local
from mailbot.config import Config
from mailbot.desk import followup, replyguard, tickets
from mailbot.desk.bounces import attach_bounce
from mailbot.desk.extractor import ExtractionOverrun, ExtractorUnavailable
from mailbot.desk.policy import Decision, Policy, code_family
from mailbot.extraction import Extraction, extract
from mailbot.identity import person
from mailbot.outgoing.outbox import queue, recent_replies
from mailbot.outgoing.render import Renderer, compose
from mailbot.outgoing.sanitize import db_text
from mailbot.source import inbound
from mailbot.store.engine import is_fault, is_postgres, transaction
from mailbot.store.locks import MessageClaims
from mailbot.store.states import EventKind, MailKind, MessageState, TicketState
from mailbot.store.tables import OutboxMail, StoredMessage, Ticket, format_ref, full_code

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass
class ProcessResult:
    processed: int = 0
    quarantined: int = 0
    failed_attempts: int = 0

    def add(self, other: ProcessResult) -> None:
        self.processed += other.processed
        self.quarantined += other.quarantined
        self.failed_attempts += other.failed_attempts


class Processor:
    def __init__(self, config: Config, engine: Engine, renderer: Renderer) -> None:
        self.config = config
        self.engine = engine
        self.renderer = renderer
        self.policy = Policy(config.policy)
        self.claims = MessageClaims(engine)
        self.batch_size = config.mailbox.process_batch
        self.batch_bytes = config.mailbox.batch_bytes
        self.after_commit: Callable[[], None] = lambda: None
        """Called after each commit that may have queued replies (the daemon starts sending them)."""
        self.extract: Callable[[bytes], Extraction] = extract
        """Reads a message's NDR; the desk puts its worker here (`Extractor.run`, which may raise
        ExtractionOverrun: the message is quarantined with the reason, the batch goes on)."""
        self._counts: list[Callable[[], None]] = []
        """Metric increments of the open transaction, applied once it commits (`counting`)."""

    # -- claiming ---------------------------------------------------------

    def _claim_fresh(self, after: int, limit: int) -> list[int]:
        """Up to `limit` never-attempted stored messages after `after`, claimed together: their
        attempts are counted in one commit before any is processed, so a batch that kills the
        process is counted against each of its messages (each is then retried on its own)."""
        while True:
            with transaction(self.engine) as session:
                stmt = (select(StoredMessage.id, StoredMessage.size, StoredMessage.truncated)
                        .where(StoredMessage.state == MessageState.STORED, col(StoredMessage.id) > after,
                               col(StoredMessage.attempts) == 0)
                        .order_by(col(StoredMessage.id)).limit(limit))
                if is_postgres(self.engine):
                    stmt = stmt.with_for_update(skip_locked=True)
                found = self._within_bytes(session.exec(stmt).all())
                if not found:
                    return []
                mine = self.claims.take_many(found)
                if mine:
                    session.execute(update(StoredMessage).where(col(StoredMessage.id).in_(mine))
                                    .values(attempts=StoredMessage.attempts + 1)
                                    .execution_options(synchronize_session=False))
                    return mine
                after = found[-1]  # all taken by other daemons

    def _within_bytes(self, rows: Sequence[tuple[int | None, int, bool]]) -> list[int]:
        """The first rows whose bytes fit `mailbox.batch_bytes` (at least one): a batch's messages
        are in memory together, so their size bounds the batch as it bounds a fetch."""
        out: list[int] = []
        held = 0
        for mid, size, truncated in rows:
            held += 0 if truncated else size  # a truncated message holds its headers only
            if mid is None or (out and held > self.batch_bytes):
                break
            out.append(mid)
        return out

    def _claim_retry(self, skip: set[int]) -> int | None:
        """The next stored message whose earlier attempt failed or died, claimed alone. Fresh mail
        goes first, so a message that kills the daemon cannot hold up the rest, and a daemon killed
        from outside (not by the message) does not pin its in-flight messages for the next life's
        first, riskiest moment. The least-tried go first: a healthy message that died in a batch
        beside a poison one does not wait behind it for every life the poison costs.
        `skip`: failed in this run already (their next attempt is the next run's), or being
        processed by another daemon; ids held by another daemon are added to it."""
        while True:
            with transaction(self.engine) as session:
                tried = col(StoredMessage.attempts) > 0
                if skip:
                    tried = tried & col(StoredMessage.id).not_in(skip)
                stmt = (select(StoredMessage)
                        .options(load_only(StoredMessage.id, StoredMessage.attempts,  # type: ignore[arg-type]
                                           StoredMessage.last_error, StoredMessage.message_id,  # type: ignore[arg-type]
                                           StoredMessage.mailbox, StoredMessage.state))  # type: ignore[arg-type]
                        .where(StoredMessage.state == MessageState.STORED, tried)
                        .order_by(col(StoredMessage.attempts), col(StoredMessage.id)).limit(1))
                if is_postgres(self.engine):
                    stmt = stmt.with_for_update(skip_locked=True)
                msg = session.exec(stmt).first()
                if msg is None:
                    return None
                assert msg.id is not None
                if not self.claims.take(msg.id):
                    skip.add(msg.id)  # another daemon is processing it
                    continue
                msg.attempts += 1
                break
        if msg.attempts > MAX_ATTEMPTS:
            with transaction(self.engine) as session:
                row = session.get(StoredMessage, msg.id)
                assert row is not None
                self._quarantine(row, f"processing failed {MAX_ATTEMPTS} times: {row.last_error or 'crashed'}")
        return msg.id

    def _quarantine(self, msg: StoredMessage, reason: str) -> None:
        msg.state = MessageState.QUARANTINED
        msg.outcome = db_text(f"quarantined: {reason}", 2000)
        msg.processed_at = clock.utcnow()
        log.error("message %s (id %s) quarantined: %s", msg.message_id, msg.id, reason,
                  extra={"message_id": msg.message_id, "mailbox": msg.mailbox})

    def run(self, should_stop: Callable[[], bool] = lambda: False, limit: int = 1_000_000,
            retries: bool = True, failed: set[int] | None = None) -> ProcessResult:
        """Fresh mail, then (with `retries`) what failed or died before. A message that fails is
        not tried again in this run, nor in later runs given the same `failed` set (one poll's
        runs share one: a message gets one attempt per poll)."""
        try:
            return self._run(should_stop, limit, retries, set() if failed is None else failed)
        finally:
            self.claims.close()

    def _run(self, should_stop: Callable[[], bool], limit: int, retries: bool, skip: set[int]) -> ProcessResult:
        result = ProcessResult()
        budget = limit
        last = 0
        while budget > 0 and not should_stop():
            batch = self._claim_fresh(last, min(self.batch_size, budget))
            if not batch:
                break
            last = batch[-1]
            budget -= len(batch)
            try:
                self._process(batch, result, skip)
            finally:
                self.claims.release_many(batch)
        # then the retries: one message per transaction, so one bad message costs only itself
        while retries and budget > 0 and not should_stop():
            mid = self._claim_retry(skip)
            if mid is None:
                break
            budget -= 1
            try:
                self._process([mid], result, skip)
            finally:
                self.claims.release(mid)
        return result

    def _process(self, ids: list[int], result: ProcessResult, failed: set[int]) -> None:
        """Claimed messages in one transaction: a fresh batch (one commit, one fsync, one round
        trip for many) or one retry. If a batch raises, it is rolled back and each message is
        done on its own, so the one that raised is recorded and the others land."""
        try:
            outcome, done = self._commit(ids)
        except Exception as e:
            if is_fault(e) or isinstance(e, ExtractorUnavailable):
                # the database or the extraction worker failed, not these messages: the attempt is
                # not theirs, and the poll fails (and alerts), instead of quarantining good mail
                with suppress(Exception), transaction(self.engine) as session:
                    session.execute(update(StoredMessage).where(col(StoredMessage.id).in_(ids))
                                    .values(attempts=StoredMessage.attempts - 1))
                raise
            if len(ids) > 1:
                log.warning("a batch of %d messages failed; doing them one by one", len(ids), exc_info=True)
                for mid in ids:
                    self._process([mid], result, failed)
                return
            [mid] = ids
            failed.add(mid)
            result.failed_attempts += 1
            log.exception("message id %s: processing failed", mid)
            with transaction(self.engine) as session:
                row = session.get(StoredMessage, mid)
                assert row is not None
                row.last_error = db_text(f"{e.__class__.__name__}: {e}", 2000)
                if row.attempts >= MAX_ATTEMPTS:
                    self._quarantine(row, f"processing failed {row.attempts} times: {row.last_error}")
                    result.quarantined += 1
            return
        result.add(outcome)
        for msg in done:
            self._logged(msg)
        faults.point("after_commit")
        self.after_commit()

    @contextmanager
    def counting(self) -> Iterator[None]:
        """The metrics of the work inside count when the block ends well (its transaction is
        committed): a batch rolled back and redone one by one is counted once."""
        self._counts = []
        try:
            yield
            for count in self._counts:
                count()
        finally:
            self._counts = []

    def _commit(self, ids: list[int]) -> tuple[ProcessResult, list[StoredMessage]]:
        outcome = ProcessResult()
        done: list[StoredMessage] = []
        with self.counting(), transaction(self.engine) as session:
            stmt = select(StoredMessage).where(col(StoredMessage.id).in_(ids)).order_by(col(StoredMessage.id))
            if is_postgres(self.engine):
                stmt = stmt.with_for_update()
            for msg in session.exec(stmt.execution_options(populate_existing=True)).all():
                # re-checked under the row lock: another daemon may have finished it since the claim,
                # or it was quarantined at claim time
                if msg.state != MessageState.STORED:
                    outcome.quarantined += 1
                    continue
                self.handle(session, msg)
                faults.point("after_parse", msg.message_id)
                if msg.state == MessageState.QUARANTINED:
                    outcome.quarantined += 1
                else:
                    outcome.processed += 1
                done.append(msg)
        return outcome, done

    @staticmethod
    def _logged(msg: StoredMessage) -> None:
        log.info("message %s: %s", msg.message_id, msg.outcome, extra={
            "message_id": msg.message_id, "ticket": format_ref(msg.ticket_id) if msg.ticket_id else None})

    # -- one message ------------------------------------------------------

    def handle(self, session: Session, msg: StoredMessage) -> None:
        now = clock.utcnow()
        if msg.truncated:
            self._quarantine(msg, f"message is {msg.size} bytes, over the cap of "
                                  f"{self.config.mailbox.max_message_bytes} (mailbox.max_message_bytes)")
            return
        try:
            head = inbound.parse(msg.raw)
        except inbound.OverCap as e:
            self._quarantine(msg, str(e))
            return
        msg.sender = db_text(head.sender or head.from_header, 500)
        msg.subject = db_text(head.subject, 2000)
        if msg.folder_kind == "sent":
            self._sent(session, msg, head, now)
            msg.state = MessageState.PROCESSED
            msg.processed_at = now
            return
        try:
            extraction = self.extract(msg.raw)
        except ExtractionOverrun as e:
            self._counts.append(metrics.EXTRACTION_FAILURES.inc)
            self._quarantine(msg, e.reason)
            return
        if extraction.unreadable:
            self._counts.append(metrics.EXTRACTION_FAILURES.inc)
        msg.findings = json.dumps(extraction.as_json())
        verdict = replyguard.verdict(head, self.config.own_addresses, self.config.replies)
        bounced = attach_bounce(session, msg.raw, now) if not verdict.allowed else None
        if bounced is not None:  # a delivery report returning our own mail: never a new ticket, never answered
            msg.ticket_id = bounced.ticket_id
            msg.outcome = f"returned our {bounced.kind} {bounced.message_id} (marked bounced)"
            msg.state, msg.processed_at = MessageState.PROCESSED, now
            return

        ticket = tickets.by_reference(session, head)
        if ticket is not None and self._acts_on(session, msg, head, extraction, ticket, verdict, now):
            msg.state = MessageState.PROCESSED
            msg.processed_at = now
            return
        decision = self.policy.decide(extraction)
        self._new_request(session, msg, head, decision, verdict, now)
        if ticket is not None:
            msg.outcome = f"{msg.outcome}; cited {ticket.ref}, not its sender: changed nothing there"
        msg.state = MessageState.PROCESSED
        msg.processed_at = now

    def _acts_on(self, session: Session, msg: StoredMessage, head: inbound.Inbound, extraction: Extraction,
                 ticket: Ticket, verdict: replyguard.ReplyVerdict, now: datetime) -> bool:
        """Let a message that cites `ticket` act on it, if it may: verified staff answer it, its own
        senders follow up. Anyone else changes nothing there (an event says who tried), and the
        message is handled on its own (False), unless it claims to be staff: then nothing at all
        happens but the event and the log line, since a forged staff From is an attack."""
        if replyguard.verified_staff(head, self.config.desk, self.config.replies):
            msg.ticket_id = ticket.id
            answered = tickets.mark_answered(session, ticket, head.sender or "staff",
                                             f"staff mail {msg.message_id}", now)
            msg.outcome = f"staff mail on {ticket.ref}" + (" (answered)" if answered else "")
            return True
        if tickets.is_sender(session, ticket, head.sender):
            self._follow_up(session, msg, head, extraction, ticket, verdict, now)
            return True
        who = db_text(head.sender or head.from_header, 500) or "unknown"
        if self.config.desk.is_staff(head.sender):
            why = "a staff From that the trusted Authentication-Results do not vouch for" \
                if self.config.replies.authserv_ids or self.config.replies.trust_topmost \
                else "a staff From, and no trusted Authentication-Results are configured (replies.authserv_ids)"
            tickets.event(session, ticket, EventKind.UNVERIFIED_STAFF, who,
                          f"message {msg.message_id} not counted as an answer: {why}", now)
            msg.outcome = f"unverified staff mail citing {ticket.ref}: changed nothing ({why})"
            log.warning("message %s: %s", msg.message_id, msg.outcome,
                        extra={"message_id": msg.message_id, "ticket": ticket.ref})
            return True
        tickets.event(session, ticket, EventKind.CITED, who,
                      f"message {msg.message_id} cites this ticket but is not from its senders or verified staff: "
                      "changed nothing here, handled as a message of its own", now)
        return False

    def facts_of(self, decision: Decision) -> dict[str, object]:
        f = decision.finding
        return {"ip": decision.ip, "reply_code": f.reply_code if f else None, "status": f.status if f else None,
                "text": db_text(f.text, 4000) if f else None, "rule": decision.rule}

    def _new_request(self, session: Session, msg: StoredMessage, head: inbound.Inbound, decision: Decision,
                     verdict: replyguard.ReplyVerdict, now: datetime) -> None:
        sender = head.sender or db_text(head.from_header, 500)
        joined = False
        ticket: Ticket | None = None
        facts = self.facts_of(decision)
        if decision.action == "ticket" and decision.ip:
            ticket = tickets.active_for_ip(session, decision.ip)
        if ticket is not None:
            joined = True
            tickets.event(session, ticket, EventKind.JOINED, sender or "unknown",
                          f"forward {msg.message_id} for {decision.ip}", now)
            if ticket.state == TicketState.NEEDS_INFO:
                self.upgrade(session, ticket, decision, sender, now)
        else:
            state = {"ticket": TicketState.OPEN, "redirect": TicketState.REDIRECTED,
                     "needs_info": TicketState.NEEDS_INFO}[decision.action]
            ticket = tickets.open_ticket(session, now=now, state=state, sender=sender,
                                         subject=db_text(head.subject, 1000), verified=verdict.verified,
                                         reason="; ".join(decision.missing) or None, **facts)
            if decision.sla:
                tickets.start_clock(ticket, now, self.config.sla.hours)
            self._counts.append(metrics.TICKETS.labels(code_family(ticket.status)).inc)
            detail = f"{decision.action} by rule {decision.rule}"
            if ticket.reason:
                detail += f": missing {ticket.reason}"
            tickets.event(session, ticket, EventKind.OPENED, sender or "unknown", detail, now)
        if head.sender:
            tickets.add_sender(session, ticket, head.sender, msg.id, facts, now)
        msg.ticket_id = ticket.id
        msg.outcome = f"{'joined' if joined else 'opened'} {ticket.ref} ({decision.action}, rule {decision.rule})"
        kind = {"ticket": MailKind.ACK, "redirect": MailKind.REDIRECT,
                "needs_info": MailKind.NEEDS_INFO}[decision.action]
        self.reply(session, msg, head, ticket, kind, verdict, now, facts, joined=joined,
                    missing=list(decision.missing))

    @staticmethod
    def sender_facts(session: Session, ticket: Ticket, address: str | None) -> dict[str, object]:
        """What `address`, one of the ticket's senders, forwarded: all a reply to them may show."""
        row = tickets.sender(session, ticket, address)
        if row is None:
            return {}
        return {"ip": row.ip, "reply_code": row.reply_code, "status": row.status, "text": row.text}

    def upgrade(self, session: Session, ticket: Ticket, decision: Decision, actor: str | None, now: datetime) -> None:
        for k, v in self.facts_of(decision).items():
            setattr(ticket, k, v)
        ticket.reason = None
        tickets.upgrade(session, ticket, actor or "unknown", "the missing facts arrived", now, self.config.sla.hours)

    def _sent(self, session: Session, msg: StoredMessage, head: inbound.Inbound, now: datetime) -> None:
        """A message in the shared mailbox's sent folder: a staff answer, unless mailbot wrote it."""
        ours = head.get("x-mailbot-ticket") is not None or (
            msg.message_id is not None and session.exec(
                select(OutboxMail.id).where(OutboxMail.message_id == msg.message_id)).first() is not None)
        if ours:
            msg.outcome = "sent folder: written by mailbot"
            return
        ticket = tickets.by_reference(session, head)
        if ticket is None:
            msg.outcome = "sent folder: no ticket referenced"
            return
        msg.ticket_id = ticket.id
        actor = head.sender or "staff"
        answered = tickets.mark_answered(session, ticket, actor, f"answer in the sent folder {msg.message_id}", now)
        msg.outcome = f"sent folder: answer on {ticket.ref}" + ("" if answered else " (was not waiting)")

    def _follow_up(self, session: Session, msg: StoredMessage, head: inbound.Inbound, extraction: Extraction,
                   ticket: Ticket, verdict: replyguard.ReplyVerdict, now: datetime) -> None:
        """A message from one of the ticket's own senders (the caller checked)."""
        sender = head.sender or db_text(head.from_header, 500)
        msg.ticket_id = ticket.id
        tickets.event(session, ticket, EventKind.FOLLOW_UP, sender or "unknown", f"message {msg.message_id}", now)
        msg.outcome = f"follow-up on {ticket.ref}"
        automatic = replyguard.automatic(head)
        if automatic is not None:
            # an out-of-office answering staff's reply is no word from the sender: it changes nothing
            msg.outcome += f" (automatic: {automatic}; changed nothing)"
            return
        new_rejection = any(f.status for f in extraction.findings)
        if ticket.state == TicketState.ANSWERED:
            if followup.is_thanks(msg.raw) and not new_rejection and not self.config.sla.reopen_on_thanks:
                tickets.event(session, ticket, EventKind.THANKS, sender or "unknown", "a thank-you: left answered", now)
                return
            tickets.reopen(session, ticket, sender or "sender", "the sender wrote again", now, self.config.sla.hours)
            msg.outcome += " (reopened)"
            return
        if ticket.state == TicketState.CLOSED and new_rejection:
            tickets.reopen(session, ticket, sender or "sender", "a new rejection after closing", now,
                           self.config.sla.hours)
            msg.outcome += " (reopened)"
            return
        if ticket.state == TicketState.CLOSED:
            # The rule stands (only a new rejection reopens), but silence helps nobody: the sender
            # hears once per closing what would reopen it, and the digest lists the follow-up.
            tickets.event(session, ticket, EventKind.CLOSED_FOLLOW_UP, sender or "unknown",
                          f"message {msg.message_id} on a closed ticket, without a new rejection", now)
            theirs = self.sender_facts(session, ticket, head.sender)
            self.reply(session, msg, head, ticket, MailKind.CLOSED, verdict, now, theirs,
                       dedupe=f"closed:{ticket.id}:{ticket.clock}:{person(head.sender or '')}")
            return
        if ticket.state != TicketState.NEEDS_INFO or not extraction.findings:
            return
        decision = self.policy.decide(extraction)
        facts = self.facts_of(decision)
        if decision.action == "ticket":
            self.upgrade(session, ticket, decision, sender, now)
        elif decision.action == "redirect":
            for k, v in facts.items():
                setattr(ticket, k, v)
            tickets.redirect(session, ticket, sender or "unknown", None, now)
        else:
            return
        if head.sender:
            tickets.add_sender(session, ticket, head.sender, msg.id, facts, now)
        kind = MailKind.ACK if decision.action == "ticket" else MailKind.REDIRECT
        self.reply(session, msg, head, ticket, kind, verdict, now, facts)

    def reply(self, session: Session, msg: StoredMessage, head: inbound.Inbound, ticket: Ticket, kind: str,
               verdict: replyguard.ReplyVerdict, now: datetime, facts: dict[str, object], *, joined: bool = False,
               missing: list[str] | None = None, dedupe: str | None = None) -> None:
        """Queue the automatic reply of `kind` to this message's sender, showing `facts`: what was
        read from this very message, never another sender's forward on the same ticket."""
        if verdict.allowed and verdict.recipient is not None:
            verdict = replyguard.capped(verdict, recent_replies(session, verdict.recipient, now, self.config.replies),
                                         self.config.replies)
        if not verdict.allowed or verdict.recipient is None:
            self._counts.append(metrics.ACKS.labels("suppressed").inc)
            tickets.event(session, ticket, EventKind.NO_REPLY, "mailbot", f"{kind} not sent: {verdict.reason}", now)
            msg.outcome = f"{msg.outcome}; no reply: {verdict.reason}"
            return
        context = {
            "ref": ticket.ref, "ip": facts.get("ip"), "rejection_text": facts.get("text"),
            "full_code": full_code(facts.get("reply_code"), facts.get("status")),
            "due_local": local(ticket.due_at, self.config.desk.zone), "desk_name": self.config.desk.name,
            "due_utc": clock.in_utc(ticket.due_at),
            "portal_url": self.policy.portal_url, "missing": missing or [], "joined": joined,
            "original_subject": head.subject,
        }
        subject, text, html = self.renderer.render(kind, context)
        out = self.config.outgoing
        mail = compose(from_address=out.from_address, from_name=out.from_name, to=[verdict.recipient],
                       subject=subject, text=text, html=html, in_reply_to=head.reply_msgid,
                       references=[*head.references], extra_headers={"X-Mailbot-Ticket": ticket.ref})
        assert ticket.id is not None
        row = queue(session, mail, kind=kind, ticket_id=ticket.id, now=now,
                    dedupe_key=dedupe or f"{kind}:{ticket.id}:{person(verdict.recipient)}")
        if row is None:
            tickets.event(session, ticket, EventKind.NO_REPLY, "mailbot",
                          f"{kind} already sent to {verdict.recipient}", now)
        else:
            faults.point("after_queue")
