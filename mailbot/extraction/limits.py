"""Bounds that keep extraction finite on hostile input.

Contract: `Budget` is created once per `extract()` call and handed down to
every stage. Stages call `budget.expired()` between units of work (a part, a
block of lines) and stop early when it says so; they never raise for it.
Every cap is a plain module constant so tests and callers can see them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

MAX_INPUT_BYTES = 20 * 1024 * 1024
"""Larger mails are cut: an NDR forward is kilobytes, a 20 MB one is an attack or a video."""
MAX_DEPTH = 12
"""Nesting of message/rfc822 and multipart; forwards of forwards rarely pass 4."""
MAX_PARTS = 400
"""MIME parts visited per mail."""
MAX_PART_BYTES = 2 * 1024 * 1024
"""Encoded bytes decoded per part; the rejection is near the top of a part."""
MAX_TEXT_CHARS = 400_000
"""Decoded characters kept per text part."""
MAX_LINES = 20_000
"""Lines scanned per text part."""
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024
"""Outlook .msg and winmail.dat attachments above this are not opened."""
ATTACHMENT_SECONDS = 1.0
"""Wall time granted to a third-party attachment parser."""
TOTAL_SECONDS = 1.5
"""Wall time for one extract() call; what is found by then is reported."""


@dataclass
class Budget:
    """The deadline and the running part count of one extraction."""

    seconds: float = TOTAL_SECONDS
    start: float = field(default_factory=time.monotonic)
    parts: int = 0
    notes: list[str] = field(default_factory=list)
    also_read: re.Pattern[str] | None = None
    """Words that make a text part without any code worth reading (the issuer table's fragments)."""

    def expired(self) -> bool:
        return time.monotonic() - self.start > self.seconds

    def remaining(self) -> float:
        return max(0.0, self.seconds - (time.monotonic() - self.start))

    def note(self, text: str) -> None:
        # Hostile mails can repeat the same fault thousands of times.
        if text not in self.notes and len(self.notes) < 20:
            self.notes.append(text)
