"""The daemon as operators run it: IDLE push, one daemon per SQLite file,
several on PostgreSQL sharing a mailbox politely."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from app import World, forward, sample
from test_cli import imap_toml

from mailbot.store.locks import mailbox_lock


def start_daemon(path: Path, password: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(path), "run"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": password})


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def test_with_idle_new_mail_is_acknowledged_without_waiting_for_the_poll_interval(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, schedule={"poll_seconds": 3600})
    proc = start_daemon(path, dovecot.password)
    try:
        smtp_server.wait_for(0)
        time.sleep(2)  # let the daemon reach IDLE; the poll interval (1 h) is far away
        t = time.monotonic()
        dovecot.append(sample("01-banned-sender-attached.eml"))
        smtp_server.wait_for(1, timeout=20)
        first = time.monotonic() - t

        # the IDLE connection drops (server restart): the daemon reconnects and keeps pushing
        dovecot.restart_server()
        time.sleep(3)
        dovecot.append(sample("06-ipv6-thunderbird.eml"))
        smtp_server.wait_for(2, timeout=30)
    finally:
        out = stop(proc)
    assert proc.returncode == 0, out
    assert first < 20
    assert "reconnecting" in out


def test_a_second_daemon_on_the_same_sqlite_file_is_refused_with_a_clear_message(
        tmp_path: Path, dovecot: Any, smtp_server: Any) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, f"sqlite:///{tmp_path}/one.db",
                     schedule={"poll_seconds": 3600})
    first = start_daemon(path, dovecot.password)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "one.daemon.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        second = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "run"], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
    finally:
        stop(first)
    assert second.returncode == 1
    assert f"another mailbot daemon (pid {first.pid}) is running on {tmp_path / 'one.db'}" in second.stderr
    assert "PostgreSQL" in second.stderr


def test_on_postgresql_only_one_daemon_fetches_a_mailbox_at_a_time(make_world: Any, database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("the mailbox lock is PostgreSQL's (SQLite runs one daemon)")
    w: World = make_world()
    other: World = make_world()
    w.deliver(sample("01-banned-sender-attached.eml"))
    with mailbox_lock(other.desk.engine, other.desk.mailbox_name) as held:
        assert held
        polled = w.desk.poll()
        assert polled.fetch.stored == 0  # the other daemon is fetching this mailbox
        with mailbox_lock(w.desk.engine, w.desk.mailbox_name) as second:
            assert not second
    assert w.desk.poll().fetch.stored == 1  # released: now it may


def test_failed_polls_back_off_and_resume_by_themselves(make_world: Callable[..., World],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from servers import free_port
    from sqlmodel import Session, select

    from mailbot.daemon import Daemon
    from mailbot.store.tables import DaemonHealth

    # desks from make_world are closed after the test, with any IMAP connection a Daemon kept
    desk = make_world(mailbox={"port": free_port()}, schedule={"poll_seconds": 10}).desk
    daemon = Daemon(desk)
    clock = [1000.0]
    monkeypatch.setattr("mailbot.daemon.time.monotonic", lambda: clock[0])
    daemon.poll()                          # fails: the server is down
    assert (daemon.failures, daemon.backoff()) == (1, 20.0)
    clock[0] += 19
    daemon.poll()                          # backing off: not even tried
    assert daemon.failures == 1
    clock[0] += 2
    daemon.poll()                          # 21 s later: tried again, fails again, waits longer
    assert (daemon.failures, daemon.backoff()) == (2, 40.0)
    working = make_world().desk
    monkeypatch.setattr(desk, "poll", working.poll)  # the server is back
    clock[0] += 41
    daemon.poll()
    assert daemon.failures == 0
    with Session(desk.engine) as s:
        health = s.exec(select(DaemonHealth)).one()
    assert health.errors == 2 and health.failing_since is None and health.last_poll_ok_at is not None


def test_poll_once_beside_a_running_daemon_on_the_same_sqlite_file_is_refused(
        tmp_path: Path, dovecot: Any, smtp_server: Any) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, f"sqlite:///{tmp_path}/one.db", schedule={"poll_seconds": 3600})
    daemon = start_daemon(path, dovecot.password)
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "one.daemon.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1)
        once = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "poll", "--once"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
    finally:
        stop(daemon)
    assert once.returncode == 1 and f"another mailbot daemon (pid {daemon.pid})" in once.stderr


def test_replies_go_out_while_the_rest_of_a_backlog_is_still_being_processed(
        make_world: Callable[..., World], monkeypatch: pytest.MonkeyPatch) -> None:
    from mailbot.daemon import Daemon
    from mailbot.desk import worker as process

    w = make_world(mailbox={"process_batch": 2})
    for i in range(5):
        w.deliver(forward(f"203.0.113.{10 + i}", f"backlog-{i}", f"sender{i}@s{i}.example"))
    gate, reached = threading.Event(), threading.Event()
    real = w.desk.processor.extract

    def extract(raw: bytes) -> process.Extraction:
        if b"backlog-4" in raw:  # the last message waits until the test has seen the first replies
            reached.set()
            assert gate.wait(30)
        return real(raw)

    monkeypatch.setattr(w.desk.processor, "extract", extract)
    daemon = Daemon(w.desk)
    polling = threading.Thread(target=daemon.poll)
    polling.start()
    try:
        assert reached.wait(30)
        # two batches of two are committed and their replies delivered; the poll is not over
        early = w.smtp.wait_for(4, timeout=20)
        assert polling.is_alive()
    finally:
        gate.set()
        polling.join(timeout=60)
    assert sorted(r.rcpt_tos[0] for r in early) == [f"sender{i}@s{i}.example" for i in range(4)]
    assert sorted(r.rcpt_tos[0] for r in w.smtp.wait_for(5)) == [f"sender{i}@s{i}.example" for i in range(5)]
    daemon.stopping.set()
    if daemon.flusher is not None:
        daemon.flusher.join(timeout=30)
    assert [o.state for o in w.outbox()] == ["sent"] * 5


def test_a_failed_poll_does_not_wait_out_its_backoff_once_idle_reaches_the_server_again(
        make_world: Callable[..., World]) -> None:
    from mailbot.daemon import Daemon

    w = make_world(schedule={"poll_seconds": 3600})
    w.deliver(forward("203.0.113.10", "while-down", "ann@one.example"))
    daemon = Daemon(w.desk)
    w.imap.restart_server()  # cut the test's own helper connection before the server goes away
    w.imap.server.stop()
    try:
        daemon.poll()
        assert daemon.failures == 1 and daemon.next_poll_at - time.monotonic() > 3000  # backing off for an hour
    finally:
        w.imap.server.start()
    daemon.idle.start()
    try:
        [ack] = w.smtp.wait_for(1, timeout=30)  # the IDLE connection's catch-up poll ran at once
    finally:
        daemon.stopping.set()
        daemon.idle.thread.join(timeout=30)
    assert ack.rcpt_tos == ["ann@one.example"]
    assert daemon.failures == 0 and [m.state for m in w.messages()] == ["processed"]


def test_the_daemon_reads_each_template_once_and_a_command_reads_the_edited_one(
        make_world: Callable[..., World], tmp_path: Path) -> None:
    from mailbot.daemon import Daemon
    from mailbot.outgoing.render import Renderer

    folder = tmp_path / "my-templates"
    folder.mkdir()
    ack = folder / "ack.txt.j2"
    shipped = Renderer().source("ack")
    assert shipped is not None
    ack.write_text(shipped.read_text())
    w = make_world(templates={"dir": str(folder)}, schedule={"poll_seconds": 3600})
    daemon = Daemon(w.desk)
    try:
        w.deliver(forward("203.0.113.10", "tmpl-1", "ann@one.example"))
        daemon.poll()
        ack.write_text(ack.read_text().replace("Delisting request received", "EDITED"))
        os.utime(ack, (time.time() + 5, time.time() + 5))  # a newer file whatever the clock's grain
        w.deliver(forward("203.0.113.20", "tmpl-2", "bob@two.example"))
        daemon.poll()
    finally:
        daemon.stopping.set()
        if daemon.flusher is not None:
            daemon.flusher.join(timeout=30)
    # the running daemon kept the template it read at start (no file looked at per mail) ...
    assert [o.subject.split("] ", 1)[1] for o in w.outbox()] == ["Delisting request received for 203.0.113.10",
                                                                  "Delisting request received for 203.0.113.20"]
    # ... and the next start, or any command, reads the edited file
    again = make_world(templates={"dir": str(folder)})
    again.deliver(forward("203.0.113.30", "tmpl-3", "cid@three.example"))
    again.run()
    assert [o.subject.split("] ", 1)[1] for o in again.outbox()][-1] == "EDITED for 203.0.113.30"


def test_the_daemon_logs_in_once_for_its_polls_and_again_when_the_server_cut_the_connection(
        make_world: Callable[..., World], dovecot: Any) -> None:
    from mailbot.daemon import Daemon

    def logins() -> int:
        return dovecot.server.log_path.read_text().count(f"Login: user=<{dovecot.user}>,")

    def settled(expected: int, since: int) -> int:
        """Logins since `since`, once Dovecot's log shows `expected` of them (or 10 s passed)."""
        deadline = time.monotonic() + 10
        while logins() - since < expected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # and no more come
        return logins() - since

    w = make_world(schedule={"poll_seconds": 3600})
    daemon = Daemon(w.desk)
    w.deliver(forward("203.0.113.10", "kept-0", "s0@zero.example"))  # the helper's own login first
    before = logins()
    try:
        for i in range(3):
            if i:
                w.deliver(forward(f"203.0.113.{10 + i}", f"kept-{i}", f"s{i}@n{i}.example"))
            daemon.poll()
        w.smtp.wait_for(3, timeout=30)
        assert settled(1, before) == 1  # three polls, one login
        assert w.desk.kept_inbox is not None
        cut = w.desk.kept_inbox[0].client.socket()
        dovecot.restart_server()  # the kept connection is cut
        w.deliver(forward("203.0.113.20", "after-restart", "s4@four.example"))
        before = logins()  # the helper logged in again
        daemon.poll()
        w.smtp.wait_for(4, timeout=30)
    finally:
        daemon.stopping.set()
        if daemon.flusher is not None:
            daemon.flusher.join(timeout=30)
    assert settled(1, before) == 1  # a new connection, without a failed poll
    assert daemon.failures == 0 and [m.state for m in w.messages()] == ["processed"] * 4
    # Neither the connection given up on nor the one kept at the end may be left to the garbage
    # collector: a daemon restarted in-process (or a server cutting it daily) would leak a socket each time.
    assert cut.fileno() == -1
    assert w.desk.kept_inbox is not None
    kept = w.desk.kept_inbox[0].client.socket()
    w.desk.close()
    assert kept.fileno() == -1 and w.desk.kept_inbox is None
