"""Commands for support staff: list and show tickets, answer, close, reopen, reply, the digest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from sqlmodel import Session

from mailbot.cli.base import (
    actor,
    desk_of,
    fail,
    main,
    operator_errors,
    warn_held,
)
from mailbot.desk.policy import FAMILIES
from mailbot.errors import EXIT_FAILED
from mailbot.store.states import TicketState


@main.command()
@click.option("--state", type=click.Choice([s.value for s in TicketState]))
@click.option("--family", type=click.Choice(FAMILIES), help="Code family.")
@click.option("--ip", help="Exactly this IP.")
@click.option("--sender", help="Sender address contains this.")
@click.option("--assignee", help="Assigned to this address or name.")
@click.option("--mine", is_flag=True, help="Assigned to me (MAILBOT_STAFF, else the login name).")
@click.option("--unassigned", is_flag=True, help="Assigned to nobody.")
@click.option("--overdue", is_flag=True, help="Open tickets past the SLA mark.")
@click.option("--due-within", "due_within", type=float, metavar="HOURS", help="Open tickets due within HOURS.")
@click.option("--sort", type=click.Choice(["due", "id"]), default="due", show_default=True,
              help="due: least time left first.")
@click.option("--limit", type=int, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@click.pass_context
@operator_errors
def tickets(ctx: click.Context, state: str | None, family: str | None, ip: str | None, sender: str | None,
            assignee: str | None, mine: bool, unassigned: bool, overdue: bool, due_within: float | None, sort: str,
            limit: int | None, as_json: bool) -> None:
    """List tickets, least time left first.

    \b
    Example:
      mailbot tickets --state open
      mailbot tickets --due-within 8
      mailbot tickets --overdue --json | jq -r '.[].ref'
    """
    from mailbot import clock
    from mailbot.desk.tickets import TicketFilter, find
    from mailbot.staffing import views

    desk = desk_of(ctx, migrate=False)
    now = clock.utcnow()
    with Session(desk.engine) as session:
        rows = find(session, TicketFilter(state=TicketState(state) if state else None, family=family, ip=ip,
                                          sender=sender, assignee=me() if mine else assignee,
                                          unassigned=unassigned, overdue=overdue, due_within_hours=due_within,
                                          sort=sort, limit=limit), now)
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
    from mailbot.staffing import views
    from mailbot.store.tables import Ticket, parse_ref

    desk = desk_of(ctx, migrate=False)
    tid = parse_ref(ref)
    with Session(desk.engine) as session:
        ticket = session.get(Ticket, tid) if tid else None
        if ticket is None:
            fail(f"no ticket {ref}", EXIT_FAILED)
            return
        if as_json:
            click.echo(json.dumps(views.ticket_detail(session, ticket), indent=1, default=str))
        else:
            views.print_ticket(session, ticket, desk.config.desk.zone)






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
    from mailbot.staffing import staff

    t = staff.answer(desk_of(ctx).engine, ref, actor(), note)
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
    from mailbot.staffing import staff

    t = staff.close(desk_of(ctx).engine, ref, actor(), note)
    click.echo(f"{t.ref} closed")


@main.command()
@click.argument("ref")
@click.argument("who")
@click.pass_context
@operator_errors
def assign(ctx: click.Context, ref: str, who: str) -> None:
    """Give a ticket to a member of staff ("me" for yourself, "nobody" to take it back).

    \b
    Example:
      mailbot assign DL-000123 ann@example.org
    """
    from mailbot.staffing import staff

    t = staff.assign(desk_of(ctx).engine, ref, me() if who == "me" else "" if who == "nobody" else who, actor())
    click.echo(f"{t.ref} assigned to {t.assignee or 'nobody'}")


@main.command()
@click.argument("ref")
@click.argument("text")
@click.pass_context
@operator_errors
def note(ctx: click.Context, ref: str, text: str) -> None:
    """Keep a note on a ticket that only staff see (show, the digest); never sent to a sender.

    \b
    Example:
      mailbot note DL-000123 "called them; they fixed the open relay"
    """
    from mailbot.staffing import staff

    t = staff.note(desk_of(ctx).engine, ref, text, actor())
    click.echo(f"note kept on {t.ref}")


@main.command()
@click.argument("ref")
@click.option("--reason", help="Why, kept on the ticket.")
@click.pass_context
@operator_errors
def hold(ctx: click.Context, ref: str, reason: str | None) -> None:
    """Stop automatic delisting of a ticket: a person decides ([autodelist]).

    \b
    Example:
      mailbot hold DL-000123 --reason "same sender as last week"
    """
    from mailbot.staffing import staff

    t = staff.hold(desk_of(ctx).engine, ref, reason, actor())
    click.echo(f"{t.ref} held: it is never delisted automatically")


def me() -> str:
    """Who "me" is on the command line: MAILBOT_STAFF (an address), else the login name."""
    import getpass
    import os

    return os.environ.get("MAILBOT_STAFF") or getpass.getuser()


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
    from mailbot import clock
    from mailbot.staffing import staff

    desk = desk_of(ctx)
    t = staff.reopen(desk.engine, desk.config.sla.hours, ref, actor(), note)
    click.echo(f"{t.ref} open again, due {clock.local(t.due_at, desk.config.desk.zone)}")


class ReplyCommand(click.Command):
    """`reply`, whose help lists the staff templates as the renderer finds them (read only when asked)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from mailbot.outgoing.render import Renderer

        formatter.write_paragraph()
        formatter.write_text(f"Templates: {', '.join(Renderer().staff_templates())} (shipped), and any template "
                             "you add in [templates] dir. mailbot's own mails (acknowledgements, digests...) are "
                             "not sent this way.")
        super().format_epilog(ctx, formatter)


