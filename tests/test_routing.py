"""The right answer for every rejection a sender forwards (issue #15): whose block it is, what it
is, and where to go. Each test delivers a forward to the real Dovecot, runs the desk, and reads
the ticket row and the reply that reached the SMTP server.

The rejection lines are public texts (the sources are named in tests/test_classify.py, whose
samples these are); the forwards are built in the corpus's styles by tests/forwards.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from app import World
from forwards import fwd_attach, ndr, pasted

from mailbot.config import ConfigError, parse

ERIK = "erik@sender.example"  # the forwarder of tests/forwards.py

SPAMHAUS_ZEN = ("554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using zen.spamhaus.org; "
                "https://www.spamhaus.org/query/ip/203.0.113.7")
GMAIL_UNKNOWN = ("550-5.1.1 The email account that you tried to reach does not exist. Please try double-checking "
                 "the recipient's email address for typos or unnecessary spaces. Learn more at "
                 "https://support.google.com/mail/?p=NoSuchUser a1si1234567qkb.1 - gsmtp")
CONSUMER_S3150 = ("550 5.7.1 Unfortunately, messages from [203.0.113.7] weren't sent. Please contact your Internet "
                  "service provider since part of their network is on our block list (S3150). You can also refer "
                  "your provider to http://mail.live.com/mail/troubleshooting.aspx#errors.")
BANNED_511 = ("550 5.7.511 Access denied, banned sender[203.0.113.7]. To request removal from this list please "
              "forward this message to delist@messaging.microsoft.com. For more information please go to "
              "https://go.microsoft.com/fwlink/?LinkId=526653.")


def one_reply(w: World) -> tuple[Any, str]:
    [reply] = w.smtp.wait_for(1)
    assert reply.rcpt_tos == [ERIK]
    return reply, " ".join(reply.message.get_body(("plain",)).get_content().split())


def test_a_public_blocklist_rejection_is_answered_with_the_list_and_its_removal_page(
        make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(fwd_attach(ndr("postfix", "bob@example.com", "mx.example.com", "198.51.100.25", SPAMHAUS_ZEN)))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.kind, t.issuer, t.status, t.ip) == ("not_ours", "ip_block", "spamhaus", "5.7.1", "203.0.113.7")
    assert t.due_at is None  # nothing for staff: no clock, never escalated
    reply, body = one_reply(w)
    assert "Spamhaus" in reply.message["Subject"] and "not ours" in reply.message["Subject"]
    assert "https://check.spamhaus.org/" in body and "203.0.113.7" in body
    assert "We need the full rejection notice" not in body


def test_an_unknown_recipient_is_explained_not_asked_about(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(fwd_attach(ndr("postfix", "bob@gmail.com", "gmail-smtp-in.l.google.com", "198.51.100.26",
                             GMAIL_UNKNOWN)))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.kind, t.issuer, t.status) == ("not_a_block", "recipient_unknown", "gmail", "5.1.1")
    reply, body = one_reply(w)
    assert reply.message["Subject"].endswith("Your mail was not blocked: what the rejection means")
    assert "The recipient address does not exist" in body


def test_an_outlook_com_consumer_block_goes_to_its_own_support(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(fwd_attach(ndr("exim", "bob@hotmail.com", "hotmail-com.olc.protection.outlook.com", "198.51.100.27",
                             CONSUMER_S3150)))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.issuer) == ("not_ours", "outlook_consumer")
    _reply, body = one_reply(w)
    assert "https://olcsupport.office.com/" in body


def test_a_pasted_fragment_without_its_code_opens_a_ticket_and_says_what_was_inferred(
        make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(pasted("Hello, our mail bounces with: Access denied, banned sender[203.0.113.7]. Please help.\n"))
    w.run()
    [t] = w.tickets()
    # the family is inferred, never written as a code
    assert (t.state, t.status, t.reply_code, t.inferred, t.ip) == ("open", None, None, "5.7.511", "203.0.113.7")
    assert t.due_at is not None
    _reply, body = one_reply(w)
    assert "Your mail had no rejection code" in body and "5.7.511" in body


def test_the_self_service_wording_alone_sends_the_sender_to_the_portal(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(pasted("Hi, our mails bounce with: Access denied, banned sending IP [203.0.113.8]\n"))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.status, t.inferred, t.ip) == ("redirected", None, "5.7.606-5.7.649", "203.0.113.8")
    _reply, body = one_reply(w)
    assert "https://sender.office.com/" in body and "Your mail had no rejection code" in body
    assert "()" not in body  # no empty code in parentheses


def test_our_own_block_without_an_ip_still_asks_for_the_ip(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(pasted("Hallo, wir bekommen: Access denied, traffic not accepted from this IP. Was tun?\n"))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.issuer, t.inferred) == ("needs_info", "microsoft", "5.7.708")
    assert "IP address" in (t.reason or "")


def test_nothing_recognisable_still_asks_for_the_full_notice(make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(pasted("Please unblock us, we are not spammers!\n"))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.kind, t.issuer) == ("needs_info", None, None)


def test_a_real_block_forwarded_later_turns_a_not_ours_ticket_into_a_request(
        make_world: Callable[..., World]) -> None:
    w = make_world()
    w.deliver(fwd_attach(ndr("postfix", "bob@example.com", "mx.example.com", "198.51.100.25", SPAMHAUS_ZEN)))
    w.run()
    [t] = w.tickets()
    ours = fwd_attach(ndr("exchange", "bob@contoso.com", "contoso-com.mail.protection.outlook.com", "198.51.100.9",
                          BANNED_511))
    ours = ours.replace(b"Subject: Fwd: Undelivered Mail Returned to Sender",
                        f"Subject: Re: [{t.ref}] it is yours after all".encode())
    ours = ours.replace(b"Message-ID: <fwd-", b"Message-ID: <second-")
    w.deliver(ours)
    w.run()
    [t] = w.tickets()
    assert (t.state, t.status, t.issuer) == ("open", "5.7.511", "microsoft")
    assert t.due_at is not None
    _not_ours, ack = w.smtp.wait_for(2)
    assert "Delisting request received" in ack.message["Subject"]


def test_operators_route_by_kind_and_issuer_and_a_rule_must_say_what_it_matches(
        make_world: Callable[..., World]) -> None:
    # a desk that wants a person to see every Spamhaus listing
    w = make_world(policy={"rules": [{"name": "spamhaus_to_staff", "issuers": ["spamhaus"], "action": "ticket",
                                      "sla": True}]})
    w.deliver(fwd_attach(ndr("postfix", "bob@example.com", "mx.example.com", "198.51.100.25", SPAMHAUS_ZEN)))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.rule) == ("open", "spamhaus_to_staff")
    with pytest.raises(ConfigError, match="matches everything"):
        parse({"policy": {"rules": [{"name": "all", "action": "ticket"}]}})


def test_show_says_what_was_inferred_and_whose_block_it_is(cli_desk: Callable[..., Any]) -> None:
    from app import mailbot_cli

    c = cli_desk()
    c.world.deliver(pasted("Hello, our mail bounces with: Access denied, banned sender[203.0.113.7]. Please help.\n"))
    c.world.run()
    r = mailbot_cli("-c", str(c.path), "show", "DL-000001", env=c.env())
    assert r.returncode == 0, r.stderr
    assert "no code; inferred 5.7.511 from its words" in r.stdout
    assert "what:     ip_block, issued by microsoft  (rule banned_sender)" in r.stdout
    j = mailbot_cli("-c", str(c.path), "show", "DL-000001", "--json", env=c.env())
    assert '"inferred": "5.7.511"' in j.stdout and '"status": null' in j.stdout


def test_an_operator_s_own_block_list_is_named_with_its_removal_page(
        make_world: Callable[..., World], tmp_path: Any) -> None:
    issuers = tmp_path / "issuers.toml"
    issuers.write_text('[[issuer]]\nname = "examplebl"\nlabel = "ExampleBL"\ncategory = "blocklist"\n'
                       'removal = "https://examplebl.example/remove"\nmarks = ["examplebl.example"]\n')
    w = make_world(extraction={"issuers_file": str(issuers)})
    line = "554 5.7.1 Service unavailable; Client host [203.0.113.7] blocked using bl.examplebl.example"
    w.deliver(fwd_attach(ndr("postfix", "bob@example.com", "mx.example.com", "198.51.100.25", line)))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.issuer) == ("not_ours", "examplebl")
    _reply, body = one_reply(w)
    assert "ExampleBL" in body and "https://examplebl.example/remove" in body


def test_a_broken_issuers_file_is_named_when_the_desk_starts(make_world: Callable[..., World], tmp_path: Any) -> None:
    from mailbot.errors import ConfigurationError

    bad = tmp_path / "issuers.toml"
    bad.write_text('[[issuer]]\nname = "x"\ncolour = "red"\n')
    with pytest.raises(ConfigurationError, match=r"extraction\.issuers_file: .*colour"):
        make_world(extraction={"issuers_file": str(bad)})


def test_a_masked_ip_is_named_as_masked_never_read_as_an_ip(make_world: Callable[..., World]) -> None:
    from mailbot.extraction import extract

    ex = extract(pasted("Our mail bounces: Access denied, banned sending IP [x.x.x.x]\n"))
    assert ex.ips == () and ex.redacted == ("x.x.x.x",) and ex.as_json()["redacted"] == ["x.x.x.x"]
    assert extract(pasted("550 5.7.511 Access denied, banned sender[203.0.113.7]\n")).redacted == ()
    w = make_world()
    w.deliver(pasted("Our mail bounces: Access denied, banned sending IP [x.x.x.x]. Please delist.\n"))
    w.run()
    [t] = w.tickets()
    assert (t.state, t.ip, t.inferred) == ("needs_info", None, "5.7.606-5.7.649")
    _reply, body = one_reply(w)
    assert "masked as x.x.x.x" in body
