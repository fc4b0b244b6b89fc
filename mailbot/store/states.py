"""The names of the desk's states and records, in one place.

Each is a `StrEnum` whose values are the strings stored in the database (and used in
templates), so a member compares equal to its stored string and no migration is needed
when code moves from bare strings to these names. Add a member here before storing a new
value anywhere.
"""

from __future__ import annotations

from enum import StrEnum


class TicketState(StrEnum):
    OPEN = "open"
    NEEDS_INFO = "needs_info"
    ANSWERED = "answered"
    REDIRECTED = "redirected"
    CLOSED = "closed"
    NOT_OURS = "not_ours"
    """Another list or provider refused the mail: the sender was told whose block it is and where
    its removal process is. Nothing for staff to do."""
    NOT_A_BLOCK = "not_a_block"
    """The rejection is no block (unknown recipient, full mailbox, the sender's own authentication,
    a rate limit): the sender was told what it means. Nothing for staff to do."""


class MessageState(StrEnum):
    STORED = "stored"
    PROCESSED = "processed"
    QUARANTINED = "quarantined"


class OutboxState(StrEnum):
    QUEUED = "queued"
    FAILED = "failed"
    BOUNCED = "bounced"
    SENT = "sent"


class EventKind(StrEnum):
    """Kinds of `TicketEvent`. Only STATE carries `from_state`/`to_state`."""

    STATE = "state"
    OPENED = "opened"
    JOINED = "joined"
    FOLLOW_UP = "follow_up"
    THANKS = "thanks"
    CLOSED_FOLLOW_UP = "closed_follow_up"
    CITED = "cited"
    UNVERIFIED_STAFF = "unverified_staff"
    STAFF_MAIL = "staff_mail"
    STAFF_REPLY = "staff_reply"
    NO_REPLY = "no_reply"
    REPROCESSED = "reprocessed"
    MAIL_SENT = "mail_sent"
    MAIL_FAILED = "mail_failed"
    MAIL_BOUNCED = "mail_bounced"
    MAIL_REQUEUED = "mail_requeued"
    NOTE = "note"
    """A staff-only note (never shown to a sender)."""
    ASSIGNED = "assigned"
    STAFF_COMMANDS = "staff_commands"
    """A verified staff mail carrying commands; its detail lists what each did."""
    PORTAL_REQUEST = "portal_request"
    """A confirmed request on the self-service portal: the address, the client address, the request."""
    PORTAL_DELIST = "portal_delist"
    """What the portal's delist did (delisted, not listed, or handed to staff), actor "portal"."""


class MailKind(StrEnum):
    """Kinds of `OutboxMail`; each shares its template's name. Health alerts are
    stored as "alert_<what>" and are not listed here."""

    ACK = "ack"
    NEEDS_INFO = "needs_info"
    REDIRECT = "redirect"
    NOT_OURS = "not_ours"
    NOT_A_BLOCK = "not_a_block"
    CLOSED = "closed"
    STAFF_REPLY = "staff_reply"
    SLA_NOTICE = "sla_notice"
    STAFF_CONFIRMATION = "staff_confirmation"
    DIGEST = "digest"
    PORTAL_CONFIRM = "portal_confirm"
    """The self-service portal's signed confirmation link (no ticket yet)."""
    PORTAL_RESULT = "portal_result"
    """What the portal did after the sender pressed "Delist IP"."""

