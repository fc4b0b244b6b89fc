"""Commands for the people who run the daemon: run, poll, flush, sweep, backfill, reprocess,
the outbox, status, the schema, check and parse."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from sqlmodel import Session

from mailbot.cli.base import (
    actor,
    desk_of,
    fail,
    held_line,
    main,
    operator_errors,
    progress,
    warn_held,
)
from mailbot.config import load
from mailbot.errors import EXIT_FAILED, EXIT_UNREACHABLE
from mailbot.store.states import OutboxState


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

    logging.getLogger("mailbot.outgoing.sendhealth").setLevel(logging.NOTSET)
    desk = desk_of(ctx)
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
    desk = desk_of(ctx)
    desk.renderer.keep_compiled()  # one run: each template read once, not looked at again per mail
    with desk.daemon_lock():  # on SQLite, not beside a running daemon: both would process the same mail
        polled, flushed = desk.run_once()
    for folder, error in polled.skipped.items():
        click.echo(f"mailbot: warning: folder {folder} skipped: {error}", err=True)
    click.echo(f"fetched {polled.fetch.stored} new ({polled.fetch.duplicates} already stored), "
               f"processed {polled.process.processed}, quarantined {polled.process.quarantined}, "
               f"sent {flushed.sent}, retry later {flushed.retried}, failed {flushed.failed}")
    warn_held(flushed)


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
    r = desk_of(ctx).flush()
    click.echo(f"sent {r.sent}, retry later {r.retried}, failed {r.failed}")
    if r.fault:
        fail(held_line(r), EXIT_UNREACHABLE)


@main.command()
@click.pass_context
@operator_errors
def sweep(ctx: click.Context) -> None:
    """Run the SLA sweep once: escalation and breach notices that are due.

    \b
    Example:
      mailbot sweep
    """
    desk = desk_of(ctx)
    r = desk.sweep()
    f = desk.flush()
    click.echo(f"escalated {len(r.escalated)} {' '.join(r.escalated)}; breached {len(r.breached)} "
               f"{' '.join(r.breached)}; closed unanswered {len(r.expired)} {' '.join(r.expired)}; "
               f"looked up {r.rechecked}, not listed {len(r.not_listed)} {' '.join(r.not_listed)}; "
               f"delisted automatically {len(r.autodelisted)} {' '.join(r.autodelisted)}; sent {f.sent}")
    warn_held(f)




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
    desk = desk_of(ctx)
    with desk.daemon_lock():
        r = desk.backfill(since.date(), folder)
    f = desk.flush()
    click.echo(f"backfill since {since:%Y-%m-%d}: stored {r.fetch.stored} ({r.fetch.duplicates} already stored), "
               f"processed {r.process.processed}, quarantined {r.process.quarantined}, sent {f.sent}")
    warn_held(f)


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

    from mailbot.desk.reprocess import reprocess as run_reprocess
    from mailbot.desk.reprocess import selection
    from mailbot.store.tables import parse_ref

    if not ref and not since:
        fail("say which: a ticket REF or --since DATE", EXIT_FAILED)
    tid = parse_ref(ref) if ref else None
    if ref and tid is None:
        fail(f"{ref} is not a ticket reference (like DL-000123)", EXIT_FAILED)
    desk = desk_of(ctx)
    with Session(desk.engine) as session:
        ids = selection(session, tid, since.replace(tzinfo=UTC) if since else None)
    r = run_reprocess(desk.engine, desk.processor.triage, ids, progress("reprocessing", len(ids)))
    f = desk.flush()
    click.echo(f"reprocessed {r.messages} messages: {r.changed} read differently, "
               f"{r.tickets_updated} tickets updated, {f.sent} mails sent")
    warn_held(f)


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

    from mailbot import clock
    from mailbot.outgoing import outbox_admin, sendhealth

    tid = ticket_id(ref)
    desk = desk_of(ctx, migrate=False)
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


def ticket_id(ref: str | None) -> int | None:
    from mailbot.store.tables import parse_ref

    if ref is None:
        return None
    tid = parse_ref(ref)
    if tid is None:
        fail(f"{ref} is not a ticket reference (like DL-000123)", EXIT_FAILED)
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
    from mailbot.outgoing import outbox_admin

    if sum((bool(ids), every, ref is not None)) != 1:
        fail("say which failed mail: IDs (from mailbot outbox), --ticket REF, or --all", EXIT_FAILED)
    tid = ticket_id(ref)
    desk = desk_of(ctx)
    r = outbox_admin.requeue(desk.engine, actor(), ids=ids, ticket_id=tid, every=every)
    for line in r.refused:
        click.echo(f"mailbot: {line}", err=True)
    if not r.requeued:
        fail("no failed mail matched: nothing requeued", EXIT_FAILED)
    f = desk.flush()
    click.echo(f"requeued {len(r.requeued)}: {' '.join(str(m.id) for m in r.requeued)}; "
               f"sent {f.sent}, retry later {f.retried}, failed {f.failed}")
    warn_held(f)


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
    from mailbot.cli.status import gather
    from mailbot.outgoing.sanitize import printable

    desk = desk_of(ctx, migrate=False)
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
    from mailbot.config import database_url
    from mailbot.store import schema
    from mailbot.store.engine import make_engine, safe_url

    config = load(ctx.find_root().obj["config_path"])
    engine = make_engine(database_url(config))
    before = schema.current(engine)
    schema.upgrade(engine)
    click.echo(f"{safe_url(config.database.url)}: schema {before or 'empty'} -> {schema.current(engine)}")


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
            if (c := f.classification) is not None:
                click.echo(f"     kind={c.kind} issuer={c.issuer or '-'}{' (ours)' if c.issuer_is_ours else ''}"
                           f"{f' (via {c.via})' if c.via else ''}"
                           f"{f'  inferred {f.inferred.family}' if f.inferred else ''}")
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
    from mailbot.cli.checks import run_checks

    ok = run_checks(ctx.obj["config_path"], click.echo)
    sys.exit(0 if ok else EXIT_FAILED)
