"""Where outgoing mail goes: an SMTP server, or a local Maildir (demo, tests).

Only this module speaks SMTP. Its errors are of three kinds, each one line
naming the server (host:port) and the user, never a password:

- `TransportFault`: the server cannot be used at all (cannot connect, TLS
  does not match, login refused, login required). No mail is at fault: the
  outbox holds its queue, counts nothing against any mail, and tries again
  later. The message names the setting most likely wrong.
- `TemporaryFailure`: this mail could not be sent now (4xx, the connection
  lost during the transaction): retried later with backoff.
- `PermanentFailure`: the server refused this mail (5xx): retrying cannot help.
"""

from __future__ import annotations

import contextlib
import mailbox
import smtplib
import socket
import ssl
from pathlib import Path
from typing import Protocol

from mailbot.config import ConfigError, OutgoingConfig
from mailbot.outgoing.sanitize import printable
from mailbot.source import oauth


class DeliveryError(Exception):
    pass


class TemporaryFailure(DeliveryError):
    pass


class PermanentFailure(DeliveryError):
    pass


class TransportFault(DeliveryError):
    """The server cannot take any mail now; the message says why and which setting to look at."""


class Transport(Protocol):
    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None: ...
    def close(self) -> None: ...


class MaildirTransport:
    def __init__(self, path: Path) -> None:
        self.box = mailbox.Maildir(str(path), create=True)
        self.path = path

    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        try:
            self.box.add(raw)
        except OSError as e:
            raise TransportFault(f"outgoing maildir {self.path}: cannot write: {e.strerror or e}"
                                 " (check outgoing.maildir_path and its permissions)") from None

    def close(self) -> None:
        pass


_SECRET_HINT = "check outgoing.user and the password (outgoing.password_file or MAILBOT_OUTGOING_PASSWORD)"


class SmtpTransport:
    """One connection reused across a flush; reconnects when the server drops it."""

    def __init__(self, config: OutgoingConfig) -> None:
        self.config = config
        self.server = f"{config.host}:{config.port}"
        self.who = f"SMTP server {self.server} ({f'user {config.user}' if config.user else 'no login'})"
        self.conn: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        return self.config.tls_context()

    def _connect(self) -> smtplib.SMTP:
        """A connection ready for MAIL FROM, or `TransportFault` saying what to change."""
        c = self.config
        conn: smtplib.SMTP | None = None
        stage = "connect"
        try:
            if c.security == "tls":
                conn = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self._context())
            else:
                conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
                if c.security == "starttls":
                    stage = "starttls"
                    conn.starttls(context=self._context())
            stage = "login"
            self._login(conn)
            return conn
        except TransportFault:
            _quiet_close(conn)
            raise
        except (OSError, smtplib.SMTPException) as e:
            _quiet_close(conn)
            raise TransportFault(f"{self.who}: {_connect_problem(e, stage, c.security, c.port, c.timeout)}") from None

    def probe(self) -> None:
        """For `mailbot check`: connect, log in, say NOOP, leave; `TransportFault` when that fails."""
        conn = self._connect()
        try:
            conn.noop()
            conn.quit()
        except (OSError, smtplib.SMTPException) as e:
            _quiet_close(conn)
            raise TransportFault(f"{self.who}: {_why(e, self.config.timeout)}") from None

    def _login(self, conn: smtplib.SMTP) -> None:
        c = self.config
        if not c.user:
            return
        try:
            if c.auth == "oauth2":
                try:
                    bearer = oauth.xoauth2(c.user, oauth.token(c.token_command, "outgoing.token_command"))
                except oauth.TokenError as e:
                    raise TransportFault(f"{self.who}: {e}") from None
                conn.ehlo_or_helo_if_needed()
                conn.auth("XOAUTH2", lambda challenge=None: bearer, initial_response_ok=True)
                return
            try:
                password = c.secret()
            except ConfigError as e:
                raise TransportFault(f"{self.who}: {e}") from None
            if not password:
                raise TransportFault(f"{self.who}: no password: set outgoing.password_file or "
                                     "MAILBOT_OUTGOING_PASSWORD (or remove outgoing.user if the server needs no login)")
            conn.login(c.user, password)
        except smtplib.SMTPAuthenticationError as e:
            if c.auth == "oauth2":
                raise TransportFault(f"{self.who}: OAuth2 token refused ({_reply(e.smtp_code, e.smtp_error)}): "
                                     "expired? check outgoing.token_command") from None
            raise TransportFault(f"{self.who}: login refused ({_reply(e.smtp_code, e.smtp_error)}): "
                                 f"{_SECRET_HINT}") from None
        except smtplib.SMTPNotSupportedError:
            raise TransportFault(f"{self.who}: the server offers no login (AUTH) here"
                                 + (": many offer it only after STARTTLS; check outgoing.security"
                                    if c.security == "none" else "")
                                 + ", or remove outgoing.user if it takes mail without login") from None
        except smtplib.SMTPException as e:
            if "authentication method" in str(e):  # smtplib: "No suitable authentication method found."
                raise TransportFault(f"{self.who}: the server offers no login method mailbot knows "
                                     "(PLAIN, LOGIN, CRAM-MD5)") from None
            raise

    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        if self.conn is None:
            self.conn = self._connect()
        try:
            refused = self.conn.sendmail(envelope_from, recipients, raw)
        except smtplib.SMTPSenderRefused as e:
            if e.smtp_code == 530:  # the same for every mail: the server wants a login we did not give
                self.close()
                raise TransportFault(f"{self.who}: the server requires a login ({_reply(e.smtp_code, e.smtp_error)}):"
                                     " set outgoing.user and its password") from None
            self._classify(e.smtp_code, e.smtp_error, "MAIL")
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            self._classify(code, text, "RCPT")
        except smtplib.SMTPResponseException as e:
            self._classify(e.smtp_code, e.smtp_error, "DATA")
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            self.close()
            raise TemporaryFailure(f"{self.who}: connection lost: {_why(e, self.config.timeout)}") from None
        except smtplib.SMTPException as e:
            self.close()
            raise TemporaryFailure(f"{self.who}: {_why(e, self.config.timeout)}") from None
        if refused:
            code, text = next(iter(refused.values()))
            self._classify(code, text, "RCPT")

    def _classify(self, code: int, text: bytes | str, stage: str) -> None:
        msg = f"{self.who} answered {_reply(code, text)} at {stage}"
        if 500 <= code < 600:
            self._reset()
            raise PermanentFailure(msg)
        self.close()
        raise TemporaryFailure(msg)

    def _reset(self) -> None:
        try:
            if self.conn:
                self.conn.rset()
        except (OSError, smtplib.SMTPException):
            self.close()

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.quit()
            except (OSError, smtplib.SMTPException):
                self.conn.close()
            self.conn = None


