"""Sending beside a long poll (`outgoing.beside`, issue #16): under a backlog, each batch's
replies leave from a process of their own while the next batches are read; a death of that
process, or of the poll, leaves what the outbox promises (every reply, at most the one in flight
twice) and no process behind."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest
from app import CliDesk, World, forward, running

from mailbot.extraction import Extraction


def backlog(w: World, n: int) -> list[str]:
    senders = [f"sender{i}@s{i}.example" for i in range(n)]
    for i, sender in enumerate(senders):
        w.deliver(forward(f"203.0.113.{10 + i}", f"beside-{i}", sender))
    return senders


def sending_processes(parent: int) -> list[int]:
    """Pids of the sending processes started by `parent` (their command line ends with its pid)."""
    return [pid for pid, argv, _ in running("mailbot.outgoing.beside") if argv[-1] == str(parent).encode()]


def pausing_at(w: World, tag: bytes, then: Callable[[], None]) -> None:
    """Run `then` when the poll reads the message holding `tag` (a later batch's)."""
    read = w.desk.processor.extract

    def extract(raw: bytes) -> Extraction:
        if tag in raw:
            then()
        return read(raw)

    w.desk.processor.extract = extract


def test_a_backlogs_first_replies_leave_while_its_later_batches_are_still_read(
        make_world: Callable[..., World]) -> None:
    w = make_world(mailbox={"batch_size": 2})
    senders = backlog(w, 7)
    # the fifth message is in the third batch: by then the first batch's two replies must be at
    # the server (sent after the poll, they would not be, and wait_for would fail)
    arrived: list[int] = []
    pausing_at(w, b"<beside-4@", lambda: arrived.append(len(w.smtp.wait_for(2, timeout=30))))

    polled, flushed = w.run()
    assert arrived and arrived[0] >= 2
    assert polled.process.processed == 7 and flushed.sent == 7 and flushed.fault is None
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(7)) == sorted(senders)
    time.sleep(0.5)
    assert len(w.smtp.messages) == 7  # each once
    assert [o.state for o in w.outbox()] == ["sent"] * 7
    assert sending_processes(os.getpid()) == []  # it ended with the poll


def test_one_batch_is_answered_after_the_poll_without_a_process(make_world: Callable[..., World]) -> None:
    w = make_world()
    senders = backlog(w, 3)
    started: list[list[int]] = []
    pausing_at(w, b"<beside-2@", lambda: started.append(sending_processes(os.getpid())))
    _, flushed = w.run()
    assert started == [[]] and flushed.sent == 3
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(3)) == sorted(senders)


def test_a_sending_process_killed_mid_poll_leaves_its_mail_to_the_flush_after_the_poll(
        make_world: Callable[..., World], caplog: pytest.LogCaptureFixture) -> None:
    w = make_world(mailbox={"batch_size": 2})
    senders = backlog(w, 7)
    killed: list[int] = []

    def kill() -> None:
        w.smtp.wait_for(1, timeout=30)
        for pid in sending_processes(os.getpid()):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    pausing_at(w, b"<beside-4@", kill)
    with caplog.at_level(logging.WARNING, logger="mailbot.outgoing.beside"):
        polled, _ = w.run()
    assert len(killed) == 1 and polled.process.processed == 7
    assert "the sending process stopped (killed by signal 9)" in caplog.text
    # every reply went; only one cut off between its 250 and its commit may have gone twice
    received = Counter(r.rcpt_tos[0] for r in w.smtp.wait_for(7))
    assert set(received) == set(senders) and sum(received.values()) - len(senders) <= 1
    assert [o.state for o in w.outbox()] == ["sent"] * 7


def test_a_poll_killed_while_its_replies_are_sent_leaves_no_sending_process_and_loses_nothing(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk(mailbox={"batch_size": 2})
    w = desk.world
    senders = backlog(w, 9)
    poll = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(desk.path), "poll", "--once"],
                            env={**os.environ, **desk.env()}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        w.smtp.wait_for(1, timeout=60)  # the sending process is at work
        children = sending_processes(poll.pid)
        poll.kill()
    finally:
        poll.wait(30)
    assert len(children) == 1
    deadline = time.monotonic() + 10
    while sending_processes(poll.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sending_processes(poll.pid) == []  # it stopped between two mails once its poll was gone

    again = desk.poll_once()
    assert again.returncode == 0, again.stderr
    assert [m.state for m in w.messages()] == ["processed"] * 9
    received = Counter(r.rcpt_tos[0] for r in w.smtp.wait_for(9))
    assert set(received) == set(senders) and sum(received.values()) - len(senders) <= 1
    assert [o.state for o in w.outbox()] == ["sent"] * 9
