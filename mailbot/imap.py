"""The IMAP source. The only module that imports imapclient.

Fetches by UID in batches, checks RFC822.SIZE before fetching a body, and
marks a message done with MOVE (or `\\Seen` + `$Mailbot` where the server
has no MOVE). It never deletes mail. Every imapclient or socket error
becomes a `SourceError` naming host:port and user, never the password.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from datetime import date
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailbot import oauth
from mailbot.config import MailboxConfig
from mailbot.source import Fetched, Outcome, SourceError

DONE_FLAG = b"$Mailbot"
QUARANTINE_FLAG = b"$MailbotQuarantine"


class ImapSession:
    def __init__(self, config: MailboxConfig, client_factory: Any = IMAPClient) -> None:
        self.config = config
        self.server = f"{config.host}:{config.port}"
        self.name = f"imap://{config.user}@{config.host}:{config.port}/{config.folder}"
        self.client: Any = None
        try:
            self.client = self._connect(client_factory)
            info = self.client.select_folder(config.folder)
        except SourceError:
            self.close()
            raise
        except (IMAPClientError, OSError) as e:
            self.close()
            raise SourceError(f"IMAP server {self.server} (user {config.user}), folder "
                              f"{config.folder}: {_why(e)}") from None
        self.uidvalidity: int | None = int(info[b"UIDVALIDITY"])
        caps = self.client.capabilities()
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

    def batches(self, after_uid: int, batch_size: int, since: date | None = None) -> Iterator[list[Fetched]]:
        try:
            if since is not None:  # backfill: by arrival date, whatever the cursor says
                uids = sorted(self.client.search(["SINCE", since]))
            else:
                # `n:*` always matches the highest UID, even below n: filter it out.
                uids = sorted(u for u in self.client.search(["UID", f"{after_uid + 1}:*", "UNKEYWORD", "$Mailbot"])
                              if u > after_uid)
        except (IMAPClientError, OSError) as e:
            raise self._wrap("search failed", e) from None
        cap = self.config.max_message_bytes
        for i in range(0, len(uids), batch_size):
            chunk = uids[i:i + batch_size]
            try:
                sizes = {u: int(d.get(b"RFC822.SIZE", 0)) for u, d in self.client.fetch(chunk, ["RFC822.SIZE"]).items()}
                small = [u for u in chunk if sizes.get(u, 0) <= cap and u in sizes]
                large = [u for u in chunk if sizes.get(u, 0) > cap]
                bodies = self.client.fetch(small, ["BODY.PEEK[]"]) if small else {}
                heads = self.client.fetch(large, ["BODY.PEEK[HEADER]"]) if large else {}
            except (IMAPClientError, OSError) as e:
                raise self._wrap(f"fetch of UIDs {chunk[0]}..{chunk[-1]} failed", e) from None
            out = []
            for u in chunk:
                if u in bodies and b"BODY[]" in bodies[u]:
                    out.append(Fetched(u, None, bytes(bodies[u][b"BODY[]"]), sizes[u]))
                elif u in heads:
                    raw = bytes(heads[u].get(b"BODY[HEADER]", b""))
                    out.append(Fetched(u, None, raw, sizes[u], truncated=True))
            yield out

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
