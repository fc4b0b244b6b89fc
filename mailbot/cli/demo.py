"""`mailbot demo`: the whole desk on this machine, no mail server needed.

Writes a config into DIR, copies the shipped sample forwards into a Maildir
inbox, runs one poll and one outbox flush into SQLite and a Maildir outbox,
and prints the tickets it opened and where the replies are.

Then the 48-hour part, in simulated time: on a copy of the database (in
DIR/simulated, made afresh each run, so the demo's own tickets keep their
real times) the clock is moved forward to just past the escalation point of
the oldest open ticket; the SLA sweep and the digest run there, and the
escalation mail and digest that staff would get are printed, each labelled
as simulated, and written to DIR/simulated/outbox.
"""

from __future__ import annotations

import email
import email.policy
import logging
import mailbox
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from mailbot import PACKAGE_DIR, clock
from mailbot.app import Desk
from mailbot.config import Config, database_url, load
from mailbot.store.states import MailKind, OutboxState, TicketState
from mailbot.store.tables import OutboxMail, Ticket

SAMPLES = PACKAGE_DIR / "samples"

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
# Who gets escalations and the digest (in the demo: the Maildir outbox too).
staff = ["support@example.org"]

[policy]
portal_url = "https://sender.office.com/"
# The samples use documentation addresses; a real desk leaves this empty.
allow_ranges = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]

[listing]
# The desk's own block list, kept in this database (`mailbot listing show 203.0.113.45`).
# The demo lists a few addresses; 192.0.2.61, the IP of sample 09, is not among them.
source = "table"

[portal]
# `mailbot portal` serves the self-service portal on http://127.0.0.1:8025/ (loopback). Its
# signing key is the file the demo wrote; a real desk keeps it with its other credentials.
secret_file = "portal-key"
"""

DEMO_LISTINGS = (("203.0.113.45", "spam-trap", "hit our spam traps 40 times on 2026-11-22", 2),
                 ("2001:db8:5::25", "complaints", "1,200 complaints from our users in one day", 1),
                 ("198.51.100.0/24", "botnet", "a range of infected hosts", 9))
"""(IP or network, category, the reason staff read, days listed) of the demo's block list."""


