"""What the open transaction has done and knows, so that it need not ask the database again
(issue #16). It lives in the session (`Session.info`) and ends with it.

The worker processes a batch of messages in one transaction. Per message, the rules would
ask the database what they can know without it: whether a sender is on a ticket opened a
moment ago, whether an outbox key naming that ticket was used, how many replies went to each
recipient lately, which ticket is open for an IP. Asking costs a statement (a round trip on
PostgreSQL) and makes the session write everything pending first, statement by statement.
Here:

- `fresh_tickets`: tickets opened in this transaction, with their senders. Nobody outside it
  can see them yet: an outbox key naming one was used only here, and its senders are these.
- `senders`: the senders of those tickets, and those of the watched tickets (below) who are
  among the batch's own senders (`persons`), loaded once for the batch (`tickets.watch_ips`).
- `dedupe_keys`: the outbox keys queued in this transaction.
- `replies`: automatic replies counted, per recipient, per domain and in the last hour, once
  for a whole batch (`outbox.count_replies`), with those queued since added.
- `ips`: for the IPs a batch is about, the tickets that may be active for them: those that
  were when the batch began (`tickets.watch_ips`), those opened or changed in it since.

Each holds strong references: the session's own map of loaded rows lets go of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session

from mailbot.store.tables import Ticket, TicketSender

_KEY = "mailbot.unit"


@dataclass
class ReplyCounts:
    """Automatic replies, as `outbox.recent_replies` counts them, for a batch's recipients."""

    persons: dict[str, int]
    domains: dict[str, int]
    last_hour: int

    def add(self, person: str | None, domain: str | None) -> None:
        if person in self.persons:
            self.persons[person] += 1
        if domain in self.domains:
            self.domains[domain] += 1
        self.last_hour += 1


@dataclass
class Unit:
    fresh_tickets: dict[int, Ticket] = field(default_factory=dict)
    """Ticket id -> the ticket, for tickets opened in this transaction."""
    senders: dict[tuple[int, str], TicketSender] = field(default_factory=dict)
    """(ticket id, person) -> the sender row: every sender of a fresh ticket, and every sender
    of a ticket in `senders_of` who is one of `persons`."""
    senders_of: set[int] = field(default_factory=set)
    """Ticket ids whose senders among `persons` are all in `senders`."""
    persons: frozenset[str] = frozenset()
    """The people (`identity.person`) whose forwards the batch holds."""
    dedupe_keys: set[str] = field(default_factory=set)
    replies: ReplyCounts | None = None
    ips: set[str] = field(default_factory=set)
    """IPs whose active tickets are all in `tickets` (watched since the batch began)."""
    bulk: bool = False
    """The batch's events and mails are written by `store.bulk` (set by the worker's batch)."""
    ticket_ids: list[int] = field(default_factory=list)
    """Ticket ids reserved for the tickets the batch opens (`tickets.reserve_ids`)."""
    unwritten: list[Ticket] = field(default_factory=list)
    """Tickets opened with a reserved id and not written yet (at the next flush, before the rest)."""
    tickets: dict[int, Ticket] = field(default_factory=dict)
    """Ticket id -> ticket: the active tickets of those IPs when the batch began, and every
    ticket opened or changed in the transaction since (their state and IP are current here)."""


def peek(session: Session) -> Unit | None:
    """The session's unit if it has one (`of` makes one)."""
    unit = session.info.get(_KEY)
    return unit if isinstance(unit, Unit) else None


def of(session: Session) -> Unit:
    unit = session.info.get(_KEY)
    if unit is None:
        unit = session.info[_KEY] = Unit()
    assert isinstance(unit, Unit)
    return unit
