"""The portal wired to a real database and SMTP server, for the tests of issue #19.

`PortalWorld` holds the desk's config with `[listing] source = "table"`, the `Portal` service
and its ASGI app, and `Browserless`: httpx talking to the app in-process (a cookie jar, a
client address of the test's choosing). `mailbot_portal` starts the real `mailbot portal`
command on loopback for the browser tests.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from app import DOC_RANGES, write_config
from servers import free_port
from sqlmodel import Session, col, select

from mailbot.config import Config, parse
from mailbot.listing import admin
from mailbot.listing.admin import NewListing
from mailbot.portal import open_portal
from mailbot.portal.web import make_app
from mailbot.store.portal_tables import PortalRequest
from mailbot.store.states import MailKind
from mailbot.store.tables import OutboxMail, Ticket, TicketEvent

SECRET = "portal-test-signing-key-0123456789abcdefghijklmnop"
BASE = "http://127.0.0.1:8025"
LINK = re.compile(r"(https?://\S+/confirm/[A-Za-z0-9._-]+)")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def portal_sections(smtp: Any, db_url: str, **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "mailbox": {"source": "maildir", "maildir_path": "inbox"},
        "outgoing": {"transport": "smtp", "host": smtp.host, "port": smtp.port, "security": "none",
                     "from_address": "delist@example.org", "from_name": "Example Delist Desk"},
        "database": {"url": db_url},
        "desk": {"name": "Example Delist Desk", "timezone": "Europe/Berlin"},
        "policy": {"allow_ranges": DOC_RANGES},
        "listing": {"source": "table", "cache_seconds": 0},
        "portal": {"requests_per_minute": 1000},
    }
    for k, v in extra.items():
        sections.setdefault(k, {}).update(v)
    return sections


class Browserless:
    """httpx against the ASGI app in-process: one client address, one cookie jar."""

    def __init__(self, app: Any, client: str = "198.51.100.7", base: str = BASE) -> None:
        self.app, self.client, self.base = app, client, base
        self.cookies = httpx.Cookies()

    async def _go(self, method: str, url: str, **kw: Any) -> httpx.Response:
        transport = httpx.ASGITransport(app=self.app, client=(self.client, 41234))
        async with httpx.AsyncClient(transport=transport, base_url=self.base, cookies=self.cookies) as c:
            r = await c.request(method, url, **kw)
            self.cookies = httpx.Cookies(c.cookies)
            return r

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return asyncio.run(self._go("GET", url, **kw))

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return asyncio.run(self._go("POST", url, **kw))

    def csrf(self, url: str = "/") -> str:
        m = CSRF.search(self.get(url).text)
        assert m, url
        return m.group(1)

    def ask(self, address: str, ip: str, lang: str = "en", **headers: str) -> httpx.Response:
        """Fill and send the form as a browser would: its page first (the cookie and the field)."""
        token = self.csrf()
        return self.post("/", data={"csrf": token, "lang": lang, "address": address, "ip": ip}, headers=headers)

    def press(self, link: str, lang: str = "en") -> httpx.Response:
        """Open the link and press the button, as a browser would."""
        path = link.split("/", 3)[3]
        token = self.csrf("/" + path)
        return self.post("/" + path, data={"csrf": token, "lang": lang})


class PortalWorld:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.portal, self.pages, self.sender = open_portal(config, "127.0.0.1", 8025,
                                                           environ={"MAILBOT_PORTAL_SECRET": SECRET})
        self.engine = self.portal.engine
        self.app = make_app(self.portal, self.pages)

    def browser(self, client: str = "198.51.100.7") -> Browserless:
        return Browserless(self.app, client)

    def list_ip(self, network: str, category: str | None = "5.7.606", since: Any = None) -> None:
        admin.add(self.engine, NewListing(network=__import__("ipaddress").ip_network(network), category=category,
                                          reason="trap hits (staff only)", since=since), "test")

    def listed(self, ip: str) -> bool:
        return self.portal.lister.lookup(ip, fresh=True).listed  # type: ignore[union-attr]

    def links(self) -> list[str]:
        """The confirmation links queued in the outbox, oldest first."""
        with Session(self.engine) as s:
            rows = s.exec(select(OutboxMail).where(OutboxMail.kind == MailKind.PORTAL_CONFIRM)
                          .order_by(col(OutboxMail.id))).all()
        found = []
        for row in rows:
            text = row.raw.decode("ascii", "replace").replace("=\r\n", "").replace("=3D", "=")
            m = LINK.search(text)
            assert m, text[:500]
            found.append(m.group(1))
        return found

    def outbox(self, kind: str | None = None) -> list[OutboxMail]:
        with Session(self.engine) as s:
            q = select(OutboxMail).order_by(col(OutboxMail.id))
            if kind:
                q = q.where(OutboxMail.kind == kind)
            return list(s.exec(q).all())

    def requests(self) -> list[PortalRequest]:
        with Session(self.engine) as s:
            return list(s.exec(select(PortalRequest).order_by(col(PortalRequest.id))).all())

    def tickets(self) -> list[Ticket]:
        with Session(self.engine) as s:
            return list(s.exec(select(Ticket).order_by(col(Ticket.id))).all())

    def events(self, ticket_id: int) -> list[TicketEvent]:
        with Session(self.engine) as s:
            return list(s.exec(select(TicketEvent).where(TicketEvent.ticket_id == ticket_id)
                               .order_by(col(TicketEvent.id))).all())

    def close(self) -> None:
        self.portal.lister.close()
        self.engine.dispose()


@pytest.fixture
def make_portal(tmp_path: Path, smtp_server: Any, database_url: str) -> Iterator[Callable[..., PortalWorld]]:
    made: list[PortalWorld] = []

    def make(**sections: dict[str, Any]) -> PortalWorld:
        config = parse(portal_sections(smtp_server, database_url, **sections), base_dir=str(tmp_path), environ={})
        world = PortalWorld(config)
        made.append(world)
        return world

    yield make
    for w in made:
        w.close()


@pytest.fixture
def portal_world(make_portal: Callable[..., PortalWorld]) -> PortalWorld:
    return make_portal()


def wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mailbot portal exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"mailbot portal did not listen on {port}:\n{log.read_text()[-3000:]}")


@pytest.fixture
def mailbot_portal(tmp_path: Path, smtp_server: Any, database_url: str) -> Iterator[Callable[..., tuple[str, Path]]]:
    """Start `mailbot portal` on loopback with a config file; yields (base URL, config path)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(**sections: dict[str, Any]) -> tuple[str, Path]:
        port = free_port()
        path = write_config(tmp_path / "mailbot.toml", portal_sections(smtp_server, database_url, **sections))
        log = tmp_path / "portal.log"
        with log.open("ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "mailbot", "-c", str(path), "portal", "--host", "127.0.0.1",
                                     "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                    env={**os.environ, "MAILBOT_PORTAL_SECRET": SECRET})
        procs.append(proc)
        wait_port(port, proc, log)
        return f"http://127.0.0.1:{port}", path

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
