"""Where outgoing mail goes: an SMTP server, or a local Maildir (demo, tests).

Only this module speaks SMTP. Its errors become `TemporaryFailure` (retry
later: 4xx, a lost or refused connection, a time-out) or `PermanentFailure`
(5xx: retrying cannot help), each naming the server.
"""

from __future__ import annotations

import mailbox
import smtplib
import socket
import ssl
from pathlib import Path
from typing import Protocol

from mailbot import oauth
from mailbot.config import OutgoingConfig


class DeliveryError(Exception):
    pass


class TemporaryFailure(DeliveryError):
    pass


class PermanentFailure(DeliveryError):
    pass


class Transport(Protocol):
    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None: ...
    def close(self) -> None: ...


class MaildirTransport:
    def __init__(self, path: Path) -> None:
        self.box = mailbox.Maildir(str(path), create=True)
        self.path = path

    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        self.box.add(raw)

    def close(self) -> None:
        pass


class SmtpTransport:
    """One connection reused across a flush; reconnects when the server drops it."""

    def __init__(self, config: OutgoingConfig) -> None:
        self.config = config
        self.server = f"{config.host}:{config.port}"
        self.conn: smtplib.SMTP | None = None

    def _context(self) -> ssl.SSLContext:
        return self.config.tls_context()

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        try:
            conn: smtplib.SMTP
            if c.security == "tls":
                conn = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self._context())
            else:
                conn = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
                if c.security == "starttls":
                    conn.starttls(context=self._context())
            try:
                if c.user and c.auth == "oauth2":
                    bearer = oauth.xoauth2(c.user, oauth.token(c.token_command, "outgoing.token_command"))
                    conn.ehlo_or_helo_if_needed()
                    conn.auth("XOAUTH2", lambda challenge=None: bearer, initial_response_ok=True)
                elif c.user and (password := c.secret()):
                    conn.login(c.user, password)
            except smtplib.SMTPAuthenticationError as e:
                conn.close()
                what = "refused the OAuth2 token" if c.auth == "oauth2" else "refused login"
                raise PermanentFailure(f"SMTP server {self.server} {what} for user {c.user}: {e.smtp_code}") from None
            except oauth.TokenError as e:
                conn.close()
                raise TemporaryFailure(f"SMTP server {self.server}: {e}") from None
            return conn
        except (OSError, smtplib.SMTPException) as e:
            if isinstance(e, PermanentFailure):
                raise
            raise TemporaryFailure(f"SMTP server {self.server}: cannot connect: {_why(e)}") from None

    def send(self, envelope_from: str, recipients: list[str], raw: bytes) -> None:
        if self.conn is None:
            self.conn = self._connect()
        try:
            refused = self.conn.sendmail(envelope_from, recipients, raw)
        except smtplib.SMTPRecipientsRefused as e:
            code, text = next(iter(e.recipients.values()))
            self._classify(code, text, "RCPT")
        except smtplib.SMTPResponseException as e:
            self._classify(e.smtp_code, e.smtp_error, "DATA")
        except (smtplib.SMTPServerDisconnected, OSError) as e:
            self.close()
            raise TemporaryFailure(f"SMTP server {self.server}: connection lost: {_why(e)}") from None
        except smtplib.SMTPException as e:
            self.close()
            raise TemporaryFailure(f"SMTP server {self.server}: {_why(e)}") from None
        if refused:
            code, text = next(iter(refused.values()))
            self._classify(code, text, "RCPT")

    def _classify(self, code: int, text: bytes | str, stage: str) -> None:
        detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
        msg = f"SMTP server {self.server} answered {code} {detail[:200]} at {stage}"
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


def _why(e: BaseException) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    return f"{e.__class__.__name__}: {e}"[:300]


def make_transport(config: OutgoingConfig, base: Path) -> Transport:
    if config.transport == "maildir":
        p = Path(config.maildir_path).expanduser()
        return MaildirTransport(p if p.is_absolute() else base / p)
    return SmtpTransport(config)
