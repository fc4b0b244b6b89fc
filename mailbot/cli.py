"""The command line. Exit codes: 0 ok, 1 a check or command failed,
2 configuration error, 3 a server or the database could not be reached.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar, get_args

import click
from sqlmodel import Session

from mailbot import __version__
from mailbot.config import Config, Security, load
from mailbot.db import fault_line, is_fault
from mailbot.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_UNREACHABLE, MailbotError
from mailbot.listing.commands import listing as listing_group
from mailbot.policy import FAMILIES
from mailbot.states import OutboxState, TicketState

F = TypeVar("F", bound=Callable[..., Any])

SECURITY: tuple[Security, ...] = get_args(Security)


def _fail(message: str, code: int) -> None:
    click.echo(f"mailbot: {message}", err=True)
    sys.exit(code)


def operator_errors(fn: F) -> F:
    """Turn the errors an operator can act on into one line and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MailbotError as e:
            _fail(e.operator_line(), e.exit_code)
        except Exception as e:
            # a damaged, unreachable or full database, wherever a command met it: one line, not a traceback
            if not is_fault(e):
                raise
            _fail(fault_line(_configured_database(), e), EXIT_UNREACHABLE)

    return wrapper  # type: ignore[return-value]


def _configured_database() -> str:
    """The database URL of the command's config (the fault that needs it came after loading it)."""
    from mailbot.config import database_url

    try:
        return database_url(load(click.get_current_context().find_root().obj["config_path"]))
    except Exception:
        return ""


def _held(r: Any) -> str:
    """One line for a flush the outgoing server stopped: the server, user and setting, and what waits."""
    return (f"{r.fault}; {r.held} mail(s) held in the outbox, none failed: they go out when the server "
            "works again")


def _warn_held(r: Any) -> None:
    """After a command that queued mail: say so when it could not be sent yet (the command still succeeded)."""
    if r.fault:
        click.echo(f"mailbot: not sent yet: {_held(r)}", err=True)


def _config(ctx: click.Context) -> Config:
    path = ctx.obj["config_path"]
    return load(path)


def _desk(ctx: click.Context, *, migrate: bool = True) -> Any:
    """The desk of the command's config. Commands that only read pass migrate=False: they
    never change the schema, and say to run `mailbot db upgrade` when it is behind."""
    from mailbot.desk import Desk

    desk = Desk(_config(ctx), migrate=migrate)
    ctx.call_on_close(desk.close)  # its extraction worker and its connections end with the command
    return desk


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", envvar="MAILBOT_CONFIG", default="mailbot.toml",
              show_default=True, help="The TOML configuration file (or set MAILBOT_CONFIG).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.version_option(__version__)
@click.pass_context
def main(ctx: click.Context, config_path: str, verbose: bool) -> None:
    """mailbot: the daemon behind a delist@ address.

    \b
    Example:
      mailbot -c /etc/mailbot.toml check
      mailbot -c /etc/mailbot.toml run
    """
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path
    ctx.obj["verbose"] = verbose
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "imapclient", "mailparser"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        # a command prints an outgoing outage as its own one line; the log's longer account is the daemon's
        logging.getLogger("mailbot.sendhealth").setLevel(logging.CRITICAL)


@main.command()
@click.pass_context
@operator_errors
def run(ctx: click.Context) -> None:
    """Run the daemon: poll the mailbox and flush the outbox on a schedule.

    \b
    Example:
      mailbot -c mailbot.toml run
    """
    from mailbot.daemon import Daemon
    from mailbot.logs import setup

    logging.getLogger("mailbot.sendhealth").setLevel(logging.NOTSET)
    desk = _desk(ctx)
    setup(desk.config.log.format, "DEBUG" if ctx.find_root().obj.get("verbose") else desk.config.log.level)
    Daemon(desk).run()


@main.command()
@click.option("--once", is_flag=True, required=True, help="Poll once and exit (the only mode for now).")
@click.pass_context
@operator_errors
def poll(ctx: click.Context, once: bool) -> None:
    """Fetch and process new mail once, then send what is due.

    \b
    Example:
      mailbot poll --once
    """
    desk = _desk(ctx)
    with desk.daemon_lock():  # on SQLite, not beside a running daemon: both would process the same mail
        polled, flushed = desk.run_once()
    for folder, error in polled.skipped.items():
        click.echo(f"mailbot: warning: folder {folder} skipped: {error}", err=True)
    click.echo(f"fetched {polled.fetch.stored} new ({polled.fetch.duplicates} already stored), "
               f"processed {polled.process.processed}, quarantined {polled.process.quarantined}, "
               f"sent {flushed.sent}, retry later {flushed.retried}, failed {flushed.failed}")
    _warn_held(flushed)


