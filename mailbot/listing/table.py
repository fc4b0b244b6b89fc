"""The `table` source: the list kept in mailbot's own database (`mailbot.store.listing_tables`).

Reads: `lookup(engine, ip)`, `entries_overlapping` and `history_overlapping` (for `show`).
Writes: `delist` (the desk's action, idempotent on its key), in `write_session`, which staff's
changes (`admin.py`) use too, each recording its history row with `record`.

A delist removes the IP's own entry (`/32`, `/128`). An IP that is listed as part of a wider
network is not delisted by it (that would lift the whole network for one sender, or leave
the IP listed while the sender is told it is not): the delist fails, permanently, naming
the network, and staff decide with `mailbot listing remove NETWORK`.

Concurrency: on PostgreSQL the entries are locked (`FOR UPDATE`) and the key is unique, so of
two delists with the same key one commits and the other meets the key and returns its answer;
on SQLite the write lock is taken first (`BEGIN IMMEDIATE`), which serialises them the same way.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.listing.base import (
    DelistResult,
    DelistStatus,
    IPAddress,
    IPNetwork,
    Listing,
    PermanentListingError,
    TemporaryListingError,
    aware,
    parse_ip,
)
from mailbot.outgoing.sanitize import db_text
from mailbot.store.engine import fault_line, is_fault
from mailbot.store.listing_tables import ListingEntry, ListingHistory

NAME = "table"
LISTED = "listed"
HOST_PREFIX = {4: 32, 6: 128}
MAX_REASON = 2000


@dataclass(frozen=True)
class Bounds:
    version: int
    first: bytes
    last: bytes


def bounds(net: IPNetwork | IPAddress) -> Bounds:
    if not isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
        net = ipaddress.ip_network(net)
    return Bounds(net.version, net.network_address.packed, net.broadcast_address.packed)


def _overlap(model: type[ListingEntry] | type[ListingHistory], b: Bounds) -> list[ColumnElement[bool]]:
    return [col(model.version) == b.version, col(model.first) <= b.last, col(model.last) >= b.first]


def containing(ip: IPAddress) -> list[str]:
    """Every network that can hold `ip`, as stored (`203.0.113.45/32` ... `0.0.0.0/0`): a listing
    is CIDR-aligned, so these 33 (IPv4) or 129 (IPv6) names are the only ones to look up, each
    by the unique index, however large the table (a range scan would read half of it)."""
    n, bits, make = int(ip), ip.max_prefixlen, type(ip)
    # integer masking, not ip_network(): parsing 33 strings was half the cost of a lookup
    return [f"{make(n >> (bits - p) << (bits - p))}/{p}" for p in range(bits, -1, -1)]


def covering(session: Session, ip: IPAddress, lock: bool = False) -> list[ListingEntry]:
    """The entries holding `ip`, most specific first."""
    q = select(ListingEntry).where(col(ListingEntry.network).in_(containing(ip))) \
        .order_by(col(ListingEntry.prefix).desc())
    if lock:
        q = q.with_for_update()
    return list(session.exec(q).all())


def entries_overlapping(session: Session, net: IPNetwork) -> list[ListingEntry]:
    q = select(ListingEntry).where(*_overlap(ListingEntry, bounds(net))).order_by(col(ListingEntry.prefix).desc())
    return list(session.exec(q).all())


def history_overlapping(session: Session, net: IPNetwork) -> list[ListingHistory]:
    q = select(ListingHistory).where(*_overlap(ListingHistory, bounds(net))).order_by(col(ListingHistory.id))
    return list(session.exec(q).all())


def _delistings(session: Session, ip: IPAddress) -> tuple[int, datetime | None]:
    """How many listings of `ip` ended in a delisting, and when the last did."""
    q = select(func.count(col(ListingHistory.id)), func.max(ListingHistory.at)).where(
        col(ListingHistory.network).in_(containing(ip)), ListingHistory.action == DelistStatus.DELISTED)
    count, last = session.exec(q).one()
    return int(count or 0), aware(last) if last else None


def listing_of(session: Session, ip: IPAddress) -> Listing:
    entries = covering(session, ip)
    before, last = _delistings(session, ip)
    if not entries:
        return Listing(ip=str(ip), listed=False, source=NAME, times_listed_before=before, last_delisted=last)
    e = entries[0]
    return Listing(ip=str(ip), listed=True, source=NAME, since=aware(e.since), category=e.category, reason=e.reason,
                   network=e.network, origin=e.origin, times_listed_before=before, last_delisted=last)


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """One write transaction; on SQLite it holds the write lock from its first statement, so
    what it reads cannot change before it writes (two daemons delisting at once)."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            if engine.dialect.name == "sqlite":
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _db_error(engine: Engine, e: SQLAlchemyError, operation: str, ip: str) -> Exception:
    url = engine.url.render_as_string(hide_password=False)
    if is_fault(e):
        return TemporaryListingError(fault_line(url, e), source=NAME, operation=operation, ip=ip)
    detail = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
    return PermanentListingError(f"database: {detail}", source=NAME, operation=operation, ip=ip)


