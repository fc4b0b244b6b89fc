"""What operators watch: JSON logs naming the message and ticket, the
Prometheus endpoint, `mailbot status`, and one alert (then one recovery)
mail when polling keeps failing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine
from app import World, sample
from servers import free_port
from test_cli import imap_toml

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_one_alert_after_the_configured_minutes_and_one_recovery_mail(make_world: Any) -> None:
    w: World = make_world(desk={"staff": ["support@example.org"]}, alerts={"poll_failure_minutes": 30})
    with time_machine.travel(T0, tick=False) as clock:
        health = w.desk.health(name="mx1:1")
        for _ in range(29):
            health.failed("IMAP server imap.example.org:993 (user delist@example.org): login refused")
            clock.shift(timedelta(minutes=1))
        w.desk.flush()
        assert w.smtp.messages == []
        for _ in range(20):
            clock.shift(timedelta(minutes=1))
            health.failed("IMAP server imap.example.org:993 (user delist@example.org): login refused")
        w.desk.flush()
        [alert] = w.smtp.wait_for(1)
        assert "ALERT: mailbox polling has failed since" in alert.message["Subject"]
        assert "login refused" in alert.message.get_body(("plain",)).get_content()
        health.ok()
        health.ok()
        w.desk.flush()
    alert, recovered = w.smtp.wait_for(2)
    assert recovered.message["Subject"].endswith("Recovered: mailbox polling works again")
    assert len(w.smtp.messages) == 2


def test_the_daemon_logs_json_lines_naming_message_and_ticket_and_serves_metrics(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    port = free_port()
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, schedule={"poll_seconds": 1},
                     log={"format": "json"}, metrics={"port": port})
    dovecot.append(sample("01-banned-sender-attached.eml"))
    proc = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(path), "run"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
    try:
        smtp_server.wait_for(1, timeout=30)
        body = ""
        deadline = time.monotonic() + 20
        # the reply may have reached the SMTP server a moment before its outbox row is marked sent
        while not ("mailbot_messages_fetched_total 1.0" in body and "mailbot_outbox_depth 0.0" in body) \
                and time.monotonic() < deadline:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            except OSError:
                time.sleep(0.2)
        status = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "status", "--json"],
                                capture_output=True, text=True, timeout=60,
                                env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "mailbot_messages_fetched_total 1.0" in body
    assert 'mailbot_tickets_opened_total{family="5.7.511"} 1.0' in body
    assert "mailbot_outbox_depth 0.0" in body and "mailbot_last_successful_poll_timestamp" in body
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(r) for r in lines)
    processed = [r for r in lines if r.get("ticket") == "DL-000001" and r.get("message_id")]
    assert any(r["message_id"] == "<demo-01-fwd@contoso-sender.example>" for r in processed)
    assert dovecot.password not in out
    data = json.loads(status.stdout)
    assert data["tickets"]["open"] == 1 and data["outbox"]["queued"] == 0
    assert data["daemons"][0]["last_poll_ok_at"] and data["daemons"][0]["errors_since_start"] == 0
