"""mailbot's own helper processes (the extraction worker, the sending process beside a poll):
each started as `python -m <module> FD ...`, talking over a socket pair whose end FD it is
handed, with the caller's environment less mailbot's configuration and anything that looks like
a secret. Never forked from a process that may hold threads and open connections, never by
re-running the caller's `__main__`: a fresh interpreter importing only the module it runs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Collection
from multiprocessing.connection import Connection

from mailbot import PACKAGE_DIR

_SECRET_WORDS = ("PASSWORD", "SECRET", "TOKEN", "CREDENTIAL")


def environment(keep: Collection[str] = ()) -> dict[str, str]:
    """This process's environment without `MAILBOT_*` variables (but those in `keep`) and without
    any whose name looks like a secret, with this package importable wherever it was imported from."""
    env = {k: v for k, v in os.environ.items()
           if k in keep or not (k.startswith("MAILBOT_") or any(word in k.upper() for word in _SECRET_WORDS))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_DIR.parent), env.get("PYTHONPATH")) if p)
    return env


def start(module: str, *args: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Connection]:
    """`python -m module FD *args` and the connection to it; OSError when it cannot be started."""
    ours, theirs = socket.socketpair()
    try:
        proc = subprocess.Popen([sys.executable, "-m", module, str(theirs.fileno()), *args],
                                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True)
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return proc, Connection(ours.detach())


def ended(code: int) -> str:
    """How a child that returned `code` ended, for a person."""
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"
