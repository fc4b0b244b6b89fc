"""Every ticket knows the listing, and the desk answers what the list already answers (issue #17).

Through the whole desk on real servers: forwards delivered to Dovecot, `run_once`, the
provider's list service (tests/listing_servers.py, the `http` source) or the desk's own
table, SQLite and PostgreSQL; what is asserted is what people see: the ticket row, the mail
at the SMTP server, the requests the list service received.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from app import World, forward
from listing_servers import ListService
from sqlmodel import Session

from mailbot.listing.admin import NewListing, add, parse_network
from mailbot.staffing import views
from mailbot.store.tables import Ticket

IP = "203.0.113.45"


def http(service: ListService, **extra: Any) -> dict[str, Any]:
    return {"source": "http", "http_url": service.url, "timeout_seconds": 2, "retry_base_seconds": 0,
            "retry_max_seconds": 0, **extra}


def gets(service: ListService) -> list[str]:
    return [c.path for c in service.calls if c.method == "GET"]


def text_of(received: Any) -> str:
    return str(received.message.get_body(("plain",)).get_content())


def test_a_forward_for_an_ip_that_is_not_listed_is_answered_so_and_resolved_without_a_person(
        make_world: Callable[..., World], list_service: ListService) -> None:
    w = make_world(listing=http(list_service), desk={"staff": ["support@example.org"]})
    w.deliver(forward(IP))
    w.run()

    [ticket] = w.tickets()
    assert (ticket.state, ticket.listing, ticket.outcome, ticket.due_at) == ("not_listed", "not_listed", "not_listed",
                                                                             None)
    assert gets(list_service) == [f"/api/listings/{IP}"]
    [reply] = w.smtp.wait_for(1)
    mail = reply.message
    assert reply.rcpt_tos == ["dana.ops@mailops.example"]
    assert mail["Subject"] == f"[DL-000001] {IP} is not on our block list"
    assert mail["Auto-Submitted"] == "auto-replied"
    assert mail["In-Reply-To"] == "<fwd-1@forwarder.example>"
    text = " ".join(text_of(reply).split())
    assert "it is not listed" in text and "may be older than the removal" in text and "another block list" in text
    assert "550 5.7.511" in text
    # nothing waits for staff: no clock, no escalation, not in the digest's open tickets
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=47), tick=False):
        swept = w.desk.sweep()
    assert swept.escalated == [] and swept.breached == [] and len(w.smtp.messages) == 1
    events = [(e.kind, e.to_state or e.outcome) for e in w.events(ticket)]
    assert ("state", "not_listed") in events and ("outcome", "not_listed") in events


def test_a_listed_ip_is_acknowledged_and_staff_see_the_listing_but_the_sender_never_sees_its_reason(
        make_world: Callable[..., World], list_service: ListService) -> None:
    now = datetime.now(UTC)
    list_service.listings[IP] = {"since": (now - timedelta(days=1)).isoformat(), "category": "spam-trap",
                                 "reason": "SECRET-TRAP-HITS 40 in one hour", "times_listed_before": 2,
                                 "last_delisted": (now - timedelta(days=10)).isoformat()}
    w = make_world(listing=http(list_service, repeat_days=30), desk={"staff": ["support@example.org"]})
    w.deliver(forward(IP))
    w.run()

    [ticket] = w.tickets()
    assert (ticket.state, ticket.listing, ticket.listing_category, ticket.listed_before) == (
        "open", "listed", "spam-trap", 2)
    assert ticket.repeat is True and ticket.listing_reason == "SECRET-TRAP-HITS 40 in one hour"
    [ack] = w.smtp.wait_for(1)
    assert ack.message["Subject"] == f"[DL-000001] Delisting request received for {IP}"
    assert b"SECRET-TRAP-HITS" not in ack.data

    # the escalation staff get names the listing, its reason and the repeat
    with time_machine.travel(now + timedelta(hours=41), tick=False):
        swept = w.desk.sweep()
        w.desk.flush()
    assert swept.escalated == ["DL-000001"]
    escalation = w.smtp.wait_for(2)[1]
    assert escalation.rcpt_tos == ["support@example.org"]
    staff_text = " ".join(text_of(escalation).split())
    assert "REPEAT LISTING" in staff_text and "SECRET-TRAP-HITS 40 in one hour" in staff_text
    assert "(spam-trap); listed 2 times before, last delisted" in staff_text
    with Session(w.desk.engine) as s:
        t = s.get(Ticket, ticket.id)
        assert t is not None
        shown = views.ticket_dict(t)
    assert (shown["listing"], shown["repeat"], shown["listing_reason"]) == (
        "listed", True, "SECRET-TRAP-HITS 40 in one hour")


def test_without_a_listing_source_nothing_is_looked_up_and_nobody_hears_not_listed(
        make_world: Callable[..., World]) -> None:
    # The desk's own table exists in every database, empty here: a desk that asked it without
    # being configured to would tell this sender "not listed".
    w = make_world()
    w.deliver(forward(IP))
    w.run()
    [ticket] = w.tickets()
    assert (ticket.state, ticket.listing, ticket.outcome) == ("open", None, None)
    [ack] = w.smtp.wait_for(1)
    assert "Delisting request received" in ack.message["Subject"]
    assert w.desk.sweep().rechecked == 0


def test_the_table_source_answers_for_the_desk_s_own_list(make_world: Callable[..., World]) -> None:
    w = make_world(listing={"source": "table"})
    add(w.desk.engine, NewListing(parse_network(IP), category="complaints", reason="staff only"), "test")
    w.deliver(forward(IP, tag="listed"))
    w.deliver(forward("203.0.113.99", tag="clean", sender="kim@elsewhere.example"))
    w.run()
    listed, clean = w.tickets()
    assert (listed.ip, listed.state, listed.listing, listed.listing_category) == (IP, "open", "listed", "complaints")
    assert (clean.ip, clean.state, clean.listing) == ("203.0.113.99", "not_listed", "not_listed")
    subjects = sorted(m.message["Subject"] for m in w.smtp.wait_for(2))
    assert subjects == [f"[DL-000001] Delisting request received for {IP}",
                        "[DL-000002] 203.0.113.99 is not on our block list"]


def test_a_lookup_that_fails_never_blocks_mail_and_the_sweep_asks_again(
        make_world: Callable[..., World], list_service: ListService) -> None:
    list_service.delay = 1.5  # longer than the timeout: every request times out
    w = make_world(listing=http(list_service, timeout_seconds=0.3, lookup_attempts=2, cache_seconds=0))
    for n in range(3):
        w.deliver(forward(f"203.0.113.{50 + n}", tag=f"slow-{n}", sender=f"s{n}@senders.example"))
    started = time.monotonic()
    w.run()
    took = time.monotonic() - started

    tickets = w.tickets()
    assert [(t.state, t.listing) for t in tickets] == [("open", "lookup_failed")] * 3
    assert "no answer within the timeout" in (tickets[0].listing_error or "")
    assert "not asked: the source failed" in (tickets[2].listing_error or "")
    # one message paid the timeouts; the breaker spared the others theirs
    assert len(gets(list_service)) == 2 and took < 6, (gets(list_service), took)
    assert sorted(m.message["Subject"][:12] for m in w.smtp.wait_for(3)) == [
        "[DL-000001] ", "[DL-000002] ", "[DL-000003] "]

    # the service answers again, and lists none of them: the sweep answers each
    list_service.delay = 0
    swept = w.desk.sweep()
    w.desk.flush()
    assert swept.rechecked == 3 and swept.not_listed == ["DL-000001", "DL-000002", "DL-000003"]
    assert [(t.state, t.listing, t.listing_error) for t in w.tickets()] == [("not_listed", "not_listed", None)] * 3
    told = [m for m in w.smtp.wait_for(6) if "is not on our block list" in m.message["Subject"]]
    assert sorted(m.rcpt_tos[0] for m in told) == [f"s{n}@senders.example" for n in range(3)]


def test_the_sweep_answers_a_ticket_whose_ip_was_delisted_elsewhere_within_its_bound(
        make_world: Callable[..., World], list_service: ListService) -> None:
    ips = ["203.0.113.60", "203.0.113.61", "203.0.113.62"]
    for ip in ips:
        list_service.listings[ip] = {"category": "spam"}
    w = make_world(listing=http(list_service, cache_seconds=0, recheck_per_sweep=2))
    for n, ip in enumerate(ips):
        w.deliver(forward(ip, tag=f"e-{n}", sender=f"e{n}@senders.example"))
    w.run()
    assert [t.state for t in w.tickets()] == ["open"] * 3
    for ip in ips:
        del list_service.listings[ip]  # delisted by someone at the provider, not through the desk
    asked = len(gets(list_service))

    first = w.desk.sweep()
    assert first.rechecked == 2 and first.not_listed == ["DL-000001", "DL-000002"]
    assert len(gets(list_service)) == asked + 2
    second = w.desk.sweep()
    assert second.not_listed == ["DL-000003"]
    w.desk.flush()
    told = {m.rcpt_tos[0]: m.message for m in w.smtp.wait_for(6) if "not on our" in m.message["Subject"]}
    assert set(told) == {"e0@senders.example", "e1@senders.example", "e2@senders.example"}
    assert told["e0@senders.example"]["In-Reply-To"] == "<e-0@forwarder.example>"
    assert [t.outcome for t in w.tickets()] == ["not_listed"] * 3
    events = [e.detail for e in w.events(w.tickets()[0]) if e.kind == "state" and e.to_state == "not_listed"]
    assert events == ["delisted elsewhere"]


def test_with_answering_off_the_ticket_records_not_listed_and_waits_for_staff(
        make_world: Callable[..., World], list_service: ListService) -> None:
    w = make_world(listing=http(list_service, answer_not_listed=False), desk={"staff": ["support@example.org"]})
    w.deliver(forward(IP))
    w.run()
    [ticket] = w.tickets()
    assert (ticket.state, ticket.listing, ticket.outcome) == ("open", "not_listed", None)
    [ack] = w.smtp.wait_for(1)
    assert "Delisting request received" in ack.message["Subject"]

    _subject, text, _html = w.desk.render_digest()
    assert "550 5.7.511  203.0.113.45" in text and "not listed" in text.split("OPEN, BY TIME LEFT")[1][:400]


def test_a_sender_who_still_gets_rejected_reopens_the_request_for_staff(
        make_world: Callable[..., World], list_service: ListService) -> None:
    w = make_world(listing=http(list_service))
    w.deliver(forward(IP))
    w.run()
    assert w.tickets()[0].state == "not_listed"
    again = forward(IP, tag="again").replace(b"Subject: Fwd: Undelivered", b"Subject: Re: [DL-000001] Undelivered", 1)
    w.deliver(again)
    w.run()
    [ticket] = w.tickets()
    assert (ticket.state, ticket.clock) == ("open", 2) and ticket.due_at is not None
    # no second "not listed": a person looks now, and the sweep leaves it to them
    assert w.desk.sweep().not_listed == []
    assert [m.message["Subject"] for m in w.smtp.wait_for(1)] == [f"[DL-000001] {IP} is not on our block list"]


def auto_submitted(raw: bytes) -> bytes:
    """The forward as an autoresponder would send it (RFC 3834): it must never be answered."""
    return b"Auto-Submitted: auto-replied\r\n" + raw


def test_not_listed_is_never_sent_to_an_autoresponder_nor_by_the_sweep_to_a_sender_never_written_to(
        make_world: Callable[..., World], list_service: ListService) -> None:
    # Someone who makes mailers forward NDRs for clean IPs must not turn the desk into a
    # "not listed" backscatter source: the reply guard holds that mail as it holds an ack.
    w = make_world(listing=http(list_service, cache_seconds=0))
    w.deliver(auto_submitted(forward(IP, tag="robot-1", sender="robot@loop.example")))
    list_service.listings["203.0.113.70"] = {"category": "spam"}
    w.deliver(auto_submitted(forward("203.0.113.70", tag="robot-2", sender="robot@loop.example")))
    w.run()
    clean, listed = w.tickets()
    assert (clean.state, listed.state) == ("not_listed", "open")
    assert any(e.kind == "no_reply" and "not_listed not sent" in (e.detail or "") for e in w.events(clean))
    del list_service.listings["203.0.113.70"]
    assert w.desk.sweep().not_listed == ["DL-000002"]
    w.desk.flush()
    assert w.smtp.messages == []


def test_a_source_s_hostile_reason_reaches_staff_escaped_and_never_a_sender(
        make_world: Callable[..., World], list_service: ListService) -> None:
    import io

    from rich.console import Console

    hostile = "\x1b]2;owned\x07<script>alert(1)</script> \u202eevil"
    list_service.listings[IP] = {"reason": hostile, "category": "<b>x</b>"}
    w = make_world(listing=http(list_service), desk={"staff": ["support@example.org"]})
    w.deliver(forward(IP))
    w.run()
    [ack] = w.smtp.wait_for(1)
    assert b"script" not in ack.data and b"owned" not in ack.data
    out = io.StringIO()
    with Session(w.desk.engine) as s:
        t = s.get(Ticket, 1)
        assert t is not None
        views.print_ticket(s, t, w.desk.config.desk.zone, Console(file=out, width=200, highlight=False))
    shown = out.getvalue()
    assert "\x1b" not in shown and "\u202e" not in shown and "\\x1b]2;owned\\x07<script>" in shown
    with time_machine.travel(datetime.now(UTC) + timedelta(hours=41), tick=False):
        w.desk.sweep()
        w.desk.flush()
    escalation = w.smtp.wait_for(2)[1].message
    html = str(escalation.get_body(("html",)).get_content())
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "\x1b" not in str(escalation.get_body(("plain",)).get_content())


def test_a_dns_block_list_answers_for_the_desk_v4_and_v6(make_world: Callable[..., World], dnsbl: Any) -> None:
    v6 = "2001:db8:5::25"
    nibbles = ".".join(reversed(ipaddress.ip_address(v6).exploded.replace(":", "")))
    nsd = dnsbl("bl.test", ["45.113.0.203 IN A 127.0.0.2", '45.113.0.203 IN TXT "trap hits"',
                            f"{nibbles} IN A 127.0.0.3"])
    w = make_world(listing={"source": "dnsbl", "dnsbl_zone": "bl.test", "dnsbl_nameserver": "127.0.0.1",
                            "dnsbl_port": nsd.port, "timeout_seconds": 2})
    w.deliver(forward(IP, tag="v4"))
    w.deliver(forward(v6, tag="v6", sender="ada@adatum.example"))
    w.deliver(forward("203.0.113.46", tag="clean", sender="kim@elsewhere.example"))
    w.run()
    assert [(t.ip, t.state, t.listing, t.listing_category, t.listing_reason) for t in w.tickets()] == [
        (IP, "open", "listed", "127.0.0.2", "trap hits"), (v6, "open", "listed", "127.0.0.3", None),
        ("203.0.113.46", "not_listed", "not_listed", None, None)]
    assert sorted(m.message["Subject"] for m in w.smtp.wait_for(3))[2] == \
        "[DL-000003] 203.0.113.46 is not on our block list"
