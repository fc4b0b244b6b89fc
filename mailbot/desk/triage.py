"""Triage: what one stored message does. `Triage.handle(session, message)` reads its outer
headers and its NDR, applies the policy and the reply guard, opens, joins or advances a ticket
(through `tickets`, the owner of its state), and queues the reply, all in the caller's
transaction; it sets the message's state and outcome. Claiming, batching, retries and
quarantine after repeated failure are the worker's (`worker`); `reprocess` uses the public
steps here (`advance`, `facts_of`) so nothing is copied.

`handle` is two steps, which the worker takes for a whole batch each (issue #16): `read`, the
pure part (headers, extraction, the reply guard's verdict, the policy's decision; no session),
and `apply`, the rules on the database; between them `prepare` asks once for the batch what
the rules would ask per message (the reply caps' counts, the open tickets of its IPs).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, select

from mailbot import clock, faults, metrics
from mailbot.clock import local
from mailbot.desk import commands, followup, replyguard, tickets
from mailbot.desk.bounces import attach_bounce
from mailbot.desk.extractor import ExtractionOverrun
from mailbot.desk.listing_check import ListingCheck
from mailbot.desk.policy import AWAITING, MAIL_OF, STATE_OF, Decision, Policy, code_family
from mailbot.desk.settings import TriageSettings
from mailbot.extraction import Extraction, extract
from mailbot.extraction.findings import Classification
from mailbot.identity import person
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.outbox import count_replies, recent_replies
from mailbot.outgoing.sanitize import db_text
from mailbot.source import inbound
from mailbot.store.states import EventKind, MailKind, MessageState, TicketState
from mailbot.store.tables import OutboxMail, StoredMessage, Ticket, full_code

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Reading:
    """What `Triage.read` made of a message, before any rule touched the database."""

    head: inbound.Inbound | None = None
    """None: the message is quarantined unread (`quarantined` says why)."""
    quarantined: str | None = None
    extraction: Extraction | None = None
    """None for sent-folder mail, and when extraction overran (`quarantined` says so)."""
    verdict: replyguard.ReplyVerdict | None = None
    decision: Decision | None = None


def quarantine(msg: StoredMessage, reason: str) -> None:
    """Keep the message, mark it, and say why: staff see it in the digest and `status`."""
    msg.state = MessageState.QUARANTINED
    msg.outcome = db_text(f"quarantined: {reason}", 2000)
    msg.processed_at = clock.utcnow()
    log.error("message %s (id %s) quarantined: %s", msg.message_id, msg.id, reason,
              extra={"message_id": msg.message_id, "mailbox": msg.mailbox})


class Triage:
    def __init__(self, settings: TriageSettings, mailer: Mailer) -> None:
        self.settings = settings
        self.mailer = mailer
        self.policy = Policy(settings.policy)
        self.listing = ListingCheck(settings.listing, settings.own_addresses, lambda: None, self.mailer)
        """Looks a ticket's IP up before its reply (the desk gives it its `Lister`: `listing_check`)."""
        self.extract: Callable[[bytes], Extraction] = extract
        """Reads a message's NDR; the desk puts its worker here (`Extractor.run`, which may raise
        ExtractionOverrun: the message is quarantined with the reason, the batch goes on)."""
        self.staff_requests = 0
        """Staff requests recorded since the desk last carried them out (`staffing.mail_requests`)."""
        self.counts: list[Callable[[], None]] = []
        """Metric increments of the open transaction, applied once it commits (`counting`)."""

    @contextmanager
    def counting(self) -> Iterator[None]:
        """The metrics of the work inside count when the block ends well (its transaction is
        committed): a batch rolled back and redone one by one is counted once."""
        self.counts = []
        try:
            yield
            for count in self.counts:
                count()
        finally:
            self.counts = []

    def handle(self, session: Session, msg: StoredMessage) -> None:
        self.apply(session, msg, self.read(msg))

    def read(self, msg: StoredMessage) -> Reading:
        """The part of handling `msg` that needs no database: its headers, its NDR, the reply
        guard's verdict and the policy's decision."""
        if msg.truncated:
            return Reading(quarantined=f"message is {msg.size} bytes, over the cap of "
                                       f"{self.settings.max_message_bytes} (mailbox.max_message_bytes)")
        try:
            head = inbound.parse(msg.raw)
        except inbound.OverCap as e:
            return Reading(quarantined=str(e))
        if msg.folder_kind == "sent":
            return Reading(head)
        try:
            extraction = self.extract(msg.raw)
        except ExtractionOverrun as e:
            return Reading(head, e.reason)
        verdict = replyguard.verdict(head, self.settings.own_addresses, self.settings.replies)
        return Reading(head, None, extraction, verdict, self.policy.decide(extraction))

    def prepare(self, session: Session, readings: Sequence[Reading]) -> None:
        """Ask once for a batch what the rules would ask for each of its messages: the replies
        counted for the caps of all its recipients, the open tickets of all the IPs it would open
        tickets for (`outbox.count_replies`, `tickets.watch_ips`)."""
        count_replies(session, {r.verdict.recipient for r in readings if r.verdict and r.verdict.recipient},
                      clock.utcnow(), self.settings.replies)
        tickets.watch_ips(session, {r.decision.ip for r in readings
                                    if r.decision and r.decision.action == "ticket" and r.decision.ip},
                          {r.head.sender for r in readings if r.head and r.head.sender})
        tickets.reserve_ids(session, [(r.decision.action, r.decision.ip) for r in readings if r.decision])

    def apply(self, session: Session, msg: StoredMessage, reading: Reading) -> None:
        """The rules, on the database, for a message as `read` found it."""
        now = clock.utcnow()
        head = reading.head
        if head is None:
            quarantine(msg, reading.quarantined or "unreadable")
            return
        msg.sender = db_text(head.sender or head.from_header, 500)
        msg.subject = db_text(head.subject, 2000)
        if msg.folder_kind == "sent":
            self.sent(session, msg, head, now)
            msg.state = MessageState.PROCESSED
            msg.processed_at = now
            return
        extraction, verdict, decision = reading.extraction, reading.verdict, reading.decision
        if extraction is None or verdict is None or decision is None:
            self.counts.append(metrics.EXTRACTION_FAILURES.inc)
            quarantine(msg, reading.quarantined or "extraction failed")
            return
        if extraction.unreadable:
            self.counts.append(metrics.EXTRACTION_FAILURES.inc)
        msg.findings = extraction.json_text()
        bounced = attach_bounce(session, msg.raw, now) if not verdict.allowed else None
        if bounced is not None:  # a delivery report returning our own mail: never a new ticket, never answered
            msg.ticket_id = bounced.ticket_id
            msg.outcome = f"returned our {bounced.kind} {bounced.message_id} (marked bounced)"
            msg.state, msg.processed_at = MessageState.PROCESSED, now
            return

        ticket = tickets.by_reference(session, head)
        if ticket is not None and self.acts_on(session, msg, head, extraction, ticket, verdict, now):
            msg.state = MessageState.PROCESSED
            msg.processed_at = now
            return
        self.new_request(session, msg, head, decision, verdict, now)
        if ticket is not None:
            msg.outcome = f"{msg.outcome}; cited {ticket.ref}, not its sender: changed nothing there"
        msg.state = MessageState.PROCESSED
        msg.processed_at = now

    def acts_on(self, session: Session, msg: StoredMessage, head: inbound.Inbound, extraction: Extraction,
                 ticket: Ticket, verdict: replyguard.ReplyVerdict, now: datetime) -> bool:
        """Let a message that cites `ticket` act on it, if it may: verified staff answer it, its own
        senders follow up. Anyone else changes nothing there (an event says who tried), and the
        message is handled on its own (False), unless it claims to be staff: then nothing at all
        happens but the event and the log line, since a forged staff From is an attack."""
        if replyguard.verified_staff(head, self.settings.desk, self.settings.replies):
            msg.ticket_id = ticket.id
            found = commands.parse(followup.own_words(msg.raw))
            if found:
                self.staff_commands(session, msg, head, ticket, found, now)
                return True
            answered = tickets.mark_answered(session, ticket, head.sender or "staff",
                                             f"staff mail {msg.message_id}", now)
            msg.outcome = f"staff mail on {ticket.ref}" + (" (answered)" if answered else "")
            return True
        if tickets.is_sender(session, ticket, head.sender):
            self.follow_up(session, msg, head, extraction, ticket, verdict, now)
            return True
        who = db_text(head.sender or head.from_header, 500) or "unknown"
        if self.settings.desk.is_staff(head.sender):
            why = "a staff From that the trusted Authentication-Results do not vouch for" \
                if self.settings.replies.authserv_ids or self.settings.replies.trust_topmost \
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

    def staff_commands(self, session: Session, msg: StoredMessage, head: inbound.Inbound, ticket: Ticket,
                       found: list[commands.Command], now: datetime) -> None:
        """Verified staff's commands on `ticket`: carried out, recorded, and confirmed to them in
        one mail (never to the sender). Such a mail is not itself an answer to the sender."""
        actor = head.sender or "staff"
        results, later = commands.carry_out(session, ticket, found, actor, now, self.settings.sla.hours)
        tickets.event(session, ticket, EventKind.STAFF_COMMANDS, actor,
                      f"message {msg.message_id}: " + "; ".join(results), now)
        msg.outcome = db_text(f"staff commands on {ticket.ref}: " + "; ".join(results), 2000)
        if later:
            # carried out after this commit, which then sends the one confirmation with all results
            tickets.event(session, ticket, EventKind.STAFF_REQUEST, actor, json.dumps({
                "to": head.sender, "in_reply_to": head.reply_msgid, "references": list(head.references),
                "done": results, "later": [[c.name, c.argument] for c in later], "message": msg.id}), now)
            msg.outcome = db_text(f"{msg.outcome}; to carry out: {' '.join('#' + c.name for c in later)}", 2000)
            self.staff_requests += 1
            return
        if head.sender:
            assert ticket.id is not None
            self.mailer.to_person(session, MailKind.STAFF_CONFIRMATION,
                                  {"ref": ticket.ref, "results": results, "desk_name": self.settings.desk.name},
                                  head.sender, kind=MailKind.STAFF_CONFIRMATION, ticket_id=ticket.id,
                                  ticket_ref=ticket.ref, now=now, dedupe=f"confirm:{msg.id}",
                                  in_reply_to=head.reply_msgid, references=head.references)

    def facts_of(self, decision: Decision) -> dict[str, object]:
        """What the ticket records of the rejection the decision rests on."""
        f, c, inferred = decision.finding, decision.classification, decision.inferred
        return {"ip": decision.ip, "reply_code": f.reply_code if f else None, "status": f.status if f else None,
                "text": db_text(f.text, 4000) if f else None, "rule": decision.rule,
                "kind": c.kind if c else None, "issuer": c.issuer if c else None,
                "inferred": inferred.family[:40] if inferred else None}

    def new_request(self, session: Session, msg: StoredMessage, head: inbound.Inbound, decision: Decision,
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
            state = STATE_OF[decision.action]
            ticket = tickets.open_ticket(session, now=now, state=state, sender=sender,
                                         subject=db_text(head.subject, 1000), verified=verdict.verified,
                                         reason="; ".join(decision.missing) or None, **facts)
            if decision.sla:
                tickets.start_clock(ticket, now, self.settings.sla.hours)
            self.counts.append(metrics.TICKETS.labels(code_family(ticket.status)).inc)
            detail = f"{decision.action} by rule {decision.rule}"
            if ticket.reason:
                detail += f": missing {ticket.reason}"
            tickets.event(session, ticket, EventKind.OPENED, sender or "unknown", detail, now)
        if head.sender:
            tickets.add_sender(session, ticket, head.sender, msg.id, facts, now)
        msg.ticket_id = ticket.id
        msg.outcome = f"{'joined' if joined else 'opened'} {ticket.ref} ({decision.action}, rule {decision.rule})"
        kind = self.listing.settle(session, ticket, MAIL_OF[decision.action], now, head.sender)
        self.reply(session, msg, head, ticket, kind, verdict, now, facts, joined=joined,
                   missing=list(decision.missing), about=decision.classification)

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
        tickets.upgrade(session, ticket, actor or "unknown", "the missing facts arrived", now, self.settings.sla.hours)

    def sent(self, session: Session, msg: StoredMessage, head: inbound.Inbound, now: datetime) -> None:
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

    def follow_up(self, session: Session, msg: StoredMessage, head: inbound.Inbound, extraction: Extraction,
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
            if followup.is_thanks(msg.raw) and not new_rejection and not self.settings.sla.reopen_on_thanks:
                tickets.event(session, ticket, EventKind.THANKS, sender or "unknown", "a thank-you: left answered", now)
                return
            tickets.reopen(session, ticket, sender or "sender", "the sender wrote again", now, self.settings.sla.hours)
            msg.outcome += " (reopened)"
            return
        if ticket.state in (TicketState.CLOSED, TicketState.NOT_LISTED) and new_rejection:
            tickets.reopen(session, ticket, sender or "sender", "a new rejection after closing", now,
                           self.settings.sla.hours)
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
        if ticket.state not in AWAITING or not extraction.findings:
            return
        self.advance(session, msg, head, ticket, self.policy.decide(extraction), verdict, sender or "unknown", now)

    def advance(self, session: Session, msg: StoredMessage, head: inbound.Inbound, ticket: Ticket,
                decision: Decision, verdict: replyguard.ReplyVerdict, actor: str, now: datetime) -> bool:
        """A ticket waiting for information gets it from `msg`: when the policy now has what it
        needs, the ticket opens with its clock (or is redirected), the message's sender joins it
        if they are one of its senders, and they get the reply. False: nothing changed."""
        if ticket.state not in AWAITING or decision.action not in ("ticket", "redirect"):
            return False
        facts = self.facts_of(decision)
        if decision.action == "ticket":
            self.upgrade(session, ticket, decision, actor, now)
        else:
            for k, v in facts.items():
                setattr(ticket, k, v)
            tickets.redirect(session, ticket, actor, None, now)
        if head.sender and tickets.is_sender(session, ticket, head.sender):
            tickets.add_sender(session, ticket, head.sender, msg.id, facts, now)
        kind = self.listing.settle(session, ticket, MAIL_OF[decision.action], now, head.sender)
        self.reply(session, msg, head, ticket, kind, verdict, now, facts, about=decision.classification)
        return True

    def reply(self, session: Session, msg: StoredMessage, head: inbound.Inbound, ticket: Ticket, kind: str,
               verdict: replyguard.ReplyVerdict, now: datetime, facts: dict[str, object], *, joined: bool = False,
               missing: list[str] | None = None, dedupe: str | None = None,
               about: Classification | None = None) -> None:
        """Queue the automatic reply of `kind` to this message's sender, showing `facts`: what was
        read from this very message, never another sender's forward on the same ticket."""
        if verdict.allowed and verdict.recipient is not None:
            verdict = replyguard.capped(verdict, recent_replies(session, verdict.recipient, now, self.settings.replies),
                                         self.settings.replies)
        if not verdict.allowed or verdict.recipient is None:
            self.counts.append(metrics.ACKS.labels("suppressed").inc)
            tickets.event(session, ticket, EventKind.NO_REPLY, "mailbot", f"{kind} not sent: {verdict.reason}", now)
            msg.outcome = f"{msg.outcome}; no reply: {verdict.reason}"
            return
        context = {
            "ref": ticket.ref, "ip": facts.get("ip"), "rejection_text": facts.get("text"),
            "full_code": full_code(facts.get("reply_code"), facts.get("status")),
            "due_local": local(ticket.due_at, self.settings.desk.zone), "desk_name": self.settings.desk.name,
            "due_utc": clock.in_utc(ticket.due_at),
            "portal_url": self.settings.portal_url or self.policy.portal_url, "missing": missing or [],
            "joined": joined,
            "original_subject": head.subject,
            # what the rejection is and whose (not_ours and not_a_block say it; ack and redirect
            # say when the code was inferred from the provider's words)
            "rejection_kind": facts.get("kind"), "inferred": facts.get("inferred"),
            "issuer": about.issuer if about else None,
            "issuer_label": (about.issuer_label or about.issuer) if about else None,
            "removal": about.removal if about else None, "via": about.via if about else None,
        }
        assert ticket.id is not None
        row = self.mailer.to_person(session, kind, context, verdict.recipient, kind=kind, ticket_id=ticket.id,
                                    ticket_ref=ticket.ref, now=now, in_reply_to=head.reply_msgid,
                                    references=head.references,
                                    dedupe=dedupe or f"{kind}:{ticket.id}:{person(verdict.recipient)}")
        if row is None:
            tickets.event(session, ticket, EventKind.NO_REPLY, "mailbot",
                          f"{kind} already sent to {verdict.recipient}", now)
        else:
            faults.point("after_queue")
