"""The `command` source: an operator's program asked once per lookup or delist.

The program (`listing.command`, an argument list, no shell) gets one JSON object on stdin:

    {"action": "lookup", "ip": "203.0.113.45"}
    {"action": "delist", "ip": "203.0.113.45", "key": "DL-000123/clock-1", "actor": "...", "note": "..."}

and answers one JSON object on stdout, as the HTTP service does (`answers`), exiting 0.
Exit 75 (EX_TEMPFAIL) is a temporary failure, any other non-zero exit a permanent one (the
last line of its stderr is shown to staff). A program still running at `listing.timeout_seconds`
is killed with its whole process group: a temporary failure. Its answer is read up to
64 KiB; more is a permanent failure. It runs without mailbot's MAILBOT_* variables (the
desk's secrets are not the program's business).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Sequence

from mailbot.listing import answers
from mailbot.listing.base import (
    DelistResult,
    Listing,
    ListingError,
    PermanentListingError,
    TemporaryListingError,
)
from mailbot.outgoing.sanitize import printable

NAME = "command"
EX_TEMPFAIL = 75
MAX_STDERR = 16 * 1024


class ProgramSource:
    def __init__(self, argv: Sequence[str], timeout: float = 5.0) -> None:
        self.name = NAME
        self.argv = list(argv)
        self.timeout = timeout

    def _run(self, request: dict[str, object], operation: str, ip: str) -> bytes:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILBOT_")}
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as e:
            raise PermanentListingError(f"cannot run {self.argv[0]}: {e.strerror}", source=self.name,
                                        operation=operation, ip=ip) from None
        try:
            out, err, overrun = _exchange(proc, json.dumps(request).encode(), self.timeout)
        finally:
            _kill(proc)
        def fail(cls: type[ListingError], message: str) -> ListingError:
            return cls(f"{self.argv[0]} {message}", source=self.name, operation=operation, ip=ip)

        if overrun == "time":
            raise fail(TemporaryListingError, f"did not answer within {self.timeout:g} s (killed)")
        if overrun == "size":
            raise fail(PermanentListingError, f"wrote more than {answers.MAX_ANSWER_BYTES} bytes")
        code = proc.returncode
        if code == 0:
            return out
        said = _last_line(err)
        if code == EX_TEMPFAIL or code < 0:
            how = "asked to try later (exit 75)" if code == EX_TEMPFAIL else f"was killed by signal {-code}"
            raise fail(TemporaryListingError, f"{how}{said}")
        raise fail(PermanentListingError, f"failed (exit {code}){said}")

    def lookup(self, ip: str) -> Listing:
        out = self._run({"action": "lookup", "ip": ip}, "lookup", ip)
        return answers.listing(answers.decode(out, self.name, "lookup", ip), ip, self.name)

    def delist(self, ip: str, key: str, actor: str, note: str | None) -> DelistResult:
        out = self._run({"action": "delist", "ip": ip, "key": key, "actor": actor, "note": note}, "delist", ip)
        return answers.delisted(answers.decode(out, self.name, "delist", ip), ip, key, self.name)

    def close(self) -> None:
        """Nothing runs between calls."""


def _exchange(proc: subprocess.Popen[bytes], request: bytes, timeout: float) -> tuple[bytes, bytes, str | None]:
    """Write the request, read both outputs until the program exits, the deadline passes
    ("time") or the answer grows past the cap ("size")."""
    deadline = time.monotonic() + timeout
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        proc.stdin.write(request)  # a few hundred bytes: fits the pipe even if the program never reads
        proc.stdin.close()
    except BrokenPipeError:
        pass
    chunks: dict[int, list[bytes]] = {proc.stdout.fileno(): [], proc.stderr.fileno(): []}
    sizes = dict.fromkeys(chunks, 0)
    limits = {proc.stdout.fileno(): answers.MAX_ANSWER_BYTES, proc.stderr.fileno(): MAX_STDERR}
    with selectors.DefaultSelector() as sel:
        for f in (proc.stdout, proc.stderr):
            sel.register(f, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return b"", b"", "time"
            for key, _ in sel.select(left):
                data = os.read(key.fd, 65536)
                if not data:
                    sel.unregister(key.fileobj)
                    continue
                if sizes[key.fd] + len(data) > limits[key.fd]:
                    if key.fd == proc.stdout.fileno():
                        return b"", b"", "size"
                    data = data[: max(0, limits[key.fd] - sizes[key.fd])]  # stderr: keep the start
                chunks[key.fd].append(data)
                sizes[key.fd] += len(data)
    try:
        proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:  # closed its outputs but did not exit
        return b"", b"", "time"
    return b"".join(chunks[proc.stdout.fileno()]), b"".join(chunks[proc.stderr.fileno()]), None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Whatever is left of the program's process group (the program, or children it left
    behind holding its pipes), then the program reaped."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for f in (proc.stdin, proc.stdout, proc.stderr):
        if f:
            f.close()


def _last_line(err: bytes) -> str:
    lines = [line for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
    # the operator's program may echo what it was fed: shown to staff escaped, never obeyed
    return f": {printable(' '.join(lines[-1].split())[:300], one_line=True)}" if lines else ""
