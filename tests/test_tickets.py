"""Finding tickets: the filters staff use, least time left first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine
from app import World, sample
from sqlmodel import Session
from test_cli import imap_toml

from mailbot.desk.tickets import TicketFilter, find

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def refs(w: World, **kw: Any) -> list[str]:
    with Session(w.desk.engine) as s:
        return [t.ref for t in find(s, TicketFilter(**kw), datetime.now(UTC))]


def test_filters_and_order(world: World) -> None:
    with time_machine.travel(T0, tick=False) as clock:
        world.deliver(sample("01-banned-sender-attached.eml"))   # DL-1 open 511, oldest
        world.run()
        clock.shift(timedelta(hours=5))
        world.deliver(sample("02-portal-outlook-inline.eml"))    # DL-2 redirected 606
        world.deliver(sample("04-no-code.eml"))                  # DL-3 needs_info, no code
        world.deliver(sample("06-ipv6-thunderbird.eml"))         # DL-4 open 511, newer
        world.run()
        clock.shift(timedelta(hours=44))                         # DL-1 overdue by 1h, DL-4 due in 4h
        assert refs(world) == ["DL-000001", "DL-000004", "DL-000002", "DL-000003"]
        assert refs(world, sort="id") == ["DL-000001", "DL-000002", "DL-000003", "DL-000004"]
        assert refs(world, state="open") == ["DL-000001", "DL-000004"]
        assert refs(world, family="5.7.606-649") == ["DL-000002"]
        assert refs(world, family="none") == ["DL-000003"]
        assert refs(world, family="other") == []
        assert refs(world, ip="2001:db8:5::25") == ["DL-000004"]
        assert refs(world, sender="northwind") == ["DL-000002"]
        assert refs(world, overdue=True) == ["DL-000001"]
        assert refs(world, due_within_hours=3) == ["DL-000001"]
        assert refs(world, due_within_hours=5) == ["DL-000001", "DL-000004"]


def test_the_command_line_lists_plainly_for_a_pipe_and_as_json_for_scripts(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    env = {**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password}
    dovecot.append(sample("01-banned-sender-attached.eml"))
    dovecot.append(sample("04-no-code.eml"))
    subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "poll", "--once"], env=env, check=True,
                   capture_output=True, timeout=60)
    plain = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "tickets", "--state", "open"],
                           env=env, capture_output=True, text=True, timeout=60)
    header, row = plain.stdout.splitlines()
    assert header.split()[:3] == ["ref", "state", "code"]
    assert row.startswith("DL-000001  open") and "203.0.113.45" in row and "left" in row
    js = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "tickets", "--json"], env=env,
                        capture_output=True, text=True, timeout=60)
    data = json.loads(js.stdout)
    assert [t["ref"] for t in data] == ["DL-000001", "DL-000002"]
    assert data[0]["time_left"].endswith("left") and data[1]["time_left"] is None
