"""The portal's requests (issue #19): one row per form the portal answered.

A table of the store (registered by `mailbot.store.tables`), written by `mailbot.portal`.
Each row is one accepted submission of the request form (address + IP), whatever the answer
was, so the abuse limits count people and IPs, not only the mails sent: a limit that counted
only listed IPs would itself tell who is listed. Submissions refused by a limit leave no row
(a flood cannot fill the table).

A row whose confirmation mail went out carries the `nonce` its signed link names; the press
of the button sets `used_at` (once: the update is conditional), the delist's outcome and the
ticket it was recorded on.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text
from sqlmodel import Field

from mailbot.store.rows import Row


class PortalRequest(Row, table=True):
    __tablename__ = "portal_request"
    # each limit is a count of recent rows by one key: a range scan on its own index
    __table_args__ = (Index("ix_portal_request_client", "client", "created_at"),
                      Index("ix_portal_request_person", "person", "created_at"),
                      Index("ix_portal_request_ip", "ip", "created_at"),
                      Index("ix_portal_request_network", "network", "created_at"))
    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime
    client: str = Field(max_length=64)
    """The client's address as counted: an IPv4 address, or an IPv6 client's /64."""
    address: str = Field(sa_type=Text)
    """The e-mail address as entered (validated), where the mails go."""
    person: str = Field(sa_type=Text)
    """`identity.person(address)`: what the per-address limit counts."""
    ip: str = Field(max_length=64)
    """The IP to delist, normalised."""
    network: str = Field(max_length=64)
    """The IP's network as the per-network limit counts it (/24, /48 by default)."""
    language: str = Field(max_length=16)
    answer: str = Field(max_length=20)
    """What the form said: mailed (listed in a portal category) | refused (anything else) | lookup_failed;
    pending while the lookup runs (the row is written first, so the limits count it)."""
    nonce: str | None = Field(default=None, max_length=64)
    """The random part of the confirmation link (mailed rows only)."""
    expires_at: datetime | None = None
    used_at: datetime | None = None
    outcome: str | None = Field(default=None, max_length=20)
    """After the press: delisted | not_listed | to_staff (a repeat, or a listing the portal may not lift)."""
    ticket_id: int | None = Field(default=None, foreign_key="ticket.id", index=True)
