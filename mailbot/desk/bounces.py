"""Delivery reports that return mailbot's own mail.

A report counts only by its structure (RFC 3464 / RFC 6522): the outer
message is a `multipart/report`, and one of its own parts, the returned
message (`message/rfc822`) or its headers (`text/rfc822-headers`), carries
a Message-ID that mailbot gave an outgoing mail. Text anywhere else, such
as a body that quotes `X-Mailbot-Ticket: DL-000001` and a `To:` line, never
marks anything: anyone can write text, and a ticket reference is guessable,
while the Message-ID of a mail was seen only by the systems it went through.
"""

from __future__ import annotations

import logging
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from email.parser import BytesHeaderParser, HeaderParser

from sqlmodel import Session, col, select

from mailbot.outgoing import sanitize
from mailbot.store.states import EventKind, OutboxState
from mailbot.store.tables import OutboxMail, TicketEvent, format_ref

log = logging.getLogger(__name__)

MAX_REPORT_BYTES = 2 * 1024 * 1024
"""A delivery report is a few kilobytes with the returned headers; a larger one is read no further."""
_RETURNED = ("message/rfc822", "text/rfc822-headers", "message/rfc822-headers", "message/global",
             "message/global-headers")


def returned_message_ids(raw: bytes) -> list[str]:
    """The Message-IDs of the messages a delivery report returns (pure: bytes in, ids out)."""
    if len(raw) > MAX_REPORT_BYTES:
        return []
    try:
        # the outer Content-Type first: most automatic mail is no report, and its headers are all
        # it takes to say so (a whole parse costs a pattern compiled per MIME boundary, issue #16)
        if BytesHeaderParser().parsebytes(raw).get_content_type() != "multipart/report":
            return []
        report = message_from_bytes(raw)
    except Exception:  # a report we cannot read returns nothing of ours
        return []
    if report.get_content_type() != "multipart/report" or not report.is_multipart():
        return []
    parts = report.get_payload()
    ids: list[str] = []
    for part in parts[:10] if isinstance(parts, list) else []:
        if not isinstance(part, Message) or part.get_content_type() not in _RETURNED:
            continue
        headers = _returned_headers(part)
        mid = sanitize.message_id(str(headers.get("message-id", "") or "")) if headers is not None else None
        if mid:
            ids.append(mid)
    return ids


def _returned_headers(part: Message) -> Message | None:
    payload = part.get_payload()
    if isinstance(payload, list):  # message/rfc822: parsed as a message already
        inner = payload[0] if payload else None
        return inner if isinstance(inner, Message) else None
    body = part.get_payload(decode=True)
    if not isinstance(body, bytes):
        return None
    return HeaderParser().parsestr(body.decode("utf-8", "replace"))


def attach_bounce(session: Session, raw: bytes, now: datetime) -> OutboxMail | None:
    """If `raw` (an automatic message) is a delivery report returning one of our own mails, mark
    that mail bounced and tell its ticket; the caller opens no ticket and never answers it."""
    ids = returned_message_ids(raw)
    if not ids:
        return None
    row = session.exec(select(OutboxMail).where(col(OutboxMail.message_id).in_(ids))).first()
    if row is None:
        return None
    row.state = OutboxState.BOUNCED
    row.last_error = "returned by the recipient's mail system"
    log.warning("outbox %s to %s bounced", row.message_id, row.recipients,
                extra={"message_id": row.message_id, "outbox_id": row.id,
                       "ticket": format_ref(row.ticket_id) if row.ticket_id else None})
    if row.ticket_id is not None:
        session.add(TicketEvent(ticket_id=row.ticket_id, at=now, kind=EventKind.MAIL_BOUNCED, actor="mailbot",
                                detail=f"{row.kind} to {row.recipients} ({row.message_id}) came back undelivered"))
    return row
