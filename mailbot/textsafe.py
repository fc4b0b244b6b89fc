"""A stand-in for `mailbot.sanitize.printable`, which the lead is adding: when it lands,
import it from there and delete this module.

Text from mail and from remote servers (recipients, subjects, SMTP answers)
may carry terminal escape sequences; anything printed or logged from it
passes `printable` first.
"""

from __future__ import annotations

import re

_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


def printable(text: str | None) -> str:
    """`text` on one line with no control characters (C0, C1, ESC, DEL) and no bidirectional
    overrides: each run of them becomes one space."""
    return _UNPRINTABLE.sub(" ", text or "")