def run_demo(directory: Path, echo: Callable[[str], None]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "mailbot.toml"
    if not config_path.exists():
        config_path.write_text(DEMO_CONFIG, encoding="utf-8")
    inbox = directory / "inbox"
    mailbox.Maildir(str(inbox), create=True)  # makes tmp/, new/ and cur/
    samples = sorted(SAMPLES.glob("*.eml"))
    # Names of our own, in sample order: Maildir.add's names (time, microseconds of varying width)
    # do not always sort in the order added, and the tickets' numbers follow the reading order.
    stamp = int(time.time())
    for n, sample in enumerate(samples):
        name = f"{stamp}.{n:02d}-{sample.stem}.demo"
        (inbox / "tmp" / name).write_bytes(sample.read_bytes())
        os.replace(inbox / "tmp" / name, inbox / "new" / name)
    echo(f"Put {len(samples)} sample forwarded NDRs into the Maildir inbox {directory / 'inbox'}")

    desk = Desk(load(config_path))
    list_demo_rows(desk)
    polled, flushed = desk.run_once()
    echo(f"Processed {polled.process.processed} messages "
         f"({polled.fetch.duplicates} already seen in an earlier run), "
         f"quarantined {polled.process.quarantined}, sent {flushed.sent} replies.\n")

    with Session(desk.engine) as session:
        rows = list(session.exec(select(Ticket).order_by(col(Ticket.id))).all())
        echo(f"{'ticket':<10} {'state':<11} {'code':<12} {'ip':<16} sender")
        for t in rows:
            echo(f"{t.ref:<10} {t.state:<11} {t.full_code or '-':<12} {t.ip or '-':<16} {t.sender or '-'}")
        sent = session.exec(select(OutboxMail).where(OutboxMail.state == OutboxState.SENT)
                            .order_by(col(OutboxMail.id))).all()
        echo(f"\nReplies ({len(sent)}) are in the Maildir outbox {directory / 'outbox' / 'new'}:")
        for o in sent:
            echo(f"  to {o.recipients:<40} {o.subject}")
    portal_ips = prepare_portal(desk, directory)
    desk.engine.dispose()
    simulate_48_hours(desk.config, directory, echo)
    echo(f"\nConfig: {config_path}   Database: {directory / 'mailbot.db'}")
    echo(f"Next:   {_command()} -c {config_path} show DL-000001")
    if portal_ips:
        echo(f"Portal: {_command()} -c {config_path} portal   then open http://127.0.0.1:8025/ and delist "
             f"{', '.join(portal_ips)} (the confirmation mail lands in {directory / 'outbox' / 'new'})")


def prepare_portal(desk: Desk, directory: Path) -> list[str]:
    """What `mailbot portal` needs on the demo's config: its signing key (a file of the demo's),
    and the IPs of the redirected tickets on the list, in the portal's category."""
    if desk.config.listing.source != "table" or not desk.config.portal.secret_file:
        return []
    import contextlib
    import ipaddress
    import secrets

    from mailbot.listing.admin import NewListing, TableError, add

    key = desk.config.path(desk.config.portal.secret_file)
    if not key.exists():
        key.write_text(secrets.token_urlsafe(48) + "\n", encoding="utf-8")
        key.chmod(0o600)
    with Session(desk.engine) as session:
        ips = sorted({t.ip for t in session.exec(select(Ticket).where(Ticket.state == TicketState.REDIRECTED))
                      if t.ip})
    for ip in ips:
        with contextlib.suppress(TableError):  # listed by an earlier run
            add(desk.engine, NewListing(network=ipaddress.ip_network(ip), category="5.7.606",
                                        reason="demo: a sample forward's IP"), "demo")
    return ips


def list_demo_rows(desk: Desk) -> None:
    """The demo's block list (rows listed already, from an earlier run, stay as they are)."""
    if desk.config.listing.source != "table":
        return  # the operator changed the demo's config: their list, not ours
    from mailbot.listing.admin import NewListing, import_rows, parse_network

    now = clock.utcnow()
    import_rows(desk.engine, [NewListing(parse_network(net), category, reason, "demo", now - timedelta(days=days))
                              for net, category, reason, days in DEMO_LISTINGS], "mailbot demo")


STAFF_MAIL = (MailKind.SLA_NOTICE, MailKind.DIGEST)
"""The outbox kinds of the mails staff get."""


def simulate_48_hours(config: Config, directory: Path, echo: Callable[[str], None]) -> None:
    """The escalation and the digest staff would get near the 48-hour mark, on a copy, in simulated time."""
    echo("\n" + "=" * 72 + "\nSIMULATED TIME: the 48-hour promise\n" + "=" * 72)
    if not config.desk.staff:
        echo(f"No [desk] staff in {directory / 'mailbot.toml'}: nobody to escalate to. Add "
             'staff = ["support@example.org"] there and run the demo again.')
        return
    with Session(Desk(config).engine) as session:
        dues = [t.due_at for t in session.exec(select(Ticket).where(Ticket.state == TicketState.OPEN)) if t.due_at]
    if not dues:
        echo("No open ticket, so no clock to watch.")
        return
    sim_dir = (directory / "simulated").resolve()  # the config resolves relative paths against its own folder
    shutil.rmtree(sim_dir, ignore_errors=True)
    sim_dir.mkdir(parents=True)
    _copy_sqlite(database_url(config), sim_dir / "mailbot.db")
    sim_config = config.model_copy(update={
        "database": config.database.model_copy(update={"url": f"sqlite:///{sim_dir / 'mailbot.db'}"}),
        "outgoing": config.outgoing.model_copy(update={"maildir_path": str(sim_dir / "outbox")}),
    })
    escalate_at = min(dues) - timedelta(hours=config.sla.escalate_before) + timedelta(minutes=1)
    ahead = max(escalate_at - clock.utcnow(), timedelta(0))
    zone = config.desk.zone
    with clock.moved_forward(ahead):
        now = clock.utcnow()
        echo(f"The clock is moved {_span(ahead)} forward, to {clock.local(now, zone)}: just past the "
             f"escalation point, {_span(timedelta(hours=config.sla.escalate_before))} before the oldest open "
             f"ticket's {config.sla.hours:g}-hour mark.\nNothing waited, and this runs on a copy of the "
             f"database ({sim_dir}), so the demo's own tickets keep their real times.\n")
        desk = Desk(sim_config)
        with _quiet():  # the daemon's log lines would carry the real time
            swept = desk.sweep()
            desk.send_digest(f"demo:{now:%Y-%m-%dT%H:%M}")
            desk.flush()
        with Session(desk.engine) as session:
            mails = session.exec(select(OutboxMail).where(col(OutboxMail.kind).in_(STAFF_MAIL))
                                 .order_by(col(OutboxMail.id))).all()
            for o in mails:
                what = "ESCALATION" if o.kind == MailKind.SLA_NOTICE else "DIGEST"
                echo(f"----- {what} mail to {o.recipients}, sent at {clock.local(o.sent_at, zone)} "
                     f"(simulated time) -----")
                echo(_as_text(o.raw))
        desk.engine.dispose()
    echo(f"Escalated {len(swept.escalated)} ticket(s) ({', '.join(swept.escalated) or 'none'}); these staff mails "
         f"(simulated time) are in {sim_dir / 'outbox' / 'new'}.")


@contextmanager
def _quiet() -> Iterator[None]:
    logger = logging.getLogger("mailbot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _copy_sqlite(url: str, target: Path) -> None:
    """A consistent copy of the demo's SQLite database (the backup API, not a file copy)."""
    src = sqlite3.connect(url.removeprefix("sqlite:///"))
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()


def _span(d: timedelta) -> str:
    hours, minutes = divmod(int(d.total_seconds()) // 60, 60)
    return f"{hours}h {minutes}m" if minutes else f"{hours} hours"


def _as_text(raw: bytes) -> str:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    body = msg.get_body(("plain",))
    text = body.get_content() if body is not None else ""
    return f"Subject: {msg['Subject']}\n\n{text.rstrip()}\n"


def _command() -> str:
    """How this user ran mailbot (a venv's mailbot is seldom on PATH)."""
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv else ""
    if Path(argv0).name == "mailbot":
        found = shutil.which("mailbot")
        return "mailbot" if found and Path(found).resolve() == Path(argv0).resolve() else argv0
    return f"{sys.executable} -m mailbot"
