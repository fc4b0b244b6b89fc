"""The database tables. Times are aware UTC (`clock.utcnow()`) everywhere.

- `MailboxCursor`: per mailbox, the UIDVALIDITY seen and the last UID stored.
- `StoredMessage`: every inbound message's raw bytes with its coordinates,
  stored before anything parses it; its processing outcome.
- `FetchAttempt`: a message that could not be fetched or stored yet, with
  its failed attempts (quarantined after three).
- `Ticket`, `TicketEvent`: the desk's work and its history; `TicketSender`:
  who may act on a ticket, and what each of them forwarded.
- `ListingEntry`, `ListingHistory`: the desk's own block list and its history
  (defined in `mailbot.store.listing_tables`, registered here with the rest).
- `PortalRequest`: the self-service portal's requests (`mailbot.store.portal_tables`).
- `OutboxMail`: every outgoing mail, rendered once (Message-ID fixed), sent
  by the outbox job. `dedupe_key` makes "once per ticket and recipient" a
  database fact rather than a hope.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field

from mailbot.store.listing_tables import ListingEntry, ListingHistory  # noqa: F401  (registers the listing tables)
from mailbot.store.portal_tables import PortalRequest  # noqa: F401  (registers the portal's table)
from mailbot.store.rows import Row
from mailbot.store.states import MessageState, OutboxState

# Whatever comes from a message (its headers, addresses, Message-ID) goes into unbounded
# text: no column length may decide whether mail is processed. Where such a value is indexed,
# PostgreSQL gets a hash index (a btree refuses entries over 2,704 bytes); SQLite has no limit.


class MailboxCursor(Row, table=True):
    __tablename__ = "mailbox_cursor"
    mailbox: str = Field(primary_key=True, max_length=500)
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    last_uid: int = Field(default=0, sa_type=BigInteger)
    last_poll_at: datetime | None = None
    fetching: str | None = Field(default=None, sa_type=Text)
    """The keys of the batch being fetched (JSON), set before the fetch and cleared by the commit
    that stores it: found set at the next poll, that batch killed the process, and its messages
    are then fetched one at a time, each attempt counted (`FetchAttempt`)."""


class StoredMessage(Row, table=True):
    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("mailbox", "uidvalidity", "uid", name="uq_message_coords"),
        UniqueConstraint("mailbox", "identity", name="uq_message_identity"),
        # claiming: fresh (attempts 0) in id order, retries least-tried first, both index lookups
        Index("ix_message_claim", "state", "attempts", "id"),
        # marking done on the server: the few finished messages not marked yet, after every batch
        Index("ix_message_unmarked", "server_done", "mailbox"),
        Index("ix_message_message_id", "message_id", postgresql_using="hash"),
        # a Maildir source's waiting files, looked up by name at each poll
        Index("ix_message_location", "mailbox", "location"),
    )
    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=500, index=True)
    uidvalidity: int | None = Field(default=None, sa_type=BigInteger)
    uid: int | None = Field(default=None, sa_type=BigInteger)
    location: str | None = Field(default=None, max_length=500)
    """Where the message sits in a Maildir source (its key); None for IMAP."""
    identity: str = Field(max_length=600)
    """Message-ID (a hash of it when long), or a content hash where it has none or it collides:
    bounded by construction (`intake.identity_key`), so the unique key always fits."""
    message_id: str | None = Field(default=None, sa_type=Text)
    """As written, whole."""
    digest: str = Field(max_length=80, index=True)
    """sha256 of the raw bytes."""
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int = 0
    truncated: bool = False
    fetched_at: datetime
    state: str = Field(default=MessageState.STORED, max_length=20, index=True)
    """stored → processed | quarantined."""
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_type=Text)
    processed_at: datetime | None = None
    server_done: bool = False
    """The move/flag on the mail server happened (only ever after the commit)."""
    sender: str | None = Field(default=None, sa_type=Text)
    subject: str | None = Field(default=None, sa_type=Text)
    outcome: str | None = Field(default=None, sa_type=Text)
    findings: str | None = Field(default=None, sa_type=Text)
    """The extraction result as JSON, the evidence staff see."""
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    folder_kind: str = Field(default="inbox", max_length=10)
    """inbox (mail to the desk) or sent (the shared mailbox's sent folder: staff answers)."""


class FetchAttempt(Row, table=True):
    """A message whose fetch or store failed: fetched alone from then on, each attempt counted
    before it is made (so one that kills the process counts too), quarantined after three.
    The row goes when the message is stored."""

    __tablename__ = "fetch_attempt"
    __table_args__ = (UniqueConstraint("mailbox", "uidvalidity", "key", name="uq_fetch_attempt"),)
    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=500)
    uidvalidity: int = Field(default=0, sa_type=BigInteger)
    """The UIDVALIDITY its UID belongs to (0 for a Maildir source)."""
    key: str = Field(max_length=600)
    """`Listed.key`: uid:N, or loc:<Maildir file>."""
    attempts: int = 0
    """Attempts of this message alone (a batch that failed around it counts none)."""
    last_error: str | None = Field(default=None, sa_type=Text)
    updated_at: datetime


