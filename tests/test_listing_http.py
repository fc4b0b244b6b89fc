"""The http source against a local list service that records what it was asked."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from listing_servers import ListService

from mailbot.app import open_listing
from mailbot.config import ConfigError, parse
from mailbot.listing import (
    DelistStatus,
    Lister,
    Listing,
    LookupFailed,
    PermanentListingError,
    TemporaryListingError,
    delist_key,
)

TOKEN = "s3cret-token-value"


def config(service: ListService, tmp_path: Path, **listing: Any) -> Any:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    return parse({"mailbox": {"source": "maildir", "maildir_path": "m"},
                  "outgoing": {"transport": "maildir", "maildir_path": "o"},
                  "listing": {"source": "http", "http_url": service.url, "token_file": "token",
                              "retry_base_seconds": 0.01, "retry_max_seconds": 0.05, **listing}},
                 base_dir=str(tmp_path), environ={})


def lister(service: ListService, tmp_path: Path, environ: dict[str, str] | None = None, **listing: Any) -> Lister:
    service.token = TOKEN
    got = open_listing(config(service, tmp_path, **listing), None, environ={} if environ is None else environ)
    assert got is not None
    return got


def test_a_lookup_sends_the_token_and_reads_the_listing(list_service: ListService, tmp_path: Path) -> None:
    list_service.listings["203.0.113.45"] = {
        "since": "2026-11-01T09:00:00Z", "category": "spam", "reason": "trap hits", "network": "203.0.113.0/24",
        "times_listed_before": 2, "last_delisted": "2026-10-01T08:00:00+00:00"}
    got = lister(list_service, tmp_path).lookup("203.0.113.45")
    assert isinstance(got, Listing)
    assert (got.listed, got.category, got.reason, got.network, got.times_listed_before, got.source) == (
        True, "spam", "trap hits", "203.0.113.0/24", 2, "http")
    assert got.since is not None and got.since.isoformat() == "2026-11-01T09:00:00+00:00"
    assert got.repeat  # listed again 31 days after its delisting, within the default 90
    [call] = list_service.calls
    assert (call.method, call.path) == ("GET", "/api/listings/203.0.113.45")
    assert call.headers["authorization"] == f"Bearer {TOKEN}"


def test_an_ipv6_lookup_and_a_not_listed_answer(list_service: ListService, tmp_path: Path) -> None:
    got = lister(list_service, tmp_path).lookup("2001:DB8:5:0::25")
    assert isinstance(got, Listing) and not got.listed and got.ip == "2001:db8:5::25"
    assert list_service.calls[0].path == "/api/listings/2001:db8:5::25"


def test_the_token_from_the_environment_wins_and_is_never_in_a_message_or_log(
        list_service: ListService, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    lst = lister(list_service, tmp_path, environ={"MAILBOT_LISTING_TOKEN": "from-env"})
    got = lst.lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and "HTTP 401" in got.error and "check the token" in got.error
    assert list_service.calls[0].headers["authorization"] == "Bearer from-env"
    assert "from-env" not in got.error and "from-env" not in caplog.text and TOKEN not in caplog.text
    assert "from-env" not in repr(lst.source) and "from-env" not in repr(lst.config)


def test_a_token_in_the_toml_is_refused_with_the_key_named(list_service: ListService, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"listing\.token: never in the TOML"):
        parse({"mailbox": {"source": "maildir", "maildir_path": "m"},
               "outgoing": {"transport": "maildir", "maildir_path": "o"},
               "listing": {"source": "http", "http_url": list_service.url, "token": "x"}}, environ={})


def test_a_delist_sends_the_key_header_and_body_and_a_repeat_delists_nothing(
        list_service: ListService, tmp_path: Path) -> None:
    list_service.listings["203.0.113.45"] = {"category": "spam"}
    lst = lister(list_service, tmp_path)
    key = delist_key("DL-000123", 1)
    first = lst.delist("203.0.113.45", key, "anna@example.org", "cleaned up")
    again = lst.delist("203.0.113.45", key, "anna@example.org", "cleaned up")
    assert (first.status, first.replayed, first.answer) == (DelistStatus.DELISTED, False, "removed 203.0.113.45")
    assert (again.status, again.replayed) == (DelistStatus.DELISTED, True)
    assert list_service.delisted == [("203.0.113.45", "DL-000123/clock-1")]
    posts = [c for c in list_service.calls if c.method == "POST"]
    assert [c.path for c in posts] == ["/api/listings/203.0.113.45/delist"] * 2
    assert {c.headers["idempotency-key"] for c in posts} == {"DL-000123/clock-1"}
    assert posts[0].body == {"key": key, "actor": "anna@example.org", "note": "cleaned up"}
    assert all(c.headers["authorization"] == f"Bearer {TOKEN}" for c in posts)


def test_a_503_is_retried_with_the_same_key_and_delists_once(list_service: ListService, tmp_path: Path) -> None:
    list_service.listings["203.0.113.45"] = {}
    list_service.fail_next = [(503, {"Retry-After": "0"}, b""), (502, {}, b"bad gateway")]
    result = lister(list_service, tmp_path).delist("203.0.113.45", "DL-000001/clock-2", "staff", None)
    assert result.delisted and not result.replayed
    posts = [c for c in list_service.calls if c.method == "POST"]
    assert len(posts) == 3 and {c.headers["idempotency-key"] for c in posts} == {"DL-000001/clock-2"}
    assert list_service.delisted == [("203.0.113.45", "DL-000001/clock-2")]


def test_retry_after_is_honoured_up_to_the_cap(list_service: ListService, tmp_path: Path) -> None:
    list_service.listings["203.0.113.45"] = {}
    list_service.fail_next = [(429, {"Retry-After": "1"}, b"")]
    start = time.monotonic()
    lister(list_service, tmp_path, retry_max_seconds=0.6).delist("203.0.113.45", "k1", "staff", None)
    assert 0.5 <= time.monotonic() - start < 1.0  # waited the cap, not the server's full second


def test_temporary_failures_that_last_raise_after_the_configured_attempts(
        list_service: ListService, tmp_path: Path) -> None:
    list_service.listings["203.0.113.45"] = {}
    list_service.fail_next = [(503, {}, b"")] * 10
    with pytest.raises(TemporaryListingError, match="HTTP 503") as e:
        lister(list_service, tmp_path, delist_attempts=3).delist("203.0.113.45", "k2", "staff", None)
    assert e.value.exit_code == 3
    assert len(list_service.calls) == 3 and list_service.delisted == []


@pytest.mark.parametrize(("status", "body", "said"), [
    (400, b"{}", "HTTP 400"),
    (200, b"not json", "not JSON"),
    (200, b'{"status": "maybe"}', '"status" must be'),
    (302, b"", "HTTP 302"),
])
def test_permanent_failures_are_not_retried(list_service: ListService, tmp_path: Path, status: int, body: bytes,
                                            said: str) -> None:
    list_service.fail_next = [(status, {"Location": "http://elsewhere.example/"}, body)]
    with pytest.raises(PermanentListingError, match=said) as e:
        lister(list_service, tmp_path).delist("203.0.113.45", "k3", "staff", None)
    assert e.value.exit_code == 1
    assert len(list_service.calls) == 1


@pytest.mark.parametrize("body", [b'{"category": "spam"}', b'{"listed": "no"}', b"[]", b'{"listed": true, "since": 5}'])
def test_an_unreadable_lookup_answer_is_a_failure_never_not_listed(list_service: ListService, tmp_path: Path,
                                                                   body: bytes) -> None:
    list_service.fail_next = [(200, {}, body)]
    got = lister(list_service, tmp_path).lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and not got.temporary and "unreadable answer" in got.error


def test_a_slow_service_times_out_into_lookup_failed(list_service: ListService, tmp_path: Path) -> None:
    list_service.delay = 1.0
    start = time.monotonic()
    got = lister(list_service, tmp_path, timeout_seconds=0.2, lookup_attempts=2).lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and got.temporary and "no answer within the timeout" in got.error
    assert time.monotonic() - start < 1.0
    assert len(list_service.calls) == 2


def test_lookups_are_cached_for_cache_seconds_and_a_delist_drops_the_entry(
        list_service: ListService, tmp_path: Path) -> None:
    list_service.listings["203.0.113.45"] = {}
    lst = lister(list_service, tmp_path, cache_seconds=60)
    assert [lst.lookup("203.0.113.45").listed for _ in range(3)] == [True] * 3  # type: ignore[union-attr]
    assert len(list_service.calls) == 1
    lst.delist("203.0.113.45", "k4", "staff", None)
    after = lst.lookup("203.0.113.45")
    assert isinstance(after, Listing) and not after.listed
    assert [c.method for c in list_service.calls] == ["GET", "POST", "GET"]
    fresh = lst.lookup("203.0.113.45", fresh=True)
    assert isinstance(fresh, Listing) and len(list_service.calls) == 4


def test_a_failed_lookup_is_not_cached(list_service: ListService, tmp_path: Path) -> None:
    list_service.fail_next = [(500, {}, b"")]
    lst = lister(list_service, tmp_path, lookup_attempts=1)
    assert isinstance(lst.lookup("203.0.113.45"), LookupFailed)
    assert isinstance(lst.lookup("203.0.113.45"), Listing)


def test_two_daemons_delisting_at_once_send_one_key_and_the_service_delists_once(
        list_service: ListService, tmp_path: Path) -> None:
    list_service.listings["203.0.113.45"] = {}
    list_service.delay = 0.2  # both requests are in flight together
    desks = [lister(list_service, tmp_path), lister(list_service, tmp_path)]
    results: list[Any] = []
    barrier = threading.Barrier(2)

    def run(lst: Lister) -> None:
        barrier.wait()
        results.append(lst.delist("203.0.113.45", "DL-000009/clock-1", "staff", None))

    threads = [threading.Thread(target=run, args=(d,)) for d in desks]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(r.replayed for r in results) == [False, True]
    assert all(r.delisted for r in results)
    assert list_service.delisted == [("203.0.113.45", "DL-000009/clock-1")]
