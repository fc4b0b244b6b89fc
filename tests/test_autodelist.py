"""First listings delist themselves after a hold, unless staff stop them (issue #18,
mailbot/staffing/autodelist.py). The desk's own table is the listing source; the sender's
mail arrives at the real SMTP server."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from app import World, forward

from mailbot.app import open_listing
from mailbot.listing.admin import NewListing, add, parse_network, remove
from mailbot.staffing import staff
from mailbot.store.tables import Ticket

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
AUTO = {"enabled": True, "categories": ["compromised"], "hold_minutes": 15}


def world(make_world: Callable[..., World], **auto: Any) -> World:
    return make_world(listing={"source": "table"}, autodelist={**AUTO, **auto},
                      desk={"staff": ["support@example.org"]})


def listed(w: World, ip: str, category: str = "compromised") -> None:
    add(w.desk.engine, NewListing(parse_network(ip), category=category, reason="spam trap hits"), "test")


def still_listed(w: World, ip: str) -> bool:
    lister = open_listing(w.desk.config, w.desk.engine)
    assert lister is not None
    found = lister.lookup(ip, fresh=True)
    return bool(getattr(found, "listed", False))


def ticket(w: World, ref: str) -> Ticket:
    return next(t for t in w.tickets() if t.ref == ref)


def test_a_first_listing_is_delisted_after_the_hold_and_the_sender_told(make_world: Callable[..., World]) -> None:
    w = world(make_world)
    listed(w, "203.0.113.45")
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(forward("203.0.113.45", "a", "dana@mailops.example"))
        w.run()
        clock.shift(timedelta(minutes=14))
        assert w.desk.sweep().autodelisted == []  # still in the hold: staff may stop it
        clock.shift(timedelta(minutes=1))
        assert w.desk.sweep().autodelisted == ["DL-000001"]
        assert w.desk.sweep().autodelisted == []  # once
        w.desk.flush()
        t = ticket(w, "DL-000001")
        assert t.outcome == "delisted" and t.state == "answered"
        auto = [e for e in w.events(t) if e.kind == "outcome"]
        assert [(e.actor, e.outcome) for e in auto] == [("autodelist", "delisted")]
        assert "a first listing in compromised" in (auto[0].detail or "")
        assert not still_listed(w, "203.0.113.45")
        subjects = [str(m.message["Subject"]) for m in w.smtp.messages if m.rcpt_tos == ["dana@mailops.example"]]
        assert len(subjects) == 2  # the acknowledgement, then the delisting
        assert w.desk.send_digest("2026-11-30T12:00")
        w.desk.flush()
    [sent] = [m for m in w.smtp.messages if m.rcpt_tos == ["support@example.org"]]
    text = " ".join(sent.message.get_body(("plain",)).get_content().split())
    assert "DELISTED AUTOMATICALLY, TO REVIEW (1) DL-000001 203.0.113.45 compromised" in text


def test_a_hold_by_staff_vetoes_it_for_good(make_world: Callable[..., World]) -> None:
    w = world(make_world)
    listed(w, "203.0.113.45")
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(forward("203.0.113.45", "a", "dana@mailops.example"))
        w.run()
        staff.hold(w.desk.engine, "DL-000001", "same sender as last week", "ann@example.org")
        clock.shift(timedelta(hours=5))
        assert w.desk.sweep().autodelisted == []
    assert still_listed(w, "203.0.113.45")
    assert ticket(w, "DL-000001").state == "open"


def test_only_first_listings_in_the_allowed_categories(make_world: Callable[..., World]) -> None:
    w = world(make_world)
    listed(w, "203.0.113.45")                      # delisted once already, then listed again
    remove(w.desk.engine, parse_network("203.0.113.45"), "test", "first time")
    listed(w, "203.0.113.45")
    listed(w, "203.0.113.46", category="spam")     # a category a person must look at
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(forward("203.0.113.45", "a", "dana@mailops.example"))
        w.deliver(forward("203.0.113.46", "b", "erik@mailops.example"))
        w.run()
        clock.shift(timedelta(hours=1))
        assert w.desk.sweep().autodelisted == []
    assert still_listed(w, "203.0.113.45") and still_listed(w, "203.0.113.46")


def test_the_hourly_limit_holds_a_burst_back(make_world: Callable[..., World]) -> None:
    w = world(make_world, per_hour=1)
    for n in (45, 46, 47):
        listed(w, f"203.0.113.{n}")
    with time_machine.travel(T0, tick=False) as clock:
        for n in (45, 46, 47):
            w.deliver(forward(f"203.0.113.{n}", f"f{n}", f"s{n}@mailops.example"))
        w.run()
        clock.shift(timedelta(minutes=20))
        assert w.desk.sweep().autodelisted == ["DL-000001"]
        assert w.desk.sweep().autodelisted == []
        clock.shift(timedelta(hours=1))
        assert w.desk.sweep().autodelisted == ["DL-000002"]


def test_off_unless_enabled(make_world: Callable[..., World]) -> None:
    w = make_world(listing={"source": "table"})
    listed(w, "203.0.113.45")
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(forward("203.0.113.45", "a", "dana@mailops.example"))
        w.run()
        clock.shift(timedelta(days=1))
        assert w.desk.sweep().autodelisted == []
    assert still_listed(w, "203.0.113.45")
