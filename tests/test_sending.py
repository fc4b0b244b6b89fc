"""Every mail is sent once, however many senders run; a broken SMTP server holds the
queue instead of failing it, and sending resumes by itself when the server works again.

The senders are what operators run: the daemon and `mailbot flush` as separate
processes, against one (slow) SMTP server; deliveries are counted at the server
by Message-ID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from app import World, forward, imap_toml, mailbot_cli

from mailbot.config import load
from mailbot.desk import Desk

MANY_REPLIES = {"breaker_per_hour": 100_000, "per_domain_daily": 100_000}


class Senders:
    """A config file for the CLI and the daemon, and a World on the same database."""

    def __init__(self, path: Path, world: World, tmp_path: Path) -> None:
        self.path, self.world, self.tmp_path = path, world, tmp_path
        self.env = {"MAILBOT_MAILBOX_PASSWORD": world.imap.password}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return mailbot_cli("-c", str(self.path), *args, env=self.env)

    def popen(self, *args: str, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(self.path), *args],
                                    stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env})

    def queue_acks(self, n: int, tag: str = "once") -> None:
        """n forwards from n senders, processed (not sent): n acknowledgements queued."""
        for i in range(n):
            self.world.deliver(forward(f"203.0.113.{10 + i}", f"{tag}-{i}", f"sender{i}@s{i}.example"))
        self.world.desk.poll()
        assert [o.state for o in self.world.outbox()] == ["queued"] * n


@pytest.fixture
def senders(tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> Iterator[Callable[..., Senders]]:
    made: list[Desk] = []

    def make(**sections: dict[str, Any]) -> Senders:
        sections.setdefault("replies", MANY_REPLIES)
        sections.setdefault("desk", {}).setdefault("staff", ["support@example.org"])
        path = imap_toml(tmp_path, dovecot, smtp_server, database_url, **sections)
        desk = Desk(load(path, environ={"MAILBOT_MAILBOX_PASSWORD": dovecot.password}))
        made.append(desk)
        return Senders(path, World(desk, dovecot, smtp_server), tmp_path)

    yield make
    for desk in made:
        desk.engine.dispose()


def wait_until(done: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"not {what} within {timeout}s"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def test_two_flushes_and_the_daemon_against_a_slow_server_deliver_every_mail_exactly_once(
        senders: Callable[..., Senders], tmp_path: Path) -> None:
    s = senders(schedule={"poll_seconds": 3600, "flush_seconds": 0.2})
    w = s.world
    s.queue_acks(40)
    w.smtp.delay = 0.1  # each DATA takes a tenth of a second: the senders overlap on every mail

    log = tmp_path / "senders.log"
    daemon = s.popen("run", log=log)
    try:
        flushes = [s.popen("flush", log=log) for _ in range(2)]
        for f in flushes:
            assert f.wait(timeout=120) == 0, log.read_text()[-3000:]
        wait_until(lambda: all(o.state == "sent" for o in w.outbox()), "all sent")
    finally:
        stop(daemon)

    per_id = Counter(r.message["Message-ID"] for r in w.smtp.messages)
    outbox = w.outbox()
    assert set(per_id) == {o.message_id for o in outbox} and len(per_id) == 40
    assert [m for m, n in per_id.items() if n > 1] == [], "some mail was delivered twice"
    assert all(o.attempts == 1 for o in outbox)