@main.command()
@click.pass_context
@operator_errors
def flush(ctx: click.Context) -> None:
    """Send the outbox mail that is due.

    Exits 3 with one line naming the server, user and setting when the SMTP
    server cannot be used; the mail stays queued, none is failed.

    \b
    Example:
      mailbot flush
    """
    r = _desk(ctx).flush()
    click.echo(f"sent {r.sent}, retry later {r.retried}, failed {r.failed}")
    if r.fault:
        _fail(_held(r), EXIT_UNREACHABLE)


@main.command()
@click.option("--state", type=click.Choice([s.value for s in TicketState]))
@click.option("--family", type=click.Choice(FAMILIES), help="Code family.")
@click.option("--ip", help="Exactly this IP.")
@click.option("--sender", help="Sender address contains this.")
@click.option("--overdue", is_flag=True, help="Open tickets past the SLA mark.")
@click.option("--due-within", "due_within", type=float, metavar="HOURS", help="Open tickets due within HOURS.")
@click.option("--sort", type=click.Choice(["due", "id"]), default="due", show_default=True,
              help="due: least time left first.")
@click.option("--limit", type=int, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@click.pass_context
@operator_errors
def tickets(ctx: click.Context, state: str | None, family: str | None, ip: str | None, sender: str | None,
            overdue: bool, due_within: float | None, sort: str, limit: int | None, as_json: bool) -> None:
    """List tickets, least time left first.

    \b
    Example:
      mailbot tickets --state open
      mailbot tickets --due-within 8
      mailbot tickets --overdue --json | jq -r '.[].ref'
    """
    from mailbot import clock, views
    from mailbot.tickets import TicketFilter, find

    desk = _desk(ctx, migrate=False)
    now = clock.utcnow()
    with Session(desk.engine) as session:
        rows = find(session, TicketFilter(state=TicketState(state) if state else None, family=family, ip=ip,
                                          sender=sender, overdue=overdue, due_within_hours=due_within, sort=sort,
                                          limit=limit), now)
        if as_json:
            click.echo(json.dumps([views.ticket_dict(t, now) for t in rows], indent=1))
        else:
            views.print_tickets(rows, desk.config.desk.zone, now)


@main.command()
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
@operator_errors
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Show one ticket with its thread, evidence, events and outgoing mail.

    \b
    Example:
      mailbot show DL-000001
    """
    from mailbot import views
    from mailbot.models import Ticket, parse_ref

    desk = _desk(ctx, migrate=False)
    tid = parse_ref(ref)
    with Session(desk.engine) as session:
        ticket = session.get(Ticket, tid) if tid else None
        if ticket is None:
            _fail(f"no ticket {ref}", EXIT_FAILED)
            return
        if as_json:
            click.echo(json.dumps(views.ticket_detail(session, ticket), indent=1, default=str))
        else:
            views.print_ticket(session, ticket, desk.config.desk.zone)


def _actor() -> str:
    import getpass

    try:
        return f"{getpass.getuser()} (command line)"
    except Exception:
        return "command line"


def _staff_action(fn: Callable[..., Any]) -> Any:
    """Run a staff action; its refusal is one line and exit 1."""
    from mailbot.staff import StaffError

    try:
        return fn()
    except StaffError as e:
        _fail(str(e), EXIT_FAILED)


@main.command()
@click.argument("ref")
@click.option("--note", help="What was answered, kept on the ticket.")
@click.pass_context
@operator_errors
def answer(ctx: click.Context, ref: str, note: str | None) -> None:
    """Mark a ticket answered (its SLA clock stops).

    \b
    Example:
      mailbot answer DL-000123 --note "delisted by phone"
    """
    from mailbot import staff

    t = _staff_action(lambda: staff.answer(_desk(ctx).engine, ref, _actor(), note))
    click.echo(f"{t.ref} answered")


@main.command()
@click.argument("ref")
@click.option("--note", help="Why, kept on the ticket.")
@click.pass_context
@operator_errors
def close(ctx: click.Context, ref: str, note: str | None) -> None:
    """Close a ticket.

    \b
    Example:
      mailbot close DL-000123
    """
    from mailbot import staff

    t = _staff_action(lambda: staff.close(_desk(ctx).engine, ref, _actor(), note))
    click.echo(f"{t.ref} closed")


@main.command()
@click.argument("ref")
@click.option("--note", help="Why, kept on the ticket.")
@click.pass_context
@operator_errors
def reopen(ctx: click.Context, ref: str, note: str | None) -> None:
    """Reopen a ticket with a fresh SLA clock.

    \b
    Example:
      mailbot reopen DL-000123 --note "still blocked"
    """
    from mailbot import clock, staff

    desk = _desk(ctx)
    t = _staff_action(lambda: staff.reopen(desk.engine, desk.config, ref, _actor(), note))
    click.echo(f"{t.ref} open again, due {clock.local(t.due_at, desk.config.desk.zone)}")


class _ReplyCommand(click.Command):
    """`reply`, whose help lists the staff templates as the renderer finds them (read only when asked)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from mailbot.render import Renderer

        formatter.write_paragraph()
        formatter.write_text(f"Templates: {', '.join(Renderer().staff_templates())} (shipped), and any template "
                             "you add in [templates] dir. mailbot's own mails (acknowledgements, digests...) are "
                             "not sent this way.")
        super().format_epilog(ctx, formatter)


@main.command(cls=_ReplyCommand)
@click.argument("ref")
@click.option("--template", "template", required=True, help="A staff template (listed below).")
@click.option("--note", help="A paragraph added to the reply.")
@click.pass_context
@operator_errors
def reply(ctx: click.Context, ref: str, template: str, note: str | None) -> None:
    """Send a staff reply from a template, threaded to the sender's mail; marks the ticket answered.

    \b
    Example:
      mailbot reply DL-000123 --template delisted
      mailbot reply DL-000123 --template declined --note "Your server sends to purchased lists."
    """
    from mailbot import staff
    from mailbot.render import AUTOMATIC_TEMPLATES

    desk = _desk(ctx)
    offered = desk.renderer.staff_templates()
    if template not in offered:
        why = " (mailbot sends that one itself)" if template in AUTOMATIC_TEMPLATES else ""
        _fail(f"no staff template {template!r}{why}; reply sends: {', '.join(offered)}", EXIT_FAILED)
    sent_to = _staff_action(lambda: staff.reply(desk.engine, desk.config, desk.renderer, ref, template, _actor(), note))
    r = desk.flush()
    click.echo(f"{ref}: {template} reply queued to {', '.join(sent_to)}; sent {r.sent}, retry later {r.retried}")
    _warn_held(r)


@main.command()
@click.option("--preview", "preview", type=click.Path(dir_okay=False), help="Write the HTML digest to this file.")
@click.option("--send", "send_now", is_flag=True, help="Send a digest to the staff list now.")
@click.pass_context
@operator_errors
def digest(ctx: click.Context, preview: str | None, send_now: bool) -> None:
    """Write the staff digest to a file, or send one now.

    \b
    Example:
      mailbot digest --preview digest.html
      mailbot digest --send
    """
    from mailbot import clock
    from mailbot import digest as digest_mod

    if not preview and not send_now:
        _fail("say --preview FILE.html or --send", EXIT_FAILED)
    desk = _desk(ctx, migrate=bool(send_now))
    if preview:
        subject, _text, html = digest_mod.render(desk.engine, desk.config, desk.renderer)
        Path(preview).write_text(html, encoding="utf-8")
        click.echo(f"{subject}\nwritten to {preview}")
    if send_now:
        if not desk.send_digest(f"manual:{clock.utcnow().isoformat()}"):
            _fail("no digest sent: desk.staff is empty", EXIT_FAILED)
        r = desk.flush()
        click.echo(f"digest sent to {', '.join(desk.config.desk.staff)} (sent {r.sent}, retry later {r.retried})")
        _warn_held(r)


@main.command()
@click.pass_context
@operator_errors
def sweep(ctx: click.Context) -> None:
    """Run the SLA sweep once: escalation and breach notices that are due.

    \b
    Example:
      mailbot sweep
    """
    desk = _desk(ctx)
    r = desk.sweep()
    f = desk.flush()
    click.echo(f"escalated {len(r.escalated)} {' '.join(r.escalated)}; breached {len(r.breached)} "
               f"{' '.join(r.breached)}; sent {f.sent}")
    _warn_held(f)


def _progress(label: str, total: int) -> Callable[[Any], Any]:
    """A progress bar on a terminal; nothing in a pipe."""
    if not sys.stderr.isatty():
        return lambda it: it
    from rich.progress import track

    return lambda it: track(it, description=label, total=total, console=None, transient=True)


@main.command()
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), required=True, help="Mail that arrived on or after.")
@click.option("--folder", help="Another folder to take mail from (default: the configured inbox folder).")
@click.pass_context
@operator_errors
def backfill(ctx: click.Context, since: Any, folder: str | None) -> None:
    """Process older mail that is already in the mailbox (never anything twice).

    \b
    Example:
      mailbot backfill --since 2026-11-01
      mailbot backfill --since 2026-11-01 --folder "Old delist requests"
    """
    desk = _desk(ctx)
    with desk.daemon_lock():
        r = desk.backfill(since.date(), folder)
    f = desk.flush()
    click.echo(f"backfill since {since:%Y-%m-%d}: stored {r.fetch.stored} ({r.fetch.duplicates} already stored), "
               f"processed {r.process.processed}, quarantined {r.process.quarantined}, sent {f.sent}")
    _warn_held(f)