class Ticket(Row, table=True):
    __tablename__ = "ticket"
    # the SLA sweep's query: open tickets at a given notice stage, by due time
    __table_args__ = (Index("ix_ticket_sla", "state", "sla_stage", "due_at"),
                      Index("ix_ticket_sender", "sender", postgresql_using="hash"),
                      # the sweep's re-check: open tickets, the longest unchecked first
                      Index("ix_ticket_listing", "state", "listing_checked_at"))
    id: int | None = Field(default=None, primary_key=True)
    state: str = Field(max_length=20, index=True)
    """A `TicketState`: open | answered | closed | redirected | needs_info | not_ours | not_a_block."""
    sender: str | None = Field(default=None, sa_type=Text)
    ip: str | None = Field(default=None, max_length=64, index=True)
    reply_code: str | None = Field(default=None, max_length=8)
    status: str | None = Field(default=None, max_length=16)
    text: str | None = Field(default=None, sa_type=Text)
    rule: str | None = Field(default=None, max_length=100)
    kind: str | None = Field(default=None, max_length=20)
    """What the rejection is (extraction's `Kind`: ip_block, recipient_unknown, ...)."""
    issuer: str | None = Field(default=None, max_length=40)
    """Whose block it is, by the issuer table's name (microsoft, spamhaus, gmail, ...)."""
    inferred: str | None = Field(default=None, max_length=40)
    """The code family read from the provider's words alone (the mail had no code): never a code."""
    reason: str | None = Field(default=None, sa_type=Text)
    """Why the ticket waits for information, in words the sender reads."""
    subject: str | None = Field(default=None, sa_type=Text)
    opened_at: datetime
    due_at: datetime | None = Field(default=None, index=True)
    """When the current SLA clock runs out; None when no clock runs."""
    clock: int = 1
    """Which SLA clock runs: a reopen starts clock n+1 (escalations are once per clock)."""
    sla_stage: int = 0
    """Notices sent for the current clock: 0 none, 1 escalation, 2 breach. Lets each sweep
    look only at tickets that can cross next; `SlaNotice` stays the once-only guarantee."""
    acked_at: datetime | None = None
    answered_at: datetime | None = None
    closed_at: datetime | None = None
    updated_at: datetime
    verified: bool = True
    assignee: str | None = Field(default=None, max_length=200)
    """Who on staff has the ticket (an address or a name); None: nobody yet."""
    # What the listing source said of `ip` (issue #17; all NULL without a [listing] source).
    # `listing_reason` is for staff only: no mail to a sender is rendered with it.
    listing: str | None = Field(default=None, max_length=20)
    """A `ListingState`: listed | not_listed | lookup_failed."""
    listing_checked_at: datetime | None = None
    listed_since: datetime | None = None
    listing_category: str | None = Field(default=None, max_length=100)
    listing_reason: str | None = Field(default=None, sa_type=Text)
    listed_before: int | None = None
    """Earlier listings of the IP that ended in a delisting (None where the source cannot tell)."""
    last_delisted: datetime | None = None
    repeat: bool = False
    """Listed again within `listing.repeat_days` of its last delisting."""
    listing_error: str | None = Field(default=None, sa_type=Text)
    """Why the last lookup failed (for staff; cleared by the next answer)."""
    outcome: str | None = Field(default=None, max_length=20)
    """The latest `Outcome` (the events keep every one)."""
    outcome_at: datetime | None = None

    @property
    def ref(self) -> str:
        return format_ref(self.id or 0)

    @property
    def full_code(self) -> str | None:
        return full_code(self.reply_code, self.status)


