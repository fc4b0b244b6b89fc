"""The listing table: which IPs and networks the desk's own list holds, and their history.

Tables of the store (registered by `mailbot.store.tables`), read and written by
`mailbot.listing.table`, the `table` listing source and `mailbot listing ...`.

- `ListingEntry`: one row per IP or network (CIDR) listed now, with since, category,
  the reason staff read and where the listing came from. A delisting deletes the row.
- `ListingHistory`: every listing and delisting (and every delist asked for an IP that was
  not listed), with who, why, and the idempotency key of a delist: the unique key is what
  makes "a repeated delist never delists twice" a database fact.

Which listings hold an IP is asked by name: a listing is CIDR-aligned, so the networks that
can hold 203.0.113.45 are its 33 prefixes (`203.0.113.45/32` ... `0.0.0.0/0`), each found by
the index on `network`. Overlap of two networks (`mailbot listing show`) is a range query on
`first`/`last`, the network's first and last address as big-endian bytes (4 for IPv4, 16 for
IPv6, told apart by `version`): bytes compare the same way on SQLite (memcmp) and PostgreSQL
(bytea), whatever the database's collation, and no 128-bit integer type is needed.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, Text
from sqlmodel import Field

from mailbot.store.rows import Row


class ListingEntry(Row, table=True):
    __tablename__ = "listing"
    __table_args__ = (Index("ix_listing_range", "version", "first", "last"),)
    id: int | None = Field(default=None, primary_key=True)
    network: str = Field(max_length=64, unique=True)
    """Normalised CIDR (`203.0.113.45/32`, `2001:db8::/48`)."""
    version: int
    first: bytes = Field(sa_column=Column(LargeBinary(16), nullable=False))
    last: bytes = Field(sa_column=Column(LargeBinary(16), nullable=False))
    prefix: int
    """The prefix length: the most specific listing of an IP is the one with the longest."""
    since: datetime
    category: str | None = Field(default=None, max_length=100)
    reason: str | None = Field(default=None, sa_type=Text)
    """Why it is listed, for staff: never shown to a sender unless a template asks for it."""
    origin: str | None = Field(default=None, max_length=100)
    """Where the listing came from (a trap, complaints, an import): the "source" column of CSV files."""
    added_by: str = Field(sa_type=Text)


class ListingHistory(Row, table=True):
    __tablename__ = "listing_history"
    __table_args__ = (Index("ix_listing_history_range", "version", "first", "last"),
                      Index("ix_listing_history_network", "network", "action"))
    id: int | None = Field(default=None, primary_key=True)
    network: str = Field(max_length=64)
    version: int
    first: bytes = Field(sa_column=Column(LargeBinary(16), nullable=False))
    last: bytes = Field(sa_column=Column(LargeBinary(16), nullable=False))
    action: str = Field(max_length=20)
    """listed | delisted | not_listed (a delist asked for an IP the list did not hold)."""
    at: datetime
    actor: str = Field(sa_type=Text)
    why: str | None = Field(default=None, sa_type=Text)
    category: str | None = Field(default=None, max_length=100)
    origin: str | None = Field(default=None, max_length=100)
    since: datetime | None = None
    """For a delisting: when the listing it ended began."""
    ip: str | None = Field(default=None, max_length=64)
    """For a delist: the IP it was asked for."""
    idempotency_key: str | None = Field(default=None, max_length=200, unique=True)
    """The delist's key: a second delist with the same key finds this row and does nothing."""
