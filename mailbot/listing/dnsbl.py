"""The `dnsbl` source: a DNS block list zone as RFC 5782 defines it, asked through dnspython.

An IP is listed when `<reversed IP>.<zone>` has an A record (IPv4 as reversed octets,
`45.113.0.203.zone`; IPv6 as 32 reversed nibbles), and the TXT record there says why.
NXDOMAIN, or a name without an A record, is "not listed".

Failing closed: an A record outside 127.0.0.0/8 (a resolver that rewrites NXDOMAIN, a
hijacked zone) or in 127.255.255.0/24 (the codes lists use to refuse a query) is an error,
never "listed" or "not listed"; a timeout or a server failure is a temporary error.

Only this module imports dnspython. A DNSBL cannot be delisted through DNS: `delist` is a
permanent error that says so.
"""

from __future__ import annotations

import ipaddress

import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

from mailbot.config import ConfigError
from mailbot.listing.base import DelistResult, Listing, PermanentListingError, TemporaryListingError, parse_ip
from mailbot.outgoing.sanitize import db_text

MAX_REASON = 2000
LISTED_RANGE = ipaddress.ip_network("127.0.0.0/8")
REFUSAL_RANGE = ipaddress.ip_network("127.255.255.0/24")


def query_name(ip: str, zone: str) -> dns.name.Name:
    """`203.0.113.45` in `bl.example` → `45.113.0.203.bl.example.` (RFC 5782 2.1, 2.4)."""
    address = parse_ip(ip)
    reverse = dns.reversename.from_address(str(address))
    arpa = dns.reversename.ipv4_reverse_domain if address.version == 4 else dns.reversename.ipv6_reverse_domain
    return reverse.relativize(arpa).derelativize(dns.name.from_text(zone))


class DnsblSource:
    """Asks `zone` at `nameserver`:`port` (or the system's resolvers when no nameserver is given)."""

    def __init__(self, zone: str, nameserver: str | None = None, port: int = 53, timeout: float = 5.0) -> None:
        self.zone = zone.rstrip(".")
        self.name = f"dnsbl:{self.zone}"
        if nameserver:
            self.resolver = dns.resolver.Resolver(configure=False)
            self.resolver.nameservers = [nameserver]
            self.resolver.port = port
        else:
            try:
                self.resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise ConfigError("listing.dnsbl_nameserver: this host has no resolver configured "
                                  "(/etc/resolv.conf): name the nameserver to ask") from None
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout

    def _ask(self, name: dns.name.Name, rdtype: dns.rdatatype.RdataType, ip: str) -> dns.resolver.Answer | None:
        try:
            return self.resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.Timeout:
            raise TemporaryListingError(f"no answer within {self.resolver.lifetime:g} s from "
                                        f"{self._server()}", source=self.name, operation="lookup", ip=ip) from None
        except dns.resolver.NoNameservers as e:
            raise TemporaryListingError(f"{self._server()} failed ({_first_line(e)})", source=self.name,
                                        operation="lookup", ip=ip) from None
        except dns.exception.DNSException as e:
            raise PermanentListingError(f"{self._server()}: {_first_line(e)}", source=self.name,
                                        operation="lookup", ip=ip) from None

    def _server(self) -> str:
        servers = ", ".join(str(s) for s in self.resolver.nameservers)
        return f"{servers} port {self.resolver.port}"

    def lookup(self, ip: str) -> Listing:
        name = query_name(ip, self.zone)
        answer = self._ask(name, dns.rdatatype.A, ip)
        if answer is None:
            return Listing(ip=ip, listed=False, source=self.name)
        codes = sorted({ipaddress.ip_address(r.address) for r in answer})
        strange = [c for c in codes if c not in LISTED_RANGE or c in REFUSAL_RANGE]
        if strange:
            why = "refused the query" if all(c in REFUSAL_RANGE for c in strange) else "answered outside 127.0.0.0/8"
            raise PermanentListingError(f"{self.zone} {why} ({', '.join(map(str, strange))}): not a listing",
                                        source=self.name, operation="lookup", ip=ip)
        return Listing(ip=ip, listed=True, source=self.name, category=", ".join(map(str, codes)),
                       reason=self._reason(name, ip))

    def _reason(self, name: dns.name.Name, ip: str) -> str | None:
        try:
            answer = self._ask(name, dns.rdatatype.TXT, ip)
        except TemporaryListingError:
            return None  # listed all the same: the A record says so, the TXT only says why
        if answer is None:
            return None
        texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
        return db_text(" / ".join(sorted(texts)), MAX_REASON) or None

    def delist(self, ip: str, key: str, actor: str, note: str | None) -> DelistResult:
        raise PermanentListingError(f"{self.zone} is a DNS block list: DNS cannot delist; delist at the list "
                                    "itself, then tell the sender", source=self.name, operation="delist", ip=ip)

    def close(self) -> None:
        """Nothing held open between queries."""


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300] or type(e).__name__
