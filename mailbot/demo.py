"""`mailbot demo`: the whole desk on this machine, no mail server needed.

Writes a config into DIR, copies the shipped sample forwards into a Maildir
inbox, runs one poll and one outbox flush into SQLite and a Maildir outbox,
and prints the tickets it opened and where the replies are.
"""

from __future__ import annotations

import mailbox
from collections.abc import Callable
from pathlib import Path

from sqlmodel import Session, col, select

from mailbot.config import load
from mailbot.desk import Desk
from mailbot.models import OutboxMail, Ticket

SAMPLES = Path(__file__).parent / "samples"

DEMO_CONFIG = """\
# Written by `mailbot demo`: a local Maildir inbox and outbox, SQLite.
[mailbox]
source = "maildir"
maildir_path = "inbox"

[outgoing]
transport = "maildir"
maildir_path = "outbox"
from_address = "delist@example.org"
from_name = "Example Delist Desk"

[database]
url = "sqlite:///mailbot.db"

[desk]
name = "Example Delist Desk"
timezone = "Europe/Berlin"

[policy]
portal_url = "https://sender.office.com/"
# The samples use documentation addresses; a real desk leaves this empty.
allow_ranges = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]
"""


def run_demo(directory: Path, echo: Callable[[str], None]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "mailbot.toml"
    if not config_path.exists():
        config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    inbox = mailbox.Maildir(str(directory / "inbox"), create=True)
    samples = sorted(SAMPLES.glob("*.eml"))
    for sample in samples:
        inbox.add(sample.read_bytes())
    echo(f"Put {len(samples)} sample forwarded NDRs into the Maildir inbox {directory / 'inbox'}")

    desk = Desk(load(config_path))
    polled, flushed = desk.run_once()
    echo(f"Processed {polled.process.processed} messages "
         f"({polled.fetch.duplicates} already seen in an earlier run), "
         f"quarantined {polled.process.quarantined}, sent {flushed.sent} replies.\n")

    with Session(desk.engine) as session:
        rows = list(session.exec(select(Ticket).order_by(col(Ticket.id))).all())
        echo(f"{'ticket':<10} {'state':<11} {'code':<12} {'ip':<16} sender")
        for t in rows:
            echo(f"{t.ref:<10} {t.state:<11} {t.full_code or '-':<12} {t.ip or '-':<16} {t.sender or '-'}")
        sent = session.exec(select(OutboxMail).where(OutboxMail.state == "sent").order_by(col(OutboxMail.id))).all()
        echo(f"\nReplies ({len(sent)}) are in the Maildir outbox {directory / 'outbox' / 'new'}:")
        for o in sent:
            echo(f"  to {o.recipients:<40} {o.subject}")
    echo(f"\nConfig: {config_path}   Database: {directory / 'mailbot.db'}")
    echo(f"Next:   {_command()} -c {config_path} show DL-000001")


def _command() -> str:
    """How this user ran mailbot (a venv's mailbot is seldom on PATH)."""
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "mailbot":
        found = shutil.which("mailbot")
        return "mailbot" if found and Path(found).resolve() == Path(argv0).resolve() else argv0
    return f"{sys.executable} -m mailbot"
