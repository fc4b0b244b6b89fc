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

_ADMIN_SECTION = re.compile(r"^\s*diagnostic information for administrators\b", re.I)

_RETURNED = re.compile(
    r"^\s*(?:-+\s*)?(?:"
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
    re.I,
)


def region(lines: list[str]) -> tuple[int, int]:
    start, end = 0, len(lines)
    for i, line in enumerate(lines):
        if _RETURNED.match(line):
            end = i
            break
    for i in range(end):
        if _ADMIN_SECTION.match(lines[i]):
            start = i + 1
            break
    return start, end
