"""Automatic replies go only to a verified human sender, and never in a flood.

The decision reads the outer headers only. Daily caps per recipient and per
domain and an hourly circuit breaker bound what mailbot sends; where the
mailbox server stamps Authentication-Results, only the topmost header from a
trusted server counts, and only a sender passing DMARC (or aligned SPF/DKIM)
gets mail. Everyone still gets a ticket.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from app import World, forward

from mailbot.config import RepliesConfig
from mailbot.desk.replyguard import RecentReplies, ReplyVerdict, capped, parse_auth_results, verdict
from mailbot.source import inbound

TRUSTED = {"authserv_ids": ["mx.example.org"]}
FROM = "ann@one.example"


def head(*headers: str, sender: str = FROM) -> inbound.Inbound:
    raw = "".join(f"{h}\r\n" for h in headers) + f"From: Ann <{sender}>\r\nSubject: hi\r\n\r\nbody\r\n"
    return inbound.parse(raw.encode())


def judge(*headers: str, **replies: object) -> ReplyVerdict:
    return verdict(head(*headers), frozenset({"delist@example.org"}), RepliesConfig(**replies))  # type: ignore[arg-type]


# -- the rules, one line each ---------------------------------------------------------

@pytest.mark.parametrize(("headers", "reason"), [
    (["X-Auto-Response-Suppress: OOF, AutoReply"], "X-Auto-Response-Suppress"),
    (["X-Auto-Response-Suppress: All"], "X-Auto-Response-Suppress"),
    (["Auto-Submitted: auto-replied"], "Auto-Submitted"),
    (["Precedence: junk"], "Precedence"),
    (["List-Unsubscribe: <mailto:u@one.example>"], "List-Unsubscribe"),
    (["Return-Path: <>"], "null return path"),
])
def test_automatic_mail_is_not_answered(headers: list[str], reason: str) -> None:
    v = judge(*headers)
    assert not v.allowed and reason in v.reason and v.verified


@pytest.mark.parametrize(("headers", "sender", "reason"), [
    (["Precedence: auto_reply"], FROM, "Precedence: auto_reply"),
    (["Mailing-List: contact announce-help@one.example; run by ezmlm"], FROM, "Mailing-List"),
    (["List-Post: <mailto:announce@one.example>"], FROM, "List-Post"),
    (["MIME-Version: 1.0", 'Content-Type: multipart/report; report-type=delivery-status; boundary="b"'], FROM,
     "multipart/report"),
    (["Feedback-Type: abuse"], FROM, "Feedback-Type"),
    ([], "mailer-daemon+x@one.example", "system address"),
    ([], "MicrosoftExchange329e71ec88ae4615bbc36ab6ce41109e@one.example", "system address"),
    ([], "bounces+1234-abcd=one.example@esp.example", "system address"),
    (["Return-Path: < >"], FROM, "null return path"),
    (["Return-Path: <(nobody)>"], FROM, "null return path"),
    (["Auto-Submitted: no", "Auto-Submitted: auto-replied"], FROM, "Auto-Submitted: auto-replied"),
    (["Auto-Submitted:"], FROM, "Auto-Submitted"),
], ids=["precedence-auto-reply", "ezmlm", "list-post", "outer-report", "arf", "tagged-mailer-daemon",
        "exchange-system", "verp-bounces", "return-path-space", "return-path-comment", "second-auto-submitted",
        "empty-auto-submitted"])
def test_every_kind_of_automatic_mail_is_recognised(headers: list[str], sender: str, reason: str) -> None:
    v = verdict(head(*headers, sender=sender), frozenset({"delist@example.org"}), RepliesConfig())
    assert not v.allowed and reason in v.reason


def test_automatic_mail_gets_a_ticket_but_no_reply_through_the_daemon(world: World) -> None:
    for n, extra in enumerate(["Precedence: auto_reply", "Mailing-List: contact x-help@one.example; run by ezmlm",
                               "Auto-Submitted: no\r\nAuto-Submitted: auto-replied", "Return-Path: < >"]):
        world.deliver(with_headers(forward(f"203.0.113.{n + 1}", f"auto-{n}", FROM), extra))
    world.deliver(forward("203.0.113.9", "human", "human@one.example"))
    world.run()
    assert len(world.tickets()) == 5
    assert [m.rcpt_tos for m in world.smtp.wait_for(1)] == [["human@one.example"]]
    world.desk.flush()
    assert len(world.smtp.messages) == 1


def test_a_person_with_a_plain_auto_submitted_no_is_answered() -> None:
    assert judge("Auto-Submitted: no").allowed


def test_x_auto_response_suppress_for_other_kinds_still_allows_an_acknowledgement() -> None:
    assert judge("X-Auto-Response-Suppress: DR, NDR, RN, NRN").allowed


@pytest.mark.parametrize("sender", ["owner-list@one.example", "list-request@one.example", "noreply@one.example",
                                    "mailer-daemon@one.example", "postmaster@one.example", "delist@example.org"])
def test_system_and_own_addresses_are_not_answered(sender: str) -> None:
    assert not verdict(head(sender=sender), frozenset({"delist@example.org"}), RepliesConfig()).allowed


AR_PASS = ("Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=one.example; "
           "dmarc=pass header.from=one.example")
AR_FAIL = ("Authentication-Results: mx.example.org; spf=fail smtp.mailfrom=one.example; "
           "dmarc=fail header.from=one.example")


@pytest.mark.parametrize(("headers", "config", "allowed"), [
    ([], {}, True),  # no trusted server configured: no check
    ([AR_FAIL], {}, True),
    ([AR_PASS], TRUSTED, True),
    ([AR_FAIL], TRUSTED, False),
    ([], TRUSTED, False),  # our server always stamps: a message without its header is not verified
    # a forged pass below the genuine failing header, or from a server we do not trust, changes nothing
    ([AR_FAIL, AR_PASS], TRUSTED, False),
    ([AR_PASS.replace("mx.example.org", "mx.attacker.example"), AR_FAIL], TRUSTED, False),
    ([AR_PASS.replace("mx.example.org", "mx.attacker.example")], TRUSTED, False),
    # the topmost trusted one decides, whatever lies above it from elsewhere
    ([AR_FAIL.replace("mx.example.org", "relay.elsewhere.example"), AR_PASS], TRUSTED, True),
    # no DMARC verdict: SPF or DKIM aligned with the From domain is enough, unaligned is not
    (["Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=bounces.one.example; dmarc=none"],
     TRUSTED, True),
    (["Authentication-Results: mx.example.org; dkim=pass header.d=one.example header.s=s1"], TRUSTED, True),
    (["Authentication-Results: mx.example.org; dkim=pass header.d=esp.example; spf=pass smtp.mailfrom=esp.example"],
     TRUSTED, False),
    (["Authentication-Results: mx.example.org; dkim=pass header.d=one.example; dmarc=fail"], TRUSTED, False),
    # comments may hold anything, even what looks like a result
    (["Authentication-Results: mx.example.org (dmarc=pass; spf=pass); dmarc=fail (p=reject; dmarc=pass)"],
     TRUSTED, False),
    (["Authentication-Results: mx.example.org; none"], TRUSTED, False),
    # Exchange Online writes no authserv-id: trust_topmost
    (["Authentication-Results: spf=pass (sender IP is 203.0.113.1) smtp.mailfrom=one.example; dkim=none "
      "(message not signed) header.d=none;dmarc=pass action=none header.from=one.example;compauth=pass reason=100"],
     {"trust_topmost": True}, True),
    (["Authentication-Results: spf=fail (sender IP is 203.0.113.1) smtp.mailfrom=one.example; "
      "dmarc=fail action=oreject header.from=one.example", AR_PASS], {"trust_topmost": True}, False),
])
def test_backscatter_guard(headers: list[str], config: dict[str, object], allowed: bool) -> None:
    v = judge(*headers, **config)
    assert v.allowed is allowed
    assert v.verified is allowed
    if not allowed:
        assert v.reason.startswith("sender not verified")


def test_authentication_results_are_read_past_comments_and_versions() -> None:
    ar = parse_auth_results('mx.example.org 1; dkim/1=pass (good; sig) header.d="one.example" header.s=k;'
                            " spf=softfail smtp.mailfrom=x@one.example")
    assert ar is not None and ar.authserv_id == "mx.example.org"
    assert [(r.method, r.result) for r in ar.results] == [("dkim", "pass"), ("spf", "softfail")]
    assert ar.results[0].props == {"header.d": "one.example", "header.s": "k"}


@pytest.mark.parametrize(("recent", "reason"), [
    (RecentReplies(to_recipient=10), "automatic replies to ann@one.example in 24 hours"),
    (RecentReplies(to_domain=100), "automatic replies to one.example in 24 hours"),
    (RecentReplies(last_hour=500), "circuit breaker"),
])
def test_caps(recent: RecentReplies, reason: str) -> None:
    config = RepliesConfig()
    ok = judge()
    assert capped(ok, RecentReplies(9, 99, 499), config) == ok
    v = capped(ok, recent, config)
    assert not v.allowed and v.recipient is None and reason in v.reason and v.verified


# -- on the real servers ----------------------------------------------------------------

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def deliver_from(world: World, senders: list[str], first_ip: int = 1) -> None:
    for i, sender in enumerate(senders):
        world.deliver(forward(f"203.0.113.{first_ip + i}", f"cap-{first_ip + i}", sender))


def test_per_recipient_daily_cap_then_the_next_day_replies_again(make_world) -> None:  # type: ignore[no-untyped-def]
    w: World = make_world(replies={"per_recipient_daily": 2})
    with time_machine.travel(T0, tick=False) as clock:
        deliver_from(w, [FROM, FROM, FROM, "bob@two.example"])
        w.run()
        assert len(w.tickets()) == 4  # everyone gets a ticket
        assert sorted(r.rcpt_tos[0] for r in w.smtp.messages) == [FROM, FROM, "bob@two.example"]
        capped_ticket = w.tickets()[2]
        assert capped_ticket.acked_at is None
        [event] = [e for e in w.events(capped_ticket) if e.kind == "no_reply"]
        assert "2 automatic replies to ann@one.example in 24 hours (replies.per_recipient_daily = 2)" in (
            event.detail or "")

        clock.shift(timedelta(hours=24, seconds=1))
        deliver_from(w, [FROM], first_ip=50)
        w.run()
        assert [r.rcpt_tos[0] for r in w.smtp.messages].count(FROM) == 3


def test_per_domain_daily_cap(make_world) -> None:  # type: ignore[no-untyped-def]
    w: World = make_world(replies={"per_domain_daily": 2})
    deliver_from(w, ["a@one.example", "b@ONE.example", "c@one.example", "d@two.example"])
    w.run()
    assert sorted(r.rcpt_tos[0] for r in w.smtp.messages) == ["a@one.example", "b@one.example", "d@two.example"]


def test_the_circuit_breaker_stops_all_replies_after_a_flood(make_world) -> None:  # type: ignore[no-untyped-def]
    w: World = make_world(replies={"breaker_per_hour": 3})
    deliver_from(w, [f"s{i}@d{i}.example" for i in range(5)])
    w.run()
    assert len(w.tickets()) == 5 and len(w.smtp.messages) == 3
    assert all("circuit breaker" in (e.detail or "") for t in w.tickets()[3:] for e in w.events(t)
               if e.kind == "no_reply")


def with_headers(raw: bytes, *headers: str) -> bytes:
    return "".join(f"{h}\r\n" for h in headers).encode() + raw


def test_a_verified_sender_gets_the_acknowledgement(make_world) -> None:  # type: ignore[no-untyped-def]
    w: World = make_world(replies=TRUSTED)
    w.deliver(with_headers(forward("203.0.113.5", "v-1", FROM), AR_PASS))
    w.run()
    [ticket] = w.tickets()
    assert ticket.verified and w.smtp.wait_for(1)[0].rcpt_tos == [FROM]


def test_a_forged_authentication_results_below_a_genuine_failing_one_gets_a_ticket_but_no_mail(
        make_world) -> None:  # type: ignore[no-untyped-def]
    w: World = make_world(replies=TRUSTED)
    w.deliver(with_headers(forward("203.0.113.5", "forged-1", FROM), AR_FAIL, AR_PASS))
    w.run()
    [ticket] = w.tickets()
    assert (ticket.state, ticket.verified) == ("open", False)
    assert w.smtp.messages == [] and w.outbox() == []
    [event] = [e for e in w.events(ticket) if e.kind == "no_reply"]
    assert "sender not verified: DMARC fail (mx.example.org)" in (event.detail or "")


# -- a bounce of our own acknowledgement ---------------------------------------------------

def bounce_of(ack: bytes, *, keep_message_id: bool = True) -> bytes:
    """The delivery report a receiving server sends back for `ack`, with the ack's headers inside."""
    returned = ack.split(b"\r\n\r\n", 1)[0] + b"\r\n"
    if not keep_message_id:
        returned = b"\r\n".join(ln for ln in returned.split(b"\r\n") if not ln.lower().startswith(b"message-id:"))
    return (b"Return-Path: <>\r\nFrom: Mail Delivery System <MAILER-DAEMON@mx.one.example>\r\n"
            b"To: delist@example.org\r\nSubject: Undelivered Mail Returned to Sender\r\n"
            b"Message-ID: <bounce-1@mx.one.example>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n"
            b"--r\r\nContent-Type: text/plain\r\n\r\n<ann@one.example>: host mx.one.example[192.0.2.25] said:\r\n"
            b"    550 5.7.511 Access denied, banned sender[192.0.2.77] (in reply to RCPT TO command)\r\n"
            b"--r\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.one.example\r\n\r\n"
            b"Final-Recipient: rfc822; ann@one.example\r\nAction: failed\r\nStatus: 5.7.511\r\n"
            b"Diagnostic-Code: smtp; 550 5.7.511 Access denied, banned sender[192.0.2.77]\r\n"
            b"--r\r\nContent-Type: text/rfc822-headers\r\n\r\n" + returned + b"--r--\r\n")


