"""Real servers for the test suite: a private Dovecot, an aiosmtpd SMTP server, databases.

Fixtures (imported by ``tests/conftest.py``):

``dovecot_server`` (session)
    One private Dovecot 2.3 for the whole session: its own config, run dir, log and
    maildirs in a temporary directory, IMAP on a free port of 127.0.0.1 and IMAPS on a
    second one (self-signed certificate made at start).  Any user name logs in with
    ``DovecotServer.password``.
``dovecot`` (function)
    A :class:`DovecotMailbox`: a fresh, empty mailbox (a unique user) on that server,
    with helpers to put mail in and look at it, and ``client()`` for a logged-in
    ``IMAPClient``.  Clients it handed out are closed after the test.
``smtp_server`` (function)
    A :class:`SMTPServer` (aiosmtpd in a thread) recording every message, with
    scripted replies for fault tests, optional or required AUTH, and an optional
    delay before each DATA answer (a slow server).  Stopped after the test.
``database_url`` (function, parametrized ``sqlite`` / ``postgresql``)
    A SQLAlchemy URL of an empty database, dropped afterwards.
    ``MAILBOT_TEST_DATABASES=sqlite`` (comma-separated) restricts the backends;
    ``MAILBOT_TEST_POSTGRES_URL`` names the server (default
    ``postgresql://postgres@127.0.0.1:5432/postgres``).

``MAILBOT_TEST_DOVECOT`` names the dovecot binary when it is not on PATH or in
/usr/sbin.

A server whose binary is missing, or a PostgreSQL that does not answer, skips the
test; under CI (``CI`` set and non-empty) it fails it instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from imapclient import IMAPClient
from psycopg import sql
from sqlalchemy.engine import make_url

__all__ = [
    "DROP",
    "DovecotMailbox",
    "DovecotServer",
    "ReceivedMessage",
    "SMTPServer",
    "ServerStartError",
    "database_url",
    "dovecot",
    "dovecot_server",
    "free_port",
    "smtp_server",
]

HOST = "127.0.0.1"
READY_TIMEOUT = 15.0
POLL_INTERVAL = 0.05


class ServerStartError(RuntimeError):
    """A test server did not come up; the message carries its log."""


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI, where every server must be there."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set: missing test servers fail, not skip)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"):
        candidate = Path(directory, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


# --------------------------------------------------------------------------- Dovecot


def _make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1; returns (cert, key)."""
    openssl = _find_binary("openssl")
    if openssl is None:
        unavailable("openssl not found (run scripts/install-test-deps)")
    cert, key = directory / "cert.pem", directory / "key.pem"
    result = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    if result.returncode != 0:
        raise ServerStartError(f"openssl could not make a certificate:\n{result.stderr}")
    return cert, key


def _users() -> tuple[str, str, str, pwd.struct_passwd]:
    """(internal user, internal group, login user, mail user) for this process.

    As root, Dovecot refuses to run login processes or to access mail as root, so
    the Debian system users (or ``nobody``) take those parts.  As anyone else,
    everything runs as the current user.
    """
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(os.getegid()).gr_name
        return me.pw_name, group, me.pw_name, me

    def existing(*names: str) -> pwd.struct_passwd:
        for name in names:
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise ServerStartError(f"none of the users {names} exists to run Dovecot as")

    internal = existing("dovecot", "nobody")
    login = existing("dovenull", "nobody")
    return internal.pw_name, grp.getgrgid(internal.pw_gid).gr_name, login.pw_name, internal


