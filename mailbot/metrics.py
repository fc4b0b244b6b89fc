"""Prometheus metrics (optional: `[metrics] port`). Counters move as the daemon
works; gauges that describe the database (outbox depth, oldest open ticket,
last successful poll) are read from it at scrape time, so every daemon on
one PostgreSQL reports the same truth.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.store.states import OutboxState, Outcome, TicketState
from mailbot.store.tables import DaemonHealth, OutboxMail, OutgoingHealth, Ticket, TicketEvent

REGISTRY = CollectorRegistry()
FETCHED = Counter("mailbot_messages_fetched", "Messages stored from the mailbox", registry=REGISTRY)
PROCESSED = Counter("mailbot_messages_processed", "Messages processed", registry=REGISTRY)
QUARANTINED = Counter("mailbot_messages_quarantined", "Messages quarantined", registry=REGISTRY)
EXTRACTION_FAILURES = Counter("mailbot_extraction_failures", "Messages unreadable or over the extraction limits",
                              registry=REGISTRY)
TICKETS = Counter("mailbot_tickets_opened", "Tickets opened", ["family"], registry=REGISTRY)
ACKS = Counter("mailbot_acks", "Replies to senders", ["result"], registry=REGISTRY)  # sent|suppressed|failed
ESCALATIONS = Counter("mailbot_escalations", "Tickets escalated before the SLA mark", registry=REGISTRY)
BREACHES = Counter("mailbot_breaches", "Tickets past the SLA mark", registry=REGISTRY)
POLL_ERRORS = Counter("mailbot_poll_errors", "Polls that failed", registry=REGISTRY)
IDLE_WAKES = Counter("mailbot_idle_wakes", "Polls woken by new mail in IDLE, by who saw it first",
                     ["by"], registry=REGISTRY)  # notice (the server's) | recheck | after_poll
LOOKUPS = Counter("mailbot_listing_lookups", "Listing lookups by this daemon, by answer",
                  ["result"], registry=REGISTRY)  # listed|not_listed|failed|skipped (the source was failing)
OUTCOME_BUCKETS = (60.0, 600.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0, 48 * 3600.0, 72 * 3600.0,
                   7 * 86400.0)
"""Seconds from the forward to its outcome: a minute (answered by the list), ... the 48-hour mark, a week."""


class DatabaseGauges(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
        now = clock.utcnow()
        with Session(self.engine) as s:
            depth = s.exec(select(func.count()).select_from(OutboxMail)
                           .where(OutboxMail.state == OutboxState.QUEUED)).one()
            oldest = s.exec(select(func.min(Ticket.opened_at)).where(Ticket.state == TicketState.OPEN)).one()
            last_ok = s.exec(select(func.max(DaemonHealth.last_poll_ok_at))).one()
            failed = s.exec(select(func.count()).select_from(OutboxMail)
                            .where(OutboxMail.state == OutboxState.FAILED)).one()
            open_n = s.exec(select(func.count()).select_from(Ticket).where(Ticket.state == TicketState.OPEN,
                                                                           col(Ticket.due_at) <= now)).one()
            outgoing = s.get(OutgoingHealth, "outgoing")
            failing = outgoing is not None and outgoing.failing_since is not None
        yield GaugeMetricFamily("mailbot_outbox_depth", "Outgoing mails waiting to be sent", value=float(depth))
        yield GaugeMetricFamily("mailbot_outbox_failed", "Outgoing mails that failed permanently", value=float(failed))
        yield GaugeMetricFamily("mailbot_outgoing_failing", "1 while the outgoing server cannot be used "
                                "(the queue is held; see mailbot status)", value=1.0 if failing else 0.0)
        yield GaugeMetricFamily("mailbot_oldest_open_ticket_age_seconds", "Age of the oldest open ticket",
                                value=(now - oldest).total_seconds() if oldest else 0)
        yield GaugeMetricFamily("mailbot_overdue_tickets", "Open tickets past the SLA mark", value=float(open_n))
        yield GaugeMetricFamily("mailbot_last_successful_poll_timestamp", "Unix time of the last good poll",
                                value=last_ok.timestamp() if last_ok else 0)
        yield from outcome_metrics(self.engine)


def outcome_metrics(engine: Engine) -> Iterator[Any]:
    """Outcomes by kind and the time from forward to outcome, read from the outcome events: the
    staff commands that record most of them (delist, decline) run in processes of their own,
    so a counter in the daemon would miss them. One grouped statement per scrape."""
    seconds = col(TicketEvent.outcome_seconds)
    columns = [func.count(), func.coalesce(func.sum(seconds), 0.0),
               *(func.sum(case((seconds <= b, 1), else_=0)) for b in OUTCOME_BUCKETS)]
    with Session(engine) as s:
        rows = s.execute(sa_select(col(TicketEvent.outcome), *columns)
                         .where(col(TicketEvent.outcome).is_not(None)).group_by(col(TicketEvent.outcome))).all()
    by_kind: dict[str, Any] = {r[0]: r for r in rows}
    total = CounterMetricFamily("mailbot_outcomes", "Requests that ended, by outcome", labels=["kind"])
    hist = HistogramMetricFamily("mailbot_outcome_seconds", "Seconds from the forward to its outcome",
                                 labels=["kind"])
    for kind in Outcome:
        row = by_kind.get(kind.value)
        # row: outcome, count, sum of seconds, then one count per bucket
        n = int(row[1]) if row else 0
        total.add_metric([kind.value], float(n))
        buckets = [(str(b), float(row[3 + i] or 0) if row else 0.0) for i, b in enumerate(OUTCOME_BUCKETS)]
        hist.add_metric([kind.value], [*buckets, ("+Inf", float(n))], sum_value=float(row[2]) if row else 0.0)
    yield total
    yield hist


def serve(engine: Engine, address: str, port: int) -> None:
    REGISTRY.register(DatabaseGauges(engine))
    start_http_server(port, addr=address, registry=REGISTRY)
