"""Staff act by replying: command lines at the start of a verified staff member's mail.

Contract: `parse(text)` is pure. It reads the lines at the start of the staff member's own
words (blank lines skipped) that begin with `#`, one command each, and stops at the first
line that is not one, so a `#close` further down, in a quote or a signature, is never a
command. `carry_out(session, ticket, commands, actor, ...)` does each as the command line
would, records it as an event with the staff address as actor, and returns one line per
command (done, or why not) for the confirmation mail. The caller has verified the sender
(`replyguard.verified_staff`): mail that only looks like a command from anyone else is
ordinary mail and never reaches this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from mailbot.desk import tickets
from mailbot.identity import person
from mailbot.outgoing.sanitize import db_text
from mailbot.store.states import TicketState
from mailbot.store.tables import Ticket

MAX_COMMANDS = 10
"""Commands read from one mail; more is a mistake (or a paste), and the rest is reported as not done."""
MAX_ARGUMENT = 2000
_LINE = re.compile(r"^#([a-z]{2,12})\b[ \t]*(.*)$", re.IGNORECASE)

KNOWN = ("close", "reopen", "note", "assign", "answered", "hold", "delist", "conditional", "decline")
"""Commands this desk carries out; escalations and the digest print them for each ticket."""
LATER = ("delist", "conditional", "decline")
"""Commands that call the listing source or write to the sender (the audited outcomes of
`staffing.outcomes`): never inside the mail's transaction. They are recorded as a request and
carried out right after it commits (`staffing.mail_requests`), which then sends the one
confirmation with every command's result."""


@dataclass(frozen=True)
class Command:
    name: str
    argument: str


def parse(text: str) -> list[Command]:
    """The commands at the start of `text` (a staff member's own words, quotes removed)."""
    found: list[Command] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        m = _LINE.match(stripped)
        if m is None:
            break
        found.append(Command(m.group(1).lower(), m.group(2).strip()[:MAX_ARGUMENT]))
    return found


def usage(state: str) -> str:
    """The commands a ticket in `state` accepts, as one line staff can copy from an escalation."""
    if state == TicketState.CLOSED:
        names = ["#reopen [why]", "#note <text>", "#assign <me|address>"]
    else:
        names = ["#delist [note]", "#conditional <condition>", "#decline <reason>", "#hold [why]", "#close [why]",
                 "#note <text>", "#assign <me|address>"]
    return " | ".join(names)


def carry_out(session: Session, ticket: Ticket, commands: list[Command], actor: str, now: datetime,
              sla_hours: float) -> tuple[list[str], list[Command]]:
    """Each command on `ticket`, in order: one line per command done now saying what was done or
    why not, and the commands (of `LATER`) to carry out once this transaction has committed."""
    lines: list[str] = []
    later: list[Command] = []
    for n, command in enumerate(commands):
        if n >= MAX_COMMANDS:
            lines.append(f"#{command.name}: not done: at most {MAX_COMMANDS} commands in one mail")
        elif command.name in LATER:
            later.append(command)
        else:
            lines.append(f"#{command.name}: {_one(session, ticket, command, actor, now, sla_hours)}")
    return lines, later


def _one(session: Session, ticket: Ticket, command: Command, actor: str, now: datetime, sla_hours: float) -> str:
    arg = db_text(command.argument, MAX_ARGUMENT) or ""
    name = command.name
    if name == "close":
        if ticket.state == TicketState.CLOSED:
            return f"not done: {ticket.ref} is already closed"
        tickets.close(session, ticket, actor, arg or "closed by mail", now)
        return f"{ticket.ref} closed"
    if name == "reopen":
        if ticket.state == TicketState.OPEN:
            return f"not done: {ticket.ref} is already open"
        tickets.reopen(session, ticket, actor, arg or "reopened by mail", now, sla_hours)
        return f"{ticket.ref} reopened with a fresh {sla_hours:g}-hour clock"
    if name == "answered":
        if not tickets.mark_answered(session, ticket, actor, arg or "answered (by mail)", now):
            return f"not done: {ticket.ref} is {ticket.state}, not waiting for an answer"
        return f"{ticket.ref} marked answered"
    if name == "note":
        if not arg:
            return "not done: #note needs the text of the note"
        tickets.note(session, ticket, actor, arg, now)
        return "note kept on the ticket (staff only)"
    if name == "assign":
        target = person(actor) if arg.lower() in ("", "me") else arg
        tickets.assign(session, ticket, db_text(target, 200) or "", actor, now)
        return f"{ticket.ref} assigned to {ticket.assignee}"
    if name == "hold":
        tickets.hold(session, ticket, actor, arg or "held by mail", now)
        return f"{ticket.ref} held: it is never delisted automatically"
    return f"not done: unknown command (this desk knows {', '.join('#' + k for k in KNOWN)})"