class TicketEvent(Row, table=True):
    __tablename__ = "ticket_event"
    # the digest's and the metrics' outcome counts: only outcome events carry one
    __table_args__ = (Index("ix_ticket_event_outcome", "outcome", "at"),
                      UniqueConstraint("once", name="uq_ticket_event_once"))
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    at: datetime
    kind: str = Field(max_length=40)
    actor: str = Field(sa_type=Text)
    """Who: a sender's or staff address (as long as the mail had it), "mailbot", "cli:user"."""
    detail: str | None = Field(default=None, sa_type=Text)
    from_state: str | None = Field(default=None, max_length=20)
    """For kind "state" (`tickets.change_state`): the state left and the state entered.
    NULL on other kinds; "state" events from before migration 0010 got them parsed from `detail`."""
    to_state: str | None = Field(default=None, max_length=20)
    outcome: str | None = Field(default=None, max_length=20)
    """For kind "outcome": the `Outcome`; with `outcome_seconds`, the time from the forward to it."""
    outcome_seconds: float | None = None
    once: str | None = Field(default=None, max_length=200)
    """The key of an event that may happen once (a delist's outcome per ticket and clock): two
    processes recording the same outcome meet this constraint, and one of them rolls back."""


class OutboxMail(Row, table=True):
    __tablename__ = "outbox"
    # the reply caps count recent rows per recipient, per domain and in all: each count is a
    # range scan bounded by its own cap, so a mass block does not make every reply slower
    __table_args__ = (Index("ix_outbox_person", "rcpt_person", "created_at"),
                      Index("ix_outbox_domain", "rcpt_domain", "created_at"),
                      Index("ix_outbox_created", "created_at", "kind"),  # covering for the breaker
                      # the flush's claim: the next due row without sorting the queue
                      Index("ix_outbox_due", "state", "next_attempt_at", "id"))
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
    kind: str = Field(max_length=40)
    dedupe_key: str | None = Field(default=None, sa_type=Text, unique=True)
    """kind:ticket:recipient; the recipient passed `sanitize.mailbox_address` (at most 1,000
    characters of ASCII), so the btree entry stays well under PostgreSQL's limit."""
    envelope_from: str = Field(max_length=500)
    recipients: str = Field(sa_type=Text)
    """Envelope recipients, comma separated (already validated addresses)."""
    rcpt_domain: str | None = Field(default=None, sa_type=Text)
    """The (first) recipient's domain, lower case."""
    rcpt_person: str | None = Field(default=None, sa_type=Text)
    """The (first) recipient as a person (`identity.person`): what the per-recipient cap counts."""
    message_id: str = Field(max_length=300, unique=True)
    subject: str = Field(sa_type=Text)
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    state: str = Field(default=OutboxState.QUEUED, max_length=20, index=True)
    """queued → sent | failed; sent → bounced (a delivery report returned it)."""
    attempts: int = 0
    next_attempt_at: datetime = Field(index=True)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime
    sent_at: datetime | None = None


