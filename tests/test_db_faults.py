"""Database faults: an unreachable or damaged database is a named error (one
line, exit 3, never a traceback; `mailbot check` runs the integrity check), a
database that drops every connection mid-run is reconnected to without losing
mail, a fault of the database is never counted against a message, and when
the database fails the daemon's alert goes straight to the SMTP server."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from app import World, imap_config, sample
from servers import free_port
from sqlalchemy.engine import make_url
from test_cli import imap_toml
from test_faults_imap import FaultProxy

from mailbot.app import Desk
from mailbot.daemon import Daemon
from mailbot.store.engine import DatabaseError, is_fault


def postgres_only(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("a database server's faults (SQLite is a file)")


def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path, dovecot: Any, smtp_server: Any,
                                                               database_url: str) -> None:
    postgres_only(database_url)
    port = free_port()
    url = make_url(database_url).set(port=port, password="s3cret").render_as_string(hide_password=False)
    with pytest.raises(DatabaseError) as e:
        Desk(imap_config(tmp_path, dovecot, smtp_server, url))
    assert f"127.0.0.1:{port}" in str(e.value) and "s3cret" not in str(e.value)
    path = imap_toml(tmp_path, dovecot, smtp_server, url)
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "poll", "--once"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
    assert r.returncode == 3 and f"127.0.0.1:{port}" in r.stderr
    assert "s3cret" not in r.stderr and "Traceback" not in r.stderr


def test_every_database_connection_dropped_between_polls_loses_nothing(tmp_path: Path, dovecot: Any,
                                                                      smtp_server: Any, database_url: str) -> None:
    postgres_only(database_url)
    target = make_url(database_url)
    proxy = FaultProxy(target.host or "127.0.0.1", target.port or 5432)
    desk = Desk(imap_config(tmp_path, dovecot, smtp_server,
                            target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)))
    w = World(desk, dovecot, smtp_server)
    try:
        w.deliver(sample("01-banned-sender-attached.eml"))
        w.run()
        proxy.close_connections()  # the database restarts: every pooled connection is dead
        w.deliver(sample("06-ipv6-thunderbird.eml"))
        w.run()  # the pool notices at checkout and reconnects
        assert [t.ip for t in w.tickets()] == ["203.0.113.45", "2001:db8:5::25"]
        assert len(w.smtp.wait_for(2)) == 2 and w.imap.uids("INBOX") == []
    finally:
        desk.close()
        proxy.close()


# ---------------------------------------------------------------- a damaged database


def sqlite_only(database_url: str) -> Path:
    if not database_url.startswith("sqlite"):
        pytest.skip("damage to a SQLite file")
    return Path(database_url.removeprefix("sqlite:///"))


def damage(db: Path, table: str) -> bytes:
    """Write garbage over the root page of `table` (all of its rows, in a small database), as a
    failing disk or a copy taken mid-write would; returns the page as it was."""
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every committed page is in the main file
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    [root] = conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
    conn.close()
    with db.open("r+b") as f:
        f.seek((root - 1) * page_size)
        before = f.read(page_size)
        f.seek((root - 1) * page_size)
        f.write(bytes(range(7, 256)) * (page_size // 249) + b"\x07" * (page_size % 249))
    return before


def restore(db: Path, table_page: bytes, table: str, page_size: int, root: int) -> None:
    with db.open("r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(table_page)


def one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_damaged_sqlite_file_fails_check_and_every_command_exits_3_naming_it(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    db = sqlite_only(database_url)
    desk = Desk(imap_config(tmp_path, dovecot, smtp_server, database_url))
    dovecot.append(sample("01-banned-sender-attached.eml"))
    desk.run_once()
    desk.close()
    damage(db, "mailbox_cursor")
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password}

    def mailbot(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), *args], capture_output=True,
                              text=True, timeout=60, env=env)

    checked = mailbot("check")
    assert checked.returncode == 1 and "Traceback" not in checked.stderr
    [line] = [ln for ln in checked.stdout.splitlines() if ln.split()[1] == "database"]
    assert line.startswith("FAIL") and f"SQLite {db} is damaged" in line and "integrity_check" in line

    dovecot.append(sample("06-ipv6-thunderbird.eml"))
    damage(db, "ticket")
    for args in (("status",), ("poll", "--once"), ("tickets",), ("show", "DL-000001")):
        r = mailbot(*args)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        line = one_line(r.stderr)
        assert line.startswith(f"mailbot: database SQLite {db} is damaged (database disk image is malformed)"), line
        assert "restore it from a backup" in line


def test_a_database_fault_is_not_counted_against_the_message_being_processed(make_world: Any,
                                                                            database_url: str) -> None:
    db = sqlite_only(database_url)
    w: World = make_world()
    w.deliver(sample("01-banned-sender-attached.eml"))
    w.run()
    w.desk.engine.dispose()
    damage(db, "ticket")
    w.deliver(sample("06-ipv6-thunderbird.eml"))
    for _ in range(4):  # more polls than a message has attempts
        with pytest.raises(Exception) as e:
            w.desk.poll()
        assert is_fault(e.value)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT state, attempts FROM message ORDER BY id").fetchall()
    assert rows == [("processed", 1), ("stored", 0)]  # waiting, not quarantined


def test_the_daemon_alerts_staff_straight_over_smtp_when_its_sqlite_file_breaks(
        make_world: Any, smtp_server: Any, database_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    db = sqlite_only(database_url)
    # make_world closes the desk: the Daemon keeps its IMAP connection between polls, and a desk
    # only disposed of left it to the garbage collector, whose ResourceWarning hit a later test
    desk = make_world(desk={"staff": ["support@example.org"]}, alerts={"poll_failure_minutes": 0.001}).desk
    daemon = Daemon(desk)
    clock = [1000.0]
    monkeypatch.setattr("mailbot.daemon.time.monotonic", lambda: clock[0])
    daemon.health.start()
    daemon.poll()
    assert daemon.failures == 0
    desk.engine.dispose()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'").fetchall())
    conn.close()
    pages = {t: damage(db, t) for t in ("mailbox_cursor", "daemon_health", "outbox")}
    caplog.set_level(logging.INFO, logger="mailbot")
    for _ in range(3):
        time.sleep(0.1)  # past alerts.poll_failure_minutes (60 ms)
        clock[0] += 3600  # past the backoff
        daemon.poll()
    assert daemon.failures == 3
    [alert] = smtp_server.wait_for(1)
    assert alert.rcpt_tos == ["support@example.org"]
    assert alert.message["Subject"].startswith("[Example Delist Desk] ALERT: the database fails since")
    body = " ".join(alert.message.get_body(("plain",)).get_content().split())  # as read, whatever the wrapping
    assert f"SQLite {db}" in body and "database disk image is malformed" in body
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and "sent to support@example.org directly" in critical[0].getMessage()
    poll_errors = [r.getMessage() for r in caplog.records if r.getMessage().startswith("poll failed")]
    assert poll_errors and all("\n" not in m and "[SQL:" not in m for m in poll_errors)

    # mended (restored from a backup): polling works, ONE "recovered" mail, through the outbox again
    for table, page in pages.items():
        restore(db, page, table, page_size, roots[table])
    desk.engine.dispose()  # connections opened on the damaged file hold its pages in their caches
    clock[0] += 3600
    daemon.poll()
    daemon.flush()
    assert daemon.failures == 0
    alert, recovered = smtp_server.wait_for(2)
    assert recovered.message["Subject"] == "[Example Delist Desk] Recovered: the database works again"
    clock[0] += 3600
    daemon.poll()
    daemon.flush()
    assert len(smtp_server.messages) == 2


class VanishingServer(FaultProxy):
    """A proxy to the database server that can vanish at once: every connection cut, new ones refused."""

    def __init__(self, host: str, port: int) -> None:
        self.lock = threading.Lock()
        super().__init__(host, port)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:  # not a connection half-made while `vanish` cuts them all
                if self.stopping.is_set():
                    client.close()
                    return
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, None, 0), daemon=True).start()

    def vanish(self) -> None:
        with self.lock:
            self.stopping.set()
            self.listener.close()
        self.close_connections()


def test_the_daemon_alerts_staff_straight_over_smtp_when_postgresql_goes_away(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    postgres_only(database_url)
    target = make_url(database_url)
    proxy = VanishingServer(target.host or "127.0.0.1", target.port or 5432)
    url = target.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    path = imap_toml(tmp_path, dovecot, smtp_server, url, desk={"staff": ["support@example.org"]},
                     schedule={"poll_seconds": 1}, alerts={"poll_failure_minutes": 0.02})
    env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password}
    proc = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(path), "run"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    try:
        dovecot.append(sample("01-banned-sender-attached.eml"))
        smtp_server.wait_for(1, timeout=30)  # the daemon works: the sender's acknowledgement
        proxy.vanish()  # the database server is gone
        alert = smtp_server.wait_for(2, timeout=30)[1]
        status = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "status"], capture_output=True,
                                text=True, timeout=60, env=env)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert alert.message["Subject"].startswith("[Delist desk] ALERT: the database fails since")
    assert f"PostgreSQL postgres@127.0.0.1:{proxy.port}/{target.database}" in " ".join(alert.message.get_body(
        ("plain",)).get_content().split())
    assert "CRITICAL" in out and "directly" in out
    assert len(smtp_server.messages) == 2  # one alert, not one per failed poll
    assert status.returncode == 3
    line = one_line(status.stderr)
    assert line.startswith(f"mailbot: database PostgreSQL postgres@127.0.0.1:{proxy.port}/{target.database}")