def lookup(engine: Engine, ip: str) -> Listing:
    try:
        with Session(engine) as session:
            return listing_of(session, parse_ip(ip))
    except SQLAlchemyError as e:
        raise _db_error(engine, e, "lookup", ip) from None


def record(session: Session, entry: ListingEntry | None, net: IPNetwork, action: str, actor: str,
            why: str | None, now: datetime, ip: str | None = None, key: str | None = None) -> ListingHistory:
    b = bounds(net)
    row = ListingHistory(network=str(net), version=b.version, first=b.first, last=b.last, action=action, at=now,
                         actor=db_text(actor, 500) or "?", why=db_text(why, MAX_REASON),
                         category=entry.category if entry else None, origin=entry.origin if entry else None,
                         since=entry.since if entry else None, ip=ip, idempotency_key=key)
    session.add(row)
    return row


def _replay(row: ListingHistory, ip: str, key: str) -> DelistResult:
    if row.ip != ip:
        raise PermanentListingError(f"the key {key!r} was used for a delist of {row.ip}, not {ip}",
                                    source=NAME, operation="delist", ip=ip)
    return DelistResult(ip=ip, key=key, source=NAME, status=DelistStatus(row.action), at=aware(row.at),
                        replayed=True, answer=_answer(row))


def _answer(row: ListingHistory) -> str:
    if row.action == DelistStatus.DELISTED:
        return f"removed {row.network} from the table"
    return f"{row.ip} was not in the table"


def _by_key(session: Session, key: str) -> ListingHistory | None:
    return session.exec(select(ListingHistory).where(ListingHistory.idempotency_key == key)).first()


def delist(engine: Engine, ip: str, key: str, actor: str, note: str | None) -> DelistResult:
    address = parse_ip(ip)
    if not key or len(key) > 200:
        raise PermanentListingError("a delist needs a key of 1 to 200 characters", source=NAME,
                                    operation="delist", ip=ip)
    try:
        try:
            with write_session(engine) as session:
                done = _by_key(session, key)
                if done:
                    return _replay(done, ip, key)
                now = clock.utcnow()
                entries = covering(session, address, lock=True)
                wider = [e for e in entries if e.prefix < HOST_PREFIX[address.version]]
                if wider:
                    raise PermanentListingError(
                        f"{ip} is listed as part of {wider[0].network}; a delist of one IP does not lift a network "
                        f"(staff: `mailbot listing remove {wider[0].network} --reason ...`)",
                        source=NAME, operation="delist", ip=ip)
                own = ipaddress.ip_network(address)
                if entries:
                    row = record(session, entries[0], own, DelistStatus.DELISTED, actor, note, now, ip, key)
                    session.delete(entries[0])
                else:
                    row = record(session, None, own, DelistStatus.NOT_LISTED, actor, note, now, ip, key)
                session.flush()
                return DelistResult(ip=ip, key=key, source=NAME, status=DelistStatus(row.action), at=now,
                                    answer=_answer(row))
        except IntegrityError:
            # another delist with this key committed first: its answer is ours
            with Session(engine) as session:
                done = _by_key(session, key)
                if done is None:
                    raise
                return _replay(done, ip, key)
    except SQLAlchemyError as e:
        raise _db_error(engine, e, "delist", ip) from None


class TableSource:
    """The `table` listing source over an engine (the desk's own database)."""

    name = NAME

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def lookup(self, ip: str) -> Listing:
        return lookup(self.engine, ip)

    def delist(self, ip: str, key: str, actor: str, note: str | None) -> DelistResult:
        return delist(self.engine, ip, key, actor, note)

    def close(self) -> None:
        """The engine is the desk's: closed by its owner."""
