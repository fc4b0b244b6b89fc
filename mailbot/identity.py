"""Who a mail address belongs to, and which domains are one organisation.

Pure: no database, no network (the public suffix list ships with the
`publicsuffixlist` package and is never fetched at run time).

`person()` is the one answer to "is this the same person?" wherever
mailbot asks it (reply caps, the circuit breaker, a ticket's senders):
`Dana+1@Example.ORG`, `dana+2@example.org` and `DANA@example.org` are one
person. Folding the local part's case is wrong in theory (RFC 5321 leaves
it to the receiving host) and right in practice: no mail service gives
`Dana` and `dana` to two people, and treating them as two lets a sender
multiply the caps by spelling their address differently.

`org_domain()` is the organisational domain of RFC 7489 section 3.2: the
public suffix plus one label. Alignment compares those, so `header.d=org`
(a public suffix) aligns with nothing.
"""

from __future__ import annotations

from functools import lru_cache

from publicsuffixlist import PublicSuffixList


def person(address: str) -> str:
    """The identity of an addr-spec: domain and local part lower-cased, a `+tag` folded away."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().lower()
    base = local.split("+", 1)[0] or local
    return f"{base.lower()}@{domain.lower().rstrip('.')}"


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def domain_of(value: str | None) -> str:
    """The domain of an address or a bare domain, lower case, without a trailing dot."""
    return (value or "").rpartition("@")[2].strip().lower().rstrip(".")


@lru_cache(maxsize=4096)
def org_domain(domain: str) -> str | None:
    """The organisational domain, or None for a public suffix (or nothing at all)."""
    domain = domain_of(domain)
    if not domain or ".." in domain:
        return None
    return _psl().privatesuffix(domain)


def aligned(domain: str | None, from_domain: str) -> bool:
    """Relaxed alignment (RFC 7489 3.1): both domains have the same organisational domain."""
    if not domain:
        return False
    org = org_domain(domain)
    return org is not None and org == org_domain(from_domain)
