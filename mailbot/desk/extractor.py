"""Extraction where it can be stopped: a worker process with a deadline and a memory limit.

Contract: `Extractor(seconds, memory_mb).run(raw)` returns what
`extraction.extract(raw)` returns, computed in a worker process, or raises
`ExtractionOverrun(reason)` when that message cost more than it may: the
worker ran past `seconds` (it is killed), ran out of the `memory_mb` of
address space it is given (RLIMIT_AS), or died on it twice. The reason is
one line for the quarantine ("extraction took longer than 5 s ..."). The
next call gets a fresh worker. Inside the worker, extraction stops reading
by itself at `min(limits.TOTAL_SECONDS, seconds / 2)` and reports what it
found by then; the kill is for the single step that does not come back.

A worker that dies while idle, or under a message (killed from outside, the
kernel's OOM killer), is replaced and the message tried once more.
`ExtractorUnavailable` means no worker can be started: a fault of the system
or the configuration, not of the message, which callers count as a failed
attempt.

The worker is `python -m mailbot.desk.extractor` (`mailbot.processes`), a fresh interpreter that
imports only the extraction package (about 0.1 s to start), talking over a
socket pair: not a fork of the daemon (its threads and locks), and not
multiprocessing's spawn or fork server (which import the daemon's main
module into every child). `close()` ends it; so does dropping the
extractor, and the interpreter's exit (a finalizer); a worker whose daemon
is gone exits by itself.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import signal
import subprocess
import sys
import threading
import tomllib
import weakref
from multiprocessing.connection import Connection

from mailbot import processes
from mailbot.errors import CommandFailed, ConfigurationError
from mailbot.extraction import Extraction, IssuerTable, IssuerTableError, default_table, extract
from mailbot.extraction.limits import TOTAL_SECONDS

log = logging.getLogger(__name__)

START_SECONDS = 30.0
"""A worker that has not said it is ready by then is not coming (it takes about 0.1 s)."""
_STOP = b""
"""Sent instead of a mail: the worker exits (a stored mail is never empty)."""


class ExtractionOverrun(Exception):
    """One message's extraction cost more time or memory than it may; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExtractorUnavailable(CommandFailed):
    """No extraction worker could be started or fed; not the message's fault."""


