"""Real servers for the listing sources: an authoritative DNS server (NSD) and a list service.

Fixtures (imported by ``tests/conftest.py``):

``dnsbl`` (function)
    A factory: ``dnsbl(zone, records)`` writes the zone file (``records`` are zone-file
    lines relative to the zone, e.g. ``"45.113.0.203 IN A 127.0.0.2"``) and starts a private
    NSD (Debian's ``nsd`` package) serving it on a free port of 127.0.0.1; returns the
    :class:`NsdServer`. Stopped after the test. ``MAILBOT_TEST_NSD`` names the binary when it
    is not on PATH or in /usr/sbin.
``list_service`` (function)
    A :class:`ListService`: the provider's list service as docs/operators.md describes it
    (``GET /listings/{ip}``, ``POST /listings/{ip}/delist`` with ``Idempotency-Key``), in a
    thread on 127.0.0.1, recording every request (method, path, headers, body). Tests script
    failures (``fail_next``), slowness (``delay``) and the token it requires.

A missing binary skips the test, or fails it under CI, as in ``servers.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import dns.message
import dns.query
import dns.rdatatype
import pytest
from servers import HOST, READY_TIMEOUT, ServerStartError, free_port, unavailable

# --------------------------------------------------------------------------- NSD


class NsdServer:
    host = HOST

    def __init__(self, binary: str, root: Path, zone: str, records: list[str]) -> None:
        self.binary, self.root, self.zone = binary, root, zone.rstrip(".")
        self.port = free_port()
        self.log_path = root / "nsd.log"
        self.process: subprocess.Popen[bytes] | None = None
        (root / "xfr").mkdir(parents=True, exist_ok=True)
        lines = [f"$ORIGIN {self.zone}.", "$TTL 60",
                 f"@ IN SOA ns.{self.zone}. hostmaster.{self.zone}. 1 3600 600 86400 60",
                 f"@ IN NS ns.{self.zone}.", "ns IN A 127.0.0.1", *records]
        (root / "zone").write_text("\n".join(lines) + "\n")
        (root / "nsd.conf").write_text(f"""server:
    ip-address: {HOST}@{self.port}
    port: {self.port}
    server-count: 1
    username: ""
    chroot: ""
    zonesdir: "{root}"
    zonelistfile: "{root}/zone.list"
    database: ""
    xfrdfile: "{root}/xfrd.state"
    xfrdir: "{root}/xfr"
    pidfile: "{root}/nsd.pid"
    logfile: "{self.log_path}"
    do-ip6: no
    verbosity: 1
remote-control:
    control-enable: no
zone:
    name: "{self.zone}"
    zonefile: "{root}/zone"
""")

    def start(self) -> None:
        with (self.root / "nsd.stderr").open("ab") as err:
            self.process = subprocess.Popen([self.binary, "-d", "-c", str(self.root / "nsd.conf")],
                                            stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        problem = "nothing tried yet"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerStartError(f"nsd exited with {self.process.returncode}\n{self.log()}")
            try:
                answer = dns.query.udp(dns.message.make_query(self.zone + ".", dns.rdatatype.SOA), HOST,
                                       port=self.port, timeout=0.5)
                if answer.answer:
                    return
                problem = f"answer without SOA: {answer}"
            except Exception as e:
                problem = repr(e)
            time.sleep(0.05)
        self.stop()
        raise ServerStartError(f"nsd not ready on {HOST}:{self.port}: {problem}\n{self.log()}")

    def log(self) -> str:
        parts = [p.read_text(errors="replace")[-4000:] for p in (self.log_path, self.root / "nsd.stderr")
                 if p.exists()]
        return "\n".join(parts) or "(no log)"

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def dnsbl(tmp_path: Path) -> Iterator[Callable[[str, list[str]], NsdServer]]:
    binary = os.environ.get("MAILBOT_TEST_NSD") or shutil.which("nsd") or \
        next((p for p in ("/usr/sbin/nsd", "/usr/local/sbin/nsd") if os.access(p, os.X_OK)), None)
    if not binary:
        unavailable("nsd is not installed (apt-get install nsd; scripts/install-test-deps does it)")
    started: list[NsdServer] = []

    def start(zone: str, records: list[str]) -> NsdServer:
        server = NsdServer(binary, tmp_path / f"nsd{len(started)}", zone, records)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


# --------------------------------------------------------------------------- the list service


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class ListService:
    """The provider's list service, as the contract in docs/operators.md says, with its own idempotency."""

    token: str | None = None
    listings: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    delisted: list[tuple[str, str]] = field(default_factory=list)
    """(ip, key) of each delisting the service carried out: what "exactly once" is measured on."""
    fail_next: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    """Scripted answers (status, headers, body) given before the real ones, one per request."""
    delay: float = 0.0
    answers: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/api"

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes]:
        body = json.loads(raw) if raw else None
        with self.lock:
            self.calls.append(Call(method, path, headers, body))
            scripted = self.fail_next.pop(0) if self.fail_next else None
        if self.delay:
            time.sleep(self.delay)
        if scripted:
            return scripted
        if self.token and headers.get("authorization") != f"Bearer {self.token}":
            return 401, {}, b'{"error": "unauthorized"}'
        parts = path.split("/")
        if len(parts) < 4 or parts[:3] != ["", "api", "listings"]:
            return 404, {}, b"{}"
        ip = unquote(parts[3])
        if method == "GET" and len(parts) == 4:
            entry = self.listings.get(ip)
            return 200, {}, json.dumps({"listed": False} if entry is None else {"listed": True, **entry}).encode()
        if method == "POST" and parts[4:] == ["delist"]:
            key = headers.get("idempotency-key", "")
            with self.lock:  # one delist per key, whichever request comes first
                if key in self.answers:
                    first_ip, answer = self.answers[key]
                    if first_ip != ip:
                        return 422, {}, b'{"error": "key used for another IP"}'
                    return 200, {}, json.dumps({**answer, "replayed": True}).encode()
                if self.listings.pop(ip, None) is not None:
                    self.delisted.append((ip, key))
                    answer = {"status": "delisted", "at": "2026-11-30T10:00:00Z", "message": f"removed {ip}"}
                else:
                    answer = {"status": "not_listed", "message": f"{ip} was not listed"}
                self.answers[key] = (ip, answer)
            return 200, {}, json.dumps(answer).encode()
        return 405, {}, b"{}"


def _handler(service: ListService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, body = service.handle(self.command, self.path, headers, raw)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # a client that timed out
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def list_service() -> Iterator[ListService]:
    service = ListService()
    server = ThreadingHTTPServer((HOST, 0), _handler(service))
    service.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield service
    server.shutdown()
    server.server_close()
    thread.join(5)