@main.command()
@click.argument("ref", required=False)
@click.option("--since", type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M"]), help="Mail fetched since (UTC).")
@click.pass_context
@operator_errors
def reprocess(ctx: click.Context, ref: str | None, since: Any) -> None:
    """Re-run extraction on stored mail (after a parser improvement); sends nothing twice.

    \b
    Example:
      mailbot reprocess DL-000123
      mailbot reprocess --since 2026-11-01
    """
    from datetime import UTC

    from mailbot.models import parse_ref
    from mailbot.reprocess import reprocess as run_reprocess
    from mailbot.reprocess import selection

    if not ref and not since:
        _fail("say which: a ticket REF or --since DATE", EXIT_FAILED)
    tid = parse_ref(ref) if ref else None
    if ref and tid is None:
        _fail(f"{ref} is not a ticket reference (like DL-000123)", EXIT_FAILED)
    desk = _desk(ctx)
    with Session(desk.engine) as session:
        ids = selection(session, tid, since.replace(tzinfo=UTC) if since else None)
    r = run_reprocess(desk.processor, ids, _progress("reprocessing", len(ids)))
    f = desk.flush()
    click.echo(f"reprocessed {r.messages} messages: {r.changed} read differently, "
               f"{r.tickets_updated} tickets updated, {f.sent} mails sent")
    _warn_held(f)


@main.group(invoke_without_command=True)
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in OutboxState]),
              help="Only mail in this state (repeat for several; default: queued, failed and bounced).")
