"""The 48-hour promise: escalation and breach exactly once per clock, answers
stop the clock, follow-ups restart it. Real Dovecot and SMTP; time moved with
time-machine, never slept through."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import time_machine
from app import World, sample

from mailbot.staffing import staff
from mailbot.staffing.sla import sweep
from mailbot.store.tables import SlaNotice

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
STAFF = {"desk": {"staff": ["support@example.org"], "staff_senders": ["@example.org"]}}


def staff_mails(w: World) -> list[Any]:
    return [r for r in w.smtp.messages if r.rcpt_tos == ["support@example.org"]]


def open_one(w: World, name: str = "01-banned-sender-attached.eml") -> None:
    w.deliver(sample(name))
    w.run()


def test_a_ticket_escalates_once_at_40_hours_and_breaches_once_at_48(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        open_one(w)
        clock.shift(timedelta(hours=40) - timedelta(minutes=1))
        assert w.desk.sweep().escalated == []
        clock.shift(timedelta(minutes=1))
        assert w.desk.sweep().escalated == ["DL-000001"]
        w.desk.flush()
        for _ in range(100):
            w.desk.sweep()
        w.desk.flush()
        [escalation] = staff_mails(w)
        body = escalation.message.get_body(("plain",)).get_content()
        for fact in ("DL-000001", "erik.admin@contoso-sender.example", "203.0.113.45", "550 5.7.511",
                     "8h 0m left", "our mail to your customers is rejected", "mailbot delist DL-000001"):
            assert fact in body, fact
        assert escalation.message["Auto-Submitted"] == "auto-generated"

        clock.shift(timedelta(hours=8))
        assert w.desk.sweep().breached == ["DL-000001"]
        for _ in range(100):
            w.desk.sweep()
        w.desk.flush()
    escalation, breach = staff_mails(w)
    assert "past the 48-hour mark" in breach.message["Subject"]
    assert "overdue by 0m" in breach.message.get_body(("plain",)).get_content()


def test_many_tickets_crossing_in_one_sweep_make_one_mail(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        open_one(w, "01-banned-sender-attached.eml")
        open_one(w, "06-ipv6-thunderbird.eml")
        clock.shift(timedelta(hours=41))
        assert sorted(w.desk.sweep().escalated) == ["DL-000001", "DL-000002"]
        w.desk.flush()
    [mail] = staff_mails(w)
    body = mail.message.get_body(("plain",)).get_content()
    assert "DL-000001" in body and "DL-000002" in body


def test_a_ticket_past_both_points_in_one_sweep_gets_the_breach_notice(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        open_one(w)
        clock.shift(timedelta(hours=50))  # the daemon was down through the escalation point
        r = w.desk.sweep()
    assert (r.escalated, r.breached) == ([], ["DL-000001"])


def test_an_answer_in_the_sent_folder_stops_the_clock(make_world: Any) -> None:
    w: World = make_world(mailbox={"sent_folders": ["Sent"]}, **STAFF)
    w.imap.create_folder("Sent")
    with time_machine.travel(T0, tick=False) as clock:
        open_one(w)
        ack = w.smtp.wait_for(1)[0].message
        # mailbot's own mail saved in Sent (as Microsoft 365 does) is not an answer
        w.imap.append(w.smtp.messages[0].data, folder="Sent")
        w.run()
        assert w.tickets()[0].state == "open"
        answer = (f"From: Support <support@example.org>\r\nTo: erik.admin@contoso-sender.example\r\n"
                  f"Subject: Re: {ack['Subject']}\r\nMessage-ID: <answer-1@example.org>\r\n"
                  f"In-Reply-To: {ack['Message-ID']}\r\n\r\nWe removed the listing.\r\n").encode()
        w.imap.append(answer, folder="Sent")
        clock.shift(timedelta(hours=1))
        w.run()
        [ticket] = w.tickets()
        assert ticket.state == "answered" and ticket.answered_at == T0 + timedelta(hours=1)
        assert len(w.imap.uids("Sent")) == 2  # read, never moved
        clock.shift(timedelta(hours=60))
        r = w.desk.sweep()
    assert (r.escalated, r.breached) == ([], [])


def test_verified_staff_mail_to_the_desk_about_a_ticket_marks_it_answered(make_world: Any) -> None:
    # verified: the desk's own MX vouches for the staff From (tests/test_trust.py has the forgeries)
    w: World = make_world(**STAFF, replies={"authserv_ids": ["mx.example.org"]})
    open_one(w)
    note = (b"Authentication-Results: mx.example.org; dmarc=pass header.from=example.org\r\n"
            b"From: Ann Support <ann@example.org>\r\nTo: delist@example.org\r\n"
            b"Subject: [DL-000001] delisted, see case 4711\r\nMessage-ID: <staff-1@example.org>\r\n\r\ndone\r\n")
    w.deliver(note)
    w.run()
    [ticket] = w.tickets()
    assert ticket.state == "answered"
    w.desk.flush()
    assert [r for m in w.smtp.messages for r in m.rcpt_tos if r == "ann@example.org"] == []  # staff get no ack
    assert [r.kind for r in w.outbox()] == []  # (the unverified forward got none either)


def test_a_sender_follow_up_reopens_an_answered_ticket_with_a_fresh_clock(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        open_one(w)
        ack = w.smtp.wait_for(1)[0].message
        staff.answer(w.desk.engine, "DL-000001", "ann", "delisted")
        clock.shift(timedelta(hours=10))
        still = (f"From: Erik Admin <erik.admin@contoso-sender.example>\r\nTo: delist@example.org\r\n"
                 f"Subject: Re: {ack['Subject']}\r\nMessage-ID: <still-1@contoso-sender.example>\r\n"
                 f"In-Reply-To: {ack['Message-ID']}\r\n\r\nWe are still blocked this morning, the same"
                 f" 550 error comes back for every message we send to your users.\r\n").encode()
        w.deliver(still)
        w.run()
        [ticket] = w.tickets()
        assert (ticket.state, ticket.clock, ticket.due_at) == ("open", 2, T0 + timedelta(hours=58))
        clock.shift(timedelta(hours=40))  # clock 2's escalation point
        assert w.desk.sweep().escalated == ["DL-000001"]
    with w.desk.engine.connect() as conn:
        from sqlmodel import select
        clocks = sorted(r.clock for r in conn.execute(select(SlaNotice)))
    assert clocks == [2]


def test_a_thank_you_after_the_answer_does_not_reopen(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    open_one(w)
    ack = w.smtp.wait_for(1)[0].message
    staff.answer(w.desk.engine, "DL-000001", "ann", "delisted")
    thanks = (f"From: Erik Admin <erik.admin@contoso-sender.example>\r\nTo: delist@example.org\r\n"
              f"Subject: Re: {ack['Subject']}\r\nMessage-ID: <thx-1@contoso-sender.example>\r\n"
              f"In-Reply-To: {ack['Message-ID']}\r\n\r\nThank you, works again!\r\n\r\n"
              f"On Mon, 23 Nov 2026 Example Delist Desk wrote:\r\n> Your delisting request ...\r\n").encode()
    w.deliver(thanks)
    w.run()
    [ticket] = w.tickets()
    assert ticket.state == "answered"
    assert "thanks" in [e.kind for e in w.events(ticket)]


def test_answered_redirected_closed_and_needs_info_tickets_never_escalate(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        open_one(w, "01-banned-sender-attached.eml")   # DL-000001, answered below
        open_one(w, "02-portal-outlook-inline.eml")    # DL-000002, redirected
        open_one(w, "04-no-code.eml")                  # DL-000003, needs_info
        open_one(w, "06-ipv6-thunderbird.eml")         # DL-000004, closed below
        staff.answer(w.desk.engine, "DL-000001", "ann", None)
        staff.close(w.desk.engine, "DL-000004", "ann", None)
        clock.shift(timedelta(days=5))
        r = w.desk.sweep()
    assert (r.escalated, r.breached) == ([], [])


def test_two_sweeps_racing_send_each_notice_once(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        open_one(w, "01-banned-sender-attached.eml")
        open_one(w, "06-ipv6-thunderbird.eml")
        clock.shift(timedelta(hours=41))
        results: list[Any] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def race() -> None:
            barrier.wait()
            try:
                results.append(sweep(w.desk.engine, w.desk.mailer, w.desk.config.sla))
            except BaseException as e:  # reported below
                errors.append(e)

        threads = [threading.Thread(target=race) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        w.desk.flush()
    assert errors == []
    assert sorted(ref for r in results for ref in r.escalated) == ["DL-000001", "DL-000002"]
    assert len(staff_mails(w)) == 1


def test_a_forged_staff_from_does_not_stop_the_clock(make_world: Any) -> None:
    w: World = make_world(replies={"authserv_ids": ["mx.example.org"]}, **STAFF)
    pass_ar = "Authentication-Results: mx.example.org; dmarc=pass header.from=contoso-sender.example\r\n"
    w.deliver(pass_ar.encode() + sample("01-banned-sender-attached.eml"))
    w.run()
    forged = (b"Authentication-Results: mx.example.org; spf=fail smtp.mailfrom=example.org; dmarc=fail "
              b"header.from=example.org\r\nFrom: Ann Support <ann@example.org>\r\nTo: delist@example.org\r\n"
              b"Subject: [DL-000001] delisted\r\nMessage-ID: <forged-1@evil.example>\r\n\r\ndone\r\n")
    w.deliver(forged)
    w.run()
    assert w.tickets()[0].state == "open"
    genuine = forged.replace(b"spf=fail", b"spf=pass").replace(b"dmarc=fail", b"dmarc=pass").replace(
        b"<forged-1@evil.example>", b"<staff-2@example.org>")
    w.deliver(genuine)
    w.run()
    assert w.tickets()[0].state == "answered"