def _quiet_close(conn: smtplib.SMTP | None) -> None:
    if conn is not None:
        with contextlib.suppress(OSError):
            conn.close()


def _reply(code: int, text: bytes | str) -> str:
    """A server's answer as one printable line: it is remote text, and it reaches logs and terminals."""
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"{code} {' '.join(printable(detail, True).split())}"[:220]


def _why(e: BaseException, timeout: float) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return f"timed out after {timeout:g}s"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, socket.gaierror):
        return f"host name not found ({e.strerror})"
    return f"{e.__class__.__name__}: {e}"[:300]


def _connect_problem(e: BaseException, stage: str, security: str, port: int, timeout: float) -> str:
    """What went wrong while connecting, and the setting most likely wrong (as the IMAP side words it)."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return (f"TLS certificate not trusted ({e.verify_message}): set outgoing.ca_file to the CA that signed it"
                " (or tls_verify = false for a test server)")
    if isinstance(e, ssl.SSLError) or (security == "tls" and isinstance(e, ConnectionResetError)):
        if security == "tls":
            return (f"TLS handshake failed ({getattr(e, 'reason', None) or e}): the server does not speak TLS on "
                    f"port {port}; security = \"tls\" is for implicit TLS (port 465): for a submission port "
                    "such as 587 set outgoing.security = \"starttls\" (or check outgoing.port)")
        return f"TLS handshake failed after STARTTLS ({getattr(e, 'reason', None) or e}): check outgoing.ca_file"
    if isinstance(e, smtplib.SMTPNotSupportedError) and stage == "starttls":
        return ("the server does not offer STARTTLS (outgoing.security = \"starttls\"): if this is an implicit-TLS "
                "port (465) set security = \"tls\"; \"none\" only for a relay on a trusted network")
    if isinstance(e, smtplib.SMTPServerDisconnected) and stage == "connect" and security != "tls":
        # smtplib turns a silent server (no greeting) into "Connection unexpectedly closed: timed out"
        return (f"the server accepted the connection but sent no greeting ({e}): if port {port} expects TLS "
                "from the first byte (465), set outgoing.security = \"tls\"; otherwise check outgoing.port")
    if isinstance(e, smtplib.SMTPConnectError | smtplib.SMTPHeloError):
        return f"refused the session ({_reply(e.smtp_code, e.smtp_error)})"
    if isinstance(e, OSError):
        return f"cannot connect: {_why(e, timeout)} (check outgoing.host and outgoing.port)"
    return f"cannot connect: {_why(e, timeout)}"


def make_transport(config: OutgoingConfig, base: Path) -> Transport:
    if config.transport == "maildir":
        p = Path(config.maildir_path).expanduser()
        return MaildirTransport(p if p.is_absolute() else base / p)
    return SmtpTransport(config)
