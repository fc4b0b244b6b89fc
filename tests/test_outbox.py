"""The outbox: every mail a row first; temporary failures retried with
backoff, permanent ones shown on the ticket; one delivery per row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from app import World, sample
from servers import DROP

from mailbot.outgoing.transports import MaildirTransport

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_451_twice_then_250_delivers_once_respecting_the_backoff(world: World) -> None:
    world.smtp.data_responses.extend(["451 4.3.0 try later", "451 4.3.0 try later"])
    with time_machine.travel(T0, tick=False) as clock:
        world.deliver(sample("01-banned-sender-attached.eml"))
        _, flushed = world.run()
        assert (flushed.sent, flushed.retried) == (0, 1)
        [row] = world.outbox()
        assert row.state == "queued" and row.next_attempt_at == T0 + timedelta(seconds=60)

        assert world.desk.flush().retried == 0  # not due yet: nothing is tried
        clock.shift(61)
        assert world.desk.flush().retried == 1
        [row] = world.outbox()
        assert row.next_attempt_at == T0 + timedelta(seconds=61 + 120)
        clock.shift(119)
        assert world.desk.flush().sent == 0
        clock.shift(2)
        assert world.desk.flush().sent == 1

    assert len(world.smtp.attempts) == 3 and len(world.smtp.messages) == 1
    [row] = world.outbox()
    assert row.state == "sent" and row.attempts == 3
    assert world.smtp.messages[0].message["Message-ID"] == row.message_id


def test_550_on_rcpt_is_permanent_and_visible_on_the_ticket(world: World) -> None:
    world.smtp.rcpt_responses.append("550 5.1.1 no such user")
    world.deliver(sample("01-banned-sender-attached.eml"))
    _, flushed = world.run()

    assert flushed.failed == 1 and world.smtp.messages == []
    [row] = world.outbox()
    assert row.state == "failed" and "550 5.1.1 no such user" in (row.last_error or "")
    [ticket] = world.tickets()
    assert ticket.acked_at is None
    failed = [e for e in world.events(ticket) if e.kind == "mail_failed"]
    assert failed and "550" in (failed[0].detail or "")
    assert world.desk.flush().failed == 0  # never retried


def test_a_connection_dropped_after_data_is_retried_with_the_same_message_id(world: World) -> None:
    world.smtp.data_responses.append(DROP)
    with time_machine.travel(T0, tick=False) as clock:
        world.deliver(sample("01-banned-sender-attached.eml"))
        _, flushed = world.run()
        assert flushed.retried == 1
        clock.shift(61)
        assert world.desk.flush().sent == 1
    first, second = world.smtp.attempts
    assert first.reply == DROP
    assert first.message["Message-ID"] == second.message["Message-ID"]


def test_an_unreachable_smtp_server_holds_the_mail_without_counting_an_attempt(make_world) -> None:  # type: ignore[no-untyped-def]
    from servers import free_port

    w = make_world(outgoing={"port": free_port()})
    w.deliver(sample("01-banned-sender-attached.eml"))
    _, flushed = w.run()
    assert (flushed.sent, flushed.retried, flushed.failed, flushed.held) == (0, 0, 0, 1)
    assert "cannot connect: connection refused" in (flushed.fault or "")
    [row] = w.outbox()
    assert (row.state, row.attempts, row.last_error) == ("queued", 0, None)


def test_smtp_auth_logs_in_with_the_configured_user(make_world) -> None:  # type: ignore[no-untyped-def]
    w = make_world(outgoing={"user": "mailbot", "password": "smtp-test-password"})
    w.deliver(sample("01-banned-sender-attached.eml"))
    w.run()
    assert w.smtp.wait_for(1)[0].auth_login == "mailbot"


def test_maildir_transport_writes_the_exact_bytes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    t = MaildirTransport(tmp_path / "out")
    t.send("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nbody\r\n")
    [f] = list((tmp_path / "out" / "new").iterdir())
    assert f.read_bytes() == b"Subject: x\r\n\r\nbody\r\n"
