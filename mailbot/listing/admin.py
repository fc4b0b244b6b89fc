"""Staff's changes to the listing table: `mailbot listing add|remove|import` (commands.py) call these.

Each change is one transaction that also writes its history row (who, why, when). What staff
type is checked first (`parse_network`, `checked_text`): a network with host bits set, a zone
id, a control character or an over-long text is refused with what is wrong, never stored.
Reading and delisting are the source's (`table.py`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.errors import CommandFailed
from mailbot.listing.base import DelistStatus, IPNetwork, aware, parse_ip
from mailbot.listing.table import LISTED, bounds, entries_overlapping, record, write_session
from mailbot.outgoing.sanitize import db_text
from mailbot.store.listing_tables import ListingEntry

MAX_CATEGORY, MAX_ORIGIN, MAX_REASON = 100, 100, 2000


class TableError(CommandFailed):
    """A change to the listing table was refused (already listed, not listed, a bad value)."""


def parse_network(value: str) -> IPNetwork:
    """An IP (a one-address network) or a CIDR network; refuses host bits, zone ids and the like."""
    text = value.strip()
    if "/" not in text:
        try:
            ip = parse_ip(text)
        except ValueError:
            raise TableError(f"{value!r} is not an IP address or network (like 203.0.113.45 or 203.0.113.0/24)") \
                from None
        return ipaddress.ip_network(ip)
    if len(text) > 64 or "%" in text:
        raise TableError(f"{value[:70]!r} is not a network")
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        loose = _loose(text)
        hint = f"; did you mean {loose}?" if loose else ""
        raise TableError(f"{text!r} is not a network: {e}{hint}") from None


def _loose(text: str) -> str | None:
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def checked_text(value: str | None, what: str, limit: int) -> str | None:
    """A category, origin or reason as staff typed it: no control characters, bounded."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise TableError(f"{what} has control characters (a line break, an escape): write it on one line")
    if len(value) > limit:
        raise TableError(f"{what} is longer than {limit} characters")
    return value


@dataclass(frozen=True)
class NewListing:
    """One row to add: the network, and what staff know about it."""

    network: IPNetwork
    category: str | None = None
    reason: str | None = None
    origin: str | None = None
    since: datetime | None = None


def _entry(n: NewListing, actor: str, now: datetime) -> ListingEntry:
    b = bounds(n.network)
    return ListingEntry(network=str(n.network), version=b.version, first=b.first, last=b.last,
                        prefix=n.network.prefixlen, since=n.since or now, category=n.category, reason=n.reason,
                        origin=n.origin, added_by=db_text(actor, 500) or "?")


def import_rows(engine: Engine, rows: Sequence[NewListing], actor: str) -> tuple[list[str], list[str]]:
    """Add every row not listed yet, in one transaction: (added, already listed) networks."""
    added: list[str] = []
    already: list[str] = []
    now = clock.utcnow()
    with write_session(engine) as session:
        names = [str(r.network) for r in rows]
        listed: set[str] = set()
        for i in range(0, len(names), 500):  # bound parameters per statement are limited (SQLite, PostgreSQL)
            listed.update(session.exec(select(ListingEntry.network).where(
                col(ListingEntry.network).in_(names[i:i + 500]))).all())
        for r in rows:
            net = str(r.network)
            if net in listed:
                already.append(net)
                continue
            entry = _entry(r, actor, now)
            session.add(entry)
            record(session, entry, r.network, LISTED, actor, r.reason, now)
            listed.add(net)
            added.append(net)
    return added, already


def add(engine: Engine, new: NewListing, actor: str) -> ListingEntry:
    try:
        return _add(engine, new, actor)
    except IntegrityError:  # added by someone else between our look and our insert
        raise TableError(f"{new.network} is already listed") from None


def _add(engine: Engine, new: NewListing, actor: str) -> ListingEntry:
    with write_session(engine) as session:
        existing = session.exec(select(ListingEntry).where(ListingEntry.network == str(new.network))).first()
        if existing:
            raise TableError(f"{existing.network} is already listed (since {aware(existing.since):%Y-%m-%d %H:%M} "
                             f"UTC, {existing.category or 'no category'}); remove it first to change it")
        entry = _entry(new, actor, clock.utcnow())
        session.add(entry)
        record(session, entry, new.network, LISTED, actor, new.reason, entry.since)
        return entry


def remove(engine: Engine, net: IPNetwork, actor: str, why: str) -> ListingEntry:
    """Remove exactly `net`; an IP that is only inside a wider listed network names that network."""
    with write_session(engine) as session:
        entry = session.exec(select(ListingEntry).where(ListingEntry.network == str(net)).with_for_update()).first()
        if entry is None:
            wider = [e.network for e in entries_overlapping(session, net)]
            hint = f" (it is inside {', '.join(wider)}: remove that)" if wider else ""
            raise TableError(f"{net} is not listed{hint}")
        record(session, entry, net, DelistStatus.DELISTED, actor, why, clock.utcnow())
        session.delete(entry)
        return entry


def all_entries(session: Session) -> Iterable[ListingEntry]:
    return session.exec(select(ListingEntry).order_by(col(ListingEntry.version), col(ListingEntry.first),
                                                      col(ListingEntry.prefix)))
