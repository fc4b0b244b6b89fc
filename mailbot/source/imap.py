"""The IMAP source. The only module that imports imapclient.

Lists messages by UID with their RFC822.SIZE before any body is fetched
(intake decides how many bytes to ask for at once), fetches the UIDs it is
given, and marks a message done with MOVE (or `\\Seen` + `$Mailbot` where
the server has no MOVE). It never deletes mail. A socket error or a broken
connection becomes a `SourceError` naming host:port and user, never the
password; a NO or BAD for a FETCH becomes a `MessageError` (the server
would not hand those messages over; the connection is still good).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Sequence
from datetime import date
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from mailbot.config import MailboxConfig
from mailbot.source import oauth
from mailbot.source.base import HEADER_BYTES, Fetched, Listed, MessageError, Outcome, SourceError

DONE_FLAG = b"$Mailbot"
QUARANTINE_FLAG = b"$MailbotQuarantine"
SIZE_CHUNK = 1000
"""UIDs per RFC822.SIZE request."""


class ImapSession:
    def __init__(self, config: MailboxConfig, client_factory: Any = IMAPClient) -> None:
        self.config = config
        self.server = f"{config.host}:{config.port}"
        self.name = f"imap://{config.user}@{config.host}:{config.port}/{config.folder}"
        self.client: Any = None
        self._factory = client_factory
        where = f"IMAP server {self.server} (user {config.user}), folder {config.folder}"
        # everything that talks to the server is inside: a refusal anywhere closes the connection
        try:
            self.client = self._connect(client_factory)
            info = self.client.select_folder(config.folder)
            if b"UIDVALIDITY" not in info:
                raise SourceError(f"{where}: the server sent no UIDVALIDITY, without which mailbot cannot "
                                  "tell mail it took from new mail (RFC 3501 requires it)")
            caps = self.client.capabilities()
        except SourceError:
            self.close()
            raise
        except (IMAPClientError, OSError) as e:
            self.close()
            raise SourceError(f"{where}: {_why(e)}") from None
        self.uidvalidity: int | None = int(info[b"UIDVALIDITY"])
        self.exists = int(info.get(b"EXISTS", 0))
        """Messages in the folder when it was selected (the IDLE watcher counts from here)."""
        self.can_move = b"MOVE" in caps
        self._folders_ready = False

    def _context(self) -> ssl.SSLContext:
        return self.config.tls_context()

    def _connect(self, factory: Any) -> Any:
        c = self.config
        who = f"IMAP server {self.server} (user {c.user})"
        try:
            client = factory(c.host, port=c.port, ssl=c.security == "tls",
                             ssl_context=self._context() if c.security == "tls" else None, timeout=c.timeout)
        except ssl.SSLError as e:
            raise SourceError(f"{who}: TLS handshake failed: {e.reason or e}"
                              " (set mailbox.ca_file, or tls_verify = false for a test server)") from None
        except (OSError, IMAPClientError) as e:
            raise SourceError(f"{who}: cannot connect: {_why(e)}") from None
        if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
            # imapclient turns imaplib's debug output on to feed that logger, and imaplib then
            # formats every response it reads (the repr of each message's bytes) into a string,
            # logged or not: a 25 MB message cost 60 MB more memory, and the time to format it.
            client._imap.debug = 0
        try:
            if c.security == "starttls":
                client.starttls(self._context())
            if c.auth == "oauth2":
                try:
                    client.oauth2_login(c.user, oauth.token(c.token_command, "mailbox.token_command"))
                except oauth.TokenError as e:
                    raise SourceError(f"{who}: {e}") from None
            else:
                password = c.secret()
                if password is None:
                    raise SourceError(f"{who}: no password: set mailbox.password_file or MAILBOT_MAILBOX_PASSWORD")
                client.login(c.user, password)
        except LoginError:
            _quiet_logout(client)
            what = "OAuth2 token refused (expired? check mailbox.token_command)" if c.auth == "oauth2" \
                else "login refused (check the user and password)"
            raise SourceError(f"{who}: {what}") from None
        except ssl.SSLError as e:
            _quiet_logout(client)
            raise SourceError(f"{who}: TLS handshake failed: {e.reason or e}") from None
        except (OSError, IMAPClientError) as e:
            _quiet_logout(client)
            raise SourceError(f"{who}: {_why(e)}") from None
        except SourceError:
            _quiet_logout(client)
            raise
        return client

    def _wrap(self, what: str, e: BaseException) -> SourceError:
        return SourceError(f"IMAP server {self.server} (user {self.config.user}): {what}: {_why(e)}")

    def listing(self, after_uid: int, since: date | None = None, also: Sequence[int] = ()) -> list[Listed]:
        try:
            if since is not None:  # backfill: by arrival date, whatever the cursor says
                uids = set(self.client.search(["SINCE", since]))
            else:
                # `n:*` always matches the highest UID, even below n: filter it out.
                uids = {u for u in self.client.search(["UID", f"{after_uid + 1}:*", "UNKEYWORD", "$Mailbot"])
                        if u > after_uid}
        except (IMAPClientError, OSError) as e:
            raise self._wrap("search failed", e) from None
        wanted = sorted(uids | set(also))
        cap = self.config.max_message_bytes
        out: list[Listed] = []
        # in chunks: the UID list is on the command line, whose length servers limit
        for i in range(0, len(wanted), SIZE_CHUNK):
            chunk = wanted[i:i + SIZE_CHUNK]
            try:
                sizes = self.client.fetch(chunk, ["RFC822.SIZE"])
            except (IMAPClientError, OSError) as e:
                raise self._wrap(f"size of UIDs {chunk[0]}..{chunk[-1]} failed", e) from None
            for u in chunk:
                if u in sizes and b"RFC822.SIZE" in sizes[u]:  # a UID in `also` may be gone
                    size = int(sizes[u][b"RFC822.SIZE"])
                    out.append(Listed(u, None, size, truncated=size > cap))
        return out

    def fetch(self, items: Sequence[Listed], headers_only: bool = False) -> list[Fetched]:
        whole = [i.uid for i in items if i.uid is not None and not (i.truncated or headers_only)]
        heads = [i.uid for i in items if i.uid is not None and (i.truncated or headers_only)]
        what = f"fetch of UIDs {items[0].uid}..{items[-1].uid}" if items else "fetch"
        try:
            bodies = self.client.fetch(whole, ["BODY.PEEK[]"]) if whole else {}
            headers = self.client.fetch(heads, [f"BODY.PEEK[HEADER]<0.{HEADER_BYTES}>"]) if heads else {}
        except IMAPClientAbortError as e:
            raise self._wrap(f"{what} failed", e) from None
        except IMAPClientError as e:  # a NO or BAD for these messages: the connection is fine
            raise MessageError(f"{what}: the server refused: {_why(e)}") from None
        except OSError as e:
            raise self._wrap(f"{what} failed", e) from None
        out: list[Fetched] = []
        for i in items:
            if i.uid in bodies and b"BODY[]" in bodies[i.uid]:
                out.append(Fetched(i.uid, None, bytes(bodies[i.uid].pop(b"BODY[]")), i.size))
            elif i.uid in headers:
                out.append(Fetched(i.uid, None, bytes(headers[i.uid].get(b"BODY[HEADER]<0>", b"")), i.size,
                                   truncated=True))
        return out

    def reset(self) -> None:
        self.close()
        try:
            self.client = self._connect(self._factory)
            info = self.client.select_folder(self.config.folder)
        except SourceError:
            self.close()
            raise
        except (IMAPClientError, OSError) as e:
            self.close()
            raise self._wrap(f"reconnecting to folder {self.config.folder}", e) from None
        if int(info[b"UIDVALIDITY"]) != self.uidvalidity:
            self.close()
            raise SourceError(f"IMAP server {self.server} (user {self.config.user}), folder {self.config.folder}: "
                              "UIDVALIDITY changed during the poll; the next poll re-reads the folder")

    def refresh(self) -> None:
        """Ready a kept connection for another poll: SELECT the folder again, which gives a fresh
        view of it and its UIDVALIDITY, as a new session would."""
        try:
            info = self.client.select_folder(self.config.folder)
        except (IMAPClientError, OSError, AttributeError) as e:  # AttributeError: closed (client None)
            raise self._wrap(f"selecting {self.config.folder} again", e) from None
        self.uidvalidity = int(info[b"UIDVALIDITY"])
        self.exists = int(info.get(b"EXISTS", 0))

    def _ensure_folders(self) -> None:
        if self._folders_ready or not self.can_move:
            return
        for folder in (self.config.processed_folder, self.config.quarantine_folder):
            if not self.client.folder_exists(folder):
                self.client.create_folder(folder)
        self._folders_ready = True

    def mark_done(self, uid: int | None, location: str | None, outcome: Outcome) -> None:
        self.mark_done_many([(uid, location)], outcome)

    def mark_done_many(self, items: list[tuple[int | None, str | None]], outcome: Outcome) -> None:
        """One UID MOVE (or STORE) for many messages."""
        uids = [uid for uid, _ in items if uid is not None]
        if not uids:
            return
        try:
            self._ensure_folders()
            if self.can_move:
                folder = self.config.processed_folder if outcome == "processed" else self.config.quarantine_folder
                self.client.move(uids, folder)
            else:
                flags = [b"\\Seen", DONE_FLAG] + ([QUARANTINE_FLAG] if outcome == "quarantined" else [])
                self.client.add_flags(uids, flags)
        except (IMAPClientError, OSError) as e:
            raise self._wrap(f"marking {len(uids)} messages {outcome} failed", e) from None

    def close(self) -> None:
        if self.client is not None:
            _quiet_logout(self.client)
            self.client = None


def _quiet_logout(client: Any) -> None:
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()


def _why(e: BaseException) -> str:
    if isinstance(e, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    return f"{e.__class__.__name__}: {e}"[:300]


def probe(config: MailboxConfig, folders: tuple[str, ...] = ()) -> dict[str, Any]:
    """For `mailbot check`: log in, look at the folder and the capabilities, and try to select
    (read-only) each of `folders`: "folders" maps each to None (selectable) or what is wrong."""
    s = ImapSession(config)
    try:
        caps = s.client.capabilities()
        info: dict[str, Any] = {"uidvalidity": s.uidvalidity, "move": s.can_move, "idle": b"IDLE" in caps,
                                "messages": len(s.client.search(["ALL"]))}
        info["folders"] = {name: _folder_problem(s.client, name) for name in folders}
        return info
    except (IMAPClientError, OSError) as e:
        raise s._wrap("probe failed", e) from None
    finally:
        s.close()


def _folder_problem(client: Any, name: str) -> str | None:
    try:
        client.select_folder(name, readonly=True)
        return None
    except IMAPClientError as e:
        why = _why(e)
    try:
        exists = bool(client.folder_exists(name))
    except IMAPClientError:
        exists = True
    return f"cannot be selected ({why})" if exists else "does not exist"
