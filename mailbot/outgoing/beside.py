"""Sending beside a long poll: a process of its own that flushes the outbox while the poll
takes in the next batches (issue #16).

A poll of a backlog processes batch after batch in one process, whose Python runs one thread
at a time: its replies waited for the end of the poll, and then went one SMTP conversation and
one commit after another (a third of `poll --once`'s time in `bench/ingest.py`). A thread
beside the poll gained nothing, since the flush's own work competes for the same interpreter.
This process runs the same `outbox.flush` on the other core, asked after each batch is
committed and marked done on the server, so the replies of batch n leave while batch n+1 is
read. The outbox already allows several senders in several processes (a claimed row is locked
on PostgreSQL, a file lock orders SQLite's senders; see `outbox` and `store.locks`), and what
a death leaves is what it left before: at most the one mail between its 250 and its commit
goes again, with the same Message-ID.

The process is started as `python -m mailbot.outgoing.beside FD PID` (`mailbot.processes`: a
fresh interpreter, with no MAILBOT_* variable but the tests' crash points, `MAILBOT_FAULT`), and
is handed its settings through the socket: the database URL and the outgoing section may hold
passwords, which stay out of its command line and environment. It stops between two mails when told to, on
SIGTERM, or when the process that started it is gone; Ctrl-C is the poll's to decide.

Protocol, over a `multiprocessing.connection.Connection`: the poll sends `Settings`, then "go"
after each batch and "end" (flush once more, then report) or "stop" (report now); the process
answers ("done", FlushResult), ("fault", FlushResult) when the server cannot be used (it then
ends: the flush after the poll tries again and records the outage), or ("error", text).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from mailbot import processes
from mailbot.config import OutgoingConfig
from mailbot.outgoing.outbox import FlushResult, flush
from mailbot.outgoing.transports import make_transport

log = logging.getLogger(__name__)


NICENESS = 5
"""Added to the sending process's niceness: the CPU goes to the poll first when both want it."""


@dataclass(frozen=True)
class Settings:
    database_url: str
    outgoing: OutgoingConfig
    base_dir: str
    log_format: str
    log_level: int


class SendingProcess:
    """The poll's side: starts the process at the first `wanted()`, then asks it to flush after
    each batch; `finish()` has it send what is left and says what it sent. Any failure of the
    process (it cannot start, it dies, it raises) is logged and leaves the mail queued for the
    flush after the poll, which sends it as before: sending beside is a speed-up, never a
    condition."""

    def __init__(self, settings: Settings | None) -> None:
        """`settings` None: nothing is sent beside (a database only the poll's process can open)."""
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.report: tuple[str, object] | None = None
        self.failed = settings is None
        self.batches = 0

    @property
    def started(self) -> bool:
        return self.conn is not None or self.failed

    def start(self) -> None:
        """Start the process now (it boots while the first batch is read); `wanted` starts it too."""
        if self.started:
            return
        try:
            self._start()
        except OSError as e:
            self._gone(f"it could not start: {e}")

    def batch_done(self) -> None:
        """A batch was committed and marked done on the server. Its replies go beside the poll from
        the second batch on, or from the first when a backlog started the process (`start`): a poll
        of one batch is answered after it, as the process (0.5 s to start) would cost more than it saves."""
        self.batches += 1
        if self.started or self.batches >= 2:
            self.wanted()

    def wanted(self) -> None:
        """A batch was committed and marked done: have its replies sent."""
        self.start()
        if self.failed or self.report is not None:
            return
        try:
            assert self.conn is not None
            self.conn.send("go")
            while self.conn.poll():  # it ended early (a fault, an error): take its report now
                self._take(self.conn.recv())
        except (OSError, EOFError) as e:
            self._gone(f"{e.__class__.__name__}: {e}")

    def finish(self, stop: bool = False) -> FlushResult:
        """Have it send what is left (or, with `stop`, stop between two mails) and end; what it sent."""
        conn = self.conn
        if conn is not None and self.report is None and not self.failed:
            try:
                conn.send("stop" if stop else "end")
                while self.report is None and not self.failed:
                    if conn.poll(1.0):
                        self._take(conn.recv())
                    elif self.proc is not None and self.proc.poll() is not None:
                        self._gone("it ended without a report")
            except (OSError, EOFError) as e:
                self._gone(f"{e.__class__.__name__}: {e}")
        self._close()
        if self.report is None:
            return FlushResult()
        kind, value = self.report
        if kind == "error":
            log.error("the sending process failed: %s; what it left is sent after the poll", value)
            return FlushResult()
        assert isinstance(value, FlushResult)
        return value

    def _start(self) -> None:
        # the settings go through the socket: the database URL and [outgoing] may hold passwords
        self.proc, self.conn = processes.start("mailbot.outgoing.beside", str(os.getpid()),
                                               env=processes.environment(keep={"MAILBOT_FAULT"}))
        assert self.settings is not None
        self.conn.send(self.settings)

    def _take(self, answer: object) -> None:
        if isinstance(answer, tuple) and len(answer) == 2 and answer[0] in ("done", "fault", "error"):
            self.report = (answer[0], answer[1])
        else:
            self._gone(f"it answered {answer!r:.200}")

    def _gone(self, why: str) -> None:
        code = self.proc.poll() if self.proc is not None else None
        how = why if code is None else processes.ended(code)
        log.warning("the sending process stopped (%s); what it left is sent after the poll", how)
        self.failed = True

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve(conn: Connection, parent: int) -> None:
    """The process's loop: flush at each "go" (several waiting count as one), report at the end."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the poll decides
    # The poll and its extraction workers first: they decide how soon the mail is in, and replies
    # sent a little later cost nothing, where they compete for the cores (issue #16).
    os.nice(NICENESS)
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    settings = conn.recv()
    assert isinstance(settings, Settings)
    _logging(settings)
    from mailbot.store.engine import make_engine

    engine = make_engine(settings.database_url)

    def should_stop() -> bool:
        return stopping or os.getppid() != parent  # between two mails, once the poll is gone

    result = FlushResult()
    try:
        while True:
            try:
                word = conn.recv()
            except EOFError:
                return  # the poll is gone
            while word == "go" and conn.poll():
                word = conn.recv()
            if word == "stop" or should_stop():
                conn.send(("done", result))
                return
            r = flush(engine, make_transport(settings.outgoing, Path(settings.base_dir)), settings.outgoing,
                      should_stop)
            result.add(r)
            if r.fault is not None:
                conn.send(("fault", result))
                return
            if word == "end":
                conn.send(("done", result))
                return
    except Exception as e:  # reported to the poll, which sends what is left itself
        log.exception("the sending process failed")
        with contextlib.suppress(OSError):
            conn.send(("error", f"{e.__class__.__name__}: {e}"))
    finally:
        engine.dispose()


def _logging(settings: Settings) -> None:
    from mailbot.logs import setup

    setup(settings.log_format, logging.getLevelName(settings.log_level))


if __name__ == "__main__":
    # this file runs as __main__: serve from the module proper, whose `Settings` the poll pickled
    from mailbot.outgoing.beside import serve as serve_here

    serve_here(Connection(int(sys.argv[1])), int(sys.argv[2]))
    # The poll waits for this process to end, and the interpreter's teardown (a tenth of a second
    # and more) has nothing left to do: the engine is disposed, the report sent; the logs go now.
    logging.shutdown()
    os._exit(0)
