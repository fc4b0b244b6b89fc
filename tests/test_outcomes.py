"""Staff's outcomes from the command line (issue #17): delist, conditional, decline.

`mailbot delist` calls the list service first and sends `delisted` only when it succeeded, in
the transaction that records the outcome; run again, or twice at once, it delists once and
mails once. Asserted at the list service (what it was asked, what it delisted), the SMTP
server (what the sender got) and the ticket (state, outcome, the audit events).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from app import CliDesk, forward, mailbot_cli
from listing_servers import ListService
from sqlmodel import Session, col, select

from mailbot.listing.admin import NewListing, add, parse_network
from mailbot.metrics import outcome_metrics
from mailbot.store.tables import TicketEvent

IP = "203.0.113.45"
KEY = "DL-000001/clock-1"


def listing(service: ListService, **extra: Any) -> dict[str, Any]:
    return {"source": "http", "http_url": service.url, "timeout_seconds": 2, "retry_base_seconds": 0,
            "retry_max_seconds": 0, **extra}


def opened(cli_desk: Callable[..., CliDesk], service: ListService, **extra: Any) -> CliDesk:
    """A desk with DL-000001 open for IP (listed at the service), its acknowledgement sent."""
    service.listings[IP] = {"category": "spam"}
    desk = cli_desk(listing=listing(service, **extra))
    desk.world.deliver(forward(IP))
    desk.world.run()
    assert desk.world.tickets()[0].state == "open"
    desk.world.smtp.wait_for(1)
    return desk


def cli(desk: CliDesk, *args: str) -> subprocess.CompletedProcess[str]:
    return mailbot_cli("-c", str(desk.path), *args, env=desk.env())


def posts(service: ListService) -> list[Any]:
    return [c for c in service.calls if c.method == "POST"]


def events(desk: CliDesk, kind: str) -> list[TicketEvent]:
    with Session(desk.world.desk.engine) as s:
        return list(s.exec(select(TicketEvent).where(TicketEvent.kind == kind).order_by(col(TicketEvent.id))).all())


def subjects(desk: CliDesk) -> list[str]:
    return [str(m.message["Subject"]) for m in desk.world.smtp.messages]


def test_delist_asks_the_service_first_then_mails_the_sender_once_however_often_it_runs(
        cli_desk: Callable[..., CliDesk], list_service: ListService) -> None:
    desk = opened(cli_desk, list_service)
    r = cli(desk, "delist", "DL-000001", "--note", "The compromised account was closed.")
    assert r.returncode == 0, r.stderr
    assert f"DL-000001: delisted (removed {IP}); reply queued to dana.ops@mailops.example; sent 1" in r.stdout

    [post] = posts(list_service)
    assert post.path == f"/api/listings/{IP}/delist" and post.headers["idempotency-key"] == KEY
    assert post.body["key"] == KEY and post.body["note"] == "The compromised account was closed."
    assert "(command line)" in post.body["actor"]
    assert list_service.delisted == [(IP, KEY)]
    delisted = desk.world.smtp.wait_for(2)[1]
    assert delisted.message["Subject"] == f"[DL-000001] {IP} has been removed from the block list"
    assert delisted.message["Auto-Submitted"] is None  # written by a person
    assert "The compromised account was closed." in delisted.message.get_body(("plain",)).get_content()
    [ticket] = desk.world.tickets()
    assert (ticket.state, ticket.outcome) == ("answered", "delisted")
    [audit] = events(desk, "delist")
    assert "http said delisted at " in (audit.detail or "") and f"removed {IP} (key {KEY})" in (audit.detail or "")
    assert "(command line)" in audit.actor

    # again, and through `reply --template delisted`: the outcome is there, nothing is asked or sent again
    for again in (["delist", "DL-000001"], ["reply", "DL-000001", "--template", "delisted"]):
        r2 = cli(desk, *again)
        assert r2.returncode == 0 and "DL-000001: delisted already" in r2.stdout and "nothing done again" in r2.stdout
    assert len(posts(list_service)) == 1 and len(desk.world.smtp.messages) == 2
    assert len(events(desk, "outcome")) == 1


def test_two_processes_delisting_at_once_delist_once_and_mail_once(
        cli_desk: Callable[..., CliDesk], list_service: ListService) -> None:
    desk = opened(cli_desk, list_service)
    list_service.delay = 1.5  # the first request is still in flight when the second process starts
    argv = [sys.executable, "-m", "mailbot", "-c", str(desk.path), "delist", "DL-000001"]
    env = {**os.environ, **desk.env()}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs

    # each process asked (or, starting late, found the outcome recorded), always with the one key
    assert 1 <= len(posts(list_service)) <= 2 and {c.headers["idempotency-key"] for c in posts(list_service)} == {KEY}
    assert list_service.delisted == [(IP, KEY)]  # the service delisted once
    desk.world.smtp.wait_for(2)
    assert [s for s in subjects(desk) if "removed" in s] == [f"[DL-000001] {IP} has been removed from the block list"]
    assert len(events(desk, "outcome")) == 1 and len(events(desk, "delist")) == 1
    assert sum("nothing done again" in out for out, _err in outs) == 1


def test_a_refusal_leaves_the_ticket_open_with_the_error_shown_to_staff(
        cli_desk: Callable[..., CliDesk], list_service: ListService) -> None:
    desk = opened(cli_desk, list_service)
    list_service.fail_next.append((422, {}, b'{"error": "listing under investigation"}'))
    r = cli(desk, "delist", "DL-000001")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "HTTP 422" in r.stderr, r.stderr
    assert len(posts(list_service)) == 1 and list_service.delisted == []
    [ticket] = desk.world.tickets()
    assert (ticket.state, ticket.outcome) == ("open", None)
    assert len(desk.world.smtp.messages) == 1  # the acknowledgement only
    [failed] = events(desk, "delist_failed")
    assert (failed.detail or "").startswith("refused: listing source http delist 203.0.113.45: POST")
    shown = cli(desk, "show", "DL-000001")
    assert "delist failed: refused: listing source http delist 203.0.113.45" in shown.stdout


def test_temporary_failures_are_retried_then_reported_and_a_later_run_delists_once(
        cli_desk: Callable[..., CliDesk], list_service: ListService) -> None:
    desk = opened(cli_desk, list_service, delist_attempts=3)
    list_service.fail_next += [(503, {}, b"{}")] * 3
    r = cli(desk, "delist", "DL-000001")
    assert r.returncode == 3 and "HTTP 503" in r.stderr, r.stderr
    assert [c.headers["idempotency-key"] for c in posts(list_service)] == [KEY] * 3
    assert desk.world.tickets()[0].state == "open" and len(desk.world.smtp.messages) == 1
    [failed] = events(desk, "delist_failed")
    assert "still failing after 3 tries" in (failed.detail or "") and f"the same key {KEY}" in (failed.detail or "")

    ok = cli(desk, "delist", "DL-000001")
    assert ok.returncode == 0, ok.stderr
    assert list_service.delisted == [(IP, KEY)] and desk.world.tickets()[0].outcome == "delisted"
    assert "delist failed" not in cli(desk, "show", "DL-000001").stdout  # a later success clears it


def test_an_ip_the_service_no_longer_lists_gets_not_listed_not_removed(
        cli_desk: Callable[..., CliDesk], list_service: ListService) -> None:
    desk = opened(cli_desk, list_service)
    del list_service.listings[IP]  # delisted at the provider meanwhile
    r = cli(desk, "delist", "DL-000001")
    assert r.returncode == 0 and "DL-000001: not_listed" in r.stdout, r.stdout + r.stderr
    assert list_service.delisted == []
    assert desk.world.smtp.wait_for(2)[1].message["Subject"] == f"[DL-000001] {IP} is not on our block list"
    assert (desk.world.tickets()[0].state, desk.world.tickets()[0].outcome) == ("not_listed", "not_listed")


def test_decline_and_conditional_send_their_templates_and_the_digest_and_metrics_count_outcomes(
        cli_desk: Callable[..., CliDesk], list_service: ListService) -> None:
    desk = opened(cli_desk, list_service)
    desk.world.deliver(forward("203.0.113.46", tag="two", sender="lee@two.example"))
    list_service.listings["203.0.113.46"] = {"category": "spam"}
    desk.world.run()
    declined = cli(desk, "decline", "DL-000001", "--reason", "Your server sends to purchased lists.")
    assert declined.returncode == 0, declined.stderr
    assert cli(desk, "conditional", "DL-000002").returncode == 2  # the condition is required
    cond = cli(desk, "conditional", "DL-000002", "--note", "At most 500 mails a day until 2026-12-31.")
    assert cond.returncode == 0, cond.stderr
    assert list_service.delisted == [("203.0.113.46", "DL-000002/clock-1")]

    mails = {m.rcpt_tos[0]: m.message for m in desk.world.smtp.wait_for(4)[2:]}
    assert mails["dana.ops@mailops.example"]["Subject"] == f"[DL-000001] We cannot remove {IP} yet: more " \
        "information needed"
    assert "purchased lists" in mails["dana.ops@mailops.example"].get_body(("plain",)).get_content()
    assert mails["lee@two.example"]["Subject"] == "[DL-000002] 203.0.113.46 has been removed from the block list, " \
        "on a condition"
    assert "At most 500 mails a day" in mails["lee@two.example"].get_body(("plain",)).get_content()
    assert [(t.state, t.outcome) for t in desk.world.tickets()] == [("answered", "declined"),
                                                                    ("answered", "conditional")]
    # the digest counts them, and so does /metrics (read from the outcome events)
    preview = desk.path.parent / "digest.html"
    assert cli(desk, "digest", "--preview", str(preview)).returncode == 0

    _s, text, _h = desk.world.desk.render_digest()
    outcomes = text.split("OUTCOMES SINCE THE LAST DIGEST (2)")[1].split("\n\n")[0]
    assert "  declined    1" in outcomes and "  conditional 1" in outcomes and "  delisted    0" in outcomes
    families = {f.name: f for f in outcome_metrics(desk.world.desk.engine)}
    counts = {s.labels["kind"]: s.value for s in families["mailbot_outcomes"].samples}
    assert counts["declined"] == 1 and counts["conditional"] == 1 and counts["not_listed"] == 0
    buckets = {(s.labels["kind"], s.labels.get("le")): s.value for s in families["mailbot_outcome_seconds"].samples
               if s.name.endswith("_bucket")}
    assert buckets[("declined", "600.0")] == 1 and buckets[("declined", "+Inf")] == 1


def test_the_table_source_delists_its_own_row_once(cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk(listing={"source": "table"})
    add(desk.world.desk.engine, NewListing(parse_network(IP), category="spam"), "test")
    desk.world.deliver(forward(IP))
    desk.world.run()
    assert desk.world.tickets()[0].listing == "listed"
    assert cli(desk, "reply", "DL-000001", "--template", "delisted").returncode == 0
    assert cli(desk, "delist", "DL-000001").returncode == 0
    shown = cli(desk, "listing", "show", IP)
    assert "not listed" in shown.stdout and "delisted" in shown.stdout and KEY in shown.stdout, shown.stdout
    assert [s for s in subjects(desk) if "removed" in s] == [f"[DL-000001] {IP} has been removed from the block list"]


def test_without_a_source_delist_refuses_and_the_reply_records_staff_s_word(cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk()
    desk.world.deliver(forward(IP))
    desk.world.run()
    r = cli(desk, "delist", "DL-000001")
    assert r.returncode == 1 and "no [listing] source is configured" in r.stderr
    assert cli(desk, "reply", "DL-000001", "--template", "delisted").returncode == 0
    assert desk.world.tickets()[0].outcome == "delisted"


@pytest.mark.parametrize("ref", ["DL-000099", "nonsense"])
def test_a_ticket_that_does_not_exist_is_one_line(cli_desk: Callable[..., CliDesk], ref: str) -> None:
    r = cli(cli_desk(listing={"source": "table"}), "delist", ref)
    assert r.returncode == 1 and r.stderr == f"mailbot: no ticket {ref}\n"
