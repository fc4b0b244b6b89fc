"""`mailbot init`: a starter mailbot.toml from answers or flags.

`starter_toml(answers)` turns the answers into TOML text (values escaped,
never a password); `write_config(path, text, force)` validates that text
with `config.load` from a temporary file next to the target and only then
puts it in place, so a config that `init` wrote always loads. Every other
key keeps its default, documented in config.example.toml, which ships inside
the package (`example_text()`, `mailbot init --example`).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mailbot import PACKAGE_DIR
from mailbot.config import ConfigError, Security, load
from mailbot.errors import CommandFailed

EXAMPLE_FILES = (PACKAGE_DIR / "config.example.toml", PACKAGE_DIR.parent / "config.example.toml")
"""Where config.example.toml is: inside the installed package (the wheel puts it there), else the source tree."""

DEFAULT_PORTS: dict[str, dict[str, int]] = {
    "imap": {"tls": 993, "starttls": 143, "none": 143},
    "smtp": {"tls": 465, "starttls": 587, "none": 25},
}
"""The port each security setting is served on, by convention (RFC 8314)."""
SECURITY_BY_PORT: dict[str, dict[int, Security]] = {
    "imap": {993: "tls", 143: "starttls"},
    "smtp": {465: "tls", 587: "starttls", 25: "starttls"},
}
"""What a well-known port speaks (plain "none" is never guessed: it is for tests)."""
DEFAULT_SECURITY: dict[str, Security] = {"imap": "tls", "smtp": "starttls"}


class InitError(CommandFailed):
    """The config was not written; the message says why."""


def example_text() -> str:
    """config.example.toml: every key with its default and what it does."""
    for p in EXAMPLE_FILES:
        if p.is_file():
            return p.read_text(encoding="utf-8")
    raise InitError(f"config.example.toml is missing from this installation (looked in {EXAMPLE_FILES[0].parent})")


def port_and_security(service: str, port: int | None, security: Security | None) -> tuple[int, Security]:
    """Fill in whichever of port and security is missing from the other, as a mail client would."""
    if security is None:
        security = SECURITY_BY_PORT[service].get(port or 0, DEFAULT_SECURITY[service])
    return (DEFAULT_PORTS[service][security] if port is None else port), security


@dataclass
class Answers:
    """What `mailbot init` asks. With `maildir` set, the mailbox and outgoing mail are local Maildirs."""

    from_address: str
    imap_host: str = ""
    imap_port: int = 993
    imap_security: Security = "tls"
    imap_user: str = ""
    sent_folders: list[str] = field(default_factory=list)
    smtp_host: str = ""
    smtp_port: int = 587
    smtp_security: Security = "starttls"
    smtp_user: str = ""
    staff: list[str] = field(default_factory=list)
    database_url: str = "sqlite:///mailbot.db"
    desk_name: str = "Delist desk"
    timezone: str = "UTC"
    maildir: str = ""


def _s(value: str) -> str:
    """A TOML basic string (JSON escaping is valid TOML)."""
    return json.dumps(value, ensure_ascii=False)


def starter_toml(a: Answers) -> str:
    if a.maildir:
        base = a.maildir.rstrip("/")
        mailbox = (f'source = "maildir"\n'
                   f"# The Maildir mailbot reads (Processed and Quarantine become its sub-folders).\n"
                   f"maildir_path = {_s(base + '/inbox')}\n")
        outgoing = (f'transport = "maildir"\n'
                    f"# Replies are written to this Maildir instead of being sent.\n"
                    f"maildir_path = {_s(base + '/outbox')}\n")
    else:
        mailbox = (f"host = {_s(a.imap_host)}\nport = {a.imap_port}\nsecurity = {_s(a.imap_security)}\n"
                   f"user = {_s(a.imap_user)}\n"
                   f"# The password is not kept here: set MAILBOT_MAILBOX_PASSWORD in the environment,\n"
                   f"# or point password_file at a file that holds it (e.g. a systemd credential).\n"
                   f'# password_file = "/run/credentials/mailbot.service/imap-password"\n'
                   f"# The shared mailbox's sent folder(s), where staff answers are found.\n"
                   f"sent_folders = [{', '.join(_s(f) for f in a.sent_folders)}]\n")
        outgoing = (f"host = {_s(a.smtp_host)}\nport = {a.smtp_port}\nsecurity = {_s(a.smtp_security)}\n"
                    + (f"user = {_s(a.smtp_user)}\n"
                       f"# Password: MAILBOT_OUTGOING_PASSWORD, or password_file as above.\n"
                       f'# password_file = "/run/credentials/mailbot.service/smtp-password"\n'
                       if a.smtp_user else "# user = \"\"  (no SMTP AUTH)\n"))
    staff = "[" + ", ".join(_s(s) for s in a.staff) + "]"
    return (
        "# Written by `mailbot init`. Every other key, with its default and what it does,\n"
        "# is in config.example.toml (mailbot init --example prints it).\n"
        "# Check it with: mailbot -c THIS_FILE check\n\n"
        f"[mailbox]\n{mailbox}\n"
        f"[outgoing]\n{outgoing}"
        f"# The desk's own address: From of every reply.\nfrom_address = {_s(a.from_address)}\n"
        f"from_name = {_s(a.desk_name)}\n\n"
        f"[database]\nurl = {_s(a.database_url)}\n\n"
        f"[desk]\nname = {_s(a.desk_name)}\ntimezone = {_s(a.timezone)}\n"
        f"# Who gets escalations and digests.\nstaff = {staff}\n"
    )


def write_config(path: Path, text: str, force: bool = False) -> None:
    """Validate `text` as a config at `path`'s place, then write it there."""
    if path.exists() and not force:
        raise InitError(f"{path} exists; add --force to overwrite it")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise InitError(f"{directory} is not a directory")
    fd, tmp = tempfile.mkstemp(prefix=".mailbot-init-", suffix=".toml", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            # validate as the daemon will read it, but without the environment's overrides
            load(tmp, environ={})
        except ConfigError as e:
            raise InitError(str(e).replace(tmp, str(path))) from None
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def make_maildirs(path: Path) -> list[Path]:
    """Create the Maildirs a local setup at `path` reads and writes (nothing for IMAP/SMTP)."""
    import mailbox

    config = load(path, environ={})
    wanted = [config.mailbox.maildir_path if config.mailbox.source == "maildir" else "",
              config.outgoing.maildir_path if config.outgoing.transport == "maildir" else ""]
    made = []
    for p in filter(None, wanted):
        folder = config.path(p)
        folder.parent.mkdir(parents=True, exist_ok=True)
        mailbox.Maildir(str(folder), create=True)
        made.append(folder)
    return made


def next_steps(path: Path, a: Answers, maildirs: list[Path] | None = None) -> list[str]:
    lines = [f"wrote {path}"]
    if maildirs and len(maildirs) == 2:
        lines.append(f"put forwarded NDRs (.eml files) into {maildirs[0] / 'new'}; "
                     f"replies appear in {maildirs[1] / 'new'}")
    if not a.maildir:
        lines.append("set the mailbox password outside the file: MAILBOT_MAILBOX_PASSWORD=... "
                     "(or [mailbox] password_file)")
        if a.smtp_user:
            lines.append("and the SMTP password: MAILBOT_OUTGOING_PASSWORD=... (or [outgoing] password_file)")
    if a.staff:
        lines.append("staff mail sent to the desk counts as an answer only once [replies] authserv_ids names "
                     "your own mail server (its Authentication-Results vouch for the staff From); until then "
                     "answers count from the sent folder and `mailbot answer` only")
    lines.append(f"then: mailbot -c {path} check")
    return lines
