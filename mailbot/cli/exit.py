"""The `mailbot` program's way out: the command, its exit functions, then an exit without the
interpreter's teardown.

A command closes what it opened on its way out (the desk's workers and connections, through
click's context) and the exit functions run as ever (log handlers flushed, finalizers). What
is left is the interpreter freeing the 400-odd modules it loaded (SQLAlchemy's and pydantic's
classes and caches) one by one: a tenth to a quarter of a second of every command, and of
`poll --once` under a backlog, which the operator (or a cron job) waits for and nobody uses
(issue #16). Where a thread the command started is still running, the exit is the usual
one, which waits for it.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading

from mailbot.cli.base import main


def run() -> None:
    """`main` as a program: its exit status, as `sys.exit` would give it."""
    try:
        main()
        code: str | int | None = 0
    except SystemExit as e:
        code = e.code
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)  # as sys.exit("text") does
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`mailbot tickets | head`): as the interpreter says
            code = code or 120
    os._exit(code)
