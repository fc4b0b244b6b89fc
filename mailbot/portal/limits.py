"""Who is asking, and how often they may: the portal's abuse limits.

- `client_address(peer, forwarded_for, trusted)`: the client as the portal counts it. The
  X-Forwarded-For header is believed only from a trusted proxy, read from the right (each
  trusted hop appended the address it saw), so a client cannot name itself by sending the
  header; an IPv6 client is counted by its /64 (`client_key`).
- `Flood`: every request of one client, pages and presses alike, per minute, in memory: it
  stops a flood before it costs a database query. Per process; the database limits below
  hold across processes.
- `over_limit(session, ...)`: the form's limits, counted in `portal_request` over its rows
  of the last hour (client) or day (address, IP, the IP's network). Every submission
  counts, listed IP or not, so a limit never tells what is listed. The answer says how long
  until the oldest counted row leaves the window: the `Retry-After`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlmodel import Session, col, select

from mailbot.config import PortalConfig
from mailbot.listing.base import aware
from mailbot.store.portal_tables import PortalRequest

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_HOPS = 20
FLOOD_CLIENTS = 100_000


def _parse(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # 198.51.100.7:443
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def trusted_networks(proxies: tuple[str, ...]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(p, strict=False) for p in proxies]


def _trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
             nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(ip.version == n.version and ip in n for n in nets)


def client_address(peer: str | None, forwarded_for: list[str],
                   trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> str:
    """The client's address: the peer, or (when the peer is a trusted proxy) the rightmost
    address of X-Forwarded-For that is not a trusted proxy. "unknown" when there is none."""
    ip = _parse(peer or "")
    if ip is None:
        return "unknown"
    hops = [h for header in forwarded_for for h in header.split(",")][-MAX_HOPS:]
    while _trusted(ip, trusted) and hops:
        nxt = _parse(hops.pop())
        if nxt is None:  # a garbled hop: the proxy's view ends here, and so does our trust
            break
        ip = nxt
    return str(ip)


def client_key(client: str, v6_prefix: int) -> str:
    """What the limits count: an IPv4 address as it is, an IPv6 address by its network."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client[:64]
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{v6_prefix}", strict=False))
    return str(ip)


def network_of(ip: str, config: PortalConfig) -> str:
    addr = ipaddress.ip_address(ip)
    prefix = config.network_v4 if addr.version == 4 else config.network_v6
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


class Flood:
    """At most `per_minute` requests per client key in any sliding minute."""

    def __init__(self, per_minute: int, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.monotonic = per_minute, monotonic
        self.seen: OrderedDict[str, deque[float]] = OrderedDict()
        self.lock = threading.Lock()

    def check(self, key: str) -> float:
        """0 when the request may go on (and is counted), else the seconds to wait."""
        now = self.monotonic()
        with self.lock:
            times = self.seen.get(key)
            if times is None:
                times = self.seen[key] = deque()
                while len(self.seen) > FLOOD_CLIENTS:
                    self.seen.popitem(last=False)
            self.seen.move_to_end(key)
            while times and times[0] <= now - 60:
                times.popleft()
            if len(times) >= self.per_minute:
                return max(1.0, times[0] + 60 - now)
            times.append(now)
            return 0.0


@dataclass(frozen=True)
class Limited:
    rule: str
    """client | address | ip | network: which limit (for metrics and logs; the page says less)."""
    retry_after: int
    """Seconds until a request would be counted again."""


def _window(session: Session, column: Any, value: str, since: datetime, cap: int) -> datetime | None:
    """The time the cap-th newest row in the window was made, when there are `cap` rows: the
    limit is reached and lifts when that row leaves the window. None: under the cap."""
    q = (select(PortalRequest.created_at).where(column == value, col(PortalRequest.created_at) > since)
         .order_by(col(PortalRequest.created_at).desc()).offset(cap - 1).limit(1))
    return session.exec(q).first()


def serialise(session: Session, keys: tuple[str, ...]) -> None:
    """Hold the locks of these limit keys until the transaction ends: on SQLite the write lock
    (taken first, as `BEGIN IMMEDIATE`), on PostgreSQL one advisory lock per key, in a fixed
    order (two requests sharing keys never wait on each other crosswise)."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    for k in sorted({_lock_key(k) for k in keys}):
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": k})


def _lock_key(value: str) -> int:
    digest = hashlib.blake2b(("portal-limit\x00" + value).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def over_limit(session: Session, config: PortalConfig, now: datetime, *, client: str, person: str, ip: str,
               network: str) -> Limited | None:
    """The first limit this submission would break, or None."""
    rules = (("client", col(PortalRequest.client), client, HOUR, config.client_per_hour),
             ("address", col(PortalRequest.person), person, DAY, config.address_per_day),
             ("ip", col(PortalRequest.ip), ip, DAY, config.ip_per_day),
             ("network", col(PortalRequest.network), network, DAY, config.network_per_day))
    for rule, column, value, window, cap in rules:
        at = _window(session, column, value, now - window, cap)
        if at is not None:
            free = aware(at) + window - now
            return Limited(rule, max(1, math.ceil(free.total_seconds())))
    return None