def test_a_bounce_of_our_acknowledgement_is_attached_to_its_ticket_and_never_answered(world: World) -> None:
    world.deliver(forward("203.0.113.5", "b-1", FROM))
    world.run()
    [ack] = world.smtp.wait_for(1)

    world.deliver(bounce_of(ack.data))
    _, flushed = world.run()

    [ticket] = world.tickets()  # no ticket for the IP in the report
    _, report = world.messages()
    assert (report.state, report.ticket_id) == ("processed", ticket.id)
    assert report.outcome == f"returned our ack {ack.message['Message-ID']} (marked bounced)"
    [row] = world.outbox()
    assert (row.state, row.message_id) == ("bounced", ack.message["Message-ID"])
    assert [e.kind for e in world.events(ticket)].count("mail_bounced") == 1
    assert len(world.smtp.attempts) == 1 and flushed.sent == 0  # never answered
    assert len(world.imap.uids("Processed")) == 2


def test_a_human_reply_to_our_acknowledgement_is_not_a_bounce(world: World) -> None:
    world.deliver(forward("203.0.113.5", "b-1", FROM))
    world.run()
    [ack] = world.smtp.wait_for(1)
    # a person forwards our ack back (its headers inside), asking a question: a follow-up, not a bounce
    world.deliver(f"From: Ann <{FROM}>\r\nTo: delist@example.org\r\nSubject: Re: {ack.message['Subject']}\r\n"
                  f"Message-ID: <q-1@one.example>\r\n\r\nWhen will this be done?\r\n\r\n".encode()
                  + ack.data.split(b"\r\n\r\n", 1)[0])
    world.run()
    [row] = world.outbox()
    assert row.state == "sent"
    assert [e.kind for e in world.events(world.tickets()[0])].count("follow_up") == 1


def test_a_report_without_the_message_id_of_our_mail_marks_nothing(world: World) -> None:
    # the returned headers name the ticket and its recipient, but not the Message-ID we gave the
    # mail: a reference and an address are guessable, so nothing is marked
    world.deliver(forward("203.0.113.5", "b-1", FROM))
    world.run()
    [ack] = world.smtp.wait_for(1)
    world.deliver(bounce_of(ack.data, keep_message_id=False))
    world.run()
    [row] = world.outbox()
    assert row.state == "sent"
    assert "mail_bounced" not in [e.kind for e in world.events(world.tickets()[0])]