class Extractor:
    """One worker process at a time, started on first use and replaced after every overrun."""

    def __init__(self, seconds: float, memory_mb: int, issuers_file: str | None = None) -> None:
        if issuers_file is not None:
            load_issuers(issuers_file)  # a bad file is the operator's error now, not a dead worker later
        self.issuers_file = issuers_file
        self.seconds = seconds
        self.memory_mb = memory_mb
        self.soft_seconds = min(TOTAL_SECONDS, seconds / 2)
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._warned = False
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], Connection], Extractor] | None = None
        self.started = 0
        """Workers started so far (a replaced worker counts again)."""

    @property
    def pid(self) -> int | None:
        """The current worker's process id, while one runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def run(self, raw: bytes) -> Extraction:
        """`extract(raw)` in the worker; raises ExtractionOverrun or ExtractorUnavailable."""
        with self._lock:
            for attempt in (1, 2):
                conn = self._worker()
                try:
                    conn.send_bytes(raw)
                except OSError:  # it died while idle: not this message's doing
                    how = self._discard()
                    if attempt == 2:
                        raise ExtractorUnavailable(
                            f"the extraction worker dies before it reads a mail ({how})") from None
                    continue
                if not conn.poll(self.seconds):
                    self._discard()
                    raise ExtractionOverrun(f"extraction took longer than {self.seconds:g} s (extraction.seconds)")
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    how = self._discard()
                    if attempt == 2:
                        raise ExtractionOverrun(f"the extraction worker died on it twice ({how})") from None
                    log.warning("the extraction worker died under a message (%s); trying it once more", how)
                    continue
                if kind == "memory":
                    self._discard()
                    raise ExtractionOverrun(f"extraction needed more than {self.memory_mb} MiB "
                                            "(extraction.memory_mb)")
                if not isinstance(value, Extraction):
                    self._discard()
                    raise ExtractorUnavailable(f"the extraction worker answered {kind!r}")
                return value
            raise AssertionError("unreachable: the second attempt returns or raises")

    def start(self) -> None:
        """Start the worker now (the daemon, at its start) rather than under the first mail, which
        would wait the worker's start-up: 0.1 s on a quiet machine, 0.3 s on a busy one."""
        with self._lock:
            self._worker()

    def close(self) -> None:
        """End the worker: asked first, killed if it has not gone within a second."""
        with self._lock:
            if self._finalizer is not None:
                self._finalizer()
            self._proc, self._conn, self._finalizer = None, None, None

    def _worker(self) -> Connection:
        if self._proc is not None and self._conn is not None and self._proc.poll() is None:
            return self._conn
        if self._proc is not None:
            self._discard()
        try:
            # the worker reads hostile mail: it gets neither the configuration nor any secret
            proc, conn = processes.start("mailbot.desk.extractor", str(self.memory_mb * 1024 * 1024),
                                         repr(self.soft_seconds), self.issuers_file or "", env=processes.environment())
        except OSError as e:
            raise ExtractorUnavailable(f"cannot start the extraction worker: {e}") from None
        self._proc, self._conn = proc, conn
        # An extractor dropped without close(), or still open at exit, ends its worker too.
        self._finalizer = weakref.finalize(self, _stop, proc, self._conn)
        try:
            hello = self._conn.recv() if self._conn.poll(START_SECONDS) else None
        except (EOFError, OSError):
            hello = None
        if not (isinstance(hello, tuple) and hello[0] == "ready"):
            how = self._discard()
            raise ExtractorUnavailable(f"the extraction worker did not start within {START_SECONDS:g} s ({how})")
        if hello[1] and not self._warned:
            self._warned = True
            log.warning("the extraction worker runs without its memory limit (%s); its time limit holds", hello[1])
        self.started += 1
        return self._conn

    def _discard(self) -> str:
        """Kill the worker (if it still runs) and forget it; says how it ended."""
        proc, conn = self._proc, self._conn
        if self._finalizer is not None:
            self._finalizer.detach()
        self._proc, self._conn, self._finalizer = None, None, None
        if conn is not None:
            conn.close()
        if proc is None:
            return "no worker"
        if proc.poll() is None:
            proc.kill()
        try:
            code = proc.wait(5)
        except subprocess.TimeoutExpired:
            return "still running"
        return processes.ended(code)


def _stop(proc: subprocess.Popen[bytes], conn: Connection) -> None:
    """Ask a worker to exit; kill it if it has not within a second."""
    with contextlib.suppress(OSError):
        conn.send_bytes(_STOP)
    try:
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    conn.close()


def load_issuers(path: str) -> IssuerTable:
    """The shipped issuer table with the operator's file merged in; a ConfigurationError naming the key
    (mailbot.config is not imported here: the worker imports this module and must start fast)."""
    try:
        with open(path, "rb") as f:
            return default_table().extended(tomllib.load(f))
    except (OSError, tomllib.TOMLDecodeError, IssuerTableError) as e:
        raise ConfigurationError(f"extraction.issuers_file: {path}: {e}") from None


def serve(conn: Connection, memory_bytes: int, seconds: float, issuers: IssuerTable | None = None) -> None:
    """The worker's loop: says it is ready (and whether its memory limit holds), then takes
    mails (bytes) and answers ("ok", Extraction) or ("memory", None), until told to stop."""
    # Ctrl-C in the daemon's terminal reaches the whole process group; the daemon decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    problem = None
    if memory_bytes:
        try:
            resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        except (OSError, ValueError) as e:  # a seccomp filter without setrlimit, a lower hard limit
            problem = f"setrlimit(RLIMIT_AS): {e}"
    conn.send(("ready", problem))
    while True:
        try:
            raw = conn.recv_bytes()
        except EOFError:
            return  # the daemon is gone
        except MemoryError:
            conn.send(("memory", None))
            return
        if raw == _STOP:
            return
        try:
            extraction = extract(raw, seconds=seconds, issuers=issuers)
            extraction.json_text()  # written here, on the worker's core, and sent with it
            result: tuple[str, Extraction | None] = ("ok", extraction)
        except MemoryError:
            result = ("memory", None)
        del raw
        conn.send(result)
        if result[0] == "memory":
            return  # a fresh worker starts with a clean heap


if __name__ == "__main__":
    fd, memory, soft, issuers_file = sys.argv[1:5]
    serve(Connection(int(fd)), int(memory), float(soft), load_issuers(issuers_file) if issuers_file else None)
