"""Free-text rejection lines: the part of an NDR a person reads.

Contract: `scan(lines, skip)` returns the rejection lines of one text block
in order, each unwrapped (continuation lines joined) and located by its
1-based first line. A logical line is a line plus the following lines that
are indented deeper (Postfix, Exim, Sendmail transcripts) or that carry on a
sentence the forwarding client wrapped. Lines in `skip` (DSN fields) and
lines outside the `dialects.region` are ignored, so
the returned original's headers are never read.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate

from mailbot.extraction.dialects import region
from mailbot.extraction.patterns import Code, find_code

# Header lines of a returned or forwarded message: never rejection text.
_HEADER = re.compile(
    r"^(?:Received|Return-Path|Message-I[dD]|DKIM-Signature|ARC-[\w-]+|X-[\w-]+|Authentication-Results"
    r"|References|In-Reply-To|Content-Type|Content-Transfer-Encoding|MIME-Version|Thread-\w+)\s*:",
    re.I,
)


_ANY_CODE = re.compile(r"[45]\d\d|[45]\.\d{1,3}\.\d")
_MAX_HITS = 2000
"""Code-like strings looked at per part; an NDR has a handful, junk has millions."""


@dataclass
class Rejection:
    text: str
    """The logical line from the code on."""
    context: str
    """The whole logical line (the narration before the code included)."""
    code: Code
    line: int


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _logical(lines: list[str], skip: set[int], first: int, limit: int) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    i = first
    while i < limit:
        line = lines[i]
        if i in skip or not line.strip() or _HEADER.match(line):
            i += 1
            continue
        base = _indent(line)
        parts = [line.strip()]
        j = i + 1
        while j < limit and j not in skip and lines[j].strip() and not _HEADER.match(lines[j]):
            nxt = lines[j]
            if _indent(nxt) > base or _carries_on(parts[-1], nxt, base, parts[0]):
                parts.append(nxt.strip())
                j += 1
                continue
            break
        out.append((i + 1, " ".join(parts)))
        i = j
    return out


_STARTS_WITH_CODE = re.compile(r"^\s*(?:<<<\s*|>>>\s*)?#?(?:[45]\d\d\b|[45]\.\d{1,3}\.\d)")
# A line that starts the next recipient's record rather than continuing this one.
# (A quote closing a JSON or log string, '","next":...', ends the record too.)
_NEW_RECORD = re.compile(r"^\s*(?:<?[^\s@<>]+@[^\s@<>]+>?:?\s*$|<[^\s@<>]+@[^\s<>]+>|[\w-]+:\s|[\"'][,}\]:])")
_OPENERS = "[(<'\""
_CLOSERS = "])>'\""


def _unclosed(text: str) -> bool:
    """An opening bracket or quote with no closing one after it: what
    `[\\[(<'"][^\\])>'"]*$` finds, without rescanning from every opener ("(" * n)."""
    last = max(text.rfind(c) for c in _CLOSERS)
    # After the last closer, or from it: a quote closes and opens alike.
    tail = text[last:] if last >= 0 else text
    return any(c in tail for c in _OPENERS)


# A reply code left alone at the end of a line, its enhanced code on the next ("said: 550\n5.7.606 ...").
_ENDS_WITH_REPLY = re.compile(r"(?<![\w.\-/=%])[45]\d\d$")
_STARTS_WITH_STATUS = re.compile(r"^\s*[45]\.\d{1,3}\.\d")
# One multi-line SMTP reply: "550-5.7.1 ... is\n550-5.7.1 likely unsolicited mail ...\n550 5.7.1 ...".
# A log line: syslog "Jun  3 09:14:03", ISO "2025-06-03 09:14:03" or "...T09:14". After another, it
# starts a record of its own.
_LOG_LINE = re.compile(r"^\s*(?:[A-Z][a-z]{2} +\d{1,2} \d\d:\d\d:\d\d|\d{4}-\d\d-\d\d[T ]\d\d:\d\d)")
_MULTILINE = re.compile(r"^(?:<<<\s*)?([45]\d\d)-")
_NEXT_REPLY_LINE = re.compile(r"^\s*(?:<<<\s*)?([45]\d\d)[\- ]")


def _carries_on(prev: str, nxt: str, base: int, head: str = "") -> bool:
    """A line the forwarding client wrapped: same indent, the sentence is not over. `head` is the
    logical line's first line: a log record (it starts with a time stamp) ends where the next starts."""
    if _indent(nxt) != base:
        return False
    if _ENDS_WITH_REPLY.search(prev) and _STARTS_WITH_STATUS.match(nxt):
        return True
    opened, then = _MULTILINE.match(prev), _NEXT_REPLY_LINE.match(nxt)
    if opened and then and opened.group(1) == then.group(1):
        return True
    if _NEW_RECORD.match(nxt) or _STARTS_WITH_CODE.match(nxt) or (_LOG_LINE.match(nxt) and _LOG_LINE.match(head)):
        return False
    # An unclosed bracket or quote, or a line that ends mid-word-run, continues.
    if _unclosed(prev):
        return True
    return len(prev) >= 60 and not prev.endswith((".", ":", "!", "?", ";"))


def _paragraphs_with_codes(lines: list[str], text: str, first: int, limit: int) -> list[tuple[int, int]]:
    """Blank-line separated runs of lines that hold something code-like.

    A logical line never crosses a blank line, so the rest need no look.
    """
    starts = list(accumulate((len(ln) + 1 for ln in lines), initial=0))
    hits: list[int] = []
    for k, m in enumerate(_ANY_CODE.finditer(text)):
        if k >= _MAX_HITS:
            break
        hits.append(bisect_right(starts, m.start()) - 1)
    spans: list[tuple[int, int]] = []
    for h in hits:
        if h < first or h >= limit or (spans and spans[-1][0] <= h < spans[-1][1]):
            continue
        a = h
        while a > first and lines[a - 1].strip():
            a -= 1
        b = h
        while b < limit and lines[b].strip():
            b += 1
        spans.append((a, b))
    return spans


def scan(lines: list[str], skip: set[int], text: str | None = None) -> list[Rejection]:
    joined = "\n".join(lines) if text is None else text
    first, limit = region(lines, joined)
    found: list[Rejection] = []
    logical: list[tuple[int, str]] = []
    for a, b in _paragraphs_with_codes(lines, joined, first, limit):
        logical.extend(_logical(lines, skip, a, b))
    for n, line in logical:
        code = find_code(line) if _ANY_CODE.search(line) else None
        if code is None:
            continue
        found.append(Rejection(text=line[code.start :].lstrip("#"), context=line, code=code, line=n))
    return found