class TicketSender(Row, table=True):
    """Who forwarded for a ticket: the people (besides verified staff) who may act on it, each
    with the facts read from their own forward, which is all they are ever shown."""

    __tablename__ = "ticket_sender"
    __table_args__ = (UniqueConstraint("ticket_id", "person", name="uq_ticket_sender"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    person: str = Field(sa_type=Text)
    """`identity.person(address)`: how "is this one of the ticket's senders?" is asked."""
    address: str = Field(sa_type=Text)
    """The address as they last wrote it, where their replies go."""
    message_id: int | None = Field(default=None, foreign_key="message.id")
    """Their forward whose facts they see (the latest that carried facts)."""
    ip: str | None = Field(default=None, max_length=64)
    reply_code: str | None = Field(default=None, max_length=8)
    status: str | None = Field(default=None, max_length=16)
    text: str | None = Field(default=None, sa_type=Text)
    added_at: datetime

    @property
    def full_code(self) -> str | None:
        return full_code(self.reply_code, self.status)


class SlaNotice(Row, table=True):
    """One escalation or breach notice per ticket and clock: the unique key is the promise."""

    __tablename__ = "sla_notice"
    __table_args__ = (UniqueConstraint("ticket_id", "clock", "kind", name="uq_sla_notice"),)
    id: int | None = Field(default=None, primary_key=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    clock: int
    kind: str = Field(max_length=20)
    """escalation | breach."""
    created_at: datetime
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")


class DigestRun(Row, table=True):
    """One digest per schedule slot, even with several daemons."""

    __tablename__ = "digest_run"
    id: int | None = Field(default=None, primary_key=True)
    slot: str = Field(max_length=64, unique=True)
    created_at: datetime
    outbox_id: int | None = Field(default=None, foreign_key="outbox.id")


class DaemonHealth(Row, table=True):
    """How a daemon's polling goes, for `mailbot status` and the poll-failure alert."""

    __tablename__ = "daemon_health"
    name: str = Field(primary_key=True, max_length=200)
    """host:pid of the daemon."""
    started_at: datetime
    last_poll_ok_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    last_error_at: datetime | None = None
    errors: int = 0
    failing_since: datetime | None = None
    alert_open: bool = False
    """An alert mail went out and no "recovered" mail yet."""
    heartbeat_at: datetime | None = None
    """Written every `heartbeat_seconds` while the daemon runs: an old one means it is gone."""
    heartbeat_seconds: float | None = None
    stopped_at: datetime | None = None
    """Set when the daemon exits cleanly."""


class FolderHealth(Row, table=True):
    """A folder the desk reads besides the inbox (a sent folder) that cannot be read: it is
    skipped, and staff get one alert and one "recovered" mail for it. One row per failing
    folder, whichever daemon reads it; the row goes when the folder is read again."""

    __tablename__ = "folder_health"
    mailbox: str = Field(primary_key=True, sa_type=Text)
    """imap://user@host:port/FOLDER, as the folder's stored messages name it."""
    failing_since: datetime
    last_error: str = Field(sa_type=Text)
    last_error_at: datetime
    alert_open: bool = False


class OutgoingHealth(Row, table=True):
    """Whether the outgoing server can be used, shared by every sender: one row, "outgoing".

    `failing_since` is set by the first sender that finds the server unusable and
    cleared by the first that sends again; that pair makes the staff alert once
    per outage, however many senders saw it.
    """

    __tablename__ = "outgoing_health"
    name: str = Field(primary_key=True, max_length=40)
    failing_since: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    last_error_at: datetime | None = None
    tries: int = 0
    """Failed tries in the current outage."""
    held: int = 0
    """Due mails held back at the last failed try."""
    recovered_at: datetime | None = None


def full_code(reply_code: object, status: object) -> str | None:
    """The full code a person reads, "550 5.7.511": the SMTP reply code and the enhanced status."""
    return " ".join(str(p) for p in (reply_code, status) if p) or None


def format_ref(ticket_id: int) -> str:
    return f"DL-{ticket_id:06d}"


def parse_ref(ref: str) -> int | None:
    ref = ref.strip().strip("[]").upper()
    if ref.startswith("DL-") and ref[3:].isdigit():
        return int(ref[3:])
    return None