@click.option("--ticket", "ref", help="Only mail of this ticket, e.g. DL-000123.")
@click.option("--recipient", help="Recipient address contains this.")
@click.option("--kind", help="Only this kind: ack, redirect, needs_info, staff_reply, digest, sla_notice, ...")
@click.option("--older-than", "older_than", type=float, metavar="HOURS", help="Queued at least HOURS ago.")
@click.option("--limit", type=int, default=100, show_default=True, help="At most this many, oldest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@click.pass_context
@operator_errors
def outbox(ctx: click.Context, states: tuple[str, ...], ref: str | None, recipient: str | None, kind: str | None,
           older_than: float | None, limit: int, as_json: bool) -> None:
    """List outgoing mail that is queued, failed or bounced: by ticket, recipient, age.

    \b
    Example:
      mailbot outbox
      mailbot outbox --state failed --ticket DL-000123
      mailbot outbox --older-than 2 --json | jq -r '.[].to'
      mailbot outbox retry --all
    """
    if ctx.invoked_subcommand is not None:
        return
    from datetime import timedelta

    from mailbot import clock, outbox_admin, sendhealth

    tid = _ticket_id(ref)
    desk = _desk(ctx, migrate=False)
    now = clock.utcnow()
    f = outbox_admin.OutboxFilter(states=states or outbox_admin.SHOWN_BY_DEFAULT, ticket_id=tid,
                                  recipient=recipient, kind=kind, limit=limit,
                                  older_than=timedelta(hours=older_than) if older_than is not None else None)
    with Session(desk.engine) as session:
        rows = outbox_admin.find(session, f, now)
        if as_json:
            click.echo(json.dumps([outbox_admin.mail_dict(m, now) for m in rows], indent=1))
            return
        outbox_admin.print_outbox(rows, outbox_admin.counts(session), sendhealth.current(session),
                                  desk.config.desk.zone, now, click.echo)


def _ticket_id(ref: str | None) -> int | None:
    from mailbot.models import parse_ref

    if ref is None:
        return None
    tid = parse_ref(ref)
    if tid is None:
        _fail(f"{ref} is not a ticket reference (like DL-000123)", EXIT_FAILED)
    return tid


@outbox.command("retry")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="Every failed mail.")
@click.option("--ticket", "ref", help="The failed mail of this ticket.")
@click.pass_context
@operator_errors
def outbox_retry(ctx: click.Context, ids: tuple[int, ...], every: bool, ref: str | None) -> None:
    """Put failed mail back in the queue and send what is due (recorded on each ticket).

    Mail fails for good when a server refuses it (5xx) or after outgoing.max_attempts
    temporary failures; once the cause is fixed, retry it.

    \b
    Example:
      mailbot outbox retry 12 13
      mailbot outbox retry --ticket DL-000123
      mailbot outbox retry --all
    """
    from mailbot import outbox_admin

    if sum((bool(ids), every, ref is not None)) != 1:
        _fail("say which failed mail: IDs (from mailbot outbox), --ticket REF, or --all", EXIT_FAILED)
    tid = _ticket_id(ref)
    desk = _desk(ctx)
    r = outbox_admin.requeue(desk.engine, _actor(), ids=ids, ticket_id=tid, every=every)
    for line in r.refused:
        click.echo(f"mailbot: {line}", err=True)
    if not r.requeued:
        _fail("no failed mail matched: nothing requeued", EXIT_FAILED)
    f = desk.flush()
    click.echo(f"requeued {len(r.requeued)}: {' '.join(str(m.id) for m in r.requeued)}; "
               f"sent {f.sent}, retry later {f.retried}, failed {f.failed}")
    _warn_held(f)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts and monitoring.")
