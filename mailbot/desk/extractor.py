"""Extraction where it can be stopped: worker processes with a deadline and a memory limit.

Contract: `Extractor(seconds, memory_mb, workers=n).run(raw)` returns what
`extraction.extract(raw)` returns, computed in a worker process, or raises
`ExtractionOverrun(reason)` when that message cost more than it may: its
worker ran past `seconds` on it (the kernel ends it: an alarm the worker
sets before each mail, whose default action ends the process), ran out of
the `memory_mb` of address space it is given (RLIMIT_AS), or died on it
twice. The reason is one line for the quarantine ("extraction took longer
than 5 s ..."). Inside the worker, extraction stops reading by itself at
`min(limits.TOTAL_SECONDS, seconds / 2)` and reports what it found by then;
the alarm is for the single step that does not come back.

`ahead(now, later)` hands mails to the workers before they are asked for
(issue #16): the `n` workers read a batch side by side, and the next batch
while this one's rules and rows are done. Each worker is fed its mails in
order by a thread of this process and reads them back to back; `run` with
the same bytes takes the result read ahead (waiting if it is still being
read). Reading ahead decides nothing: extraction is a pure function of the
bytes, and what it found counts only when `run` is asked, by a message that
has been claimed. What a worker had not answered when it died is sent to its
successor, the mail it died under counted once against that mail.

A worker that dies (killed from outside, the kernel's OOM killer) is
replaced and the mail it was reading tried once more.
`ExtractorUnavailable` means no worker can be started: a fault of the system
or the configuration, not of the message, which callers count as a failed
attempt.

A worker is `python -m mailbot.desk.extraction_worker` (`mailbot.processes`), a fresh interpreter that
imports only the extraction package (about 0.1 s to start), talking over a
socket pair: not a fork of the daemon (its threads and locks), and not
multiprocessing's spawn or fork server (which import the daemon's main
module into every child). `close()` ends them; so does dropping the
extractor, and the interpreter's exit (a finalizer); a worker whose daemon
is gone exits by itself.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import signal
import subprocess
import threading
import weakref
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection

from mailbot import processes
from mailbot.desk.extraction_worker import STOP, load_issuers
from mailbot.errors import CommandFailed
from mailbot.extraction import Extraction
from mailbot.extraction.limits import TOTAL_SECONDS

log = logging.getLogger(__name__)

START_SECONDS = 30.0
"""A worker that has not said it is ready by then is not coming (it takes about 0.1 s)."""
GRACE_SECONDS = 5.0
"""Past its deadline, how long a worker that has not answered (nor been ended by its alarm, say
a stopped process) is waited for before it is killed from here."""


class ExtractionOverrun(Exception):
    """One message's extraction cost more time or memory than it may; `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ExtractorUnavailable(CommandFailed):
    """No extraction worker could be started or fed; not the message's fault."""


class _Job:
    """One mail handed to a worker, until its answer is read."""

    __slots__ = ("deaths", "done", "error", "lane", "raw", "result", "sent")

    def __init__(self, raw: bytes, lane: int = -1) -> None:
        self.raw = raw
        self.lane = lane
        """The index of the lane it was handed to (an index: the feeding thread holds the job
        it wrote last, and must not hold the extractor through it)."""
        self.done = False
        self.result: Extraction | None = None
        self.error: Exception | None = None
        self.deaths = 0
        self.sent = False
        """Written to the worker's socket (set by the feeding thread)."""

    def finish(self, result: Extraction | None = None, error: Exception | None = None) -> None:
        self.result, self.error, self.done = result, error, True


