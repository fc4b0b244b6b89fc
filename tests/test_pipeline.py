"""The desk end to end: a forwarded NDR lands in Dovecot, one poll and one
outbox flush later there is a ticket, an acknowledgement at the SMTP server,
and the original sits in the Processed folder. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email.utils import parseaddr

import pytest
from app import World, corpus, sample

S01 = "forwards/found/s01-postfix-511-v4/{}.eml"
FORWARD_STYLES = ["fwd_attach", "outlook_inline", "gmail_inline", "gmail_inline_b64", "apple_inline",
                  "thunderbird_inline", "html_only"]


def sender_of(raw: bytes) -> str:
    return parseaddr(message_from_bytes(raw)["From"])[1]


def with_from(raw: bytes, header: str) -> bytes:
    return re.sub(rb"(?m)^From: .*$", header.encode(), raw, count=1)


@pytest.mark.parametrize("style", FORWARD_STYLES)
def test_a_forwarded_511_opens_a_ticket_and_the_sender_gets_an_acknowledgement(world: World, style: str) -> None:
    raw = corpus(S01.format(style))
    world.deliver(raw)
    world.run()

    [ticket] = world.tickets()
    assert (ticket.state, ticket.reply_code, ticket.status, ticket.ip) == ("open", "550", "5.7.511", "203.0.113.45")
    assert ticket.sender == sender_of(raw)
    assert ticket.due_at is not None and ticket.acked_at is not None
    assert (ticket.due_at - ticket.opened_at).total_seconds() == 48 * 3600

    received = world.smtp.wait_for(1)[0]
    assert received.rcpt_tos == [sender_of(raw)]
    ack = received.message
    assert ack["Subject"].startswith("[DL-000001]")
    assert ack["In-Reply-To"] == f"<4814c9673ed3c6617e19.{style}@forwarder.example>"
    assert ack["Auto-Submitted"] == "auto-replied"
    text = ack.get_body(("plain",)).get_content()
    first_line = text.splitlines()[0]
    assert "DL-000001" in first_line and "We will answer by" in first_line
    assert "550 5.7.511" in text and "203.0.113.45" in text
    assert ack.get_body(("html",)) is not None

    # the original moved to Processed, nothing is left behind, and what we stored is the server's BODY[]
    assert world.imap.uids("INBOX") == []
    [uid] = world.imap.uids("Processed")
    [stored] = world.messages()
    assert stored.raw == world.imap.fetch_raw("Processed", uid)
    assert stored.raw.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")


def test_rfc3464_report_sent_straight_by_the_mail_system_opens_a_ticket_but_gets_no_reply(world: World) -> None:
    world.deliver(corpus("found/s01-postfix-511-v4.eml"))
    world.run()

    [ticket] = world.tickets()
    assert (ticket.state, ticket.status, ticket.ip) == ("open", "5.7.511", "203.0.113.45")
    assert world.smtp.messages == []
    assert any(e.kind == "no_reply" and "Auto-Submitted" in (e.detail or "") for e in world.events(ticket))


def test_portal_codes_get_portal_instructions_and_the_ticket_is_redirected(world: World) -> None:
    world.deliver(corpus("forwards/found/f02-exim-606/fwd_attach.eml"))
    world.run()

    [ticket] = world.tickets()
    assert (ticket.state, ticket.status, ticket.ip, ticket.due_at) == ("redirected", "5.7.606", "67.23.235.203", None)
    mail = world.smtp.wait_for(1)[0].message
    body = mail.get_body(("plain",)).get_content()
    assert "https://sender.office.com/" in body and "67.23.235.203" in body


def test_microsoft_365_ndr_layout_inline_in_outlook(world: World) -> None:
    world.deliver(sample("02-portal-outlook-inline.eml"))
    world.run()

    [ticket] = world.tickets()
    assert (ticket.state, ticket.reply_code, ticket.status, ticket.ip) == (
        "redirected", "550", "5.7.606", "198.51.100.23")


def test_a_forward_without_a_code_asks_for_the_ndr_as_an_attachment(world: World) -> None:
    world.deliver(sample("04-no-code.eml"))
    world.run()

    [ticket] = world.tickets()
    assert ticket.state == "needs_info" and ticket.status is None and ticket.ip is None
    body = world.smtp.wait_for(1)[0].message.get_body(("plain",)).get_content()
    assert "AS AN ATTACHMENT" in body
    assert "the full rejection code" in body and "the IP address named in the rejection line" in body


def test_an_unknown_recipient_is_explained_with_the_code_it_read(world: World) -> None:
    # 5.1.351 is Exchange's unknown recipient: no block, nothing to delist (issue #15)
    world.deliver(corpus("forwards/maildir/bsd/lhost-office365-10/fwd_attach.eml"))
    world.run()

    [ticket] = world.tickets()
    assert (ticket.state, ticket.status, ticket.kind) == ("not_a_block", "5.1.351", "recipient_unknown")
    body = " ".join(world.smtp.wait_for(1)[0].message.get_body(("plain",)).get_content().split())
    assert "5.1.351" in body and "The recipient address does not exist" in body


def test_a_code_no_rule_handles_asks_for_information_and_says_which_code_it_read(make_world) -> None:  # type: ignore[no-untyped-def]
    # a desk with only the procedure's two rules: anything else is asked about, naming what was read
    w = make_world(policy={"rules": [{"name": "banned_sender", "codes": ["5.7.511"], "action": "ticket", "sla": True},
                                     {"name": "self_service", "codes": ["5.7.606-5.7.649"], "action": "redirect"}]})
    w.deliver(corpus("forwards/maildir/bsd/lhost-office365-10/fwd_attach.eml"))
    w.run()

    [ticket] = w.tickets()
    assert (ticket.state, ticket.status) == ("needs_info", "5.1.351")
    body = w.smtp.wait_for(1)[0].message.get_body(("plain",)).get_content()
    assert "5.1.351" in body


def test_a_private_ip_is_not_delistable_and_the_reply_asks_for_the_public_one(make_world) -> None:  # type: ignore[no-untyped-def]
    w = make_world(policy={"allow_ranges": []})  # documentation ranges count as reserved again
    w.deliver(corpus(S01.format("fwd_attach")))
    w.run()

    [ticket] = w.tickets()
    assert (ticket.state, ticket.ip) == ("needs_info", "203.0.113.45")
    body = w.smtp.wait_for(1)[0].message.get_body(("plain",)).get_content()
    assert "203.0.113.45 is a private or reserved address" in " ".join(body.split())  # however it is wrapped


def test_a_second_forward_for_the_same_ip_joins_the_open_ticket_and_is_answered_with_its_reference(
        world: World) -> None:
    world.deliver(sample("01-banned-sender-attached.eml"))
    world.deliver(sample("03-same-ip-gmail-inline.eml"))
    world.run()

    [ticket] = world.tickets()
    assert ticket.ip == "203.0.113.45"
    assert [m.ticket_id for m in world.messages()] == [ticket.id, ticket.id]
    acks = world.smtp.wait_for(2)
    assert sorted(r.rcpt_tos[0] for r in acks) == ["erik.admin@contoso-sender.example",
                                                   "maria.lopez@contoso-sender.example"]
    joined = next(r for r in acks if r.rcpt_tos == ["maria.lopez@contoso-sender.example"]).message
    assert "[DL-000001]" in joined["Subject"]
    assert "joins the request already open" in joined.get_body(("plain",)).get_content()


def test_a_second_poll_does_nothing(world: World) -> None:
    world.deliver(sample("01-banned-sender-attached.eml"))
    world.run()
    polled, flushed = world.run()

    assert (polled.fetch.stored, polled.process.processed, flushed.sent) == (0, 0, 0)
    assert len(world.tickets()) == 1 and len(world.messages()) == 1
    assert len(world.smtp.messages) == 1


def test_an_automatic_reply_gets_a_ticket_but_no_mail(world: World) -> None:
    world.deliver(sample("05-out-of-office.eml"))
    world.run()

    [ticket] = world.tickets()
    assert ticket.state == "needs_info"
    assert world.smtp.messages == [] and world.outbox() == []
    assert world.imap.uids("Processed")


@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-generated", "Precedence: bulk", "List-Id: <announce.example.org>",
    "Return-Path: <>",
])
def test_mail_marked_automatic_on_the_outer_headers_is_never_answered(world: World, header: str) -> None:
    raw = corpus(S01.format("fwd_attach"))
    world.deliver(header.encode() + b"\r\n" + raw)
    world.run()

    assert len(world.tickets()) == 1
    assert world.smtp.messages == []


@pytest.mark.parametrize("sender", ["MAILER-DAEMON@contoso-sender.example", "postmaster@contoso-sender.example",
                                    "delist@example.org"])
def test_system_addresses_and_our_own_are_never_answered(world: World, sender: str) -> None:
    world.deliver(with_from(corpus(S01.format("fwd_attach")), f"From: {sender}"))
    world.run()

    assert len(world.tickets()) == 1
    assert world.smtp.messages == []


def test_the_inner_ndr_being_automatic_does_not_stop_the_acknowledgement(world: World) -> None:
    # the forwarded NDR carries Auto-Submitted and a null sender; only the outer message counts
    world.deliver(sample("01-banned-sender-attached.eml"))
    world.run()
    assert world.smtp.wait_for(1)[0].rcpt_tos == ["erik.admin@contoso-sender.example"]


def test_a_sender_follow_up_with_the_reference_joins_its_ticket(world: World) -> None:
    world.deliver(sample("04-no-code.eml"))
    world.run()
    [ticket] = world.tickets()
    ack = world.smtp.wait_for(1)[0].message

    # The sender answers the needs-info mail with the NDR attached: same ticket, now open.
    follow_up = corpus(S01.format("fwd_attach")).replace(
        b"Subject: Fwd: Undelivered Mail Returned to Sender",
        f"Subject: Re: {ack['Subject']}\r\nIn-Reply-To: {ack['Message-ID']}".encode())
    follow_up = with_from(follow_up, "From: Tom <tom@tailspin.example>")
    world.deliver(follow_up)
    world.run()

    [ticket] = world.tickets()
    assert (ticket.state, ticket.status, ticket.ip) == ("open", "5.7.511", "203.0.113.45")
    assert ticket.due_at is not None
    assert [m.ticket_id for m in world.messages()] == [ticket.id, ticket.id]
    second = world.smtp.wait_for(2)[1].message
    assert second["Subject"].startswith("[DL-000001]")
    kinds = [e.kind for e in world.events(ticket)]
    assert "follow_up" in kinds and "state" in kinds


def test_a_reply_threaded_to_our_mail_without_the_tag_still_joins(world: World) -> None:
    world.deliver(sample("01-banned-sender-attached.eml"))
    world.run()
    ack = world.smtp.wait_for(1)[0].message
    reply = (f"From: Erik Admin <erik.admin@contoso-sender.example>\r\nTo: delist@example.org\r\n"
             f"Subject: thanks\r\nMessage-ID: <thanks-1@contoso-sender.example>\r\n"
             f"In-Reply-To: {ack['Message-ID']}\r\n\r\nThanks, waiting for your answer.\r\n").encode()
    world.deliver(reply)
    world.run()

    [ticket] = world.tickets()
    assert [m.ticket_id for m in world.messages()] == [ticket.id, ticket.id]
    assert len(world.smtp.messages) == 1  # a plain follow-up is not answered again
