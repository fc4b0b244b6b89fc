"""The table source on SQLite and PostgreSQL: lookups by IP and network, history, repeats, and a
delist that happens once per key, even from two threads or two processes at once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot.app import open_listing
from mailbot.config import parse
from mailbot.listing import DelistStatus, Listing, PermanentListingError
from mailbot.listing.admin import NewListing, TableError, add, parse_network, remove
from mailbot.listing.table import delist, lookup
from mailbot.store.engine import make_engine
from mailbot.store.listing_tables import ListingEntry, ListingHistory

ROOT = Path(__file__).resolve().parents[1]


def listed(engine: Engine, network: str, **kw: Any) -> None:
    add(engine, NewListing(network=parse_network(network), **kw), "test")


def history(engine: Engine) -> list[tuple[str, str, str | None]]:
    with Session(engine) as s:
        rows = s.exec(select(ListingHistory).order_by(col(ListingHistory.id))).all()
        return [(h.action, h.network, h.idempotency_key) for h in rows]


def test_an_ip_inside_a_listed_network_is_listed_with_the_most_specific_entry(engine: Engine) -> None:
    since = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    listed(engine, "203.0.113.0/24", category="botnet", reason="C&C traffic", origin="complaints", since=since)
    listed(engine, "203.0.113.45", category="spam", reason="trap hits")
    got = lookup(engine, "203.0.113.45")
    assert (got.listed, got.network, got.category, got.reason, got.source) == (
        True, "203.0.113.45/32", "spam", "trap hits", "table")
    neighbour = lookup(engine, "203.0.113.46")
    assert (neighbour.network, neighbour.category, neighbour.origin, neighbour.since) == (
        "203.0.113.0/24", "botnet", "complaints", since)
    assert not lookup(engine, "203.0.114.1").listed
    assert not lookup(engine, "203.0.112.255").listed


def test_ipv6_networks_and_mapped_addresses(engine: Engine) -> None:
    listed(engine, "2001:db8:5::/48", category="spam")
    listed(engine, "198.51.100.23")
    assert lookup(engine, "2001:db8:5:ffff::25").network == "2001:db8:5::/48"
    assert not lookup(engine, "2001:db8:6::1").listed
    # an IPv4 address and its IPv4-mapped IPv6 form are one address; 4 and 6 never mix
    lister = open_listing(_config(), engine)
    assert lister is not None
    got = lister.lookup("::ffff:198.51.100.23")
    assert isinstance(got, Listing) and got.listed and got.ip == "198.51.100.23"
    assert not lookup(engine, "::c633:6417").listed  # the same 32 bits, as a plain IPv6 address


def _config(**listing: Any) -> Any:
    return parse({"mailbox": {"source": "maildir", "maildir_path": "m"},
                  "outgoing": {"transport": "maildir", "maildir_path": "o"},
                  "listing": {"source": "table", **listing}}, environ={})


def test_history_counts_earlier_listings_and_marks_a_quick_relisting_as_repeat(engine: Engine) -> None:
    listed(engine, "203.0.113.45")
    remove(engine, parse_network("203.0.113.45"), "anna", "cleaned")
    first = lookup(engine, "203.0.113.45")
    assert (first.listed, first.times_listed_before) == (False, 1) and first.last_delisted is not None
    listed(engine, "203.0.113.45", category="spam")
    lister = open_listing(_config(repeat_days=30), engine)
    assert lister is not None
    again = lister.lookup("203.0.113.45")
    assert isinstance(again, Listing)
    assert (again.listed, again.times_listed_before, again.repeat) == (True, 1, True)
    # listed again long after: not a repeat
    remove(engine, parse_network("203.0.113.45"), "anna", "cleaned again")
    listed(engine, "203.0.113.45", since=datetime.now(UTC) + timedelta(days=-1))
    with Session(engine) as s:
        for h in s.exec(select(ListingHistory).where(ListingHistory.action == "delisted")):
            h.at = datetime.now(UTC) - timedelta(days=45)
            s.add(h)
        s.commit()
    later = open_listing(_config(repeat_days=30), engine).lookup("203.0.113.45")  # type: ignore[union-attr]
    assert isinstance(later, Listing) and (later.times_listed_before, later.repeat) == (2, False)


def test_delist_removes_the_ip_once_per_key_and_records_who_and_why(engine: Engine) -> None:
    listed(engine, "203.0.113.45", category="spam")
    first = delist(engine, "203.0.113.45", "DL-000001/clock-1", "anna@example.org", "cleaned up")
    again = delist(engine, "203.0.113.45", "DL-000001/clock-1", "anna@example.org", "cleaned up")
    assert (first.status, first.replayed, again.status, again.replayed) == (
        DelistStatus.DELISTED, False, DelistStatus.DELISTED, True)
    assert first.answer == "removed 203.0.113.45/32 from the table"
    assert not lookup(engine, "203.0.113.45").listed
    assert history(engine) == [("listed", "203.0.113.45/32", None),
                               ("delisted", "203.0.113.45/32", "DL-000001/clock-1")]
    with Session(engine) as s:
        h = s.exec(select(ListingHistory).where(ListingHistory.action == "delisted")).one()
        assert (h.actor, h.why, h.category, h.ip) == ("anna@example.org", "cleaned up", "spam", "203.0.113.45")


def test_a_delist_of_an_ip_not_listed_says_so_and_keeps_its_answer(engine: Engine) -> None:
    first = delist(engine, "203.0.113.45", "DL-000002/clock-1", "anna", None)
    listed(engine, "203.0.113.45")  # listed afterwards: the key's answer does not change
    again = delist(engine, "203.0.113.45", "DL-000002/clock-1", "anna", None)
    assert (first.status, again.status, again.replayed) == (DelistStatus.NOT_LISTED, DelistStatus.NOT_LISTED, True)
    assert lookup(engine, "203.0.113.45").listed


def test_a_delist_never_lifts_a_network_for_one_ip(engine: Engine) -> None:
    listed(engine, "203.0.113.0/24")
    listed(engine, "203.0.113.45")
    with pytest.raises(PermanentListingError, match=r"listed as part of 203\.0\.113\.0/24") as e:
        delist(engine, "203.0.113.45", "k", "anna", None)
    assert "mailbot listing remove 203.0.113.0/24" in str(e.value)
    assert lookup(engine, "203.0.113.45").network == "203.0.113.45/32"  # nothing removed
    assert delist(engine, "203.0.114.1", "k", "anna", None).status == DelistStatus.NOT_LISTED  # key not spent


def test_a_key_used_for_another_ip_is_refused(engine: Engine) -> None:
    delist(engine, "203.0.113.45", "DL-000003/clock-1", "anna", None)
    with pytest.raises(PermanentListingError, match=r"was used for a delist of 203\.0\.113\.45"):
        delist(engine, "203.0.113.46", "DL-000003/clock-1", "anna", None)


def test_add_and_remove_refuse_what_does_not_fit(engine: Engine) -> None:
    listed(engine, "203.0.113.0/24")
    with pytest.raises(TableError, match="already listed"):
        listed(engine, "203.0.113.0/24")
    with pytest.raises(TableError, match=r"not listed \(it is inside 203\.0\.113\.0/24: remove that\)"):
        remove(engine, parse_network("203.0.113.7"), "anna", "x")
    for bad, said in [("203.0.113.5/24", "did you mean 203.0.113.0/24"), ("fe80::1%eth0", "not an IP address"),
                      ("010.1.1.1", "not an IP address"), ("example.org", "not an IP address")]:
        with pytest.raises(TableError, match=said):
            parse_network(bad)


def race(engines: list[Engine], ip: str, key: str) -> tuple[list[Any], list[BaseException]]:
    """`delist(ip, key)` from each engine in its own thread, all let go at once."""
    results: list[Any] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(e: Engine) -> None:
        barrier.wait()
        try:
            results.append(delist(e, ip, key, "staff", None))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, errors


def test_two_threads_delisting_with_one_key_delist_once(engine: Engine) -> None:
    """Several rounds, each with its own IP: two desks (two engines, two connections) race."""
    other = make_engine(engine.url.render_as_string(hide_password=False))
    try:
        for n in range(8):
            ip = f"203.0.113.{n + 1}"
            listed(engine, ip)
            results, errors = race([engine, other], ip, f"DL-{n:06d}/clock-1")
            assert errors == []
            assert sorted(r.replayed for r in results) == [False, True]
            assert {r.status for r in results} == {DelistStatus.DELISTED}
        assert [a for a, _, _ in history(engine)].count("delisted") == 8
    finally:
        other.dispose()


WORKER = """
import json, sys, time
from pathlib import Path
from mailbot.store.engine import make_engine
from mailbot.listing.table import delist
url, ip, key, go = sys.argv[1:]
engine = make_engine(url)
engine.connect().close()
Path(go + ".ready." + str(__import__("os").getpid())).touch()
while not Path(go).exists():
    time.sleep(0.001)
r = delist(engine, ip, key, "daemon", None)
print(json.dumps({"status": r.status, "replayed": r.replayed}))
"""


def test_two_processes_delisting_with_one_key_delist_once(engine: Engine, tmp_path: Path) -> None:
    listed(engine, "203.0.113.45")
    url = engine.url.render_as_string(hide_password=False)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, url, "203.0.113.45", "DL-000042/clock-3", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
             for _ in range(2)]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        outs.append(json.loads(out))
    assert sorted(o["replayed"] for o in outs) == [False, True]
    assert {o["status"] for o in outs} == {"delisted"}
    assert history(engine) == [("listed", "203.0.113.45/32", None),
                               ("delisted", "203.0.113.45/32", "DL-000042/clock-3")]
    with Session(engine) as s:
        assert s.exec(select(ListingEntry)).all() == []
