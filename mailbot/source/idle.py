"""Push, not poll: wait in IMAP IDLE and poll the moment mail arrives.

A thread keeps one connection in IDLE on the inbox. Any untagged response
(EXISTS, RECENT, FETCH) wakes the desk's poll at once. IDLE is re-issued
every `mailbox.idle_seconds` (well inside RFC 2177's 29 minutes); a dropped
connection is re-established with backoff. Where the server has no IDLE,
or `mailbox.idle = false`, this thread does nothing and the interval poll
is all there is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mailbot.config import MailboxConfig
from mailbot.source.base import SourceError
from mailbot.source.imap import ImapSession

log = logging.getLogger(__name__)


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
            self.on_connect()
            self.on_new_mail()  # whatever arrived while we were not watching
            while not self.stopping.is_set():
                client.idle()
                self.connected.set()
                started = time.monotonic()
                woke = False
                try:
                    while not self.stopping.is_set() and time.monotonic() - started < self.config.idle_seconds:
                        if client.idle_check(timeout=1.0):
                            woke = True
                            break
                finally:
                    client.idle_done()
                if woke:
                    self.on_new_mail()
        finally:
            self.connected.clear()
            session.close()
