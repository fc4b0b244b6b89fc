"""Sent folders are optional to the inbox: one that cannot be read is reported
(log, `mailbot status`, one alert and one "recovered" mail) and skipped, and the
inbox keeps flowing. Against real Dovecot, SMTP and both databases."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import time_machine
from app import World, forward, imap_toml
from sqlmodel import Session, select

from mailbot.cli import status
from mailbot.store.tables import FolderHealth

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
STAFF = "support@example.org"


def subjects(w: World) -> list[str]:
    return [str(m.message["Subject"]) for m in w.smtp.messages]


def alerts(w: World) -> list[str]:
    return [s for s in subjects(w) if "folder Sent" in s]


def test_a_missing_sent_folder_is_skipped_reported_once_and_recovered(
        make_world: Any, caplog: pytest.LogCaptureFixture) -> None:
    w: World = make_world(mailbox={"sent_folders": ["Sent"]}, desk={"staff": [STAFF]},
                          alerts={"poll_failure_minutes": 30})
    caplog.set_level(logging.WARNING, logger="mailbot")
    with time_machine.travel(T0, tick=False) as clock:
        w.deliver(forward("203.0.113.10", "fwd-a", "ann@one.example"))
        polled, _ = w.run()
        # the inbox flowed: ticket, reply, message moved; the folder was skipped and said so
        assert [t.ip for t in w.tickets()] == ["203.0.113.10"]
        assert w.imap.uids("INBOX") == [] and len(w.imap.uids("Processed")) == 1
        assert list(polled.skipped) == ["Sent"] and "doesn't exist" in polled.skipped["Sent"]
        assert any("folder Sent cannot be read, skipped" in r.getMessage() for r in caplog.records)
        w.smtp.wait_for(1)
        assert alerts(w) == []  # not before alerts.poll_failure_minutes

        with Session(w.desk.engine) as s:
            [row] = s.exec(select(FolderHealth)).all()
        assert row.mailbox.endswith("/Sent") and row.failing_since == T0
        seen = status.gather(w.desk.engine, T0, 8)["skipped_folders"]
        assert [f["mailbox"] for f in seen] == [row.mailbox] and "doesn't exist" in seen[0]["last_error"]

        # half an hour on, every poll: the inbox still flows, ONE alert
        for i in range(4):
            clock.shift(timedelta(minutes=10))
            w.deliver(forward(f"203.0.113.{20 + i}", f"fwd-{i}", f"bob{i}@two.example"))
            w.run()
        assert len(w.tickets()) == 5 and w.imap.uids("INBOX") == []
        [alert] = alerts(w)
        assert alert.startswith("[Example Delist Desk] ALERT: the folder Sent cannot be read since")
        mail = next(m for m in w.smtp.messages if "folder Sent" in str(m.message["Subject"]))
        assert mail.rcpt_tos == [STAFF] and mail.message["Auto-Submitted"] == "auto-generated"
        assert "doesn't exist" in mail.message.get_body(("plain",)).get_content()

        # the folder appears: read again, one "recovered" mail, nothing more
        w.imap.create_folder("Sent")
        clock.shift(timedelta(minutes=10))
        polled, _ = w.run()
        assert polled.skipped == {}
        clock.shift(timedelta(minutes=10))
        w.run()
    assert alerts(w) == [alert, "[Example Delist Desk] Recovered: the folder Sent is read again"]
    assert status.gather(w.desk.engine, T0, 8)["skipped_folders"] == []


def test_poll_once_with_a_missing_sent_folder_processes_the_inbox_and_warns(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, mailbox={"sent_folders": ["Sent"]})
    dovecot.append(forward())
    env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password}
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "poll", "--once"], capture_output=True,
                       text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "fetched 1 new" in r.stdout and "sent 1" in r.stdout
    assert "warning: folder Sent skipped" in r.stderr and "Traceback" not in r.stderr
    shown = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "status"], capture_output=True,
                           text=True, timeout=60, env=env)
    assert shown.returncode == 0, shown.stderr
    [line] = [ln for ln in shown.stdout.splitlines() if "SKIPPED" in ln]
    assert line.startswith("mailbox   imap://") and "/Sent: SKIPPED, cannot be read since" in line
    assert "doesn't exist" in line
