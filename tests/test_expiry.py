"""Requests waiting for the sender's full notice end (mailbot/desk/expiry.py): closed after
`desk.needs_info_days` without a word from their senders, counted in the digest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from app import World, mailbot_cli, sample

from mailbot.config import ConfigError, parse

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TOM = "tom@tailspin.example"
STAFF = {"desk": {"staff": ["support@example.org"]}}


def words(ref: str, n: int, sender: str = TOM, body: str = "Did you get my mail? Still blocked.") -> bytes:
    return (f"From: <{sender}>\r\nTo: delist@example.org\r\nSubject: Re: [{ref}] Please unblock us!!\r\n"
            f"Message-ID: <words-{n}@tailspin.example>\r\n\r\n{body}\r\n").encode()


def test_a_request_nobody_completes_is_closed_after_seven_days(make_world: Any) -> None:
    w: World = make_world(**STAFF)
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(sample("04-no-code.eml"))
        w.deliver(sample("01-banned-sender-attached.eml"))  # open, with a clock: never expires
        w.run()
        waiting, open_ = w.tickets()
        assert (waiting.state, open_.state) == ("needs_info", "open")

        clock.shift(timedelta(days=7) - timedelta(minutes=1))
        assert w.desk.sweep().expired == []
        clock.shift(timedelta(minutes=1))
        assert w.desk.sweep().expired == [waiting.ref]
        assert w.desk.sweep().expired == []  # once

        closed, still_open = w.tickets()
        assert (closed.state, still_open.state) == ("closed", "open")
        [change] = [e for e in w.events(closed) if e.kind == "state"]
        assert (change.from_state, change.to_state) == ("needs_info", "closed")
        assert change.actor == "mailbot (no reply)" and "7 days" in (change.detail or "")

        assert w.desk.send_digest("2026-11-30T08:00")
        w.desk.flush()
    [digest] = [m for m in w.smtp.messages if m.rcpt_tos == ["support@example.org"]
                and "igest" in str(m.message["Subject"])]
    text = " ".join(digest.message.get_body(("plain",)).get_content().split())
    assert "Closed since the last digest, no reply from the sender in 7 days: 1" in text


def test_a_word_from_the_sender_keeps_the_request_open(make_world: Any) -> None:
    w: World = make_world()
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(sample("04-no-code.eml"))
        w.run()
        [ticket] = w.tickets()
        clock.shift(timedelta(days=5))
        w.deliver(words(ticket.ref, 1))  # no code yet, but they are still at it
        w.run()
        clock.shift(timedelta(days=3))
        assert w.desk.sweep().expired == []
        clock.shift(timedelta(days=4))
        assert w.desk.sweep().expired == [ticket.ref]


def test_a_stranger_citing_the_ticket_does_not_keep_it_alive(make_world: Any) -> None:
    # Writing "[DL-000001]" is anyone's to do; only the ticket's senders speak for it.
    w: World = make_world()
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(sample("04-no-code.eml"))
        w.run()
        [ticket] = w.tickets()
        clock.shift(timedelta(days=5))
        w.deliver(words(ticket.ref, 2, sender="mallory@elsewhere.example"))
        w.run()
        clock.shift(timedelta(days=2))
        assert ticket.ref in w.desk.sweep().expired


def test_the_days_are_configurable_and_checked(make_world: Any) -> None:
    w: World = make_world(desk={"needs_info_days": 2})
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(sample("04-no-code.eml"))
        w.run()
        clock.shift(timedelta(days=2))
        assert w.desk.sweep().expired == ["DL-000001"]
    with pytest.raises(ConfigError, match="needs_info_days"):
        parse({"desk": {"needs_info_days": 0}})


def test_the_sweep_command_says_what_it_closed(cli_desk: Any) -> None:
    c = cli_desk()
    with time_machine.travel(datetime.now(UTC) - timedelta(days=8), tick=False):
        c.world.deliver(sample("04-no-code.eml"))
        c.world.run()
    r = mailbot_cli("-c", str(c.path), "sweep", env=c.env())
    assert r.returncode == 0, r.stderr
    assert "closed unanswered 1 DL-000001" in r.stdout
