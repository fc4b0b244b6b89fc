"""`Lister` over the table source on a real database: the cache's lifetime, hostile input, a
source that breaks, and the repeat rule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mailbot.config import parse
from mailbot.listing import Lister, Listing, LookupFailed, PermanentListingError, delist_key, is_repeat
from mailbot.listing.admin import NewListing, add, parse_network
from mailbot.listing.table import TableSource
from mailbot.store.engine import create_schema, make_engine


def config(**listing: Any) -> Any:
    return parse({"mailbox": {"source": "maildir", "maildir_path": "m"},
                  "outgoing": {"transport": "maildir", "maildir_path": "o"},
                  "listing": {"source": "table", **listing}}, environ={}).listing


@pytest.fixture
def engine(tmp_path: Any) -> Any:
    e = make_engine(f"sqlite:///{tmp_path / 'l.db'}")
    create_schema(e)
    yield e
    e.dispose()


def test_the_cache_answers_until_cache_seconds_pass(engine: Any) -> None:
    now = [1000.0]
    lister = Lister(TableSource(engine), config(cache_seconds=60), monotonic=lambda: now[0])
    first = lister.lookup("203.0.113.45")
    assert isinstance(first, Listing) and not first.listed
    add(engine, NewListing(parse_network("203.0.113.45")), "test")
    now[0] += 59
    cached = lister.lookup("203.0.113.45")
    assert isinstance(cached, Listing) and not cached.listed  # still the cached answer
    now[0] += 2
    fresh = lister.lookup("203.0.113.45")
    assert isinstance(fresh, Listing) and fresh.listed
    assert lister.stats["cache_hits"] == 1


@pytest.mark.parametrize("ip", ["", "not an ip", "203.0.113.45/24", "fe80::1%eth0", "1" * 10_000, "203.0.113.256"])
def test_anything_that_is_not_an_ip_is_a_failed_lookup_not_an_exception(engine: Any, ip: str) -> None:
    got = Lister(TableSource(engine), config()).lookup(ip)
    assert isinstance(got, LookupFailed) and not got.temporary
    with pytest.raises(PermanentListingError):
        Lister(TableSource(engine), config()).delist(ip, "k", "staff", None)


def test_a_bad_key_is_refused_before_the_source_is_asked(engine: Any) -> None:
    lister = Lister(TableSource(engine), config())
    for key in ("", "x" * 201, "DL-1\r\nInjected: yes"):
        with pytest.raises(PermanentListingError, match="idempotency key"):
            lister.delist("203.0.113.45", key, "staff", None)
    assert delist_key("DL-000123", 2) == "DL-000123/clock-2"


class Broken:
    """A source with a bug in it (an operator's plug-in, a library that changed)."""

    name = "broken"

    def lookup(self, ip: str) -> Listing:
        raise KeyError("oops")

    def delist(self, ip: str, key: str, actor: str, note: str | None) -> Any:
        raise KeyError("oops")

    def close(self) -> None:
        pass


def test_a_source_that_crashes_is_a_failed_lookup_and_never_stops_the_message() -> None:
    got = Lister(Broken(), config(), sleep=lambda s: None).lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and got.temporary and "KeyError" in got.error


def test_the_database_gone_is_a_temporary_lookup_failure(tmp_path: Any) -> None:
    e = make_engine(f"sqlite:///{tmp_path / 'gone' / 'nothing.db'}")
    got = Lister(TableSource(e), config(retry_base_seconds=0)).lookup("203.0.113.45")
    assert isinstance(got, LookupFailed) and got.temporary and "nothing.db" in got.error
    e.dispose()


def test_repeat_is_within_repeat_days_of_the_last_delisting() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    listing = Listing(ip="203.0.113.45", listed=True, source="t", since=now, last_delisted=now - timedelta(days=10))
    assert is_repeat(listing, 30) and not is_repeat(listing, 5) and not is_repeat(listing, 0)
    assert not is_repeat(Listing(ip="203.0.113.45", listed=True, source="t", since=now), 30)  # first listing
    assert not is_repeat(Listing(ip="203.0.113.45", listed=False, source="t", last_delisted=now), 30)
