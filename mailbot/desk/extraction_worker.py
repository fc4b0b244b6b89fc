"""The extraction worker's side (`python -m mailbot.desk.extraction_worker FD ...`): a fresh
interpreter that imports only the extraction package, reads the mails it is sent one after the
other, each under an alarm, and answers what it found. `desk/extractor.py` starts and feeds it.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import tomllib
from multiprocessing.connection import Connection

from mailbot.errors import ConfigurationError
from mailbot.extraction import Extraction, IssuerTable, IssuerTableError, default_table, extract

STOP = b""
"""Sent instead of a mail: the worker exits (a stored mail is never empty)."""


def load_issuers(path: str) -> IssuerTable:
    """The shipped issuer table with the operator's file merged in; a ConfigurationError naming the key
    (mailbot.config is not imported here: the worker imports this module and must start fast)."""
    try:
        with open(path, "rb") as f:
            return default_table().extended(tomllib.load(f))
    except (OSError, tomllib.TOMLDecodeError, IssuerTableError) as e:
        raise ConfigurationError(f"extraction.issuers_file: {path}: {e}") from None


def serve(conn: Connection, memory_bytes: int, seconds: float, deadline: float,
          issuers: IssuerTable | None = None) -> None:
    """The worker's loop: says it is ready (and whether its memory limit holds), then takes
    mails (bytes) and answers ("ok", Extraction) or ("memory", None), until told to stop. Each
    mail is read under an alarm of `deadline` seconds whose default action ends this process."""
    # Ctrl-C in the daemon's terminal reaches the whole process group; the daemon decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
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
        if raw == STOP:
            return
        signal.setitimer(signal.ITIMER_REAL, deadline)
        try:
            extraction = extract(raw, seconds=seconds, issuers=issuers)
            extraction.json_text()  # written here, on the worker's core, and sent with it
            result: tuple[str, Extraction | None] = ("ok", extraction)
        except MemoryError:
            result = ("memory", None)
        signal.setitimer(signal.ITIMER_REAL, 0)  # the answer may wait for the daemon to read it
        del raw
        conn.send(result)
        if result[0] == "memory":
            return  # a fresh worker starts with a clean heap


if __name__ == "__main__":
    fd, memory, soft, hard, issuers_file = sys.argv[1:6]
    serve(Connection(int(fd)), int(memory), float(soft), float(hard),
          load_issuers(issuers_file) if issuers_file else None)
    os._exit(0)  # told to stop (the daemon waits for it) or orphaned: nothing to tear down
