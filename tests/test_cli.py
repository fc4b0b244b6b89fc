"""The command line as a person and a script use it."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app import imap_toml, mailbot_cli, sample
from corpus import corpus_dir

ROOT = Path(__file__).resolve().parents[1]


def mailbot(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return mailbot_cli(*args, cwd=cwd, timeout=timeout)


def test_parse_json_prints_one_object_per_file_with_the_documented_names(tmp_path: Path) -> None:
    files = [str(corpus_dir() / "forwards/found/s01-postfix-511-v4/outlook_inline.eml"), str(tmp_path / "empty.eml")]
    (tmp_path / "empty.eml").write_bytes(b"Subject: hello\r\n\r\nnothing here\r\n")
    r = mailbot("parse", "--json", *files)
    assert r.returncode == 0, r.stderr
    first, second = (json.loads(line) for line in r.stdout.splitlines())
    for key in ("file", "reply_code", "status", "ips", "text", "source", "findings"):
        assert key in first and key in second
    assert (first["file"], first["reply_code"], first["status"], first["ips"]) == (
        files[0], "550", "5.7.511", ["203.0.113.45"])
    assert first["source"] and first["findings"]
    assert (second["reply_code"], second["status"], second["ips"], second["text"], second["findings"]) == (
        None, None, [], None, [])


def test_parse_for_a_person_shows_the_evidence() -> None:
    r = mailbot("parse", str(corpus_dir() / "forwards/found/s01-postfix-511-v4/fwd_attach.eml"))
    assert r.returncode == 0
    assert "550 5.7.511" in r.stdout and "203.0.113.45" in r.stdout and "source:" in r.stdout


def test_the_demo_runs_the_whole_desk_without_a_mail_server(tmp_path: Path) -> None:
    r = mailbot("demo", "--dir", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    assert "DL-000001  open" in r.stdout and "redirected" in r.stdout and "needs_info" in r.stdout
    replies = list((tmp_path / "demo" / "outbox" / "new").iterdir())
    assert len(replies) == 8
    assert f"Replies (8) are in the Maildir outbox {tmp_path / 'demo' / 'outbox' / 'new'}" in r.stdout
    assert list((tmp_path / "demo" / "inbox" / "new").iterdir()) == []
    assert len(list((tmp_path / "demo" / "inbox" / ".Processed" / "cur").iterdir())) == 9

    again = mailbot("demo", "--dir", str(tmp_path / "demo"))
    assert "Processed 0 messages (9 already seen" in again.stdout
    assert "not_ours" in r.stdout and "not_a_block" in r.stdout
    assert len(list((tmp_path / "demo" / "outbox" / "new").iterdir())) == 8

    config = str(tmp_path / "demo" / "mailbot.toml")
    tickets = json.loads(mailbot("-c", config, "tickets", "--sort", "id", "--json").stdout)
    assert [t["ref"] for t in tickets] == ["DL-000001", "DL-000002", "DL-000003", "DL-000004", "DL-000005",
                                             "DL-000006", "DL-000007", "DL-000008"]
    assert tickets[0]["status"] == "5.7.511" and tickets[0]["ip"] == "203.0.113.45"
    shown = mailbot("-c", config, "show", "DL-000001")
    assert shown.returncode == 0
    assert "evidence: 550 5.7.511" in shown.stdout and "joined" in shown.stdout and "mail_sent" in shown.stdout
    assert "listing:  listed since" in shown.stdout and "reason (staff only): hit our spam traps" in shown.stdout
    # the sample whose IP the demo's list does not hold is answered so, and resolved without a person
    assert re.search(r"DL-000008  not_listed  550 5.7.511  192.0.2.61 +olivia@fourthcoffee.example", r.stdout)
    assert "to olivia@fourthcoffee.example              [DL-000008] 192.0.2.61 is not on our block list" in r.stdout
    assert tickets[7]["state"] == "not_listed" and tickets[7]["listing"] == "not_listed"
    assert tickets[7]["outcome"] == "not_listed" and tickets[0]["listing"] == "listed"
    missing = mailbot("-c", config, "show", "DL-000099")
    assert missing.returncode == 1 and "no ticket DL-000099" in missing.stderr


def test_check_prints_one_line_per_check_and_fails_when_one_fails(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, desk={"staff": ["support@example.org"]},
                     replies={"authserv_ids": ["mx.example.org"]})
    env_ok = {"MAILBOT_MAILBOX_PASSWORD": dovecot.password}
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "check"], capture_output=True, text=True,
                       env={**os.environ, **env_ok}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert [ln.split()[1] for ln in lines] == ["config", "database", "mailbox", "folders", "outgoing", "templates"]
    assert all(ln.startswith("ok") for ln in lines), r.stdout
    assert "MOVE, IDLE" in lines[2]

    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "check"], capture_output=True, text=True,
                       env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": "nope"}, timeout=60)
    assert r.returncode == 1
    failing = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL")]
    assert len(failing) == 1 and "login refused" in failing[0] and dovecot.user in failing[0]
    assert "nope" not in r.stdout


def test_poll_once_processes_and_sends(tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    dovecot.append(sample("01-banned-sender-attached.eml"))
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "poll", "--once"], capture_output=True,
                       text=True, env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "fetched 1 new" in r.stdout and "sent 1" in r.stdout
    assert smtp_server.wait_for(1)


def test_a_refused_login_exits_3_with_one_line(tmp_path: Path, dovecot: Any, smtp_server: Any,
                                               database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url)
    r = subprocess.run([sys.executable, "-m", "mailbot", "-c", str(path), "poll", "--once"], capture_output=True,
                       text=True, env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": "wrong"}, timeout=60)
    assert r.returncode == 3
    assert "login refused" in r.stderr and "Traceback" not in r.stderr


def test_the_daemon_acknowledges_new_mail_and_stops_cleanly_on_sigterm(
        tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> None:
    path = imap_toml(tmp_path, dovecot, smtp_server, database_url, schedule={"poll_seconds": 0.5})
    proc = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(path), "run"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "MAILBOT_MAILBOX_PASSWORD": dovecot.password})
    try:
        dovecot.append(sample("01-banned-sender-attached.eml"))
        smtp_server.wait_for(1, timeout=30)
        dovecot.append(sample("06-ipv6-thunderbird.eml"))
        smtp_server.wait_for(2, timeout=30)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out
    assert "mailbot stopped" in out


def test_every_command_has_help_with_an_example() -> None:
    for cmd in ("run", "poll", "flush", "tickets", "show", "parse", "check", "demo", "delist", "conditional",
                "decline"):
        r = mailbot(cmd, "--help")
        assert r.returncode == 0 and "Example" in r.stdout, cmd


def test_reply_offers_the_staff_templates_only_and_says_so_in_one_line(tmp_path: Path) -> None:
    assert mailbot("demo", "--dir", str(tmp_path / "demo")).returncode == 0
    config, outbox = str(tmp_path / "demo" / "mailbot.toml"), tmp_path / "demo" / "outbox" / "new"
    helped = mailbot("reply", "--help")
    assert helped.returncode == 0
    listed = re.search(r"Templates: (.*?) \(shipped\)", " ".join(helped.stdout.split()))
    assert listed and listed.group(1) == "conditional, declined, delisted"
    for name in ("ack", "needs_info", "redirect", "digest", "sla_notice", "poll_alert", "_layout", "nope"):
        r = mailbot("-c", config, "reply", "DL-000001", "--template", name)
        assert r.returncode == 1, (name, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
        assert f"no staff template '{name}'" in r.stderr and "conditional, declined, delisted" in r.stderr
    assert len(list(outbox.iterdir())) == 8  # nothing was sent
    shown = mailbot("-c", config, "show", "DL-000001").stdout
    assert "staff_reply" not in shown and "answered" not in shown


def test_a_staff_template_that_does_not_render_is_one_line_and_sends_nothing(tmp_path: Path) -> None:
    assert mailbot("demo", "--dir", str(tmp_path / "demo")).returncode == 0
    config, outbox = tmp_path / "demo" / "mailbot.toml", tmp_path / "demo" / "outbox" / "new"
    own = tmp_path / "demo" / "templates"
    own.mkdir()
    (own / "apology.txt.j2").write_text("{% block subject %}[{{ ref }}] Sorry{% endblock %}"
                                        "{% block body %}Dear {{ customer_name }}{% endblock %}")
    (own / "apology.html.j2").write_text("<p>Dear {{ customer_name }}</p>")
    config.write_text(config.read_text() + '\n[templates]\ndir = "templates"\n')
    r = mailbot("-c", str(config), "reply", "DL-000001", "--template", "apology")
    assert r.returncode == 1
    assert r.stderr == "mailbot: template apology: 'customer_name' is undefined\n"
    assert len(list(outbox.iterdir())) == 8
    ok = mailbot("-c", str(config), "reply", "DL-000001", "--template", "delisted")
    assert ok.returncode == 0, ok.stderr
    assert len(list(outbox.iterdir())) == 10  # both senders of DL-000001


def test_the_demo_goes_on_to_the_48_hour_mark_in_simulated_time(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    r = mailbot("demo", "--dir", str(tmp_path / "demo"))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    simulated = out[out.index("SIMULATED TIME"):]
    moved = re.search(r"The clock is moved 40 hours forward, to (\d{4}-\d\d-\d\d \d\d:\d\d) (CES?T)", simulated)
    assert moved, simulated
    to = datetime.strptime(moved.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo("Europe/Berlin"))
    assert timedelta(hours=39, minutes=58) < to - datetime.now(UTC) <= timedelta(hours=40, minutes=1)
    assert "runs on a copy of the database" in simulated

    start = simulated.index("----- ESCALATION mail to support@example.org")
    escalation = simulated[start:simulated.index("----- DIGEST")]
    assert escalation.splitlines()[0].endswith("(simulated time) -----")
    assert "Subject: [Example Delist Desk] 2 due soon" in escalation
    assert re.search(r"DL-000001  7h 5\dm left", escalation) and "DL-000005" in escalation
    assert "erik.admin@contoso-sender.example" in escalation and "mailbot delist DL-000001" in escalation
    # staff read what the list says, and why it lists the IP
    assert re.search(r"listing:\n +listed since \d{4}-\d\d-\d\d \d\d:\d\d CES?T \(spam-trap\)", escalation)
    assert "hit our spam traps 40 times" in escalation
    digest = simulated[simulated.index("----- DIGEST mail to support@example.org"):]
    assert digest.splitlines()[0].endswith("(simulated time) -----")
    assert "Subject: [Example Delist Desk] Digest: 2 open, 2 due soon" in digest
    assert re.search(r"DUE SOON \(2\)\n  DL-000001  7h 5\dm left", digest)

    staff_mails = list((tmp_path / "demo" / "simulated" / "outbox" / "new").iterdir())
    assert len(staff_mails) == 2
    assert all(b"To: support@example.org" in p.read_bytes() for p in staff_mails)
    # the demo's own desk is untouched: no escalation, no digest, no staff mail in its outbox
    def count(db: Path, sql: str) -> int:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return int(conn.execute(sql).fetchone()[0])

    real, copy = tmp_path / "demo" / "mailbot.db", tmp_path / "demo" / "simulated" / "mailbot.db"
    for table, in_copy in (("sla_notice", 2), ("digest_run", 1)):
        assert (count(real, f"select count(*) from {table}"), count(copy, f"select count(*) from {table}")) == (
            0, in_copy), table
    assert len(list((tmp_path / "demo" / "outbox" / "new").iterdir())) == 8


def test_the_demo_as_the_readme_runs_it_with_its_default_folder(tmp_path: Path) -> None:
    # `mailbot demo` with no --dir: every path relative to the working folder
    r = mailbot("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "SIMULATED TIME" in r.stdout and "----- ESCALATION mail to support@example.org" in r.stdout
    assert (tmp_path / "mailbot-demo" / "simulated" / "mailbot.db").is_file()