class DovecotServer:
    """A private Dovecot process: config, ports and lifecycle (start, stop, restart)."""

    password = "mailbot-test-password"
    host = HOST

    def __init__(self, dovecot: str, doveadm: str, root: Path) -> None:
        self.binary = dovecot
        self.doveadm_binary = doveadm
        self.root = root
        self.port = free_port()
        self.ssl_port = free_port()
        self.config_path = root / "dovecot.conf"
        self.log_path = root / "dovecot.log"
        self.stderr_path = root / "dovecot.stderr"
        self.cert_path, self.key_path = _make_certificate(root)
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        internal_user, internal_group, login_user, mail_user = _users()
        mail_dir, home_dir = self.root / "mail", self.root / "home"
        for path in (self.root / "run", self.root / "state", mail_dir, home_dir):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for path in (mail_dir, home_dir):
                os.chown(path, mail_user.pw_uid, mail_user.pw_gid)
            mail_ids = f"mail_uid = {mail_user.pw_uid}\nmail_gid = {mail_user.pw_gid}\n"
            login_chroot = ""
            chroots = ""
        else:
            # Unprivileged: no chroot() and no user switching.
            mail_ids = ""
            login_chroot = "chroot ="
            chroots = (
                "service anvil {\n  chroot =\n}\n"
                "service imap-urlauth-login {\n  chroot =\n}\n"
            )
        r = self.root
        self.config_path.write_text(
            f"""# Private Dovecot {self.version()} for the mailbot test suite.
base_dir = {r}/run
state_dir = {r}/state
log_path = {self.log_path}
auth_verbose = yes
protocols = imap
listen = {HOST}
ssl = yes
ssl_cert = <{self.cert_path}
ssl_key = <{self.key_path}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
# No stats process connections: a login process caught in that handshake at shutdown
# holds the master up for 5s.
stats_writer_socket_path =
mail_location = maildir:{r}/mail/%u
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = 1
first_valid_gid = 0
{mail_ids}
passdb {{
  driver = static
  args = password={self.password}
}}
userdb {{
  driver = static
  args = home={r}/home/%u
}}
protocol imap {{
  mail_max_userip_connections = 100
}}
service imap-login {{
  {login_chroot}
  inet_listener imap {{
    address = {HOST}
    port = {self.port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.ssl_port}
    ssl = yes
  }}
}}
# No growing delays after the failed logins some tests make on purpose.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{chroots}"""
        )

    def version(self) -> str:
        result = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, check=True, timeout=30
        )
        return result.stdout.strip()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log(self) -> str:
        """Dovecot's own log and anything it wrote to stderr, for failure messages."""
        parts = []
        for path in (self.log_path, self.stderr_path):
            if path.exists():
                text = path.read_text(errors="replace")[-8000:]
                parts.append(f"--- {path.name} ---\n{text}")
        return "\n".join(parts) or "(no log written)"

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        if self.running:
            return
        with self.stderr_path.open("ab") as stderr:
            self._process = subprocess.Popen(
                [self.binary, "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() gets all of it
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        problem = "nothing tried yet"
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise ServerStartError(
                    f"dovecot exited with {self._process.returncode} while starting\n{self.log()}"
                )
            try:
                greeting = _read_greeting(self.port)
                tls_greeting = _read_greeting(self.ssl_port, self.cert_path)
            except OSError as exc:
                problem = repr(exc)
            else:
                if greeting.startswith(b"* OK") and tls_greeting.startswith(b"* OK"):
                    return
                problem = f"greetings {greeting!r}, {tls_greeting!r}"
            time.sleep(POLL_INTERVAL)
        raise ServerStartError(
            f"dovecot not ready on {HOST}:{self.port} after {timeout}s ({problem})\n{self.log()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            # The whole group at once: a master alone waits for its children, and a
            # login process stuck in a handshake with the (already gone) stats
            # process takes 5s to notice.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # Children that outlived the master (there should be none).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    def restart(self) -> None:
        """Stop and start again on the same ports; mail is kept."""
        self.stop()
        self.start()

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <our config> ARGS``; its stdout, or AssertionError with stderr."""
        command = [self.doveadm_binary, "-c", str(self.config_path), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(command)} exited with {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )
        return result.stdout


def _read_greeting(port: int, cafile: Path | None = None) -> bytes:
    """The server's first line; over TLS when cafile (the certificate to trust) is given."""
    with contextlib.ExitStack() as stack:
        sock = stack.enter_context(socket.create_connection((HOST, port), timeout=1))
        if cafile is not None:
            context = ssl.create_default_context(cafile=str(cafile))
            sock = stack.enter_context(context.wrap_socket(sock, server_hostname=HOST))
        data = b""
        while not data.endswith(b"\r\n") and len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        return data


_APPENDUID = re.compile(rb"APPENDUID \d+ (\d+)")


@dataclass
class DovecotMailbox:
    """One test's mailbox: a user of its own on the shared private Dovecot.

    Helpers use a connection of their own, so they don't disturb the code under test
    (reads use EXAMINE and BODY.PEEK, so they change no flags).
    """

    server: DovecotServer
    user: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:8]}")
    _clients: list[IMAPClient] = field(default_factory=list, repr=False)
    _helper: IMAPClient | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def ssl_port(self) -> int:
        return self.server.ssl_port

    @property
    def password(self) -> str:
        return self.server.password

    @property
    def cert_path(self) -> Path:
        return self.server.cert_path

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the server's self-signed certificate."""
        return ssl.create_default_context(cafile=str(self.cert_path))

    def client(self, *, use_ssl: bool = False, timeout: float = 10.0) -> IMAPClient:
        """A new logged-in IMAPClient (IMAPS when use_ssl); closed after the test."""
        if use_ssl:
            imap = IMAPClient(
                self.host, port=self.ssl_port, ssl=True, ssl_context=self.ssl_context(),
                timeout=timeout,
            )
        else:
            imap = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        self._clients.append(imap)
        imap.login(self.user, self.password)
        return imap

    def _admin(self) -> IMAPClient:
        if self._helper is None:
            self._helper = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
            try:
                self._helper.login(self.user, self.password)
            except BaseException:
                _close_quietly(self._helper)
                self._helper = None
                raise
        return self._helper

    def append(
        self, raw: bytes, folder: str = "INBOX", flags: Sequence[str | bytes] = ()
    ) -> int:
        """APPEND raw to folder; the new message's UID."""
        response = self._admin().append(folder, raw, flags=tuple(flags))
        match = _APPENDUID.search(response)
        if match is None:
            raise AssertionError(f"no APPENDUID in {response!r}")
        return int(match.group(1))

    def create_folder(self, name: str) -> None:
        self._admin().create_folder(name)

    def folders(self) -> list[str]:
        return [str(name) for _flags, _delimiter, name in self._admin().list_folders()]

    def uids(self, folder: str = "INBOX") -> list[int]:
        imap = self._admin()
        imap.select_folder(folder, readonly=True)
        try:
            return sorted(int(uid) for uid in imap.search("ALL"))
        finally:
            imap.unselect_folder()

    def fetch_raw(self, folder: str, uid: int) -> bytes:
        """The message exactly as stored (BODY[]), without setting \\Seen."""
        imap = self._admin()
        imap.select_folder(folder, readonly=True)
        try:
            data = imap.fetch([uid], ["BODY.PEEK[]"])
        finally:
            imap.unselect_folder()
        if uid not in data:
            raise AssertionError(f"no UID {uid} in {folder!r}")
        return bytes(data[uid][b"BODY[]"])

    def flags(self, folder: str, uid: int) -> set[str]:
        """The message's flags as strings, e.g. {"\\Seen"}; \\Recent (a session flag) left out."""
        imap = self._admin()
        imap.select_folder(folder, readonly=True)
        try:
            data = imap.fetch([uid], ["FLAGS"])
        finally:
            imap.unselect_folder()
        if uid not in data:
            raise AssertionError(f"no UID {uid} in {folder!r}")
        flags = {f.decode() if isinstance(f, bytes) else str(f) for f in data[uid][b"FLAGS"]}
        return flags - {"\\Recent"}

    def uid_validity(self, folder: str = "INBOX") -> int:
        imap = self._admin()
        status = imap.folder_status(folder, ["UIDVALIDITY"])
        return int(status[b"UIDVALIDITY"])

    def set_uid_validity(self, value: int, folder: str = "INBOX") -> None:
        """Change the folder's UIDVALIDITY behind the clients' backs (via doveadm)."""
        self.doveadm("mailbox", "update", "-u", self.user, "--uid-validity", str(value), folder)

    def doveadm(self, *args: str) -> str:
        """``doveadm -c <private config> ARGS`` (pass ``-u``, ``self.user`` yourself)."""
        return self.server.doveadm(*args)

    def restart_server(self) -> None:
        """Restart Dovecot on the same ports; open connections are cut, mail stays."""
        self._drop_helper()
        self.server.restart()

    def _drop_helper(self) -> None:
        if self._helper is not None:
            _close_quietly(self._helper)
            self._helper = None

    def close(self) -> None:
        self._drop_helper()
        for imap in self._clients:
            _close_quietly(imap)
        self._clients.clear()


def _close_quietly(imap: IMAPClient) -> None:
    """Log out, or at least close the socket, whatever state the connection is in."""
    try:
        imap.logout()
    except Exception:
        with contextlib.suppress(Exception):
            imap.shutdown()


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[DovecotServer]:
    binary = os.environ.get("MAILBOT_TEST_DOVECOT") or _find_binary("dovecot")
    doveadm = _find_binary("doveadm")
    if binary is None or doveadm is None or not os.access(binary, os.X_OK):
        unavailable(
            f"dovecot ({binary or 'not found'}) or doveadm ({doveadm or 'not found'}) missing:"
            " install dovecot-imapd (scripts/install-test-deps)"
        )
    version = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    if not version.startswith("2.3."):
        unavailable(f"the dovecot fixture is written for Dovecot 2.3, found {version!r}")
    # Not pytest's tmp dir: that is mode 0700, and as root the mail processes run as
    # another user who must reach the maildirs.  Short, too (unix socket paths).
    root = Path(tempfile.mkdtemp(prefix="mailbot-dovecot-"))
    root.chmod(0o755)
    server: DovecotServer | None = None
    try:
        server = DovecotServer(binary, doveadm, root)
        server.start()
        yield server
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def dovecot(dovecot_server: DovecotServer) -> Iterator[DovecotMailbox]:
    dovecot_server.start()  # no-op unless an earlier test left it stopped
    mailbox = DovecotMailbox(dovecot_server)
    try:
        yield mailbox
    finally:
        mailbox.close()


# --------------------------------------------------------------------------- SMTP

DROP = "<drop the connection>"
"""A scripted reply that closes the connection instead of answering."""


@dataclass
class ReceivedMessage:
    """One DATA transaction as the server saw it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # exactly as received (after dot-unstuffing), CRLF line ends
    reply: str  # what the server answered
    auth_login: str | None = None  # the AUTH user, when the client authenticated

    @property
    def message(self) -> EmailMessage:
        parsed: EmailMessage = BytesParser(policy=email.policy.default).parsebytes(self.data)
        return parsed


class _Handler:
    def __init__(self, server: SMTPServer) -> None:
        self.server = server

    @staticmethod
    def _next(replies: deque[str]) -> str | None:
        try:
            return replies.popleft()
        except IndexError:
            return None

    @staticmethod
    async def _drop(smtp: SMTP) -> NoReturn:
        assert smtp.transport is not None
        smtp.transport.close()
        # connection_lost() cancels this session's coroutine, ending this wait.
        await asyncio.get_running_loop().create_future()
        raise AssertionError("unreachable")

    async def handle_MAIL(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
        mail_options: list[str],
    ) -> str:
        if self.server.require_auth and not session.authenticated:
            return "530 5.7.0 Authentication required"
        reply = self._next(self.server.mail_responses)
        if reply == DROP:
            await self._drop(smtp)
        if reply is None or reply.startswith("2"):
            envelope.mail_from = address
            envelope.mail_options.extend(mail_options)
        return reply or "250 OK"

    async def handle_RCPT(
        self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self._next(self.server.rcpt_responses)
        if reply == DROP:
            await self._drop(smtp)
        if reply is None or reply.startswith("2"):
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.delay:
            # other sessions go on meanwhile (one event loop): senders overlap as on a real server
            await asyncio.sleep(self.server.delay)
        reply = self._next(self.server.data_responses) or "250 OK"
        login = session.auth_data.decode() if isinstance(session.auth_data, bytes) else None
        self.server._record(
            ReceivedMessage(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
                reply=reply,
                auth_login=login,
            )
        )
        if reply == DROP:
            await self._drop(smtp)
        return reply


class SMTPServer:
    """aiosmtpd on 127.0.0.1 that records what it receives and replies as scripted.

    ``messages``: accepted (2xx) DATA transactions, in order; ``attempts``: all of
    them, refused and dropped ones too (``reply`` says which).  Put replies in
    ``mail_responses``, ``rcpt_responses`` or ``data_responses`` (e.g. "451 4.3.0 try
    later", or ``DROP`` to close the connection without replying); each is used once,
    then "250 OK" again.
    AUTH PLAIN/LOGIN is offered (no TLS needed) and accepts ``user``/``password``
    (set ``password`` on the instance to change it); authenticating is optional
    unless ``require_auth`` is set (then MAIL gets "530 5.7.0 Authentication
    required" before a successful AUTH). ``auth_attempts`` counts AUTH commands.
    ``delay`` (seconds) makes the server wait before answering each DATA.
    """

    host = HOST
    user = "mailbot"
    password = "smtp-test-password"

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: list[ReceivedMessage] = []
        self.attempts: list[ReceivedMessage] = []
        self.mail_responses: deque[str] = deque()
        self.rcpt_responses: deque[str] = deque()
        self.data_responses: deque[str] = deque()
        self.require_auth = False
        self.auth_attempts = 0
        self.delay = 0.0
        self._arrived = threading.Condition()
        self._controller = Controller(
            _Handler(self), hostname=HOST, port=self.port,
            authenticator=self._authenticate, auth_require_tls=False,
            ready_timeout=READY_TIMEOUT,
        )

    def _authenticate(
        self, smtp: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.auth_attempts += 1
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == self.user.encode()
            and auth_data.password == self.password.encode()
        )
        if not ok:
            return AuthResult(success=False, handled=False)  # handled=True would send no reply
        return AuthResult(success=True, auth_data=auth_data.login)

    def _record(self, record: ReceivedMessage) -> None:
        with self._arrived:
            self.attempts.append(record)
            if record.reply.startswith("2"):
                self.messages.append(record)
            self._arrived.notify_all()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until n messages were accepted; all accepted messages so far."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= n, timeout):
                raise AssertionError(
                    f"{len(self.messages)} message(s) arrived within {timeout}s, expected {n}"
                )
            return list(self.messages)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop(no_assert=True)


@pytest.fixture
def smtp_server() -> Iterator[SMTPServer]:
    server = SMTPServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- databases

DATABASES = ("sqlite", "postgresql")
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _selected_databases() -> list[str]:
    wanted = os.environ.get("MAILBOT_TEST_DATABASES", ",".join(DATABASES))
    names = [name.strip() for name in wanted.split(",") if name.strip()]
    unknown = sorted(set(names) - set(DATABASES))
    if unknown:
        raise pytest.UsageError(
            f"MAILBOT_TEST_DATABASES names {unknown}; choose from {list(DATABASES)}"
        )
    return names


def _postgres_database(admin_url: str) -> Iterator[str]:
    name = f"mailbot_test_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        problem = str(exc).strip()
    else:
        problem = ""
    if problem:
        unavailable(f"PostgreSQL at {admin_url} is not reachable: {problem}")
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
            yield url.render_as_string(hide_password=False)
        finally:
            drop = sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
            if admin.info.server_version >= 130000:
                admin.execute(drop + sql.SQL(" WITH (FORCE)"))
            else:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )
                admin.execute(drop)


@pytest.fixture(params=_selected_databases())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database as a SQLAlchemy URL; dispose your engines before the test ends."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailbot.db'}"
    else:
        yield from _postgres_database(
            os.environ.get("MAILBOT_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
        )