@click.pass_context
@operator_errors
def status(ctx: click.Context, as_json: bool) -> None:
    """Last poll, outbox depth, tickets due soon, errors since each daemon started.

    \b
    Example:
      mailbot status
      mailbot status --json | jq .tickets.overdue
    """
    from mailbot import clock
    from mailbot.sanitize import printable
    from mailbot.status import gather

    desk = _desk(ctx, migrate=False)
    now = clock.utcnow()
    data = gather(desk.engine, now, desk.config.sla.escalate_before)
    if as_json:
        click.echo(json.dumps(data, default=lambda v: v.isoformat() if hasattr(v, "isoformat") else str(v)))
        return
    zone = desk.config.desk.zone
    for m in data["mailboxes"]:
        click.echo(f"mailbox   {m['mailbox']}: last poll {clock.local(m['last_poll_at'], zone)}")
    for f in data["skipped_folders"]:
        click.echo(f"mailbox   {f['mailbox']}: SKIPPED, cannot be read since {clock.local(f['failing_since'], zone)}"
                   f"{' (staff alerted)' if f['alert_open'] else ''}: {f['last_error']}")
    running = [d for d in data["daemons"] if d["state"] == "running"]
    if not running:
        click.echo("daemon    none running")
    for d in data["daemons"][:max(5, len(running))]:
        if d["state"] == "running":
            state = f"FAILING since {clock.local(d['failing_since'], zone)}" if d["failing_since"] else "running"
        else:
            state = f"stopped (last seen {clock.local(d['stopped_at'], zone)})"
        click.echo(f"daemon    {d['name']}: {state}; last good poll {clock.local(d['last_poll_ok_at'], zone)}; "
                   f"{d['errors_since_start']} errors since start {clock.local(d['started_at'], zone)}"
                   + (f"; last error: {d['last_error']}" if d["last_error"] else ""))
    t, o, msg = data["tickets"], data["outbox"], data["messages"]
    click.echo(f"tickets   {t['open']} open, {t['overdue']} overdue, {t['due_soon']} due within "
               f"{desk.config.sla.escalate_before:g} h, {t['needs_info']} waiting for information")
    click.echo(f"outbox    {o['queued']} queued, {o['failed']} failed"
               + (f"; sending FAILING since {clock.local(o['failing_since'], zone)}: {printable(o['last_error'], True)}"
                  if o["failing_since"] else ""))
    click.echo(f"messages  {msg['stored']} waiting to be processed, {msg['quarantined']} quarantined")


