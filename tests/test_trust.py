"""Nobody but verified staff stops a clock; nobody but its senders touches a ticket.

Each test is an attack a stranger can make on a public delist@ address (issue #11),
run against the real servers on SQLite and PostgreSQL: the forged mail goes into
Dovecot, the daemon polls, and the test looks at the ticket row, its events and
the mail that reached the SMTP server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from app import World, forward, imap_toml, mailbot_cli
from sqlmodel import Session

from mailbot.staffing import staff
from mailbot.store.tables import Ticket

DESK = {"staff": ["ann@example.org"]}
TRUSTED = {"authserv_ids": ["mx.example.org"]}
OWNER = "dana.ops@mailops.example"
STRANGER = "mallory@evil.example"


def ar(results: str) -> str:
    return f"Authentication-Results: mx.example.org; {results}"


def mail(sender_line: str, subject: str, *headers: str, body: str = "Please look at this.",
         mid: str = "m-1@anywhere.example") -> bytes:
    head = [*headers, sender_line, "To: delist@example.org", f"Subject: {subject}", f"Message-ID: <{mid}>",
            "Date: Mon, 30 Nov 2026 10:00:00 +0000"]
    return ("\r\n".join(head) + "\r\n\r\n" + body + "\r\n").encode()


def staff_answer(*headers: str, sender: str = "Ann Support <ann@example.org>", ref: str = "DL-000001") -> bytes:
    return mail(f"From: {sender}", f"Re: [{ref}] your request", *headers, body="We have looked at it.",
                mid=f"staff-{abs(hash(headers))}@example.org")


def with_headers(raw: bytes, *headers: str) -> bytes:
    return "".join(f"{h}\r\n" for h in headers).encode() + raw


def one_ticket(w: World, ip: str = "203.0.113.45", sender: str = OWNER, *headers: str) -> Ticket:
    w.deliver(with_headers(forward(ip, f"own-{ip}", sender), *headers))
    w.run()
    return w.tickets()[-1]


def state_of(w: World, ticket: Ticket) -> Ticket:
    return next(t for t in w.tickets() if t.id == ticket.id)


def recipients(w: World) -> list[str]:
    return [r for m in w.smtp.messages for r in m.rcpt_tos]


# -- a forged staff answer never stops the clock -----------------------------------------

def test_without_trusted_results_a_staff_from_never_stops_a_clock(make_world: Callable[..., World]) -> None:
    # the config `mailbot init --staff` writes: staff set, replies.authserv_ids empty
    w = make_world(desk=DESK)
    ticket = one_ticket(w)
    w.deliver(staff_answer())
    w.run()
    assert state_of(w, ticket).state == "open"
    events = w.events(ticket)
    assert [e.kind for e in events].count("unverified_staff") == 1
    assert "no trusted Authentication-Results are configured" in (events[-1].detail or "")
    assert len(w.tickets()) == 1  # the forgery opens nothing either
    assert "ann@example.org" not in recipients(w)


@pytest.mark.parametrize("results", [
    "spf=pass smtp.mailfrom=evil.example; dkim=pass header.d=evil.example; dmarc=pass header.from=evil.example",
    "dkim=pass header.d=org; dmarc=none",  # a public suffix aligns with nothing
    "dmarc=pass",  # a pass that names no domain proves nothing
    "spf=pass smtp.mailfrom=example.org.evil.example; dmarc=none",
], ids=["dmarc-pass-for-another-domain", "dkim-public-suffix", "dmarc-without-header-from", "spf-lookalike"])
def test_authentication_results_that_do_not_vouch_for_the_from_do_not_stop_a_clock(
        make_world: Callable[..., World], results: str) -> None:
    w = make_world(desk=DESK, replies=TRUSTED)
    ticket = one_ticket(w, "203.0.113.45", OWNER, ar("spf=pass smtp.mailfrom=mailops.example; "
                                                     "dmarc=pass header.from=mailops.example"))
    w.deliver(staff_answer(ar(results)))
    w.run()
    assert state_of(w, ticket).state == "open"
    assert "unverified_staff" in [e.kind for e in w.events(ticket)]


def test_two_from_headers_are_never_staff_and_never_answered(make_world: Callable[..., World]) -> None:
    w = make_world(desk=DESK, replies=TRUSTED)
    ticket = one_ticket(w, "203.0.113.45", OWNER, ar("dmarc=pass header.from=mailops.example"))
    forged = staff_answer(ar("dmarc=pass header.from=example.org")).replace(
        b"From: Ann Support <ann@example.org>\r\n",
        b"From: Ann Support <ann@example.org>\r\nFrom: Mallory <mallory@evil.example>\r\n")
    w.deliver(forged)
    w.run()
    assert state_of(w, ticket).state == "open"
    assert recipients(w) == [OWNER]  # the ack of the real forward, nothing for the forgery


@pytest.mark.parametrize("results", [
    "dmarc=pass header.from=example.org",
    "dkim=pass header.d=mail.example.org; dmarc=none",  # same organisational domain
    "spf=pass smtp.mailfrom=bounces.example.org",
])
def test_verified_staff_mail_stops_the_clock(make_world: Callable[..., World], results: str) -> None:
    w = make_world(desk=DESK, replies=TRUSTED)
    ticket = one_ticket(w)
    w.deliver(staff_answer(ar(results), sender="Ann Support <Ann+desk@Example.org>"))
    w.run()
    assert state_of(w, ticket).state == "answered"


# -- only a ticket's senders act on it ---------------------------------------------------

def test_a_stranger_citing_an_answered_ticket_does_not_reopen_it(make_world: Callable[..., World]) -> None:
    w = make_world()
    ticket = one_ticket(w)
    staff.answer(w.desk.engine, ticket.ref, "ann", "looked")
    w.deliver(mail(f"From: {STRANGER}", f"Re: [{ticket.ref}] still blocked!!"))
    w.run()
    assert state_of(w, ticket).state == "answered"
    cited = [e for e in w.events(ticket) if e.kind == "cited"]
    assert len(cited) == 1 and cited[0].actor == STRANGER
    [_, own] = w.tickets()  # the stranger's mail is a request of its own
    assert own.sender == STRANGER and own.state == "needs_info"


def test_the_senders_own_follow_up_reopens_it_whatever_the_spelling(make_world: Callable[..., World]) -> None:
    w = make_world()
    ticket = one_ticket(w)
    staff.answer(w.desk.engine, ticket.ref, "ann", "looked")
    w.deliver(mail("From: Dana <Dana.Ops+desk@MailOps.example>", f"Re: [{ticket.ref}] still blocked"))
    w.run()
    assert state_of(w, ticket).state == "open"
    assert len(w.tickets()) == 1


def test_a_strangers_ndr_for_another_ip_citing_a_closed_ticket_opens_its_own(
        make_world: Callable[..., World]) -> None:
    w = make_world()
    ticket = one_ticket(w)
    staff.close(w.desk.engine, ticket.ref, "ann", None)
    raw = forward("198.51.100.66", "stranger-1", STRANGER).replace(
        b"Subject: Fwd: Undelivered Mail Returned to Sender", f"Subject: [{ticket.ref}] again".encode())
    w.deliver(raw)
    w.run()
    closed = state_of(w, ticket)
    assert (closed.state, closed.ip) == ("closed", "203.0.113.45")
    [_, own] = w.tickets()
    assert (own.ip, own.sender, own.state) == ("198.51.100.66", STRANGER, "open")
    ack = w.smtp.wait_for(2)[1]
    assert ack.rcpt_tos == [STRANGER] and own.ref in ack.message["Subject"]


def test_a_stranger_cannot_rewrite_a_needs_info_ticket_or_join_its_replies(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(mail(f"From: Dana <{OWNER}>", "please delist", body="We are blocked, no idea why."))
    w.run()
    [ticket] = w.tickets()
    assert ticket.state == "needs_info"
    raw = forward("198.51.100.66", "stranger-2", STRANGER).replace(
        b"Subject: Fwd: Undelivered Mail Returned to Sender", f"Subject: Re: [{ticket.ref}]".encode())
    w.deliver(raw)
    w.run()
    kept = state_of(w, ticket)
    assert (kept.state, kept.ip) == ("needs_info", None)
    assert all(ticket.ref not in (m.message["Subject"] or "") for m in w.smtp.messages if STRANGER in m.rcpt_tos)

    sent_to = staff.reply(w.desk.engine, w.desk.staffing, ticket.ref, "declined", "ann", None)
    assert sent_to == [OWNER]


def test_joined_senders_each_see_only_their_own_forward(make_world: Callable[..., World]) -> None:
    w = make_world()
    first = forward("203.0.113.45", "first", OWNER).replace(b"AS(1410)", b"AS(1111) first-sender-detail")
    second = forward("203.0.113.45", "second", STRANGER).replace(b"bob@example.com", b"carol@second.example")
    second = second.replace(b"AS(1410)", b"AS(2222) second-sender-detail")
    w.deliver(first)
    w.deliver(second)
    w.run()
    [ticket] = w.tickets()  # one ticket per IP: the second forward joins it
    acks = {m.rcpt_tos[0]: m.data.decode("utf-8", "replace") for m in w.smtp.wait_for(2)}
    assert "first-sender-detail" in acks[OWNER] and "second-sender-detail" not in acks[OWNER]
    assert "second-sender-detail" in acks[STRANGER] and "first-sender-detail" not in acks[STRANGER]
    assert OWNER not in acks[STRANGER] and STRANGER not in acks[OWNER]

    staff.reply(w.desk.engine, w.desk.staffing, ticket.ref, "delisted", "ann", None)
    w.desk.flush()
    replies = w.smtp.wait_for(4)[2:]
    assert sorted(r for m in replies for r in m.rcpt_tos) == sorted([OWNER, STRANGER])
    theirs = {OWNER: ("<first@forwarder.example>", "AS(1111)"), STRANGER: ("<second@forwarder.example>", "AS(2222)")}
    for m in replies:
        [me] = m.rcpt_tos
        [other] = [a for a in theirs if a != me]
        shown = m.data.decode("utf-8", "replace") + (m.message["References"] or "") + (m.message["In-Reply-To"] or "")
        assert theirs[me][0] in (m.message["In-Reply-To"] or "")  # threaded to their own forward
        assert other not in shown and theirs[other][0] not in shown


# -- backscatter: forged senders get nothing ----------------------------------------------

@pytest.mark.parametrize("extra", [
    [ar("spf=pass smtp.mailfrom=evil.example; dmarc=pass header.from=evil.example")],
    [ar("dmarc=pass header.from=mailops.example"), "From: Someone <someone@evil.example>"],
], ids=["dmarc-pass-for-another-domain", "two-from-headers"])
def test_a_forged_victim_address_is_not_acknowledged(make_world: Callable[..., World], extra: list[str]) -> None:
    w = make_world(replies=TRUSTED)
    w.deliver(with_headers(forward("203.0.113.45", "victim", OWNER), *extra))
    w.run()
    [ticket] = w.tickets()
    assert w.smtp.messages == [] and w.outbox() == []
    assert "no_reply" in [e.kind for e in w.events(ticket)]


# -- caps count people, not spellings -----------------------------------------------------

def test_the_daily_cap_counts_a_person_not_the_spellings_of_their_address(
        make_world: Callable[..., World]) -> None:
    w = make_world(replies={"per_recipient_daily": 3})
    spellings = ["dana@mailops.example", "DANA@mailops.example", "Dana@MAILOPS.example", "dana+1@mailops.example",
                 "dana+2@mailops.example", "dAnA+x@mailops.example"]
    for n, who in enumerate(spellings):
        w.deliver(forward(f"203.0.113.{n + 10}", f"cap-{n}", who))
    w.run()
    assert len(w.tickets()) == 6
    assert len(w.smtp.wait_for(3)) == 3
    w.desk.flush()
    assert len(w.smtp.messages) == 3
    assert all(r.rcpt_person == "dana@mailops.example" for r in w.outbox())


# -- our own mail, returned -----------------------------------------------------------------

def test_a_fake_bounce_naming_a_ticket_in_its_body_marks_nothing(make_world: Callable[..., World]) -> None:
    w = make_world()
    ticket = one_ticket(w)
    w.smtp.wait_for(1)
    fake = mail("From: Mail Delivery <mailer-daemon@evil.example>", "Undelivered Mail", "Auto-Submitted: auto-replied",
                body=f"X-Mailbot-Ticket: {ticket.ref}\r\nTo: {OWNER}\r\nMessage-ID: <nothing@evil.example>\r\n")
    w.deliver(fake)
    w.run()
    [ack] = w.outbox()
    assert ack.state == "sent"
    assert "mail_bounced" not in [e.kind for e in w.events(ticket)]


# -- what a person reads in a terminal ------------------------------------------------------

HOSTILE_NAME = "\x1b]2;owned\x07\x1b[2J\x9b31m\u202eAnn"


def test_terminal_escapes_from_mail_never_reach_the_staff_terminal(
        make_world: Callable[..., World], tmp_path: Any, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    w = make_world(desk=DESK)
    raw = forward("203.0.113.45", "esc", OWNER).replace(
        b"From: Dana Ops <dana.ops@mailops.example>", f'From: "{HOSTILE_NAME}" <{OWNER}>'.encode(),
    ).replace(b"Subject: Fwd: Undelivered", f"Subject: Fwd:{HOSTILE_NAME} Undelivered".encode())
    w.deliver(raw)
    w.deliver(mail(f"From: {HOSTILE_NAME}, x@y.example", "escape", mid="esc-2@anywhere.example"))
    w.run()
    assert len(w.tickets()) == 2
    config = imap_toml(tmp_path, dovecot, smtp_server, database_url, desk=DESK)
    env = {"MAILBOT_MAILBOX_PASSWORD": dovecot.password}
    outputs = {
        "tickets": mailbot_cli("-c", str(config), "tickets", env=env),
        "show": mailbot_cli("-c", str(config), "show", "DL-000001", env=env),
        "show2": mailbot_cli("-c", str(config), "show", "DL-000002", env=env),
    }
    for name, out in outputs.items():
        assert out.returncode == 0, (name, out.stderr)
        for bad in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert bad not in out.stdout + out.stderr, (name, bad)
    assert "\\x1b]2;owned" in outputs["show2"].stdout  # shown escaped: staff see something was there
    _, text, _ = w.desk.render_digest()
    assert not any(c in text for c in ("\x1b", "\x07", "\x9b", "\u202e"))
    with Session(w.desk.engine) as s:
        assert s.get(Ticket, 2) is not None


def test_the_digest_lists_the_mail_that_changed_nothing(make_world: Callable[..., World]) -> None:
    # fail closed, and tell a person: forged staff mail, a stranger citing a ticket, a note on a closed one
    w = make_world(desk=DESK)
    ticket = one_ticket(w)
    w.deliver(staff_answer())
    w.deliver(mail(f"From: {STRANGER}", f"Re: [{ticket.ref}] mine now", mid="cite-1@evil.example"))
    w.run()
    _, text, html = w.desk.render_digest()
    section = " ".join(text.split("TO LOOK AT: MAIL THAT CHANGED NOTHING (2)")[1].split("COULD NOT BE")[0].split())
    assert f"{ticket.ref}" in section and "ann@example.org" in section and STRANGER in section
    assert "not counted as an answer" in section and "cited by someone who is not its sender" in section
    assert "To look at: mail that changed nothing (2)" in html
