"""Fixtures that wire mailbot to the real servers of servers.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from corpus import corpus_dir
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot.app import Desk
from mailbot.config import Config, load, parse
from mailbot.store.engine import create_schema, make_engine
from mailbot.store.tables import OutboxMail, StoredMessage, Ticket, TicketEvent

SAMPLES = Path(__file__).resolve().parents[1] / "mailbot" / "samples"
DOC_RANGES = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]


def corpus(path: str) -> bytes:
    return (corpus_dir() / path).read_bytes()


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def forward(ip: str = "203.0.113.45", tag: str = "fwd-1", sender: str = "dana.ops@mailops.example") -> bytes:
    """A forward-as-attachment of a 550 5.7.511 NDR for `ip`, with its own Message-ID and sender."""
    raw = corpus("forwards/found/s01-postfix-511-v4/fwd_attach.eml")
    raw = raw.replace(b"203.0.113.45", ip.encode())
    raw = raw.replace(b"<4814c9673ed3c6617e19.fwd_attach@forwarder.example>", f"<{tag}@forwarder.example>".encode())
    return raw.replace(b"dana.ops@mailops.example", sender.encode())


def mailbot_cli(*args: str, cwd: Path | None = None, timeout: float = 120,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m mailbot ARGS` as a separate process, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "mailbot", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def running(module: str) -> Iterator[tuple[int, list[bytes], bytes]]:
    """(pid, argv, environment) of each process running `python -m module` now, from /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if module.encode() in argv:
            yield int(entry.name), argv, environ


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines = []
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def imap_toml(tmp_path: Path, dovecot: Any, smtp: Any, db_url: str, **extra: dict[str, Any]) -> Path:
    """A config file for the CLI on the test servers (the IMAP password comes from the environment)."""
    sections: dict[str, dict[str, Any]] = {
        "mailbox": {"host": dovecot.host, "port": dovecot.port, "security": "none", "user": dovecot.user,
                    "timeout": 10},
        "outgoing": {"host": smtp.host, "port": smtp.port, "security": "none"},
        "database": {"url": db_url},
        "policy": {"allow_ranges": DOC_RANGES},
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return write_config(tmp_path / "mailbot.toml", sections)


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
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a database at the newest schema."""
    engine = make_engine(database_url)
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def make_world(tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> Iterator[Callable[..., World]]:
    made: list[Desk] = []

    def make(**sections: dict[str, Any]) -> World:
        desk = Desk(imap_config(tmp_path, dovecot, smtp_server, database_url, **sections))
        made.append(desk)
        return World(desk, dovecot, smtp_server)

    yield make
    for desk in made:
        desk.close()
        desk.engine.dispose()


@pytest.fixture
def world(make_world: Callable[..., World]) -> World:
    return make_world()


class CliDesk:
    """The config file the CLI runs with, and a World on the same database to look at the outcome."""

    def __init__(self, path: Path, world: World) -> None:
        self.path, self.world = path, world
        self.password = world.imap.password

    def env(self, fault: str | None = None) -> dict[str, str]:
        env = {"MAILBOT_MAILBOX_PASSWORD": self.password}
        if fault:
            env["MAILBOT_FAULT"] = fault
        return env

    def poll_once(self, fault: str | None = None) -> subprocess.CompletedProcess[str]:
        return mailbot_cli("-c", str(self.path), "poll", "--once", env=self.env(fault), timeout=120)

    def start_daemon(self, log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(self.path), "run"],
                                    stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env()})


@pytest.fixture
def cli_desk(tmp_path: Path, dovecot: Any, smtp_server: Any, database_url: str) -> Iterator[Callable[..., CliDesk]]:
    made: list[Desk] = []

    def make(**sections: dict[str, Any]) -> CliDesk:
        path = imap_toml(tmp_path, dovecot, smtp_server, database_url, **sections)
        desk = Desk(load(path, environ={"MAILBOT_MAILBOX_PASSWORD": dovecot.password}))
        made.append(desk)
        return CliDesk(path, World(desk, dovecot, smtp_server))

    yield make
    for desk in made:
        desk.close()  # its extraction workers too: left to the garbage collector, they end in another test
        desk.engine.dispose()
