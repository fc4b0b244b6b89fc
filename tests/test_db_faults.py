"""Database faults: an unreachable database is a named error, and a database
that drops every connection mid-run is reconnected to without losing mail."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from app import World, imap_config, sample
from servers import free_port
from sqlalchemy.engine import make_url
from test_cli import imap_toml
from test_faults_imap import FaultProxy

from mailbot.db import DatabaseError
from mailbot.desk import Desk


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
        desk.engine.dispose()
        proxy.close()
