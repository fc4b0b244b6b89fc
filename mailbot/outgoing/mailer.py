"""The one way mailbot writes mail: render a template, compose its exact bytes, queue it.

Every mail (a reply to a sender, an escalation, the digest, an alert, a staff reply) goes
through `Mailer`, so the From, the Auto-Submitted header, the ticket header and the
outbox row are made one way. Queueing happens in the caller's transaction: the mail
exists exactly when the change that caused it is committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlmodel import Session

from mailbot.config import DeskConfig, OutgoingConfig
from mailbot.outgoing.outbox import queue
from mailbot.outgoing.render import Composed, Renderer, compose
from mailbot.store.tables import OutboxMail

AUTOMATIC = "auto-generated"
"""Auto-Submitted of mail nobody answers (alerts, escalations, the digest): RFC 3834."""
REPLY = "auto-replied"
"""Auto-Submitted of mailbot's automatic answers to a sender."""


class Mailer:
    """Writes as the desk: `desk` says who that is (its name, time zone and staff list),
    `outgoing` the From it writes with. The parts that mail are handed one, so none of them
    needs the whole configuration."""

    def __init__(self, renderer: Renderer, outgoing: OutgoingConfig, desk: DeskConfig) -> None:
        self.renderer = renderer
        self.outgoing = outgoing
        self.desk = desk
        self.staff = list(desk.staff)

    def compose(self, template: str, context: Mapping[str, Any], to: Sequence[str], *, now: datetime | None,
                auto_submitted: str | None = AUTOMATIC, in_reply_to: str | None = None,
                references: Sequence[str] = (), ticket_ref: str | None = None) -> Composed:
        """The bytes of one mail from `template` (which names its subject) with `context`."""
        subject, text, html = self.renderer.render(template, dict(context))
        return compose(from_address=self.outgoing.from_address, from_name=self.outgoing.from_name, to=list(to),
                       subject=subject, text=text, html=html, in_reply_to=in_reply_to, references=list(references),
                       auto_submitted=auto_submitted, now=now,
                       extra_headers={"X-Mailbot-Ticket": ticket_ref} if ticket_ref else None)

    def to_staff(self, session: Session, template: str, context: Mapping[str, Any], *, now: datetime,
                 dedupe: str | None, kind: str | None = None, ticket_id: int | None = None,
                 to: Sequence[str] | None = None) -> OutboxMail | None:
        """Queue `template` to the staff list (or to `to`, some of staff); None when there is
        nobody to send to or `dedupe` was used."""
        recipients = list(to) if to is not None else self.staff
        if not recipients:
            return None
        mail = self.compose(template, context, recipients, now=now)
        return queue(session, mail, kind=kind or template, ticket_id=ticket_id, dedupe_key=dedupe, now=now)

    def to_person(self, session: Session, template: str, context: Mapping[str, Any], to: str, *, kind: str,
                  ticket_id: int | None, ticket_ref: str | None, now: datetime, dedupe: str | None,
                  in_reply_to: str | None = None, references: Sequence[str] = (),
                  auto_submitted: str | None = REPLY) -> OutboxMail | None:
        """Queue `template` to one person about a ticket, threaded to their mail; None when
        `dedupe` was used already (the mail was sent before). Without a ticket: a mail that
        comes before any ticket (the portal's confirmation link)."""
        mail = self.compose(template, context, [to], now=now, auto_submitted=auto_submitted,
                            in_reply_to=in_reply_to, references=references, ticket_ref=ticket_ref)
        return queue(session, mail, kind=kind, ticket_id=ticket_id, dedupe_key=dedupe, now=now)
