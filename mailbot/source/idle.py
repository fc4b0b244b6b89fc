"""Push, not poll: wait in IMAP IDLE and poll the moment mail arrives.

A thread keeps one connection in IDLE on the inbox and counts the folder's
messages from what the server tells it (EXISTS, EXPUNGE): when the folder
grew, it wakes the desk's poll at once (on this thread). Nothing else wakes
it: the EXPUNGEs of the desk's own moves and a server's "still here" would
only cause empty polls. After each poll it asks once (NOOP) whether mail came
meanwhile, since a server need not report at the start of an IDLE what came
before it. IDLE is re-issued every `mailbox.idle_seconds` (well inside RFC
2177's 29 minutes); a dropped connection is re-established with backoff.
Where the server has no IDLE, or `mailbox.idle = false`, this thread does
nothing and the interval poll is all there is.

Some servers hold their notice back: Dovecot 2.3 tells an idling client of
new mail 500 ms after it arrived (NOTIFY_DELAY_MSECS, fixed in its source),
while a NOOP sees it at once. With `mailbox.idle_recheck_seconds` set, the
thread ends its IDLE that often and asks with a NOOP (DONE alone is not
enough: Dovecot answered it without the new message one time in three), and
wakes the poll only if the folder grew. It is off by default: against a
remote provider it is three commands per interval on a connection that IDLE
exists to keep quiet (docs/operators.md, "Faster than the server's notice").
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from mailbot import metrics
from mailbot.config import MailboxConfig
from mailbot.source.base import SourceError
from mailbot.source.imap import ImapSession

log = logging.getLogger(__name__)


class FolderSize:
    """The selected folder's message count as one connection was told it (RFC 3501 7.3.1, 7.4.1)."""

    def __init__(self, exists: int) -> None:
        self.exists = exists

    def grew(self, responses: Iterable[Any]) -> bool:
        """Read untagged responses in order: EXPUNGE takes one away, EXISTS gives the new count;
        true if any EXISTS said more than there were just before it."""
        grew = False
        for r in responses:
            if not (isinstance(r, tuple) and len(r) >= 2 and isinstance(r[0], int)):
                continue  # "OK Still here" and the like
            if r[1] == b"EXPUNGE":
                self.exists = max(0, self.exists - 1)
            elif r[1] == b"EXISTS":
                grew = grew or r[0] > self.exists
                self.exists = r[0]
        return grew


class IdleWatcher:
    def __init__(self, config: MailboxConfig, on_new_mail: Callable[[], None], stopping: threading.Event,
                 on_connect: Callable[[], None] = lambda: None) -> None:
        self.config = config
        self.on_new_mail = on_new_mail
        self.on_connect = on_connect
        self.stopping = stopping
        self.thread = threading.Thread(target=self._run, name="imap-idle", daemon=True)
        self.supported: bool | None = None
        self.connected = threading.Event()
        """Set while a connection waits in IDLE (tests wait for it instead of sleeping)."""
        self.wakes: Counter[str] = Counter()
        """Polls woken, by who saw the new mail first: "notice" (the server, in IDLE), "recheck"
        (`idle_recheck_seconds`) or "after_poll" (the look after a poll: it came meanwhile)."""
        self.rechecks = 0
        """IDLEs ended to ask the server (`idle_recheck_seconds`), whatever the answer."""

    def start(self) -> None:
        if self.config.source == "imap" and self.config.idle:
            self.thread.start()

    def _run(self) -> None:
        delay = 1.0
        while not self.stopping.is_set():
            try:
                self._watch()
                delay = 1.0
            except (SourceError, OSError, Exception) as e:  # any failure: reconnect with backoff
                self.connected.clear()
                if self.stopping.is_set():
                    break
                log.warning("IMAP IDLE on %s:%s: %s; reconnecting in %.0fs", self.config.host, self.config.port,
                            e, delay)
                self.stopping.wait(delay)
                delay = min(delay * 2, 300.0)
            if self.supported is False:
                log.info("IMAP server %s:%s has no IDLE: polling every interval only",
                         self.config.host, self.config.port)
                return

    def _watch(self) -> None:
        session = ImapSession(self.config)
        try:
            client = session.client
            self.supported = b"IDLE" in client.capabilities()
            if not self.supported:
                return
            size = FolderSize(session.exists)
            self.on_connect()
            by: str | None = "connect"  # whatever arrived while we were not watching
            while not self.stopping.is_set():
                while by and not self.stopping.is_set():
                    if by != "connect":
                        self.wakes[by] += 1
                        metrics.IDLE_WAKES.labels(by).inc()
                    self.on_new_mail()
                    # Dovecot does not report, when an IDLE starts, mail that came before it: mail
                    # that came during that poll, after its search, would wait for the next arrival
                    # or Dovecot's 30 s check. One NOOP a poll, none while no mail comes.
                    by = "after_poll" if size.grew(client.noop()[1]) else None
                client.idle()
                self.connected.set()
                by = self._wait(client, size)
        finally:
            self.connected.clear()
            session.close()

    def _asks(self) -> bool:
        return bool(self.config.idle_recheck_seconds) and not self.stopping.is_set()

    def _wait(self, client: Any, size: FolderSize) -> str | None:
        """One IDLE, ended by new mail, by `idle_seconds`, or after `idle_recheck_seconds` by a NOOP
        that asks the server itself; who saw the mail first, or None."""
        recheck = self.config.idle_recheck_seconds
        limit = recheck or self.config.idle_seconds
        started = time.monotonic()
        grew = False
        try:
            while not grew and not self.stopping.is_set():
                left = limit - (time.monotonic() - started)
                if left <= 0:
                    break
                wait = min(1.0, left)
                asked_at = time.monotonic()
                said = client.idle_check(timeout=wait)
                grew = size.grew(said)
                if not grew and _ending(said, time.monotonic() - asked_at < wait / 2):
                    break  # the DONE below fails on a closed connection, and the watcher reconnects
        finally:
            _, said = client.idle_done()
        told = size.grew(said)  # in answer to the DONE (which the recheck sent, if on): counted always
        if grew:
            return "notice"
        asked = self._asks()
        if asked:
            self.rechecks += 1
        if told:
            return "recheck" if asked else "notice"
        if asked and size.grew(client.noop()[1]):
            return "recheck"
        return None


def _ending(said: list[Any], early: bool) -> bool:
    """The server said BYE, or the socket woke with nothing to read (imapclient returns nothing
    at EOF rather than raising): either way the connection may be gone."""
    return (early and not said) or any(isinstance(r, tuple) and r[:1] == (b"BYE",) for r in said)
