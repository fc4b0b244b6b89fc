"""Commands for support staff that end a request (issue #17): delist, conditional, decline.

    mailbot delist DL-000123 [--note "..."]             the source delists, then the sender hears
    mailbot conditional DL-000123 --note "at most 500 mails a day until 2026-12-31"
    mailbot decline DL-000123 --reason "your server sends to purchased lists"

Each is `mailbot.staffing.outcomes`: once per ticket and clock (run it again, or from two
places at once: one delisting, one mail), audited on the ticket. `reply --template delisted`
(`conditional`, `declined`) does the same as these.
"""

from __future__ import annotations

import click

from mailbot.cli.base import actor, desk_of, main, operator_errors, warn_held


def report(desk: object, done: object) -> None:
    """One line of what happened (or that it had happened before), then the mail sent."""
    from mailbot.app import Desk
    from mailbot.outgoing.sanitize import printable
    from mailbot.staffing.outcomes import Done

    assert isinstance(desk, Desk) and isinstance(done, Done)
    said = f" ({printable(done.answer, one_line=True)})" if done.answer else ""
    if done.replayed:
        click.echo(f"{done.ref}: {done.outcome} already{said}; nothing done again")
        return
    to = ", ".join(done.recipients) or "nobody (no sender address)"
    r = desk.flush()
    click.echo(f"{done.ref}: {done.outcome}{said}; reply queued to {to}; sent {r.sent}, retry later {r.retried}")
    warn_held(r)


@main.command()
@click.argument("ref")
@click.option("--note", help="A paragraph for the sender, and the reason kept with the delisting.")
@click.pass_context
@operator_errors
def delist(ctx: click.Context, ref: str, note: str | None) -> None:
    """Delist the ticket's IP at the listing source; only then send the sender `delisted`.

    Safe to run again: the source gets the same key (the ticket and its clock) and never
    delists twice; nothing is sent twice. A refusal leaves the ticket open, the error on it.

    \b
    Example:
      mailbot delist DL-000123
      mailbot delist DL-000123 --note "The compromised account was closed."
    """
    from mailbot.staffing import outcomes

    desk = desk_of(ctx)
    report(desk, outcomes.delist(desk.engine, desk.staffing, desk.listing(), ref, actor(), note))


@main.command()
@click.argument("ref")
@click.option("--note", required=True, help="The condition, as the sender reads it.")
@click.pass_context
@operator_errors
def conditional(ctx: click.Context, ref: str, note: str) -> None:
    """Delist on a condition (a volume limit, a date for a fix): the sender gets `conditional`.

    \b
    Example:
      mailbot conditional DL-000123 --note "At most 500 mails a day until 2026-12-31."
    """
    from mailbot.staffing import outcomes

    desk = desk_of(ctx)
    report(desk, outcomes.delist(desk.engine, desk.staffing, desk.listing(), ref, actor(), note,
                                 condition=True))


@main.command()
@click.argument("ref")
@click.option("--reason", required=True, help="Why the listing stays, as the sender reads it.")
@click.pass_context
@operator_errors
def decline(ctx: click.Context, ref: str, reason: str) -> None:
    """Decline the delisting: the sender gets `declined` with the reason.

    \b
    Example:
      mailbot decline DL-000123 --reason "Your server sends to purchased lists."
    """
    from mailbot.staffing import outcomes

    desk = desk_of(ctx)
    report(desk, outcomes.decline(desk.engine, desk.staffing, ref, actor(), reason))
