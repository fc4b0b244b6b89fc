"""Several daemons on one PostgreSQL: every message processed once, every
ticket acknowledged once, nothing stuck, even when one daemon is killed."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from app import sample
from sqlalchemy import text
from test_cli import imap_toml

from mailbot.store import schema
from mailbot.store.engine import make_engine

N = int(os.environ.get("MAILBOT_SCALEOUT_MESSAGES", "1000"))


def forward(i: int) -> bytes:
    raw = sample("01-banned-sender-attached.eml")
    return (raw.replace(b"203.0.113.45", f"2001:db8:7::{i:x}".encode())
               .replace(b"<demo-01-fwd@contoso-sender.example>", f"<scale-{i}@contoso{i % 50}.example>".encode())
               .replace(b"From: Erik Admin <erik.admin@contoso-sender.example>",
                        f"From: Sender {i} <sender{i}@contoso{i % 50}.example>".encode()))


def test_three_daemons_one_killed_every_message_once(tmp_path: Path, dovecot: Any, smtp_server: Any,
                                                     database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several daemons share a PostgreSQL database (SQLite takes one)")
    with dovecot.client() as c:
        for i in range(N):
            c.append("INBOX", forward(i))
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, schedule={"poll_seconds": 1, "flush_seconds": 1},
                     replies={"breaker_per_hour": 100_000, "per_domain_daily": 100_000})
    env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password}
    procs = [subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(path), "run"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    engine = make_engine(database_url)
    schema.upgrade(engine)  # the daemons would too; the test watches the tables from the start
    try:
        deadline = time.monotonic() + 600
        killed = False
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                done = conn.execute(text("SELECT count(*) FROM message WHERE state <> 'stored'")).scalar_one()
            if not killed and done >= N // 3:
                random.choice(procs).send_signal(signal.SIGKILL)
                killed = True
            if done >= N and len(smtp_server.messages) >= N:
                break
            time.sleep(0.5)
        time.sleep(2)  # a late duplicate would show up now
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    with engine.connect() as conn:
        states = dict(conn.execute(text("SELECT state, count(*) FROM message GROUP BY state")).all())  # type: ignore[arg-type]
        tickets = conn.execute(text("SELECT count(*) FROM ticket")).scalar_one()
        per_ticket = conn.execute(text(
            "SELECT count(*) FROM outbox WHERE kind = 'ack' GROUP BY ticket_id HAVING count(*) > 1")).all()
    engine.dispose()
    assert killed
    assert states == {"processed": N}
    assert tickets == N and per_ticket == []
    ids = Counter(m.message["Message-ID"] for m in smtp_server.messages)
    recipients = Counter(m.rcpt_tos[0] for m in smtp_server.messages)
    duplicates = sum(n - 1 for n in ids.values())
    # a duplicate can only be the same mail again (killed between the server's 250 and our commit)
    assert len(ids) == N and duplicates <= 1
    assert len(recipients) == N
