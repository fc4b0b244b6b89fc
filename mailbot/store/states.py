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
    NOT_LISTED = "not_listed"
    """The listing source does not list the IP (never did, or it was delisted elsewhere): the
    sender was told so and what to check next. Nothing for staff to do unless they write again
    with a new rejection (that reopens it)."""


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
    STAFF_REQUEST = "staff_request"
    """Commands of a verified staff mail to carry out after its transaction (delist, decline...)."""
    STAFF_REQUEST_DONE = "staff_request_done"
    HOLD = "hold"
    """Staff stopped automatic delisting of this ticket (mailbot hold, #hold)."""
    STAFF_COMMANDS = "staff_commands"
    """A verified staff mail carrying commands; its detail lists what each did."""
    PORTAL_REQUEST = "portal_request"
    """A confirmed request on the self-service portal: the address, the client address, the request."""
    PORTAL_DELIST = "portal_delist"
    """What the portal's delist did (delisted, not listed, or handed to staff), actor "portal"."""
    LISTING = "listing"
    """What the listing source said of the ticket's IP, when it changed (or a lookup failed)."""
    DELIST = "delist"
    """The source's answer to a delist: actor, key, source, what it said (the audit of #17)."""
    DELIST_FAILED = "delist_failed"
    """A delist the source refused or could not do: the error staff see in `show`."""
    OUTCOME = "outcome"
    """How the request ended; the event's `outcome` column says which (`Outcome`)."""


class Outcome(StrEnum):
    """How a request ended, as `TicketEvent.outcome` and `Ticket.outcome` store it."""

    DELISTED = "delisted"
    CONDITIONAL = "conditional"
    """Delisted, with a condition staff stated (a volume limit, a deadline for a fix)."""
    DECLINED = "declined"
    NOT_LISTED = "not_listed"
    REDIRECTED = "redirected"
    NOT_OURS = "not_ours"


class ListingState(StrEnum):
    """What the listing source said of a ticket's IP (`Ticket.listing`); NULL: never asked."""

    LISTED = "listed"
    NOT_LISTED = "not_listed"
    LOOKUP_FAILED = "lookup_failed"


class MailKind(StrEnum):
    """Kinds of `OutboxMail`; each shares its template's name. Health alerts are
    stored as "alert_<what>" and are not listed here."""

    ACK = "ack"
    NEEDS_INFO = "needs_info"
    REDIRECT = "redirect"
    NOT_OURS = "not_ours"
    NOT_A_BLOCK = "not_a_block"
    NOT_LISTED = "not_listed"
    CLOSED = "closed"
    STAFF_REPLY = "staff_reply"
    SLA_NOTICE = "sla_notice"
    STAFF_CONFIRMATION = "staff_confirmation"
    DIGEST = "digest"
    PORTAL_CONFIRM = "portal_confirm"
    """The self-service portal's signed confirmation link (no ticket yet)."""
    PORTAL_RESULT = "portal_result"
    """What the portal did after the sender pressed "Delist IP"."""

