"""What every listing source answers, and how it fails: the values and errors of the contract.

    ListingError                    a source could not answer (carries source, operation, IP)
    ├── TemporaryListingError       try again later: a timeout, a refused connection, a 5xx, a
    │                               busy database (also an `errors.Unreachable`: exit 3)
    └── PermanentListingError       asking again gives the same answer: unsupported, refused,
                                    an answer that makes no sense (also a `CommandFailed`: exit 1)

Results are values (`Listing`, `DelistResult`, `LookupFailed`); faults are exceptions.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import ClassVar, Protocol

from mailbot import clock
from mailbot.errors import CommandFailed, Unreachable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ListingError(Exception):
    """A listing source could not answer. `source`, `operation` ("lookup"/"delist") and `ip` say what failed.

    What both kinds share; each is also in its branch of `mailbot.errors` (exit 3 or 1)."""

    temporary: ClassVar[bool] = False

    def __init__(self, message: str, *, source: str = "", operation: str = "", ip: str = "",
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.source, self.operation, self.ip, self.retry_after = source, operation, ip, retry_after

    def operator_line(self) -> str:
        where = f"listing source {self.source}" if self.source else "listing source"
        what = f" {self.operation} {self.ip}".rstrip() if self.operation else ""
        return " ".join(f"{where}{what}: {self}".split())


class TemporaryListingError(ListingError, Unreachable):
    """Worth retrying: the source could not be reached, timed out, or said "later" (5xx, 429)."""

    temporary: ClassVar[bool] = True


class PermanentListingError(ListingError, CommandFailed):
    """Not worth retrying: the source refused, cannot do it, or answered nonsense."""


class DelistStatus(StrEnum):
    DELISTED = "delisted"
    NOT_LISTED = "not_listed"
    """The source did not list the IP when asked: nothing was delisted (it may have been elsewhere)."""


@dataclass(frozen=True)
class Listing:
    """A source's answer for one IP. `reason` is for staff: never for a sender unless a template asks."""

    ip: str
    listed: bool
    source: str
    """The source's name: "table", "dnsbl:<zone>", "http", "command"."""
    since: datetime | None = None
    category: str | None = None
    reason: str | None = None
    network: str | None = None
    """The listed network that holds the IP (the most specific), where the source says."""
    origin: str | None = None
    """Where the listing came from, where the source records it (the table's "source" column)."""
    times_listed_before: int | None = None
    """How many earlier listings of this IP ended in a delisting; None where the source cannot know (a DNSBL)."""
    last_delisted: datetime | None = None
    repeat: bool = False
    """Listed again within `listing.repeat_days` of its last delisting (set by `Lister`, see `is_repeat`)."""


@dataclass(frozen=True)
class LookupFailed:
    """A lookup that did not answer: the caller records "lookup failed" and tries again later."""

    ip: str
    source: str
    error: str
    """One line for staff (never a secret)."""
    temporary: bool


@dataclass(frozen=True)
class DelistResult:
    """A source's answer to a delist. `replayed`: the key had been used before, and this is that
    earlier answer (nothing was done again)."""

    ip: str
    key: str
    source: str
    status: DelistStatus
    at: datetime
    replayed: bool = False
    answer: str | None = None
    """What the source said, for the audit event (its message, or the network it removed)."""

    @property
    def delisted(self) -> bool:
        return self.status == DelistStatus.DELISTED


class ListingSource(Protocol):
    """A block list the desk can ask. Implementations: table, dnsbl, http, command."""

    name: str

    def lookup(self, ip: str) -> Listing:
        """Whether `ip` (already normalised) is listed; raises a `ListingError` when it cannot tell."""
        ...

    def delist(self, ip: str, key: str, actor: str, note: str | None) -> DelistResult:
        """Delist `ip`, once per `key` (the source receives it): a repeated call with the same key
        returns the first call's answer with `replayed` set. Raises a `ListingError`."""
        ...

    def close(self) -> None:
        ...


def parse_ip(value: str) -> IPAddress:
    """An IP as a source is asked about it: IPv4-mapped IPv6 (`::ffff:203.0.113.45`) is the IPv4
    address it carries; zone ids and anything that is not plainly an address are refused."""
    text = value.strip()
    if "%" in text or "/" in text or len(text) > 64:
        raise ValueError(f"not an IP address: {value!r}")
    ip = ipaddress.ip_address(text)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def normalize_ip(value: str) -> str:
    """`parse_ip` as text (compressed IPv6, lower case): the form every source is asked with."""
    return str(parse_ip(value))


def is_repeat(listing: Listing, repeat_days: float) -> bool:
    """Listed again within `repeat_days` of its last delisting. A listing without a `since` is
    taken as listed now (a DNSBL does not say when)."""
    if not listing.listed or listing.last_delisted is None or repeat_days <= 0:
        return False
    since = aware(listing.since) if listing.since else clock.utcnow()
    return since - aware(listing.last_delisted) <= timedelta(days=repeat_days)


def aware(dt: datetime) -> datetime:
    """A stored time as aware UTC (SQLite gives them back naive; they were written in UTC)."""
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def delist_key(ticket_ref: str, clock: int) -> str:
    """The idempotency key of a ticket's delist: the ticket and its SLA clock, so a retried or
    repeated delist of the same clock is the same key, and a reopened ticket's is a new one."""
    return f"{ticket_ref}/clock-{clock}"
