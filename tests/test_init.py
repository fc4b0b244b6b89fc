"""`mailbot init`: a starter config that loads, from answers or flags, never with a password."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

from app import SAMPLES

from mailbot.config import load

ROOT = Path(__file__).resolve().parents[1]


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
    answers = "\n".join(["imap", "imap.example.org", "starttls", "", "delist@example.org", "Sent, Sent Items",
                         "", "tls", "", "", "", "Example Delist Desk", "Europe/Berlin",
                         "ann@example.org, bob@example.org",
                         "postgresql+psycopg://mailbot@db.example.org/mailbot"]) + "\n"
    r = mailbot("-c", "desk.toml", "init", cwd=tmp_path, stdin=answers)
    assert r.returncode == 0, r.stderr
    assert "IMAP server:" in r.stdout and "SMTP server [imap.example.org]:" in r.stdout
    assert "IMAP port [143]:" in r.stdout and "SMTP port [465]:" in r.stdout  # the port follows the security
    config = load(tmp_path / "desk.toml", environ={})
    assert (config.mailbox.port, config.mailbox.security, config.mailbox.sent_folders) == (
        143, "starttls", ("Sent", "Sent Items"))
    assert (config.outgoing.port, config.outgoing.security) == (465, "tls")
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


def test_the_flags_a_real_setup_needs_give_a_config_that_check_accepts(
        tmp_path: Path, dovecot: Any, smtp_server: Any) -> None:
    r = mailbot("init", "--imap-host", dovecot.host, "--imap-port", str(dovecot.port), "--imap-security", "none",
                "--imap-user", dovecot.user, "--sent-folder", "Sent", "--sent-folder", "Sent Items",
                "--smtp-host", smtp_server.host, "--smtp-port", str(smtp_server.port), "--smtp-security", "none",
                "--smtp-user", smtp_server.user, "--from-address", "delist@example.org",
                "--database-url", "sqlite:///desk.db", "--staff", "ann@example.org", "--desk-name", "Example Desk",
                "--timezone", "Europe/Berlin", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    config = load(tmp_path / "mailbot.toml", environ={})
    m, o = config.mailbox, config.outgoing
    assert (m.host, m.port, m.security, m.user, m.sent_folders) == (
        dovecot.host, dovecot.port, "none", dovecot.user, ("Sent", "Sent Items"))
    assert (o.host, o.port, o.security, o.user, o.from_address) == (
        smtp_server.host, smtp_server.port, "none", smtp_server.user, "delist@example.org")
    assert (config.database.url, config.desk.staff, config.desk.name) == (
        "sqlite:///desk.db", ("ann@example.org",), "Example Desk")
    secrets = {"MAILBOT_MAILBOX_PASSWORD": dovecot.password, "MAILBOT_OUTGOING_PASSWORD": smtp_server.password}
    missing = mailbot("check", cwd=tmp_path, env=secrets)  # check selects every folder it was told of
    assert missing.returncode == 1 and "sent folder 'Sent Items' does not exist" in missing.stdout
    dovecot.create_folder("Sent")
    dovecot.create_folder("Sent Items")
    check = mailbot("check", cwd=tmp_path, env=secrets)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{dovecot.host}:{dovecot.port}" in check.stdout and f"smtp {smtp_server.host}:{smtp_server.port} (none)" \
        f" as {smtp_server.user}" in check.stdout


def test_the_port_follows_the_security_and_the_security_the_port(tmp_path: Path) -> None:
    base = ("--imap-host", "imap.example.org", "--imap-user", "delist@example.org", "--force")
    cases = [((), (993, "tls", 587, "starttls")),
             (("--imap-security", "starttls", "--smtp-security", "tls"), (143, "starttls", 465, "tls")),
             (("--imap-port", "143", "--smtp-port", "465"), (143, "starttls", 465, "tls")),
             (("--imap-port", "10993", "--smtp-port", "2525", "--smtp-security", "none"),
              (10993, "tls", 2525, "none"))]
    for flags, want in cases:
        r = mailbot("init", *base, *flags, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        c = load(tmp_path / "mailbot.toml", environ={})
        assert (c.mailbox.port, c.mailbox.security, c.outgoing.port, c.outgoing.security) == want, flags
    bad = mailbot("init", *base, "--imap-security", "ssl", cwd=tmp_path)
    assert bad.returncode == 2 and "--imap-security" in bad.stderr


def test_init_example_prints_the_documented_example() -> None:
    r = mailbot("init", "--example", cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout == (ROOT / "config.example.toml").read_text(encoding="utf-8")


def test_the_wheel_carries_the_example_config(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp_path),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    [wheel] = tmp_path.glob("mailbot-*.whl")
    with zipfile.ZipFile(wheel) as z:
        assert z.read("mailbot/config.example.toml") == (ROOT / "config.example.toml").read_bytes()
        assert "mailbot/templates/ack.txt.j2" in z.namelist()
        assert not any(n.startswith("tests/") for n in z.namelist())  # the corpus stays out of the package
        z.extractall(tmp_path / "site")
    # as installed: the package alone, no source tree above it
    installed = mailbot("init", "--example", cwd=tmp_path, env={"PYTHONPATH": str(tmp_path / "site")})
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout == (ROOT / "config.example.toml").read_text(encoding="utf-8")
    where = subprocess.run([sys.executable, "-c", "import mailbot; print(mailbot.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert where.stdout.startswith(str(tmp_path / "site"))
