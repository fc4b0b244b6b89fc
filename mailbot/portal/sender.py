"""Sending the portal's mail at once: a thread that flushes the outbox when kicked.

The portal queues its mail in the outbox like every part of the desk (the row commits with the
request it belongs to); a person waiting for a confirmation link should not wait for the
daemon's next flush, so after each commit the portal kicks this thread, which runs
`outbox.flush`. The outbox's claims make it safe beside the daemon's own flush (each mail goes
once); what cannot be sent now stays queued for the daemon's retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.engine import Engine

from mailbot.config import OutgoingConfig
from mailbot.outgoing.outbox import flush
from mailbot.outgoing.transports import make_transport

log = logging.getLogger(__name__)


class Sender:
    def __init__(self, outgoing: OutgoingConfig, base_dir: Path, engine: Engine,
                 send: Callable[[], object] | None = None) -> None:
        """`base_dir`: where relative paths of `[outgoing]` start (the config file's directory)."""
        self.outgoing, self.base_dir, self.engine = outgoing, base_dir, engine
        self.send = send or self.flush_once
        self.wanted = threading.Event()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, name="portal-sender", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def kick(self) -> None:
        self.wanted.set()

    def flush_once(self) -> object:
        transport = make_transport(self.outgoing, self.base_dir)
        r = flush(self.engine, transport, self.outgoing, should_stop=self.stopping.is_set, limit=200)
        if r.fault:
            log.warning("portal: mail not sent yet (%s); it stays queued for the daemon", r.fault)
        return r

    def loop(self) -> None:
        while not self.stopping.is_set():
            if not self.wanted.wait(timeout=30):
                continue
            if self.stopping.is_set():
                break
            self.wanted.clear()
            try:
                self.send()
            except Exception:  # a database hiccup must not end the sender: the next kick tries again
                log.exception("portal: sending failed")

    def stop(self) -> None:
        self.stopping.set()
        self.wanted.set()
        self.thread.join(timeout=10)
