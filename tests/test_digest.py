"""The staff digest and templated staff replies, as staff read them."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from app import World, sample

from mailbot.daemon import _current_slot
from mailbot.staffing import staff

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
STAFF = {"desk": {"staff": ["support@example.org"], "timezone": "Europe/Berlin"}}
HOSTILE = (b"From: Mallory <mallory@evil.example>\r\nTo: delist@example.org\r\n"
           b"Subject: <script>alert(1)</script> unblock\r\nMessage-ID: <evil-1@evil.example>\r\n\r\nhi\r\n")


def desk_with_tickets(w: World, clock: Any) -> None:
    """DL-1 open (oldest), DL-2 redirected, DL-3 needs_info (hostile subject), DL-4 open (newest)."""
    w.deliver(sample("01-banned-sender-attached.eml"))
    w.run()
    clock.shift(timedelta(hours=10))
    w.deliver(sample("02-portal-outlook-inline.eml"))
    w.deliver(HOSTILE)
    w.run()
    clock.shift(timedelta(hours=20))
    w.deliver(sample("06-ipv6-thunderbird.eml"))
    w.run()
    clock.shift(timedelta(hours=12))  # DL-000001 is 42 h old: escalated
    w.desk.sweep()


def test_the_digest_lists_counts_and_open_tickets_by_time_left(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        desk_with_tickets(w, clock)
        subject, text, html = w.desk.render_digest()
    assert subject == "[Example Delist Desk] Digest: 2 open, 1 due soon"
    assert re.search(r"open\s+2\n\s+needs_info\s+1\n\s+answered\s+0\n\s+redirected\s+1\n\s+closed\s+0", text)
    # "open" is the one definition: the needs_info ticket (DL-3) waits for its sender, not for staff
    assert re.search(r"OPEN TICKETS BY CODE FAMILY\n\s+5\.7\.511\s+2\n\n", text)
    open_part = text.split("OPEN, BY TIME LEFT")[1].split("NEW SINCE")[0]
    assert open_part.index("DL-000001") < open_part.index("DL-000004")  # least time left first
    assert "6h 0m left" in open_part and "36h 0m left" not in open_part and "1d 12h 0m left" in open_part
    assert "DUE SOON (1)\n  DL-000001" in text
    assert "DL-000003  mallory@evil.example" in text.split("WAITING FOR INFORMATION")[1]

    # email-client safe: nothing loaded from elsewhere, nothing executable, the hostile subject escaped
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert not re.search(r"<(img|link|script|iframe|object)\b", html, re.IGNORECASE)
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", html, re.IGNORECASE)
    bar = re.search(r'<td width="(\d+)" height="10" style="background:#bf8700', html)
    assert bar and 120 <= int(bar.group(1)) <= 160  # 42 of 48 hours used, drawn amber


def test_the_digest_is_sent_once_per_schedule_slot_even_when_two_daemons_race(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        desk_with_tickets(w, clock)
        w.desk.flush()
        before = len(w.smtp.messages)
        slot = "2026-11-25T07:00:00+00:00"
        results: list[bool] = []
        barrier = threading.Barrier(3)

        def race() -> None:
            barrier.wait()
            results.append(w.desk.send_digest(slot))

        threads = [threading.Thread(target=race) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [False, False, True]
        assert w.desk.send_digest(slot) is False
        w.desk.flush()
    [mail] = w.smtp.messages[before:]
    assert mail.rcpt_tos == ["support@example.org"] and "Digest" in mail.message["Subject"]
    assert mail.message.get_body(("html",)) is not None


def test_the_cron_slot_of_a_late_run_is_the_one_it_belongs_to() -> None:
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab("0 8 * * *", timezone="Europe/Berlin")
    now = datetime(2026, 11, 28, 9, 30, tzinfo=UTC)  # 10:30 in Berlin, the 08:00 run was missed
    assert _current_slot(trigger, now) == datetime(2026, 11, 28, 8, 0, tzinfo=trigger.timezone)
    assert _current_slot(trigger, datetime(2026, 11, 28, 6, 59, tzinfo=UTC)).day == 27  # type: ignore[union-attr]


def test_a_templated_staff_reply_is_threaded_and_answers_the_ticket(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    w.deliver(sample("01-banned-sender-attached.eml"))
    w.run()
    sent_to = staff.reply(w.desk.engine, w.desk.staffing, "DL-000001", "delisted", "ann",
                          "We found and removed the listing.")
    w.desk.flush()
    assert sent_to == ["erik.admin@contoso-sender.example"]
    reply = w.smtp.wait_for(2)[1].message
    assert reply["Subject"] == "[DL-000001] 203.0.113.45 has been removed from the block list"
    assert reply["In-Reply-To"] == "<demo-01-fwd@contoso-sender.example>"
    assert "<demo-01-fwd@contoso-sender.example>" in reply["References"]
    assert reply["Auto-Submitted"] is None  # a person decided to send it
    assert "We found and removed the listing." in reply.get_body(("plain",)).get_content()
    [ticket] = w.tickets()
    assert ticket.state == "answered"


def test_an_unknown_template_is_refused_with_the_list_of_templates(make_world: Any) -> None:
    import pytest

    w: World = make_world(**STAFF)
    w.deliver(sample("01-banned-sender-attached.eml"))
    w.run()
    with pytest.raises(staff.StaffError, match=r"no template 'nope'.*delisted"):
        staff.reply(w.desk.engine, w.desk.staffing, "DL-000001", "nope", "ann", None)


def test_the_digest_agrees_with_itself_and_shows_no_clock_for_tickets_nobody_waits_on(make_world: Any) -> None:
    """Four 5.7.511 tickets answered, one open, one acknowledgement refused by the server: the
    digest said "0 open" beside "5.7.511: 4 waiting" and "1d 23h 57m left" for answered tickets."""
    from app import forward

    w: World = make_world(**STAFF)
    w.smtp.rcpt_responses.append("550 5.1.1 no such user")  # the first acknowledgement fails for good
    with time_machine.travel(T0, tick=False) as clock:
        for i in range(5):
            w.deliver(forward(f"203.0.113.{10 + i}", f"digest-{i}", f"sender{i}@s{i}.example"))
        w.run()
        clock.shift(timedelta(minutes=3))
        for ref in ("DL-000001", "DL-000002", "DL-000003", "DL-000004"):
            staff.answer(w.desk.engine, ref, "ann", "answered by phone")
        subject, text, html = w.desk.render_digest()

    assert subject == "[Example Delist Desk] Digest: 1 open, 1 outgoing failed"
    assert re.search(r"TICKETS BY STATE\n\s+open\s+1\n\s+needs_info\s+0\n\s+answered\s+4\n", text)
    assert re.search(r"OPEN TICKETS BY CODE FAMILY\n\s+5\.7\.511\s+1\n\n", text)
    assert re.search(r"OPEN, BY TIME LEFT \(1\)\n\s+\[[#.]+\] DL-000005 ", text)
    assert "ANSWERED SINCE THE LAST DIGEST (4)" in text and "NEW SINCE THE LAST DIGEST (5)" in text
    answered = [f"DL-00000{i}" for i in range(1, 5)]
    for line in text.splitlines():
        if any(ref in line for ref in answered):
            assert " left" not in line and "overdue" not in line, line
    failed = text.split("OUTGOING MAIL THAT FAILED (1)\n")[1].split("\n\n")[0]
    assert "DL-000001  ack to sender0@s0.example" in failed and "550 5.1.1 no such user" in failed
    assert "mailbot outbox retry" in failed

    # the HTML says the same: its headline, and no time left beside a ticket that waits for nobody
    assert "<strong>1 open</strong>" in html and "1 outgoing failed" in html
    assert "Open tickets by code family: <strong>5.7.511</strong> 1</p>" in html
    cells = re.findall(r"<strong>(DL-\d+)</strong></td><td[^>]*>([^<]*)</td>", html)
    assert {ref for ref, _ in cells} >= set(answered)
    for ref, time_cell in cells:
        if ref in answered:
            assert time_cell == "no clock (answered)", (ref, time_cell)
        else:
            assert time_cell.endswith(" left"), (ref, time_cell)
    failed_html = html.split('id="failed-mail">')[1].split("</ul>")[0]
    assert "<strong>DL-000001</strong> ack to sender0@s0.example" in failed_html and "550 5.1.1" in failed_html


def test_the_digest_counts_answers_by_the_recorded_change_not_by_words_in_a_note(make_world: Any) -> None:
    """The digest once searched event text for "→ answered": a note that said so counted a
    ticket closed unanswered as answered. Now it reads the change each event records."""
    from app import forward
    from rich.console import Console
    from sqlmodel import Session

    from mailbot.staffing import views
    from mailbot.store.tables import Ticket

    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        for i in range(2):
            w.deliver(forward(f"203.0.113.{20 + i}", f"note-{i}", f"sender{i}@s{i}.example"))
        w.run()
        clock.shift(timedelta(minutes=3))
        staff.answer(w.desk.engine, "DL-000001", "ann", "by phone")
        staff.close(w.desk.engine, "DL-000002", "ann", "spam, not open → answered")
        _, text, _ = w.desk.render_digest()
    section = text.split("ANSWERED SINCE THE LAST DIGEST (1)\n")[1].split("\n\n")[0]
    assert "DL-000001" in section and "DL-000002" not in section

    with Session(w.desk.engine) as s:
        closed = views.ticket_detail(s, s.get(Ticket, 2))  # type: ignore[arg-type]
    [change] = [e for e in closed["events"] if e["kind"] == "state"]
    assert (change["from_state"], change["to_state"], change["detail"]) == ("open", "closed",
                                                                           "spam, not open → answered")
    shown = Console(record=True, width=200, highlight=False, soft_wrap=True)
    with Session(w.desk.engine) as s:
        views.print_ticket(s, s.get(Ticket, 2), w.desk.config.desk.zone, shown)  # type: ignore[arg-type]
    assert "state      ann: open → closed: spam, not open → answered" in shown.export_text()
