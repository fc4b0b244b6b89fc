"""How tickets look to a person (rich tables on a terminal) and to a script (dicts)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlmodel import Session, col, select

from mailbot.clock import local
from mailbot.desk.listing_check import summary
from mailbot.outgoing.sanitize import printable
from mailbot.store.states import EventKind, TicketState
from mailbot.store.tables import OutboxMail, StoredMessage, Ticket, TicketEvent

# Everything shown on a terminal that came from mail (addresses, subjects, rejection text,
# outcomes and events that quote them) goes through `printable`: a display name carrying
# `ESC ] 2 ; ... BEL` or `ESC [ 2 J` must not retitle or clear the staff's terminal, and a
# line break in a subject must not forge a row. JSON output escapes them by itself.


def _iso(dt: datetime | None) -> str | None:
    """ISO 8601 in UTC with a Z, for scripts."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


When = Callable[[datetime | None], str | None]
"""How a view writes a time: `_iso` for scripts, the desk's zone for a person."""


def ticket_dict(t: Ticket, now: datetime | None = None, when: When = _iso) -> dict[str, Any]:
    from mailbot.staffing.sla import time_left

    return {
        "ref": t.ref, "state": t.state, "sender": t.sender, "ip": t.ip, "reply_code": t.reply_code,
        "status": t.status, "text": t.text, "rule": t.rule, "reason": t.reason, "verified": t.verified,
        "kind": t.kind, "issuer": t.issuer, "inferred": t.inferred, "assignee": t.assignee,
        "opened_at": when(t.opened_at), "due_at": when(t.due_at), "acked_at": when(t.acked_at),
        "answered_at": when(t.answered_at), "closed_at": when(t.closed_at), "clock": t.clock,
        "time_left": time_left(t.due_at, now) if now and t.state == TicketState.OPEN else None,
        # what the listing source said (staff only: the reason is never in a sender's mail)
        "listing": t.listing, "listing_checked_at": when(t.listing_checked_at), "listed_since": when(t.listed_since),
        "listing_category": t.listing_category, "listing_reason": t.listing_reason, "listed_before": t.listed_before,
        "last_delisted": when(t.last_delisted), "repeat": t.repeat, "listing_error": t.listing_error,
        "outcome": t.outcome, "outcome_at": when(t.outcome_at),
    }


def ticket_detail(session: Session, t: Ticket, when: When = _iso) -> dict[str, Any]:
    """The ticket with its thread, events and outgoing mail; times as `when` writes them (ISO UTC by default)."""
    d = ticket_dict(t, when=when)
    msgs = session.exec(select(StoredMessage).where(StoredMessage.ticket_id == t.id).order_by(col(StoredMessage.id)))
    d["messages"] = [{"message_id": m.message_id, "sender": m.sender, "subject": m.subject,
                      "fetched_at": when(m.fetched_at), "outcome": m.outcome,
                      "findings": json.loads(m.findings) if m.findings else None} for m in msgs]
    events = session.exec(select(TicketEvent).where(TicketEvent.ticket_id == t.id).order_by(col(TicketEvent.id)))
    d["events"] = [{"at": when(e.at), "kind": e.kind, "actor": e.actor, "from_state": e.from_state,
                    "to_state": e.to_state, "outcome": e.outcome, "detail": e.detail} for e in events]
    delists = [e for e in d["events"] if e["kind"] in (EventKind.DELIST, EventKind.DELIST_FAILED)]
    d["delist_error"] = delists[-1]["detail"] if delists and delists[-1]["kind"] == EventKind.DELIST_FAILED else None
    """The last delist failed (and none succeeded since): what staff must see first."""
    outs = session.exec(select(OutboxMail).where(OutboxMail.ticket_id == t.id).order_by(col(OutboxMail.id)))
    d["outgoing"] = [{"kind": o.kind, "to": o.recipients, "subject": o.subject, "message_id": o.message_id,
                      "state": o.state, "attempts": o.attempts, "error": o.last_error,
                      "sent_at": when(o.sent_at)} for o in outs]
    return d


