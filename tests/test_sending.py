"""Every mail is sent once, however many senders run; a broken SMTP server holds the
queue instead of failing it, and sending resumes by itself when the server works again.

The senders are what operators run: the daemon and `mailbot flush` as separate
processes, against one (slow) SMTP server; deliveries are counted at the server
by Message-ID.
"""

from __future__ import annotations

import logging
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

from mailbot.app import Desk
from mailbot.config import load

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


# -- a server that cannot be used holds the queue ---------------------------------

def smtp_login(tmp_path: Path, password: str) -> dict[str, Any]:
    """Outgoing settings that log in as the test server's user with a password read from a file."""
    secret = tmp_path / "smtp-password"
    secret.write_text(password)
    return {"user": "mailbot", "password_file": str(secret)}


def test_a_refused_login_holds_the_queue_and_once_the_password_is_fixed_every_mail_goes_once(
        senders: Callable[..., Senders], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = senders(outgoing=smtp_login(tmp_path, "wrong-password"))
    w = s.world
    w.smtp.require_auth = True
    s.queue_acks(10)

    with caplog.at_level(logging.WARNING):
        r = w.desk.flush()
        again = w.desk.flush()
    assert (r.sent, r.retried, r.failed, r.held) == (0, 0, 0, 10)
    assert r.fault is not None and "login refused (535" in r.fault and "user mailbot" in r.fault
    assert f"SMTP server 127.0.0.1:{w.smtp.port}" in r.fault and "outgoing.password_file" in r.fault
    assert "wrong-password" not in r.fault
    assert again.fault == r.fault and again.held == 10
    # the queue holds: nothing failed, nothing counted against any mail, nothing delivered
    assert [(o.state, o.attempts, o.last_error) for o in w.outbox()] == [("queued", 0, None)] * 10
    assert w.smtp.messages == []
    errors = [rec for rec in caplog.records if rec.levelno == logging.ERROR]
    assert len(errors) == 1 and "outgoing mail stopped" in errors[0].getMessage()
    assert "10 mail(s) held" in errors[0].getMessage()

    # an operator sees the outage where they look: status, and the outbox listing
    status = s.cli("status")
    assert "10 queued, 0 failed; sending FAILING since" in status.stdout and "login refused (535" in status.stdout
    listing = s.cli("outbox").stdout
    assert listing.startswith("outgoing mail FAILING since") and listing.count(" queued ") == 10

    # the daemon waits between tries of a broken server (no hammering a wrong password)
    tried = w.smtp.auth_attempts
    assert w.desk.flush(patient=True).fault == r.fault and w.smtp.auth_attempts == tried

    (tmp_path / "smtp-password").write_text(w.smtp.password)  # the operator fixes the password file
    fixed = w.desk.flush()
    assert fixed.fault is None and (fixed.sent, fixed.failed) == (11, 0)
    per_id = Counter(m.message["Message-ID"] for m in w.smtp.messages)
    assert set(per_id.values()) == {1} and len(per_id) == 11
    outbox = w.outbox()
    assert all(o.state == "sent" and o.attempts == 1 for o in outbox)
    # one alert to staff, sent once the server worked again, saying what happened
    [alert] = [m for m in w.smtp.messages if m.rcpt_tos == ["support@example.org"]]
    assert "Outgoing mail was stopped" in alert.message["Subject"]
    body = " ".join(alert.message.get_body(("plain",)).get_content().split())  # as read, whatever the wrapping
    assert "login refused (535" in body and "10 mail(s) waited" in body
    assert w.desk.flush().sent == 0 and len(w.smtp.messages) == 11  # no second alert


def test_the_daemon_resumes_by_itself_when_the_password_file_is_fixed(
        senders: Callable[..., Senders], tmp_path: Path) -> None:
    s = senders(outgoing={**smtp_login(tmp_path, "wrong-password"), "retry_base_seconds": 0.5},
                schedule={"poll_seconds": 3600, "flush_seconds": 0.2})
    w = s.world
    w.smtp.require_auth = True
    s.queue_acks(5)
    log = tmp_path / "daemon.log"
    daemon = s.popen("run", log=log)
    try:
        wait_until(lambda: "outgoing mail stopped" in log.read_text(), "logged")
        time.sleep(1.5)  # a few more tries
        assert w.smtp.messages == [] and all((o.state, o.attempts) == ("queued", 0) for o in w.outbox())
        (tmp_path / "smtp-password").write_text(w.smtp.password)
        wait_until(lambda: len(w.smtp.messages) >= 6 and all(o.state == "sent" for o in w.outbox()), "all sent")
    finally:
        stop(daemon)
    text = log.read_text()
    assert text.count("ERROR") == 1 and "outgoing mail works again" in text
    per_id = Counter(m.message["Message-ID"] for m in w.smtp.messages)
    assert len(per_id) == 6 and set(per_id.values()) == {1}


# -- what an operator reads when the server cannot be used ------------------------

def test_a_closed_port_is_one_line_naming_the_server_the_user_and_the_settings(
        senders: Callable[..., Senders], tmp_path: Path) -> None:
    from servers import free_port

    port = free_port()
    s = senders(outgoing={"port": port, **smtp_login(tmp_path, "s3cret-pw")})
    s.queue_acks(2)
    env = {**s.env}
    flushed = s.cli("flush")
    assert flushed.returncode == 3, flushed.stderr
    expected = (f"SMTP server 127.0.0.1:{port} (user mailbot): cannot connect: connection refused "
                "(check outgoing.host and outgoing.port)")
    assert flushed.stderr.strip() == f"mailbot: {expected}; 2 mail(s) held in the outbox, none failed: " \
                                     "they go out when the server works again"
    # a command that only queues mail succeeds, and says the mail waits
    digest = s.cli("digest", "--send")
    assert digest.returncode == 0 and digest.stderr.strip() == f"mailbot: not sent yet: {expected}; 3 mail(s) " \
        "held in the outbox, none failed: they go out when the server works again"
    checked = mailbot_cli("-c", str(s.path), "check", env=env)
    assert checked.returncode == 1
    [line] = [ln for ln in checked.stdout.splitlines() if "outgoing" in ln]
    assert line == f"FAIL  outgoing   {expected}"
    for out in (flushed.stdout + flushed.stderr, checked.stdout + checked.stderr):
        assert "Traceback" not in out and "s3cret-pw" not in out and "Errno" not in out


def test_tls_on_a_plain_port_names_security_and_port_not_the_certificate(
        senders: Callable[..., Senders]) -> None:
    s = senders(outgoing={"security": "tls"})
    s.queue_acks(1)
    port = s.world.smtp.port
    for result in (s.cli("check"), s.cli("flush")):
        out = result.stdout + result.stderr
        assert result.returncode in (1, 3) and "Traceback" not in out
        [line] = [ln for ln in out.splitlines() if "SMTP server" in ln]
        assert f"SMTP server 127.0.0.1:{port} (no login): TLS handshake failed" in line
        assert f"does not speak TLS on port {port}" in line and 'outgoing.security = "starttls"' in line
        assert "ca_file" not in line and "tls_verify" not in line


def test_a_server_that_accepts_but_never_greets_suggests_implicit_tls(
        senders: Callable[..., Senders]) -> None:
    import socket

    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and says nothing
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        s = senders(outgoing={"port": port, "security": "starttls", "timeout": 1})
        checked = s.cli("check")
    [line] = [ln for ln in checked.stdout.splitlines() if "outgoing" in ln]
    assert line.startswith(f"FAIL  outgoing   SMTP server 127.0.0.1:{port} (no login): the server accepted the "
                           "connection but sent no greeting")
    assert 'set outgoing.security = "tls"' in line
