"""Per-MTA layout quirks that decide which lines of an NDR's text count.

Contract: `region(lines)` returns the (start, end) line range of a text part
in which rejection lines are read. The range starts after a section header
that introduces the machine-readable part (Exchange / Microsoft 365:
"Diagnostic information for administrators", whose "Remote Server returned
'550 5.7.606 ...'" lines are what the provider wrote, while the human
section above paraphrases them), and ends where the NDR begins to quote the
message it returns (Exim, qmail, Sendmail, Exchange, OpenSMTPD markers), so
the returned original's headers and body are never read.
"""

from __future__ import annotations

import re

_ADMIN_SECTION = re.compile(r"^[ \t]*diagnostic information for administrators\b", re.I | re.M)

_RETURNED = re.compile(
    r"^[ \t]*(?:-+[ \t]*)?(?:"
    r"original message headers:?"
    r"|this is a copy of the message"
    r"|below this line is a copy of the message"
    r"|below is a copy of the original message"
    r"|original message follows"
    r"|unsent message follows"
    r"|returned (?:mail|message) follows"
    r"|message headers follow"
    r"|the (?:original|returned) message (?:headers )?(?:follows|is below)"
    r"|headers of the original message"
    r")",
    re.I | re.M,
)


def region(lines: list[str], text: str) -> tuple[int, int]:
    """`text` is "\\n".join(lines): one search over it is far cheaper than a match per line."""
    start, end = 0, len(lines)
    m = _RETURNED.search(text)
    if m:
        end = text.count("\n", 0, m.start())
    m = _ADMIN_SECTION.search(text)
    if m:
        at = text.count("\n", 0, m.start())
        if at < end:
            start = at + 1
    return start, end