@main.group()
def db() -> None:
    """The database schema.

    \b
    Example:
      mailbot db upgrade
    """


@db.command("upgrade")
@click.pass_context
@operator_errors
def db_upgrade(ctx: click.Context) -> None:
    """Bring the database to the newest schema (also done when the daemon starts).

    \b
    Example:
      mailbot -c mailbot.toml db upgrade
    """
    from mailbot import schema
    from mailbot.config import database_url
    from mailbot.db import make_engine, safe_url

    config = load(ctx.find_root().obj["config_path"])
    engine = make_engine(database_url(config))
    before = schema.current(engine)
    schema.upgrade(engine)
    click.echo(f"{safe_url(config.database.url)}: schema {before or 'empty'} -> {schema.current(engine)}")


@main.command()
@click.option("--path", "path", type=click.Path(dir_okay=False),
              help="Where to write the config (default: the -c/--config file, mailbot.toml).")
@click.option("--example", is_flag=True, help="Print config.example.toml (every key, its default, what it does).")
@click.option("--imap-host", help="IMAP server of the delist@ mailbox.")
@click.option("--imap-port", type=click.IntRange(1, 65535), help="IMAP port (default: 993 for tls, 143 otherwise).")
@click.option("--imap-security", type=click.Choice(SECURITY),
              help="tls (implicit, the default), starttls, or none (test servers only).")
@click.option("--imap-user", help="Login name of that mailbox.")
@click.option("--sent-folder", "sent_folders", multiple=True,
              help="The shared mailbox's sent folder, where staff answers stop the clock (repeat for several).")
@click.option("--smtp-host", help="SMTP submission server for replies (default: the IMAP host).")
@click.option("--smtp-port", type=click.IntRange(1, 65535),
              help="SMTP port (default: 587 for starttls, 465 for tls, 25 for none).")
@click.option("--smtp-security", type=click.Choice(SECURITY),
              help="starttls (the default), tls (implicit), or none (test servers only).")