def print_tickets(rows: list[Ticket], zone: ZoneInfo, now: datetime, console: Console | None = None) -> None:
    from mailbot.staffing.sla import time_left

    console = console or Console()
    if not rows:
        console.print("no tickets")
        return
    headers = ("ref", "state", "code", "ip", "sender", "opened", "due", "time left")
    lines = []
    for t in rows:
        left = time_left(t.due_at, now) if t.state == TicketState.OPEN and t.due_at else "-"
        lines.append((t.ref, t.state, printable(t.full_code or "-", True), printable(t.ip or "-", True),
                      printable(t.sender or "-", True), local(t.opened_at, zone), local(t.due_at, zone), left))
    if not console.is_terminal:
        # plain columns for pipes and scripts (--json for machines)
        widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(headers)]
        for r in [headers, *lines]:
            console.out("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), highlight=False)
        return
    table = Table(show_lines=False)
    for h in headers:
        table.add_column(h, no_wrap=h in ("ref", "ip", "time left"))
    for r in lines:
        # Text(), not str: a cell from mail is never read as rich markup ("[bold]", "[link=…]")
        table.add_row(*(Text(v) for v in r), style="red" if r[-1].startswith("overdue") else None)
    console.print(table)


def print_ticket(session: Session, t: Ticket, zone: ZoneInfo, console: Console | None = None) -> None:
    console = console or Console(highlight=False, soft_wrap=True)
    # one zone for a person: the desk's, named (the --json view keeps ISO UTC for scripts)
    d = ticket_detail(session, t, when=lambda dt: local(dt, zone))

    def out(line: str) -> None:
        console.print(line, markup=False)

    def p(value: object) -> str:
        return printable(value, one_line=True)

    console.print(f"[bold]{t.ref}[/bold]  {t.state}  ", end="", markup=True)
    code = t.full_code or (f"no code; inferred {t.inferred} from its words" if t.inferred else "no code")
    out(f"{p(code)}  ip {p(t.ip or '-')}")
    if t.kind or t.issuer:
        out(f"what:     {p(t.kind or '-')}, issued by {p(t.issuer or 'unknown')}  (rule {p(t.rule or '-')})")
    out(f"sender:   {p(t.sender or '-')}")
    out(f"assignee: {p(t.assignee or 'nobody')}")
    out(f"opened:   {local(t.opened_at, zone)}   due: {local(t.due_at, zone)}   "
        f"acknowledged: {local(t.acked_at, zone)}")
    if t.text:
        out(f"rejection: {p(t.text)}")
    listing = summary(t, zone)
    if listing:
        out(f"listing:  {p(listing)}")
    if t.listing_reason:
        out(f"          reason (staff only): {p(t.listing_reason)}")
    if t.outcome:
        out(f"outcome:  {t.outcome} ({local(t.outcome_at, zone)})")
    if d["delist_error"]:
        console.print("[bold red]delist failed:[/bold red] ", end="", markup=True)
        out(p(d["delist_error"]))
    if t.reason:
        out(f"waiting for: {p(t.reason)}")
    console.print("\n[bold]thread[/bold]")
    for m in d["messages"]:
        out(f"  in   {m['fetched_at']}  {p(m['sender'])}  {p(repr(m['subject']))}")
        out(f"       outcome: {p(m['outcome'])}")
        f = m["findings"] or {}
        if f.get("source"):
            out(f"       evidence: {p(f.get('reply_code'))} {p(f.get('status'))} ips={p(f.get('ips'))} "
                f"from {p(f['source'])}, line {p(f.get('line'))}")
    for o in d["outgoing"]:
        out(f"  out  {o['kind']} to {p(o['to'])}  {o['state']}  {p(repr(o['subject']))}"
            + (f"  error: {p(o['error'])}" if o["error"] else ""))
    console.print("\n[bold]events[/bold]")
    for e in d["events"]:
        change = f"{e['from_state']} → {e['to_state']}" if e["to_state"] else e["outcome"] or ""
        what = ": ".join(x for x in (change, p(e["detail"] or "")) if x)
        out(f"  {e['at']}  {e['kind']:<10} {p(e['actor'])}: {what}")