@main.command(cls=ReplyCommand)
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
    from mailbot.outgoing.render import AUTOMATIC_TEMPLATES
    from mailbot.staffing import staff

    desk = desk_of(ctx)
    offered = desk.renderer.staff_templates()
    if template not in offered:
        why = " (mailbot sends that one itself)" if template in AUTOMATIC_TEMPLATES else ""
        fail(f"no staff template {template!r}{why}; reply sends: {', '.join(offered)}", EXIT_FAILED)
    if template in ("delisted", "conditional", "declined"):  # an outcome: the delist first, once (cli/outcomes.py)
        from mailbot.cli.outcomes import report
        from mailbot.staffing import outcomes

        report(desk, outcomes.by_template(desk.engine, desk.staffing, desk.listing(), ref, template,
                                          actor(), note))
        return
    sent_to = staff.reply(desk.engine, desk.staffing, ref, template, actor(), note)
    r = desk.flush()
    click.echo(f"{ref}: {template} reply queued to {', '.join(sent_to)}; sent {r.sent}, retry later {r.retried}")
    warn_held(r)


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

    if not preview and not send_now:
        fail("say --preview FILE.html or --send", EXIT_FAILED)
    desk = desk_of(ctx, migrate=bool(send_now))
    if preview:
        subject, _text, html = desk.render_digest()
        Path(preview).write_text(html, encoding="utf-8")
        click.echo(f"{subject}\nwritten to {preview}")
    if send_now:
        if not desk.send_digest(f"manual:{clock.utcnow().isoformat()}"):
            fail("no digest sent: desk.staff is empty", EXIT_FAILED)
        r = desk.flush()
        click.echo(f"digest sent to {', '.join(desk.config.desk.staff)} (sent {r.sent}, retry later {r.retried})")
        warn_held(r)


@main.command()
@click.option("--since", type=click.DateTime(["%Y-%m-%d"]), help="Requests opened on or after (default: 30 days ago).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
@click.pass_context
@operator_errors
def report(ctx: click.Context, since: Any, as_json: bool) -> None:
    """How the desk keeps its promise: requests, outcomes, time to reply and to outcome, the SLA.

    \b
    Example:
      mailbot report --since 2026-11-01
      mailbot report --json | jq .to_outcome
    """
    from datetime import UTC, timedelta

    from mailbot import clock
    from mailbot.staffing import report as figures

    desk = desk_of(ctx, migrate=False)
    now = clock.utcnow()
    start = since.replace(tzinfo=UTC) if since else now - timedelta(days=30)
    with Session(desk.engine) as session:
        r = figures.build(session, start, now)
    click.echo(json.dumps(r.as_json(), indent=1) if as_json else figures.text(r))