@click.option("--smtp-user", help="SMTP login (default: the IMAP user; \"\" for none).")
@click.option("--from-address", help="From of every reply (default: the IMAP user).")
@click.option("--staff", multiple=True, help="A staff address for escalations and digests (repeat, or comma-separate).")
@click.option("--database-url", help="sqlite:///mailbot.db (default) or postgresql+psycopg://user@host/db.")
@click.option("--desk-name", help="The name senders and staff see.")
@click.option("--timezone", help="IANA time zone times are shown in, e.g. Europe/Berlin (default UTC).")
@click.option("--maildir", help="A local setup like the demo: read DIR/inbox, write replies to DIR/outbox.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@click.pass_context
def init(ctx: click.Context, path: str | None, example: bool, imap_host: str | None, imap_port: int | None,
         imap_security: Security | None, imap_user: str | None, sent_folders: tuple[str, ...],
         smtp_host: str | None, smtp_port: int | None, smtp_security: Security | None, smtp_user: str | None,
         from_address: str | None, staff: tuple[str, ...], database_url: str | None, desk_name: str | None,
         timezone: str | None, maildir: str | None, force: bool) -> None:
    """Write a starter config: asks on a terminal, or takes flags. Never writes a password.

    With no flags it asks for every value; with flags it asks only for what
    is missing and required. The file is checked before it is written.
    --example prints the documented example of every key instead.

    \b
    Example:
      mailbot init
      mailbot init --imap-host imap.example.org --imap-user delist@example.org \\
        --smtp-host smtp.example.org --smtp-port 465 --staff support@example.org \\
        --sent-folder Sent --path /etc/mailbot.toml
      mailbot init --maildir ./mail --from-address delist@example.org
      mailbot init --example > mailbot.example.toml
    """
    from mailbot import init as init_mod

    if example:
        try:
            click.echo(init_mod.example_text(), nl=False)
        except init_mod.InitError as e:
            _fail(str(e), EXIT_FAILED)
        return
    target = Path(path or ctx.find_root().obj["config_path"])
    interview = not any((imap_host, imap_port, imap_security, imap_user, sent_folders, smtp_host, smtp_port,
                         smtp_security, smtp_user, from_address, staff, database_url, desk_name, timezone,
                         maildir))
    if target.exists() and not force:
        _fail(f"{target} exists; add --force to overwrite it", EXIT_FAILED)

    def ask(text: str, value: str | None, default: str | None = None, required: bool = False,
            flag: str = "") -> str:
        if value is not None:
            return value
        if not interview and (default is not None or not required):
            return default or ""
        try:
            return str(click.prompt(text, default=default, show_default=bool(default)))
        except click.Abort:
            _fail(f"give {flag} (or run mailbot init on a terminal to be asked)", EXIT_CONFIG)
            raise

    def connection(name: str, service: str, port: int | None, security: Security | None) -> tuple[int, Security]:
        if not interview:
            return init_mod.port_and_security(service, port, security)
        chosen: Security = click.prompt(f"{name} security", type=click.Choice(SECURITY),
                                        default=init_mod.DEFAULT_SECURITY[service])
        return int(click.prompt(f"{name} port", type=click.IntRange(1, 65535),
                                default=init_mod.DEFAULT_PORTS[service][chosen])), chosen

    if interview and not maildir:
        kind = click.prompt("Read mail from an IMAP server or a local Maildir",
                            type=click.Choice(["imap", "maildir"]), default="imap")
        if kind == "maildir":
            maildir = ask("Maildir folder (inbox/ and outbox/ go inside)", None, "mail")
    if maildir:
        a = init_mod.Answers(maildir=maildir,
                             from_address=ask("From address of replies", from_address, "delist@example.org"))
    else:
        host = ask("IMAP server", imap_host, required=True, flag="--imap-host")
        imap = connection("IMAP", "imap", imap_port, imap_security)
        user = ask("IMAP user (the delist@ mailbox)", imap_user, required=True, flag="--imap-user")
        folders = list(sent_folders) or [ask("Sent folder(s) of the mailbox, comma-separated (staff answers)",
                                             None, "")]
        smtp_server = ask("SMTP server", smtp_host, host)
        smtp = connection("SMTP", "smtp", smtp_port, smtp_security)
        a = init_mod.Answers(
            imap_host=host, imap_port=imap[0], imap_security=imap[1], imap_user=user,
            sent_folders=[f.strip() for item in folders for f in item.split(",") if f.strip()],
            smtp_host=smtp_server, smtp_port=smtp[0], smtp_security=smtp[1],
            smtp_user=ask("SMTP user", smtp_user, user),
            from_address=ask("From address of replies", from_address, user if "@" in user else None,
                             required=True, flag="--from-address"))
    a.desk_name = ask("Desk name", desk_name, "Delist desk")
    a.timezone = ask("Time zone", timezone, "UTC")
    staff_list = list(staff) or [ask("Staff addresses (comma-separated)", None, "")]
    a.staff = [s.strip() for item in staff_list for s in item.split(",") if s.strip()]
    a.database_url = ask("Database URL", database_url, "sqlite:///mailbot.db")
    try:
        init_mod.write_config(target, init_mod.starter_toml(a), force=force)
    except init_mod.InitError as e:
        _fail(f"config not written: {e}", EXIT_CONFIG)
    made = init_mod.make_maildirs(target) if maildir else []
    for line in init_mod.next_steps(target, a, made):
        click.echo(line)


@main.group()
def templates() -> None:
    """The templates of outgoing mail: which exist, and what they look like.

    \b
    Example:
      mailbot templates list
      mailbot templates preview ack --language de --html ack.html
    """


def _template_renderer(ctx: click.Context, language: str | None) -> Any:
    """A renderer as the desk would build it; shipped templates only when there is no config file."""
    from pydantic import ValidationError

    from mailbot.config import TemplatesConfig
    from mailbot.render import Renderer

    path = Path(ctx.find_root().obj["config_path"])
    settings = TemplatesConfig()
    override = None
    if path.exists():
        config = load(path)
        settings = config.templates
        override = config.path(settings.dir) if settings.dir else None
    else:
        click.echo(f"mailbot: no config file {path}: showing the shipped templates", err=True)
    if language:
        try:
            settings = TemplatesConfig(language=language)
        except ValidationError:
            raise click.BadParameter(f"{language!r} is not a language tag like en or de",
                                     param_hint="--language") from None
    return Renderer(override, settings.language)


@templates.command("list")
@click.pass_context
@operator_errors
def templates_list(ctx: click.Context) -> None:
    """List the templates: languages they exist in, which one is used, whether overridden.

    \b
    Example:
      mailbot -c mailbot.toml templates list
    """
    r = _template_renderer(ctx, None)
    click.echo(f"{'template':<12} {'languages':<12} {'used':<6} {'overridden':<10} file")
    for name in r.names():
        click.echo(f"{name:<12} {', '.join(r.languages(name)):<12} {r.language_used(name):<6} "
                   f"{'yes' if r.overridden(name) else 'no':<10} {r.source(name, 'txt')}")


@templates.command("preview")
@click.argument("name")
@click.option("--html", "html_file", type=click.Path(dir_okay=False), help="Also write the HTML part to this file.")
@click.option("--language", help="Render this language (default: [templates] language).")
@click.pass_context
@operator_errors
def templates_preview(ctx: click.Context, name: str, html_file: str | None, language: str | None) -> None:
    """Render template NAME with sample data: its subject and text, and the HTML to a file.

    \b
    Example:
      mailbot templates preview ack
      mailbot templates preview needs_info --language de --html needs_info.html
    """
    from mailbot.render import SAMPLE_CONTEXT, TemplateError

    r = _template_renderer(ctx, language)
    if name not in r.names():
        _fail(f"no template {name!r}; there are: {', '.join(r.names())}", EXIT_FAILED)
    try:
        subject, text, html = r.render(name, SAMPLE_CONTEXT)
    except TemplateError as e:
        _fail(str(e), EXIT_FAILED)
        return
    click.echo(f"Subject: {subject}\n\n{text}", nl=False)
    if html_file:
        Path(html_file).write_text(html, encoding="utf-8")
        click.echo(f"\n(HTML part written to {html_file})")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, per file.")
def parse(files: tuple[str, ...], as_json: bool) -> None:
    """Print what extraction reads from forwarded NDRs (no database, no config).

    \b
    Example:
      mailbot parse --json forwarded.eml
    """
    from mailbot.extraction import extract

    for name in files:
        result = extract(Path(name).read_bytes())
        if as_json:
            click.echo(json.dumps(result.as_json(name)))
            continue
        click.echo(f"{name}:")
        if result.unreadable:
            click.echo(f"  {result.unreadable}")
        if not result.findings:
            click.echo("  no rejection found")
        for i, f in enumerate(result.findings):
            mark = "*" if f is result.primary else " "
            code = " ".join(p for p in (f.reply_code, f.status) if p) or "no code"
            click.echo(f" {mark}{i + 1}. {code}  ips={','.join(f.ips) or '-'}"
                       f"{'  rcpt=' + f.recipient if f.recipient else ''}")
            click.echo(f"     text:   {f.text[:300]}")
            click.echo(f"     source: {f.source}, line {f.line}")
        for note in result.notes:
            click.echo(f"  note: {note}")


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the configuration, database, mailbox and SMTP server; one line each.

    \b
    Example:
      mailbot check && echo ready
    """
    from mailbot.checks import run_checks

    ok = run_checks(ctx.obj["config_path"], click.echo)
    sys.exit(0 if ok else EXIT_FAILED)


@main.command()
@click.option("--dir", "directory", default="mailbot-demo", show_default=True,
              help="Where to put the demo's config, Maildirs and database.")
def demo(directory: str) -> None:
    """Run the desk on shipped sample forwards, with no mail server.

    Samples go into a local Maildir inbox; mailbot processes them into
    SQLite and writes its replies into a local Maildir outbox. Then, in
    simulated time on a copy of the database, it shows the escalation mail
    and digest staff get near the 48-hour mark.

    \b
    Example:
      mailbot demo --dir /tmp/mailbot-demo
    """
    from mailbot.demo import run_demo

    run_demo(Path(directory), click.echo)


main.add_command(listing_group)  # mailbot listing add|remove|show|import|export (mailbot/listing/commands.py)
