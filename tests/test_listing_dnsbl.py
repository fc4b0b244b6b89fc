"""The dnsbl source against a real authoritative server (NSD) serving a zone the test writes."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from listing_servers import NsdServer
from servers import free_port

from mailbot.app import open_listing
from mailbot.config import parse
from mailbot.listing import Listing, LookupFailed, PermanentListingError
from mailbot.listing.dnsbl import DnsblSource, query_name

ZONE = "bl.test"
V6 = "2001:db8:5::25"
V6_NAME = ".".join(reversed("20010db8000500000000000000000025"))
RECORDS = [
    "45.113.0.203 IN A 127.0.0.2",
    '45.113.0.203 IN TXT "Listed for spam trap hits, see https://bl.test/q?203.0.113.45"',
    "7.100.51.198 IN A 127.0.0.4",
    "7.100.51.198 IN A 127.0.0.2",
    f"{V6_NAME} IN A 127.0.0.3",
    f'{V6_NAME} IN TXT "v6 " "in two strings"',
    "2.0.0.127 IN A 127.0.0.2",  # RFC 5782 test entry
    "9.9.9.192 IN TXT \"a reason without an A record\"",
    "66.113.0.203 IN A 10.0.0.1",  # outside 127/8: a hijack, never a listing
    "67.113.0.203 IN A 127.255.255.254",  # the list refusing the query
    '68.113.0.203 IN TXT "\\027]2;owned\\007 hidden"',
    "68.113.0.203 IN A 127.0.0.2",
]


def source(server: NsdServer, timeout: float = 2.0) -> DnsblSource:
    return DnsblSource(ZONE, server.host, server.port, timeout)


def test_query_names_follow_rfc_5782_for_v4_and_v6_nibbles() -> None:
    assert str(query_name("203.0.113.45", ZONE)) == "45.113.0.203.bl.test."
    assert str(query_name(V6, ZONE)) == f"{V6_NAME}.bl.test."
    assert str(query_name("::ffff:203.0.113.45", ZONE)) == "45.113.0.203.bl.test."


def test_a_listed_ip_has_its_code_and_reason(dnsbl: Callable[[str, list[str]], NsdServer]) -> None:
    s = source(dnsbl(ZONE, RECORDS))
    got = s.lookup("203.0.113.45")
    assert (got.listed, got.category, got.source) == (True, "127.0.0.2", "dnsbl:bl.test")
    assert got.reason == "Listed for spam trap hits, see https://bl.test/q?203.0.113.45"
    assert got.times_listed_before is None and got.since is None  # a DNSBL does not know
    assert s.lookup("198.51.100.7").category == "127.0.0.2, 127.0.0.4"
    assert s.lookup("127.0.0.2").listed  # the RFC's test entry


def test_an_ipv6_address_is_asked_in_nibble_form(dnsbl: Callable[[str, list[str]], NsdServer]) -> None:
    got = source(dnsbl(ZONE, RECORDS)).lookup(V6)
    assert (got.listed, got.category, got.reason) == (True, "127.0.0.3", "v6 in two strings")


def test_nxdomain_and_a_name_without_an_a_record_are_not_listed(dnsbl: Callable[[str, list[str]], NsdServer]) -> None:
    s = source(dnsbl(ZONE, RECORDS))
    assert s.lookup("203.0.113.46") == Listing(ip="203.0.113.46", listed=False, source="dnsbl:bl.test")
    assert not s.lookup("192.9.9.9").listed  # only a TXT: RFC 5782 says the A record lists
    assert not s.lookup("2001:db8::1").listed


@pytest.mark.parametrize(("ip", "said"), [("203.0.113.66", "answered outside 127.0.0.0/8"),
                                          ("203.0.113.67", "refused the query")])
def test_answers_that_are_not_listings_fail_closed(dnsbl: Callable[[str, list[str]], NsdServer], ip: str,
                                                   said: str) -> None:
    """A resolver that rewrites NXDOMAIN to an ad server, or a list refusing us, must tell
    neither "listed" nor "not listed"."""
    with pytest.raises(PermanentListingError, match=said):
        source(dnsbl(ZONE, RECORDS)).lookup(ip)


def test_a_reason_with_terminal_escapes_is_kept_but_shown_escaped(dnsbl: Callable[[str, list[str]], NsdServer]) -> None:
    from mailbot.outgoing.sanitize import printable

    got = source(dnsbl(ZONE, RECORDS)).lookup("203.0.113.68")
    assert got.listed and got.reason is not None and "\x1b" in got.reason
    assert "\x1b" not in printable(got.reason) and "\\x1b]2;owned" in printable(got.reason)


def test_a_dnsbl_cannot_delist(dnsbl: Callable[[str, list[str]], NsdServer]) -> None:
    with pytest.raises(PermanentListingError, match="DNS cannot delist"):
        source(dnsbl(ZONE, RECORDS)).delist("203.0.113.45", "DL-000001/clock-1", "staff", None)


def _config(port: int, **listing: Any) -> Any:
    return parse({"mailbox": {"source": "maildir", "maildir_path": "m"},
                  "outgoing": {"transport": "maildir", "maildir_path": "o"},
                  "listing": {"source": "dnsbl", "dnsbl_zone": ZONE, "dnsbl_nameserver": "127.0.0.1",
                              "dnsbl_port": port, **listing}}, environ={})


def test_a_server_that_does_not_answer_is_a_lookup_failure_within_the_timeout() -> None:
    """Nothing listens on the port: the message goes on with "lookup failed", never "not listed"."""
    lister = open_listing(_config(free_port(), timeout_seconds=0.3, lookup_attempts=2, retry_base_seconds=0), None)
    assert lister is not None
    start = time.monotonic()
    got = lister.lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and got.temporary
    assert "no answer within 0.3 s from 127.0.0.1 port" in got.error
    assert time.monotonic() - start < 3


def test_a_stopped_server_fails_lookups_and_a_restarted_one_answers(
        dnsbl: Callable[[str, list[str]], NsdServer]) -> None:
    server = dnsbl(ZONE, RECORDS)
    lister = open_listing(_config(server.port, timeout_seconds=0.5, lookup_attempts=1, cache_seconds=0), None)
    assert lister is not None
    assert isinstance(lister.lookup("203.0.113.45"), Listing)
    server.stop()
    assert isinstance(lister.lookup("203.0.113.45"), LookupFailed)
    server.start()
    got = lister.lookup("203.0.113.45")
    assert isinstance(got, Listing) and got.listed
