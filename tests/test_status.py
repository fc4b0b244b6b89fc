"""`mailbot status` tells the truth about daemons: a running one is "running", one
that exited or was killed is "stopped" (once its heartbeat is a few beats old),
and a second daemon refused on the same SQLite file never appears."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import time_machine
from app import imap_toml
from click.testing import CliRunner
from test_daemon import start_daemon, stop

from mailbot import clock
from mailbot.cli import main


def status_json(path: Path, password: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "status", "--json"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": password})
    assert r.returncode == 0, r.stderr
    data: dict[str, Any] = json.loads(r.stdout)
    return data


def wait_running(path: Path, password: str, pid: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.3)
        r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "status", "--json"],
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": password})
        if r.returncode != 0:
            continue  # on a first start, SQLite may be in the middle of its migrations
        if any(d["name"].endswith(f":{pid}") and d["state"] == "running" for d in json.loads(r.stdout)["daemons"]):
            return
    raise AssertionError(f"daemon {pid} not shown running within 30 s")


def test_a_stopped_daemon_is_shown_stopped_and_a_refused_one_never_appears(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, schedule={"poll_seconds": 3600})
    first = start_daemon(path, dovecot.password)
    try:
        wait_running(path, dovecot.password, first.pid)
        if database_url.startswith("sqlite"):
            second = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "run"], capture_output=True,
                                    text=True, timeout=60,
                                    env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
            assert second.returncode == 1 and "another mailbot daemon" in second.stderr
        data = status_json(path, dovecot.password)
        assert [(d["name"].rsplit(":", 1)[1], d["state"]) for d in data["daemons"]] == [(str(first.pid), "running")]
    finally:
        out = stop(first)
    assert first.returncode == 0, out

    # exited cleanly: stopped at once
    [gone] = status_json(path, dovecot.password)["daemons"]
    assert gone["name"].endswith(f":{first.pid}") and gone["state"] == "stopped" and gone["stopped_at"]
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "status"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
    assert "daemon    none running" in r.stdout
    [line] = [ln for ln in r.stdout.splitlines() if f":{first.pid}:" in ln]
    assert f":{first.pid}: stopped (last seen " in line and ": running" not in line


def test_a_killed_daemon_is_shown_stopped_once_its_heartbeat_is_old(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, schedule={"poll_seconds": 2})
    daemon = start_daemon(path, dovecot.password)
    try:
        wait_running(path, dovecot.password, daemon.pid)
        time.sleep(2.5)  # a heartbeat later: still running
        [alive] = status_json(path, dovecot.password)["daemons"]
        assert alive["state"] == "running" and alive["heartbeat_at"] > alive["started_at"]
    finally:
        daemon.send_signal(signal.SIGKILL)  # no chance to say goodbye
        daemon.communicate(timeout=30)
    # its row still says nothing of stopping; the heartbeat is what tells
    runner = CliRunner()
    env = {"MAILBOT_MAILBOX_PASSWORD": dovecot.password}
    now = clock.utcnow()
    with time_machine.travel(now + timedelta(seconds=5), tick=False):
        soon = runner.invoke(main, ["-c", str(path), "status"], env=env)
    with time_machine.travel(now + timedelta(minutes=2), tick=False):
        later = runner.invoke(main, ["-c", str(path), "status"], env=env)
    assert soon.exit_code == 0 and later.exit_code == 0, (soon.output, later.output)
    assert f":{daemon.pid}: running;" in soon.output  # within the allowance of 3 beats (at least 10 s)
    assert f":{daemon.pid}: stopped (last seen " in later.output and "none running" in later.output


def test_commands_starting_together_on_a_new_sqlite_file_migrate_it_once(tmp_path: Path) -> None:
    """`mailbot status` run while the daemon first starts used to race its migrations ("table already exists")."""
    code = ("import sys; from mailbot.store.engine import make_engine; from mailbot.store import schema; "
            "e = make_engine(sys.argv[1]); schema.upgrade(e); print(schema.current(e))")
    for attempt in range(3):
        url = f"sqlite:///{tmp_path}/new{attempt}.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        results = [(p.wait(timeout=60), *p.communicate()) for p in procs]
        assert all(rc == 0 and out.strip() == results[0][1].strip() != "" for rc, out, _ in results), results
