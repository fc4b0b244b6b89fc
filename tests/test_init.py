"""`mailbot init`: a starter config that loads, from answers or flags, never with a password."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app import SAMPLES

from mailbot.config import load


def mailbot(*args: str, cwd: Path, stdin: str = "",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailbot", *args], capture_output=True, text=True, cwd=cwd,
                          input=stdin, timeout=120, env={**os.environ, **(env or {})})


FLAGS = ("--imap-host", "imap.example.org", "--imap-user", "delist@example.org", "--smtp-host", "smtp.example.org",
         "--staff", "ann@example.org,bob@example.org", "--staff", "carl@example.org", "--timezone", "Europe/Berlin")


def test_init_from_flags_writes_a_config_that_loads_without_a_password(tmp_path: Path) -> None:
    r = mailbot("init", *FLAGS, cwd=tmp_path, env={"MAILBOT_MAILBOX_PASSWORD": "hunter2"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == "wrote mailbot.toml"
    assert "MAILBOT_MAILBOX_PASSWORD" in r.stdout and "mailbot -c mailbot.toml check" in r.stdout
    # with staff but no trusted Authentication-Results, staff mail never counts: init says so
    assert "only once [replies] authserv_ids names your own mail server" in r.stdout
    text = (tmp_path / "mailbot.toml").read_text()
    assert "hunter2" not in text and "\npassword =" not in text
    config = load(tmp_path / "mailbot.toml", environ={})
    assert (config.mailbox.host, config.mailbox.user) == ("imap.example.org", "delist@example.org")
    assert (config.outgoing.host, config.outgoing.user) == ("smtp.example.org", "delist@example.org")
    assert config.outgoing.from_address == "delist@example.org"
    assert config.desk.staff == ("ann@example.org", "bob@example.org", "carl@example.org")
    assert config.desk.timezone == "Europe/Berlin" and config.database.url == "sqlite:///mailbot.db"


def test_init_asks_on_a_terminal_when_given_no_flags(tmp_path: Path) -> None:
    answers = "\n".join(["imap", "imap.example.org", "delist@example.org", "", "", "",
                         "Example Delist Desk", "Europe/Berlin", "ann@example.org, bob@example.org",
                         "postgresql+psycopg://mailbot@db.example.org/mailbot"]) + "\n"
    r = mailbot("-c", "desk.toml", "init", cwd=tmp_path, stdin=answers)
    assert r.returncode == 0, r.stderr
    assert "IMAP server:" in r.stdout and "SMTP server [imap.example.org]:" in r.stdout
    config = load(tmp_path / "desk.toml", environ={})
    assert config.outgoing.host == "imap.example.org" and config.outgoing.from_address == "delist@example.org"
    assert config.desk.name == "Example Delist Desk" and config.outgoing.from_name == "Example Delist Desk"
    assert config.desk.staff == ("ann@example.org", "bob@example.org")
    assert config.database.url == "postgresql+psycopg://mailbot@db.example.org/mailbot"


def test_init_never_overwrites_without_force(tmp_path: Path) -> None:
    (tmp_path / "mailbot.toml").write_text("# mine\n")
    r = mailbot("init", *FLAGS, cwd=tmp_path)
    assert r.returncode == 1 and "mailbot.toml exists; add --force to overwrite it" in r.stderr
    assert (tmp_path / "mailbot.toml").read_text() == "# mine\n"
    forced = mailbot("init", *FLAGS, "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert load(tmp_path / "mailbot.toml", environ={}).mailbox.host == "imap.example.org"


def test_a_value_that_does_not_validate_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    r = mailbot("init", *FLAGS, "--timezone", "Mars/Olympus", cwd=tmp_path)
    assert r.returncode == 2
    assert "config not written: mailbot.toml: desk.timezone: unknown time zone 'Mars/Olympus'" in r.stderr
    assert list(tmp_path.iterdir()) == []

    missing = mailbot("init", "--imap-host", "imap.example.org", cwd=tmp_path)  # no terminal to ask on
    assert missing.returncode == 2 and "give --imap-user" in missing.stderr
    assert list(tmp_path.iterdir()) == []


def test_values_cannot_inject_toml(tmp_path: Path) -> None:
    r = mailbot("init", *FLAGS, "--desk-name", 'Desk"\n[database]\nurl = "x', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    config = load(tmp_path / "mailbot.toml", environ={})
    assert config.desk.name == 'Desk"\n[database]\nurl = "x' and config.database.url == "sqlite:///mailbot.db"


def test_a_local_maildir_setup_runs_straight_away(tmp_path: Path) -> None:
    r = mailbot("init", "--maildir", "mail", "--path", "etc/mailbot.toml", cwd=tmp_path)
    # the folder of --path must exist
    assert r.returncode == 2 and "is not a directory" in r.stderr
    (tmp_path / "etc").mkdir()
    r = mailbot("init", "--maildir", "mail", "--path", "etc/mailbot.toml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    inbox, outbox = tmp_path / "etc" / "mail" / "inbox", tmp_path / "etc" / "mail" / "outbox"
    assert f"put forwarded NDRs (.eml files) into {inbox / 'new'}; replies appear in {outbox / 'new'}" in r.stdout
    (inbox / "new" / "1.eml").write_bytes((SAMPLES / "02-portal-outlook-inline.eml").read_bytes())
    check = mailbot("-c", "etc/mailbot.toml", "check", cwd=tmp_path)
    assert check.returncode == 0, check.stdout
    polled = mailbot("-c", "etc/mailbot.toml", "poll", "--once", cwd=tmp_path)
    assert polled.returncode == 0 and "processed 1" in polled.stdout and "sent 1" in polled.stdout
    assert len(list((outbox / "new").iterdir())) == 1


def test_init_help_has_an_example(tmp_path: Path) -> None:
    r = mailbot("init", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "Example" in r.stdout
    assert "never writes a password" in " ".join(r.stdout.lower().split())
