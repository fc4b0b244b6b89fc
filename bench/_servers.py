"""Shared parts of the benchmarks: corpus copies, a private Dovecot filled fast, an SMTP
sink in its own process, throw-away databases, and a mailbot config for them.

Reuses ``DovecotServer`` and ``SMTPServer`` from ``tests/servers.py``. Benchmarks
import this module as ``_servers`` (bench/ is on sys.path when a bench runs).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import multiprocessing
import os
import pwd
import re
import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for _p in (REPO, REPO / "tests"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from app import write_config  # noqa: E402, F401  (tests/app.py: the TOML writer, re-exported for the benches)
from corpus import corpus_dir  # noqa: E402  (tests/corpus.py: where the corpus is, MAILBOT_CORPUS honoured)
from servers import DovecotServer, SMTPServer  # noqa: E402  (tests/servers.py)

DOC_RANGES = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"]
BENCH_V4 = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: reserved for benchmarking
BENCH_V6 = ipaddress.ip_network("2001:db8:b000::/36")
DECOY_IPS = {"192.0.2.200", "2001:db8:ffff::25"}
REPLY_BREAKER = 10_000_000
"""replies.breaker_per_hour in the bench config: a burst of N distinct senders must all get their reply."""
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --------------------------------------------------------------------------- corpus copies


@dataclass(frozen=True)
class Template:
    path: str
    raw: bytes
    ips: tuple[str, ...]
    """Labelled rejection IPs written literally in the bytes (these get rewritten per copy)."""


def load_forwards() -> list[Template]:
    base = corpus_dir()
    labelled: dict[str, list[str]] = {}
    labels = base / "labels.jsonl"
    if labels.exists():
        for line in labels.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                labelled[row["variant_file"]] = list(row.get("expected_ips") or [])
    out = []
    for p in sorted((base / "forwards").rglob("*.eml")):
        rel = p.relative_to(base).as_posix()
        raw = p.read_bytes()
        ips = tuple(ip for ip in labelled.get(rel, []) if ip not in DECOY_IPS and ip.encode() in raw)
        out.append(Template(rel, raw, ips))
    if not out:
        raise SystemExit(f"no forwards under {base / 'forwards'} (set MAILBOT_CORPUS)")
    return out


_HEADER_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def _header_field(name: bytes) -> re.Pattern[bytes]:
    # the field and its folded continuation lines
    return re.compile(rb"^" + name + rb":[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*", re.IGNORECASE | re.MULTILINE)


_MSGID = _header_field(b"message-id")
_FROM = _header_field(b"from")
_ADDR_DOMAIN = re.compile(rb"@([A-Za-z0-9.-]+)")


def _ip_pattern(ip: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?<![0-9A-Fa-f:.])" + re.escape(ip.encode()) + rb"(?![0-9A-Fa-f:]|\.\d)")


class Copier:
    """Makes distinct messages from the corpus: copy i of template i % len.

    Each copy gets its own Message-ID, its own sender domain (so replies are
    neither deduplicated nor rate-limited per recipient; the local part, and so
    the auto-reply verdict, is kept) and its own rejection IP where the labelled
    IP is written literally (IPv4 from 198.18.0.0/15, IPv6 from 2001:db8:b000::/36),
    so 5.7.511 copies open tickets of their own instead of joining one.
    """

    def __init__(self, templates: list[Template], tag: str) -> None:
        self.templates = templates
        self.tag = tag
        self._patterns = {ip: _ip_pattern(ip) for t in templates for ip in t.ips}

    def ip_for(self, i: int, k: int, version: int) -> str:
        n = i * 4 + k
        if version == 4:
            return str(BENCH_V4[1 + n % (BENCH_V4.num_addresses - 2)])
        return str(BENCH_V6[1 + n])

    def copy(self, i: int) -> bytes:
        t = self.templates[i % len(self.templates)]
        raw = t.raw
        m = _HEADER_END.search(raw)
        cut = m.end() if m else len(raw)
        head, body = raw[:cut], raw[cut:]
        nl = b"\r\n" if b"\r\n" in head else b"\n"
        new_id = b"Message-ID: <bench." + self.tag.encode() + b"." + str(i).encode() + b"@forwarder.example>"
        head, found = _MSGID.subn(lambda _m: new_id, head, count=1)
        if not found:
            head = new_id + nl + head
        head = _FROM.sub(lambda fm: _ADDR_DOMAIN.sub(b"@s" + str(i).encode() + b".\\1", fm.group(0), count=1),
                         head, count=1)
        raw = head + body
        for k, ip in enumerate(t.ips):
            version = ipaddress.ip_address(ip).version
            new = self.ip_for(i, k, version).encode()
            raw = self._patterns[ip].sub(lambda _m, new=new: new, raw)
        return raw

    def copies(self, n: int) -> Iterator[bytes]:
        for i in range(n):
            yield self.copy(i)


# --------------------------------------------------------------------------- Dovecot


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"):
        if os.access(Path(d, name), os.X_OK):
            return str(Path(d, name))
    raise SystemExit(f"{name} not found (scripts/install-test-deps installs dovecot-imapd)")


@contextlib.contextmanager
def dovecot() -> Iterator[DovecotServer]:
    """A private Dovecot 2.3 (tests/servers.py's) in a temporary directory."""
    root = Path(tempfile.mkdtemp(prefix="mailbot-bench-"))
    root.chmod(0o755)
    server = DovecotServer(os.environ.get("MAILBOT_TEST_DOVECOT") or _binary("dovecot"), _binary("doveadm"), root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Mailbox:
    """One user of the private Dovecot (duck-types tests' DovecotMailbox for configs)."""

    server: DovecotServer
    user: str

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def password(self) -> str:
        return self.server.password

    def count(self, folder: str = "INBOX") -> int:
        try:
            out = self.server.doveadm("mailbox", "status", "-u", self.user, "messages", folder)
        except AssertionError:
            return 0  # folder does not exist (yet)
        return int(out.strip().split("=", 1)[1])


def fill_mailbox(server: DovecotServer, messages: Iterable[bytes], prefix: str = "b") -> tuple[Mailbox, int]:
    """A new user whose INBOX holds `messages`, written straight into its Maildir.

    Files go to cur/ with the ``:2,`` suffix (no flags) and their size in the name,
    as Dovecot would save them; the user has never logged in, so Dovecot builds its
    index from the directory on first access, which `doveadm mailbox status` triggers
    here, before anything is timed. Returns the mailbox and the number written.
    """
    user = f"{prefix}{uuid.uuid4().hex[:8]}"
    home = server.root / "mail" / user
    for sub in ("cur", "new", "tmp"):
        (home / sub).mkdir(parents=True)
    host = socket.gethostname().replace("/", "_").replace(":", "_")
    stamp = int(time.time())
    cur = home / "cur"
    n = 0
    for n, raw in enumerate(messages, 1):
        (cur / f"{stamp}.M{n}P{os.getpid()}.{host},S={len(raw)}:2,").write_bytes(raw)
    if os.geteuid() == 0:
        mail_user = _mail_user()
        for dirpath, _dirs, files in os.walk(home):
            os.chown(dirpath, mail_user.pw_uid, mail_user.pw_gid)
            for f in files:
                os.chown(os.path.join(dirpath, f), mail_user.pw_uid, mail_user.pw_gid)
    box = Mailbox(server, user)
    indexed = box.count()
    if indexed != n:
        raise RuntimeError(f"Dovecot sees {indexed} messages in {user}'s INBOX, {n} were written")
    return box, n


def _mail_user() -> pwd.struct_passwd:
    for name in ("dovecot", "nobody"):  # as tests/servers.py picks it when root
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("no dovecot or nobody user to own the maildirs")


# --------------------------------------------------------------------------- SMTP sink


def _smtp_child(ready: Any, count: Any, stop: Any) -> None:
    class Counting(SMTPServer):
        def _record(self, record: Any) -> None:  # count, keep nothing
            if record.reply.startswith("2"):
                with count.get_lock():
                    count.value += 1

    server = Counting()
    server.start()
    ready.put(server.port)
    stop.wait()
    server.stop()


class SmtpSink:
    """tests/servers.py's aiosmtpd server in a process of its own, counting accepted mail.

    In its own process so that it does not share the benchmarked process's GIL.
    """

    host = "127.0.0.1"

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._ready = ctx.Queue()
        self._count = ctx.Value("q", 0)
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_smtp_child, args=(self._ready, self._count, self._stop), daemon=True)
        self.port = 0

    def __enter__(self) -> SmtpSink:
        self._proc.start()
        self.port = int(self._ready.get(timeout=30))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()

    @property
    def received(self) -> int:
        return int(self._count.value)

    def wait_for(self, n: int, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.received < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.received


# --------------------------------------------------------------------------- databases


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database as a SQLAlchemy URL (None if no server), dropped after."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    admin_url = os.environ.get("MAILBOT_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        print(f"PostgreSQL at {admin_url} not reachable, skipped: {str(e).strip()}")
        yield None
        return
    name = f"mailbot_bench_{uuid.uuid4().hex[:10]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield make_url(admin_url).set(drivername="postgresql+psycopg", database=name) \
                .render_as_string(hide_password=False)
        finally:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# --------------------------------------------------------------------------- config


def config_data(box: Mailbox, db_url: str, *, smtp_port: int | None = None,
                outgoing_maildir: Path | None = None, batch_size: int = 100) -> dict[str, Any]:
    """mailbot config (as parsed TOML) for `box`, a database and an SMTP port or an outgoing Maildir."""
    outgoing: dict[str, Any] = {"from_address": "delist@example.org", "from_name": "Example Delist Desk"}
    if smtp_port is not None:
        outgoing.update(transport="smtp", host="127.0.0.1", port=smtp_port, security="none")
    else:
        assert outgoing_maildir is not None
        outgoing.update(transport="maildir", maildir_path=str(outgoing_maildir))
    return {
        "mailbox": {"source": "imap", "host": box.host, "port": box.port, "security": "none",
                    "user": box.user, "password": box.password, "timeout": 60, "batch_size": batch_size},
        "outgoing": outgoing,
        "database": {"url": db_url},
        "desk": {"name": "Example Delist Desk", "timezone": "Europe/Berlin"},
        "policy": {"allow_ranges": [*DOC_RANGES, str(BENCH_V4)]},
        # every copy is a distinct sender: only the hourly circuit breaker would stop replies
        "replies": {"breaker_per_hour": REPLY_BREAKER},
    }


def db_counts(engine: Any) -> dict[str, int]:
    """What the run left in the database: messages by outcome, tickets, outbox rows by state."""
    from sqlalchemy import func, select

    from mailbot.store.tables import OutboxMail, StoredMessage, Ticket

    def n(model: Any, *where: Any) -> Any:
        return select(func.count()).select_from(model).where(*where)

    queries = {
        "processed": n(StoredMessage, StoredMessage.state == "processed"),
        "quarantined": n(StoredMessage, StoredMessage.state == "quarantined"),
        "left_stored": n(StoredMessage, StoredMessage.state == "stored"),
        "joined": n(StoredMessage, StoredMessage.outcome.like("joined%")),  # type: ignore[union-attr]
        "tickets": n(Ticket),
        "outbox_sent": n(OutboxMail, OutboxMail.state == "sent"),
        "outbox_unsent": n(OutboxMail, OutboxMail.state != "sent"),
    }
    with engine.connect() as c:
        return {k: int(c.execute(q).scalar() or 0) for k, q in queries.items()}