class _Lane:
    """One worker process, the thread that feeds it, and the mails it has not answered, in order."""

    def __init__(self, owner: Extractor) -> None:
        self.owner = owner
        self.proc: subprocess.Popen[bytes] | None = None
        self.conn: Connection | None = None
        self.mails: queue.SimpleQueue[_Job | None] | None = None
        """What the feeding thread writes to the worker, in order (None: stop)."""
        self.feeder: threading.Thread | None = None
        """Started once the worker has said it is ready."""
        self.finalizer: weakref.finalize[..., Extractor] | None = None
        self.pending: deque[_Job] = deque()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def submit(self, job: _Job) -> None:
        self.pending.append(job)
        if self.feeder is not None and self.mails is not None:
            self.mails.put(job)
        else:
            self.ensure()

    def spawn(self) -> None:
        """Start a worker if none runs, without waiting for it to be ready (`ensure` waits)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        if self.proc is not None:
            self.discard()
        ex = self.owner
        try:
            # the worker reads hostile mail: it gets neither the configuration nor any secret
            proc, conn = processes.start("mailbot.desk.extraction_worker", str(ex.memory_mb * 1024 * 1024),
                                         repr(ex.soft_seconds), repr(ex.seconds), ex.issuers_file or "",
                                         env=processes.environment())
        except OSError as e:
            raise ExtractorUnavailable(f"cannot start the extraction worker: {e}") from None
        self.proc, self.conn = proc, conn
        # An extractor dropped without close(), or still open at exit, ends its workers too.
        self.mails = queue.SimpleQueue()
        self.finalizer = weakref.finalize(ex, _stop, proc, conn, self.mails)

    def ensure(self) -> None:
        """A running worker, fed what this lane has not had answered (a fresh one gets all of it)."""
        if self.feeder is not None and self.proc is not None and self.proc.poll() is None:
            return
        self.spawn()
        ex, conn, mails = self.owner, self.conn, self.mails
        assert conn is not None and mails is not None
        try:
            hello = conn.recv() if conn.poll(START_SECONDS) else None
        except (EOFError, OSError):
            hello = None
        if not (isinstance(hello, tuple) and hello[0] == "ready"):
            how = self.discard()
            raise ExtractorUnavailable(f"the extraction worker did not start within {START_SECONDS:g} s ({how})")
        if hello[1] and not ex.warned:
            ex.warned = True
            log.warning("the extraction worker runs without its memory limit (%s); its time limit holds", hello[1])
        ex.started += 1
        self.feeder = threading.Thread(target=_feed, args=(conn, mails), name="extraction-feed", daemon=True)
        self.feeder.start()
        for job in self.pending:
            job.sent = False
            mails.put(job)

    def answer(self) -> None:
        """Read the answer to the oldest mail of this lane (or learn why none comes)."""
        self.ensure()
        assert self.conn is not None
        head, ex = self.pending[0], self.owner
        if not self.conn.poll(ex.seconds + GRACE_SECONDS):
            self.pending.popleft()
            self.discard()
            head.finish(error=ExtractionOverrun(f"extraction took longer than {ex.seconds:g} s (extraction.seconds)"))
            return
        try:
            kind, value = self.conn.recv()
        except (EOFError, OSError):
            self.died(head)
            return
        self.pending.popleft()
        if kind == "ok" and isinstance(value, Extraction):
            head.finish(value)
        elif kind == "memory":  # the worker exits after saying so: a fresh one starts with a clean heap
            self.discard()
            head.finish(error=ExtractionOverrun(f"extraction needed more than {ex.memory_mb} MiB "
                                                "(extraction.memory_mb)"))
        else:
            self.discard()
            head.finish(error=ExtractorUnavailable(f"the extraction worker answered {kind!r}"))

    def died(self, head: _Job) -> None:
        code = self.discard()
        ex = self.owner
        if code == -signal.SIGALRM:  # its own alarm: this mail ran past the deadline
            self.pending.popleft()
            head.finish(error=ExtractionOverrun(f"extraction took longer than {ex.seconds:g} s (extraction.seconds)"))
            return
        how = processes.ended(code) if code is not None else "still running"
        if not head.sent:  # it died before this mail reached it: not this mail's doing
            ex.idle_deaths += 1
            if ex.idle_deaths >= 2:
                ex.idle_deaths = 0
                raise ExtractorUnavailable(f"the extraction worker dies before it reads a mail ({how})")
            return
        head.deaths += 1
        if head.deaths >= 2:
            self.pending.popleft()
            head.finish(error=ExtractionOverrun(f"the extraction worker died on it twice ({how})"))
            return
        log.warning("the extraction worker died under a message (%s); trying it once more", how)

    def discard(self) -> int | None:
        """Kill the worker (if it still runs), end its feeder, forget both; its exit status."""
        proc, conn, mails, feeder = self.proc, self.conn, self.mails, self.feeder
        if self.finalizer is not None:
            self.finalizer.detach()
        self.proc, self.conn, self.mails, self.feeder, self.finalizer = None, None, None, None, None
        code: int | None = None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(5)
        if mails is not None:
            mails.put(None)
        if feeder is not None:
            feeder.join(5)  # its write fails once the worker is gone
        if conn is not None:
            conn.close()
        return code

    def close(self) -> None:
        """Ask the worker to exit (killed if it has not within a second); what it had not answered fails."""
        if self.finalizer is not None:
            self.finalizer()
        self.proc, self.conn, self.mails, self.feeder, self.finalizer = None, None, None, None, None
        for job in self.pending:
            job.finish(error=ExtractorUnavailable("the extractor was closed"))
        self.pending.clear()


class Extractor:
    """`workers` worker processes, each started on first use and replaced after every overrun."""

    def __init__(self, seconds: float, memory_mb: int, issuers_file: str | None = None, *, workers: int = 1) -> None:
        if issuers_file is not None:
            load_issuers(issuers_file)  # a bad file is the operator's error now, not a dead worker later
        self.issuers_file = issuers_file
        self.seconds = seconds
        self.memory_mb = memory_mb
        self.soft_seconds = min(TOTAL_SECONDS, seconds / 2)
        self._lanes = [_Lane(self) for _ in range(max(1, workers))]
        self._ahead: dict[bytes, _Job] = {}
        self._lock = threading.RLock()
        self.warned = False
        self.idle_deaths = 0
        self.started = 0
        """Workers started so far (a replaced worker counts again)."""

    @property
    def pid(self) -> int | None:
        """The first worker's process id, while it runs (the one a mail at a time goes to)."""
        return self._lanes[0].pid

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers that run."""
        return [pid for lane in self._lanes if (pid := lane.pid) is not None]

    def run(self, raw: bytes) -> Extraction:
        """`extract(raw)` in a worker; raises ExtractionOverrun or ExtractorUnavailable."""
        with self._lock:
            job = self._ahead.pop(raw, None)
            if job is None:
                job = self._submit(raw)
            while not job.done:
                self._lanes[job.lane].answer()
            self.idle_deaths = 0
            if job.error is not None:
                raise job.error
            assert job.result is not None
            return job.result

    def ahead(self, now: Sequence[bytes], later: Sequence[bytes] = ()) -> None:
        """Hand these mails to the workers, `now` first: `run` with the same bytes takes what they
        found. Mails handed ahead before and in neither list are forgotten (a worker that has them
        reads them all the same; their answers are dropped)."""
        with self._lock:
            if len(now) + len(later) > 1:
                self.warm()  # side by side, not one after the other under the first mails
            wanted = set(now) | set(later)
            for raw in [raw for raw in self._ahead if raw not in wanted]:
                del self._ahead[raw]
            for raw in (*now, *later):
                if raw not in self._ahead:
                    self._ahead[raw] = self._submit(raw)

    def start(self) -> None:
        """Start the workers now (the daemon, at its start) rather than under the first mail, which
        would wait a worker's start-up: 0.1 s on a quiet machine, 0.3 s on a busy one."""
        with self._lock:
            self.warm()
            for lane in self._lanes:
                lane.ensure()

    def warm(self, workers: int | None = None) -> None:
        """Start the workers (the first `workers` of them) side by side without waiting for them (a
        poll, before it opens the inbox); one that cannot be started is reported when a mail needs it."""
        with self._lock:
            for lane in self._lanes[:workers]:
                with contextlib.suppress(ExtractorUnavailable):
                    lane.spawn()

    def close(self) -> None:
        """End the workers: asked first, killed if they have not gone within a second."""
        with self._lock:
            self._ahead.clear()
            for lane in self._lanes:
                lane.close()

    def _submit(self, raw: bytes) -> _Job:
        """To the worker with the fewest mails waiting (the first of those: one mail at a time
        always goes to the same worker, and a second starts only when two are read at once)."""
        i = min(range(len(self._lanes)), key=lambda i: len(self._lanes[i].pending))
        job = _Job(raw, i)
        self._lanes[i].submit(job)
        return job


def _feed(conn: Connection, mails: queue.SimpleQueue[_Job | None]) -> None:
    """A worker's feeding thread: writes its mails in order, until told to stop or the worker is gone."""
    while (job := mails.get()) is not None:
        job.sent = True  # before the write: a worker that dies under it has had it
        try:
            conn.send_bytes(job.raw)
        except OSError:
            job.sent = False
            return  # the worker is gone; the lane learns it from the answer it does not get


def _stop(proc: subprocess.Popen[bytes], conn: Connection, mails: queue.SimpleQueue[_Job | None]) -> None:
    """Ask a worker to exit; kill it if it has not within a second."""
    mails.put(_Job(STOP))
    mails.put(None)
    try:
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    conn.close()
