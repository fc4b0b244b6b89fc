"""Crash points for the crash-safety tests. Off unless MAILBOT_FAULT is set.

`MAILBOT_FAULT=after_commit` makes the process die (as SIGKILL would, with
no clean-up) the first time it reaches `faults.point("after_commit")`.
"""

from __future__ import annotations

import os


def point(name: str) -> None:
    if os.environ.get("MAILBOT_FAULT") == name:
        os._exit(137)
