"""The shipped systemd unit: it restarts on failure, is hardened, hands the
secrets over in the form mailbot's config reads, and runs a command that exists."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

from mailbot.config import parse

UNIT = Path(__file__).resolve().parents[1] / "deploy" / "mailbot.service"


def settings() -> list[tuple[str, str]]:
    pairs = []
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, _, value = line.partition("=")
            pairs.append((key.strip(), value.strip()))
    return pairs


def test_the_unit_restarts_on_failure_and_is_hardened() -> None:
    s = dict(settings())
    assert s["Restart"] == "on-failure" and s["RestartSec"]
    assert s["KillSignal"] == "SIGTERM"  # the daemon finishes the current message on SIGTERM
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes"}.items():
        assert s[key] == value, key
    assert s["User"] != "root"


def test_the_secrets_arrive_as_the_file_overrides_mailbot_reads(tmp_path: Path) -> None:
    env = dict(v.split("=", 1) for k, v in settings() if k == "Environment")
    assert set(env) == {"MAILBOT_MAILBOX_PASSWORD_FILE", "MAILBOT_OUTGOING_PASSWORD_FILE"}
    (tmp_path / "imap").write_text("imap-secret\n")
    (tmp_path / "smtp").write_text("smtp-secret\n")
    config = parse({"mailbox": {"host": "imap.example.org", "user": "delist@example.org"},
                    "outgoing": {"host": "smtp.example.org", "user": "delist@example.org"}},
                   environ={"MAILBOT_MAILBOX_PASSWORD_FILE": str(tmp_path / "imap"),
                            "MAILBOT_OUTGOING_PASSWORD_FILE": str(tmp_path / "smtp")})
    assert (config.mailbox.secret(), config.outgoing.secret()) == ("imap-secret", "smtp-secret")


def test_the_command_it_starts_exists() -> None:
    argv = shlex.split(dict(settings())["ExecStart"])
    assert Path(argv[0]).name == "mailbot" and argv[-1] == "run"
    r = subprocess.run([sys.executable, "-m", "mailbot", *argv[1:], "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Run the daemon" in r.stdout
