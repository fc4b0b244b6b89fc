"""Fixtures that wire mailbot to the real servers of servers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, col, select

from mailbot.config import Config, parse
from mailbot.desk import Desk
from mailbot.models import OutboxMail, StoredMessage, Ticket, TicketEvent

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SAMPLES = Path(__file__).resolve().parents[1] / "mailbot" / "samples"
DOC_RANGES = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]


def corpus(path: str) -> bytes:
    return (CORPUS / path).read_bytes()


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def imap_config(tmp_path: Path, dovecot: Any, smtp: Any, db_url: str, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "mailbox": {"source": "imap", "host": dovecot.host, "port": dovecot.port, "security": "none",
                    "user": dovecot.user, "password": dovecot.password, "timeout": 10},
        "outgoing": {"transport": "smtp", "host": smtp.host, "port": smtp.port, "security": "none",
                     "from_address": "delist@example.org", "from_name": "Example Delist Desk"},
        "database": {"url": db_url},
        "desk": {"name": "Example Delist Desk", "timezone": "Europe/Berlin"},
        "policy": {"allow_ranges": DOC_RANGES},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return parse(data, base_dir=str(tmp_path), environ={})


class World:
    """One desk on real servers, and what a test needs to look at the outcome."""

    def __init__(self, desk: Desk, dovecot: Any, smtp: Any) -> None:
        self.desk, self.imap, self.smtp = desk, dovecot, smtp

    def deliver(self, raw: bytes) -> int:
        return int(self.imap.append(raw))

    def run(self) -> Any:
        return self.desk.run_once()

    def tickets(self) -> list[Ticket]:
        with Session(self.desk.engine) as s:
            return list(s.exec(select(Ticket).order_by(col(Ticket.id))).all())

    def messages(self) -> list[StoredMessage]:
        with Session(self.desk.engine) as s:
            return list(s.exec(select(StoredMessage).order_by(col(StoredMessage.id))).all())

    def outbox(self) -> list[OutboxMail]:
        with Session(self.desk.engine) as s:
            return list(s.exec(select(OutboxMail).order_by(col(OutboxMail.id))).all())

    def events(self, ticket: Ticket) -> list[TicketEvent]:
        with Session(self.desk.engine) as s:
            return list(s.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket.id)
                                .order_by(col(TicketEvent.id))).all())


@pytest.fixture
def make_world(tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> Iterator[Callable[..., World]]:
    made: list[Desk] = []

    def make(**sections: dict[str, Any]) -> World:
        desk = Desk(imap_config(tmp_path, dovecot, smtp_server, database_url, **sections))
        made.append(desk)
        return World(desk, dovecot, smtp_server)

    yield make
    for desk in made:
        desk.engine.dispose()


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()
