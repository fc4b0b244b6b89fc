"""Killed at any moment, mailbot loses nothing and doubles nothing.

Each test runs the real command line (`mailbot poll --once`, `mailbot run`)
as a separate process against Dovecot, the SMTP server and the database,
kills it (a crash point from `mailbot.faults`, or SIGKILL), starts it
again, and looks at what a user sees: ticket rows, mail at the SMTP server,
the originals in the Processed folder.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from app import CliDesk, World, forward

from mailbot.faults import POINTS
from mailbot.outgoing.outbox import flush

KILLED = 137


def state_at_death(w: World) -> dict[str, object]:
    return {
        "stored": len(w.messages()),
        "processed": sum(m.state == "processed" for m in w.messages()),
        "tickets": len(w.tickets()),
        "outbox": [o.state for o in w.outbox()],
        "inbox": len(w.imap.uids("INBOX")),
        "at smtp": len(w.smtp.messages),
    }


# What is durable at the moment each crash point kills the process (two forwards in the inbox).
AT_DEATH: dict[str, dict[str, object]] = {
    "while_fetching": {"stored": 0, "processed": 0, "tickets": 0, "outbox": [], "inbox": 2, "at smtp": 0},
    "after_fetch": {"stored": 2, "processed": 0, "tickets": 0, "outbox": [], "inbox": 2, "at smtp": 0},
    # the batch read (headers, extraction, decisions), nothing written
    "after_read": {"stored": 2, "processed": 0, "tickets": 0, "outbox": [], "inbox": 2, "at smtp": 0},
    "after_parse": {"stored": 2, "processed": 0, "tickets": 0, "outbox": [], "inbox": 2, "at smtp": 0},
    "after_queue": {"stored": 2, "processed": 0, "tickets": 0, "outbox": [], "inbox": 2, "at smtp": 0},
    # every row of the batch written, not committed: a death leaves none of them
    "before_commit": {"stored": 2, "processed": 0, "tickets": 0, "outbox": [], "inbox": 2, "at smtp": 0},
    # fresh messages are processed in batches, one commit for the batch
    "after_commit": {"stored": 2, "processed": 2, "tickets": 2, "outbox": ["queued", "queued"], "inbox": 2,
                     "at smtp": 0},
    "before_mark": {"stored": 2, "processed": 2, "tickets": 2, "outbox": ["queued", "queued"], "inbox": 2,
                    "at smtp": 0},
    # both messages leave the inbox in one MOVE command, before the commit that records it
    "after_mark": {"stored": 2, "processed": 2, "tickets": 2, "outbox": ["queued", "queued"], "inbox": 0,
                   "at smtp": 0},
    "after_smtp_250": {"stored": 2, "processed": 2, "tickets": 2, "outbox": ["queued", "queued"], "inbox": 0,
                       "at smtp": 1},
}


def test_every_crash_point_has_a_test() -> None:
    assert set(AT_DEATH) == set(POINTS)


@pytest.mark.parametrize("point", POINTS)
def test_killed_at_a_crash_point_and_restarted_ends_with_one_ticket_and_one_ack_per_message(
        cli_desk: Callable[..., CliDesk], point: str) -> None:
    desk = cli_desk()
    w = desk.world
    senders = ["ann@one.example", "bob@two.example"]
    uids = [w.deliver(forward("203.0.113.10", "crash-1", senders[0])),
            w.deliver(forward("203.0.113.20", "crash-2", senders[1]))]

    died = desk.poll_once(fault=point)
    assert died.returncode == KILLED, died.stdout + died.stderr
    assert state_at_death(w) == AT_DEATH[point]

    again = desk.poll_once()
    assert again.returncode == 0, again.stderr

    # one stored row and one ticket per message, each processed, each original in Processed
    messages = w.messages()
    assert [m.uid for m in messages] == uids and {m.state for m in messages} == {"processed"}
    assert all(m.server_done for m in messages)
    tickets = w.tickets()
    assert sorted(t.ip or "" for t in tickets) == ["203.0.113.10", "203.0.113.20"]
    assert all(t.acked_at is not None for t in tickets)
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == 2

    # one ack per sender; only a kill between the 250 and the commit may resend, with the same Message-ID
    outbox = w.outbox()
    assert [o.state for o in outbox] == ["sent", "sent"]
    received = w.smtp.messages
    by_id = Counter(r.message["Message-ID"] for r in received)
    assert set(by_id) == {o.message_id for o in outbox}
    assert sorted(r.rcpt_tos for r in received) == sorted(
        [[s] for s in senders] + ([received[0].rcpt_tos] if point == "after_smtp_250" else []))
    duplicates = len(received) - len(by_id)
    assert duplicates == (1 if point == "after_smtp_250" else 0)


def test_fresh_mail_commits_a_batch_at_a_time_and_a_death_after_a_commit_repeats_nothing(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk(mailbox={"process_batch": 2})
    w = desk.world
    senders = ["ann@one.example", "bob@two.example", "cid@three.example"]
    for i, sender in enumerate(senders):
        w.deliver(forward(f"203.0.113.{10 + i}", f"batch-{i}", sender))

    died = desk.poll_once(fault="after_commit")
    assert died.returncode == KILLED, died.stdout + died.stderr
    # the first batch of two landed whole, the third message was never claimed
    assert [(m.state, m.attempts) for m in w.messages()] == [("processed", 1), ("processed", 1), ("stored", 0)]
    assert len(w.tickets()) == 2 and [o.state for o in w.outbox()] == ["queued", "queued"]

    again = desk.poll_once()
    assert again.returncode == 0, again.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("processed", 1)] * 3
    assert sorted(t.ip or "" for t in w.tickets()) == ["203.0.113.10", "203.0.113.11", "203.0.113.12"]
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(3)) == sorted(senders)
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == 3


def test_a_batch_killed_after_its_rows_are_written_and_before_its_commit_leaves_none_and_repeats_nothing(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk(mailbox={"process_batch": 2})
    w = desk.world
    senders = ["ann@one.example", "bob@two.example", "cid@three.example"]
    for i, sender in enumerate(senders):
        w.deliver(forward(f"203.0.113.{10 + i}", f"written-{i}", sender))

    died = desk.poll_once(fault="before_commit")
    assert died.returncode == KILLED, died.stdout + died.stderr
    # the first batch's tickets, events, senders and replies were all sent to the database in
    # bulk: none survived the death, and its two messages each have one attempt counted
    assert [(m.state, m.attempts) for m in w.messages()] == [("stored", 1), ("stored", 1), ("stored", 0)]
    assert w.tickets() == [] and w.outbox() == []

    again = desk.poll_once()
    assert again.returncode == 0, again.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("processed", 2), ("processed", 2), ("processed", 1)]
    assert sorted(t.ip or "" for t in w.tickets()) == ["203.0.113.10", "203.0.113.11", "203.0.113.12"]
    received = w.smtp.wait_for(3)
    assert sorted(r.rcpt_tos[0] for r in received) == sorted(senders)
    assert len({r.message["Message-ID"] for r in received}) == 3 and [o.state for o in w.outbox()] == ["sent"] * 3
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == 3


def test_a_message_that_kills_the_process_while_its_batch_is_read_costs_only_itself(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk()
    w = desk.world
    w.deliver(forward("203.0.113.10", "poison-1", "ann@one.example"))
    w.deliver(forward("203.0.113.20", "healthy-1", "bob@two.example"))

    # the batch is read whole before anything is written: the death counts against both ...
    died = desk.poll_once(fault="after_read:poison")
    assert died.returncode == KILLED, died.stdout + died.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("stored", 1), ("stored", 1)]
    assert w.tickets() == []
    # ... then each is read alone, the least-tried first: the healthy one lands
    for _ in range(2):
        died = desk.poll_once(fault="after_read:poison")
        assert died.returncode == KILLED, died.stdout + died.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("stored", 3), ("processed", 2)]

    survived = desk.poll_once(fault="after_read:poison")
    assert survived.returncode == 0, survived.stderr
    poison, healthy = w.messages()
    assert (poison.state, poison.outcome) == ("quarantined", "quarantined: processing failed 3 times: crashed")
    assert healthy.state == "processed" and [t.ip for t in w.tickets()] == ["203.0.113.20"]
    assert [r.rcpt_tos for r in w.smtp.wait_for(1)] == [["bob@two.example"]]
    assert len(w.imap.uids("Quarantine")) == 1 and len(w.imap.uids("Processed")) == 1


def test_a_backlog_is_taken_in_batch_by_batch_each_processed_and_moved_before_the_next_is_fetched(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk(mailbox={"batch_size": 2})
    w = desk.world
    senders = [f"sender{i}@s{i}.example" for i in range(5)]
    for i, sender in enumerate(senders):
        w.deliver(forward(f"203.0.113.{10 + i}", f"backlog-{i}", sender))

    died = desk.poll_once(fault="before_mark")  # the first move on the server
    assert died.returncode == KILLED, died.stdout + died.stderr
    # only the first batch was fetched: it is processed and about to move, the rest waits on the server
    assert state_at_death(w) == {"stored": 2, "processed": 2, "tickets": 2, "outbox": ["queued", "queued"],
                                 "inbox": 5, "at smtp": 0}

    again = desk.poll_once()
    assert again.returncode == 0, again.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("processed", 1)] * 5
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(5)) == sorted(senders)
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == 5


# -- soak ----------------------------------------------------------------------

SOAK_MESSAGES = int(os.environ.get("MAILBOT_SOAK_MESSAGES", "300"))


def soak_ips(n: int) -> list[str]:
    nets = ["203.0.113", "198.51.100", "192.0.2"]
    return [f"{nets[i // 250]}.{i % 250 + 1}" for i in range(n)]


def all_done(w: World, n: int) -> bool:
    messages = w.messages()
    return (len(messages) == n and all(m.state == "processed" and m.server_done for m in messages)
            and len(w.outbox()) == n and all(o.state == "sent" for o in w.outbox()))


def processed(w: World) -> int:
    return sum(m.state == "processed" for m in w.messages())


def wait_for_line(log: Path, text: str, count: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while log.read_text(errors="replace").count(text) < count:
        assert proc.poll() is None, f"the daemon exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{log.read_text()[-3000:]}"
        time.sleep(0.05)


def test_soak_the_daemon_sigkilled_at_random_moments_stores_and_acknowledges_everything_once(
        cli_desk: Callable[..., CliDesk], tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    n = SOAK_MESSAGES
    desk = cli_desk(schedule={"poll_seconds": 0.2, "flush_seconds": 0.2}, mailbox={"batch_size": 20},
                    replies={"breaker_per_hour": 100_000, "per_domain_daily": 100_000})
    w = desk.world
    for i, ip in enumerate(soak_ips(n)):
        w.deliver(forward(ip, f"soak-{i}", f"sender{i}@s{i % 7}.example"))

    seed = int(os.environ.get("MAILBOT_SOAK_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    log = tmp_path / "daemon.log"
    print(f"soak seed {seed} (MAILBOT_SOAK_SEED), daemon log {log}")  # shown when the test fails
    started = time.monotonic()
    kills = 0
    while not all_done(w, n):
        assert kills < 200, f"not done after {kills} kills (seed {seed})"
        proc = desk.start_daemon(log)
        try:
            wait_for_line(log, "mailbot running", kills + 1, proc)
            # kill anywhere in the work; later lives get a little longer so the run ends
            before = processed(w)
            deadline = time.monotonic() + rng.uniform(0, 1.0 + kills * 0.1)
            while time.monotonic() < deadline and not all_done(w, n):
                time.sleep(0.05)
            # ... but not before this life has finished something: lives killed before their first
            # commit all die under the same first message (a retry goes alone, least-tried first),
            # and a message in flight at three deaths is quarantined as the poison it looks like.
            # Deaths at each point before a commit are the crash-point tests' (above).
            settle = time.monotonic() + 60
            while processed(w) == before and not all_done(w, n):
                assert time.monotonic() < settle, f"no progress in a life of the daemon (seed {seed})"
                time.sleep(0.02)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        kills += 1
    elapsed = time.monotonic() - started

    messages = w.messages()
    assert sorted(m.uid or 0 for m in messages) == sorted(set(m.uid or 0 for m in messages))
    assert len(messages) == n and w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == n
    tickets = w.tickets()
    assert len(tickets) == n and all(t.acked_at is not None for t in tickets)
    outbox = w.outbox()
    assert sorted(o.ticket_id or 0 for o in outbox) == sorted(t.id or 0 for t in tickets)  # one ack per ticket
    received = Counter(r.message["Message-ID"] for r in w.smtp.messages)
    assert set(received) == {o.message_id for o in outbox}  # every ack arrived, no other mail did
    duplicates = sum(received.values()) - len(received)
    record_property("soak_duplicates", duplicates)
    print(f"\nsoak: {n} messages, {kills} SIGKILLs, {duplicates} duplicate acks (same Message-ID), "
          f"{elapsed:.1f}s, seed {seed}")
    assert duplicates <= kills


# -- two flushes at once ---------------------------------------------------------

class Overlapping:
    """A transport that holds each send until the other flush is sending too (or half a second passed)."""

    def __init__(self, inner: Any, barrier: threading.Barrier) -> None:
        self.inner, self.barrier = inner, barrier

    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        with contextlib.suppress(threading.BrokenBarrierError):
            self.barrier.wait(timeout=0.5)
        self.inner.send(envelope_from, recipients, raw)

    def close(self) -> None:
        self.inner.close()


def test_two_flushes_at_once_in_one_daemon_send_each_mail_once(world: World) -> None:
    # The daemon flushes after a poll and on its own schedule, in two threads.
    world.deliver(forward("203.0.113.10", "overlap-1", "ann@one.example"))
    world.deliver(forward("203.0.113.20", "overlap-2", "bob@two.example"))
    world.desk.poll()
    barrier = threading.Barrier(2)
    transports = [Overlapping(world.desk.transport(), barrier) for _ in range(2)]
    threads = [threading.Thread(target=flush, args=(world.desk.engine, t, world.desk.config.outgoing))
               for t in transports]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    received = Counter(r.message["Message-ID"] for r in world.smtp.messages)
    assert sorted(received.values()) == [1, 1]
    assert [o.state for o in world.outbox()] == ["sent", "sent"]


# -- a message that kills the process --------------------------------------------

def test_a_message_that_kills_the_process_three_times_is_quarantined_and_the_next_is_processed(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk()
    w = desk.world
    w.deliver(forward("203.0.113.10", "poison-1", "ann@one.example"))
    w.deliver(forward("203.0.113.20", "healthy-1", "bob@two.example"))

    # both fresh messages are claimed as one batch: the death counts against each of them
    died = desk.poll_once(fault="after_parse:poison")
    assert died.returncode == KILLED, died.stdout + died.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("stored", 1), ("stored", 1)]
    # then each is retried alone, the least-tried first: the healthy one does not wait out the poison
    died = desk.poll_once(fault="after_parse:poison")
    assert died.returncode == KILLED, died.stdout + died.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("stored", 2), ("stored", 1)]
    died = desk.poll_once(fault="after_parse:poison")
    assert died.returncode == KILLED, died.stdout + died.stderr
    assert [(m.state, m.attempts) for m in w.messages()] == [("stored", 3), ("processed", 2)]

    survived = desk.poll_once(fault="after_parse:poison")  # the fault is still armed: the message is not run again
    assert survived.returncode == 0, survived.stderr
    poison, healthy = w.messages()
    assert (poison.state, poison.attempts) == ("quarantined", 4)
    assert poison.outcome == "quarantined: processing failed 3 times: crashed"
    assert healthy.state == "processed"
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Quarantine")) == 1 and len(w.imap.uids("Processed")) == 1
    [ticket] = w.tickets()
    assert ticket.ip == "203.0.113.20"
    assert [r.rcpt_tos for r in w.smtp.messages] == [["bob@two.example"]]


def test_a_message_that_kills_the_process_while_it_is_fetched_is_quarantined_after_three_deaths(
        cli_desk: Callable[..., CliDesk]) -> None:
    desk = cli_desk()
    w = desk.world
    w.deliver(forward("203.0.113.10", "healthy-1", "ann@one.example"))
    w.deliver(forward("203.0.113.20", "poison-1", "eve@three.example"))
    w.deliver(forward("203.0.113.30", "healthy-2", "bob@two.example"))
    fault = "while_fetching:poison"

    # the batch of three dies (counted against none of them); then each is fetched alone, the
    # least-tried first: the healthy ones land, the poison one dies alone three times
    for _ in range(4):
        died = desk.poll_once(fault=fault)
        assert died.returncode == KILLED, died.stdout + died.stderr
    assert sorted(m.message_id or "" for m in w.messages()) == ["<healthy-1@forwarder.example>",
                                                                 "<healthy-2@forwarder.example>"]
    survived = desk.poll_once(fault=fault)  # still armed: the message is not fetched again
    assert survived.returncode == 0, survived.stderr
    assert "quarantined 1" in survived.stdout
    [poison] = [m for m in w.messages() if m.state == "quarantined"]
    assert poison.outcome == "quarantined: fetching failed 3 times: the process died while fetching it"
    assert poison.message_id == "<poison-1@forwarder.example>" and poison.truncated  # its headers, for the listing
    assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Quarantine")) == 1 and len(w.imap.uids("Processed")) == 2
    assert sorted(t.ip or "" for t in w.tickets()) == ["203.0.113.10", "203.0.113.30"]
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(2)) == ["ann@one.example", "bob@two.example"]
