"""`mailbot report`: how the desk keeps its promise, in the figures a desk manager asks for.

Over the requests opened since a date: how many, what became of them (the state they are in,
and for those that reached an outcome, whether mailbot reached it by itself or a person
did), the time from the forward to the first reply to the sender and to the outcome
(median, 90th percentile, worst), the SLA clocks met and breached, and the same per
assignee. Read-only: one pass over the tickets of the window and their state events.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from mailbot.outgoing.outbox import AUTO_KINDS
from mailbot.store.states import EventKind, MailKind, TicketState
from mailbot.store.tables import OutboxMail, SlaNotice, Ticket, TicketEvent

WAITING = frozenset({TicketState.OPEN, TicketState.NEEDS_INFO})
"""States that are no outcome yet: the request still waits (for staff, or for the sender)."""
SENDER_MAIL = frozenset({*AUTO_KINDS, MailKind.STAFF_REPLY})
AUTOMATIC_ACTORS = ("mailbot", "reprocess", "autodelist", "portal")
"""Actors whose outcomes count as reached without a person (a prefix of the event's actor)."""


@dataclass
class Spread:
    """Durations in seconds: how many, median, 90th percentile and worst."""

    count: int = 0
    median: float | None = None
    p90: float | None = None
    worst: float | None = None

    @classmethod
    def of(cls, seconds: Iterable[float]) -> Spread:
        values = sorted(seconds)
        if not values:
            return cls()
        return cls(len(values), _rank(values, 0.5), _rank(values, 0.9), values[-1])


@dataclass
class Report:
    since: datetime
    until: datetime
    requests: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    outcomes: int = 0
    automatic: int = 0
    by_hand: int = 0
    first_reply: Spread = field(default_factory=Spread)
    to_outcome: Spread = field(default_factory=Spread)
    sla_clocks: int = 0
    sla_met: int = 0
    sla_breached: int = 0
    sla_running: int = 0
    per_assignee: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        def spread(s: Spread) -> dict[str, Any]:
            return {"count": s.count, "median_s": s.median, "p90_s": s.p90, "worst_s": s.worst}

        return {
            "since": self.since.isoformat(), "until": self.until.isoformat(), "requests": self.requests,
            "by_state": self.by_state, "outcomes": self.outcomes, "automatic": self.automatic,
            "by_hand": self.by_hand, "first_reply": spread(self.first_reply),
            "to_outcome": spread(self.to_outcome),
            "sla": {"clocks": self.sla_clocks, "met": self.sla_met, "breached": self.sla_breached,
                    "running": self.sla_running},
            "per_assignee": self.per_assignee,
        }


def build(session: Session, since: datetime, until: datetime) -> Report:
    report = Report(since=since, until=until)
    rows = session.exec(select(Ticket).where(col(Ticket.opened_at) >= since, col(Ticket.opened_at) <= until)
                        .order_by(col(Ticket.id))).all()
    ids = [t.id for t in rows if t.id is not None]
    report.requests = len(rows)
    report.by_state = dict(sorted(Counter(str(t.state) for t in rows).items()))
    outcome_at, outcome_actor = _outcomes(session, ids)
    first_reply = _first_replies(session, ids)
    breached = set(session.exec(select(SlaNotice.ticket_id).where(
        col(SlaNotice.ticket_id).in_(ids), SlaNotice.kind == "breach")).all()) if ids else set()
    to_outcome: list[float] = []
    assignees: dict[str, list[Ticket]] = defaultdict(list)
    for t in rows:
        assert t.id is not None
        assignees[t.assignee or "(nobody)"].append(t)
        if t.state not in WAITING:
            report.outcomes += 1
            # an outcome set when the ticket opened (redirected, not ours, not a block) is mailbot's own
            at, actor = outcome_at.get(t.id, t.opened_at), outcome_actor.get(t.id, "mailbot")
            to_outcome.append(max((_aware(at) - _aware(t.opened_at)).total_seconds(), 0.0))
            if actor.lower().startswith(AUTOMATIC_ACTORS):
                report.automatic += 1
            else:
                report.by_hand += 1
        if t.due_at is not None or t.id in breached or t.sla_stage:
            report.sla_clocks += 1
            if t.id in breached:
                report.sla_breached += 1
            elif t.state == TicketState.OPEN:
                report.sla_running += 1
            else:
                report.sla_met += 1
    report.first_reply = Spread.of(
        max((_aware(first_reply[t.id]) - _aware(t.opened_at)).total_seconds(), 0.0)
        for t in rows if t.id in first_reply)
    report.to_outcome = Spread.of(to_outcome)
    for who, theirs in sorted(assignees.items()):
        done = [t for t in theirs if t.state not in WAITING]
        report.per_assignee[who] = {
            "requests": len(theirs), "outcomes": len(done),
            "open": sum(1 for t in theirs if t.state == TicketState.OPEN),
            "breached": sum(1 for t in theirs if t.id in breached)}
    return report


def _outcomes(session: Session, ids: list[int]) -> tuple[dict[int, datetime], dict[int, str]]:
    """For each ticket, the first state change that left the waiting states: when, and by whom."""
    at: dict[int, datetime] = {}
    actor: dict[int, str] = {}
    if not ids:
        return at, actor
    events = session.exec(select(TicketEvent.ticket_id, TicketEvent.at, TicketEvent.actor, TicketEvent.to_state)
                          .where(col(TicketEvent.ticket_id).in_(ids), TicketEvent.kind == EventKind.STATE)
                          .order_by(col(TicketEvent.id))).all()
    for tid, when, who, to in events:
        if tid not in at and to is not None and to not in WAITING:
            at[tid], actor[tid] = when, who or ""
    return at, actor


def _first_replies(session: Session, ids: list[int]) -> dict[int, datetime]:
    """For each ticket, when the first mail to its sender left (an acknowledgement or a person's reply)."""
    if not ids:
        return {}
    found: dict[int, datetime] = {}
    for tid, sent in session.exec(select(OutboxMail.ticket_id, OutboxMail.sent_at).where(
            col(OutboxMail.ticket_id).in_(ids), col(OutboxMail.kind).in_(list(SENDER_MAIL)),
            col(OutboxMail.sent_at).is_not(None))).all():
        if tid is not None and sent is not None and (tid not in found or sent < found[tid]):
            found[tid] = sent
    return found


def _rank(values: list[float], q: float) -> float:
    """The nearest-rank percentile: a value that occurred, never an interpolation."""
    return values[max(math.ceil(q * len(values)) - 1, 0)]


def _aware(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def human(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    delta = timedelta(seconds=round(seconds))
    hours, rest = divmod(int(delta.total_seconds()), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def text(report: Report) -> str:
    r = report
    lines = [
        f"Requests opened {r.since:%Y-%m-%d} to {r.until:%Y-%m-%d %H:%M} UTC: {r.requests}",
        "  now: " + (", ".join(f"{k} {v}" for k, v in r.by_state.items()) or "none"),
        f"Outcomes: {r.outcomes} ({r.automatic} by mailbot itself, {r.by_hand} by a person); "
        f"{r.requests - r.outcomes} still waiting",
        f"Forward to first reply:  median {human(r.first_reply.median)}, 90% within {human(r.first_reply.p90)}, "
        f"worst {human(r.first_reply.worst)} ({r.first_reply.count} replied)",
        f"Forward to outcome:      median {human(r.to_outcome.median)}, 90% within {human(r.to_outcome.p90)}, "
        f"worst {human(r.to_outcome.worst)}",
        f"SLA clocks: {r.sla_clocks}: met {r.sla_met}, breached {r.sla_breached}, running {r.sla_running}",
        "Per assignee:",
    ]
    for who, f in r.per_assignee.items():
        lines.append(f"  {who:<32} requests {f['requests']:>4}  outcomes {f['outcomes']:>4}  "
                     f"open {f['open']:>4}  breached {f['breached']:>3}")
    return "\n".join(lines)
