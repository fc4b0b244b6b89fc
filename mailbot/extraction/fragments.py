"""Rejections pasted without their code: a provider's words alone.

Contract: `fragment_findings(node, table, budget)` returns, in document order,
one `Finding` per place where an issuer's fragment phrase (issuers.toml,
`[[issuer.fragment]]`: "Access denied, banned sending IP", "(S3150)") occurs
in the readable text of the mail and of the messages in it (never of a
returned original, never past the point where an NDR starts quoting it). Such
a finding has no reply code and no status: none was read. Its text is the
sentence that holds the phrase (from the sentence before, when the IP is
there: "messages from [IP] weren't sent. ... (S3150)"), its IPs those of that
text. At most `MAX_FRAGMENTS` findings from `MAX_MATCHES` matches; one
regular-expression search per block, and work within `_WINDOW` characters
around each match.
"""

from __future__ import annotations

import re

from mailbot.extraction.dialects import region
from mailbot.extraction.findings import Finding
from mailbot.extraction.issuers import IssuerTable
from mailbot.extraction.limits import Budget
from mailbot.extraction.mime import Node
from mailbot.extraction.patterns import rejection_ips

MAX_FRAGMENTS = 20
"""Fragments reported per mail; a note names a block or two, junk can repeat one a million times."""
MAX_MATCHES = 200
"""Matches looked at per mail (repeats of one fragment are looked at, then dropped as duplicates)."""
_WINDOW = 600
"""Characters around a match that can belong to its rejection: a pasted one is a few wrapped lines."""
_BEFORE = 300
"""Characters before the phrase in which the IP the rejection names is looked for."""
_SENTENCE_END = re.compile(r"[.!?:;](?:\s|$)|[«»\"“”]")
_BRACKETED_IP = re.compile(r"[\[(]\s*[0-9A-Fa-f:.]{3,45}\s*[\])]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def fragment_findings(node: Node, table: IssuerTable, budget: Budget) -> list[Finding]:
    rx = table.fragment_regex
    if rx is None:
        return []
    out: list[Finding] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    looked = 0
    stack = [node]
    while stack and len(out) < MAX_FRAGMENTS and looked < MAX_MATCHES:
        if budget.expired():
            break
        cur = stack.pop()
        for block in cur.blocks:
            if block.kind != "text":
                continue
            lines = block.lines
            joined = "\n".join(lines)
            first, limit = region(lines, joined)
            lo = sum(len(ln) + 1 for ln in lines[:first])
            hi = lo + sum(len(ln) + 1 for ln in lines[first:limit])
            line, counted = first, lo
            for m in rx.finditer(joined, lo, hi):
                looked += 1
                # Matches come in order: count the line ends since the last one only.
                line += joined.count("\n", counted, m.start())
                counted = m.start()
                f = _finding(joined, max(lo, m.start() - _WINDOW), min(hi, m.end() + _WINDOW), m.start(), m.end(),
                             block.source, line + 1)
                key = (f.text, f.ips)
                if key not in seen:
                    seen.add(key)
                    out.append(f)
                if len(out) >= MAX_FRAGMENTS or looked >= MAX_MATCHES:
                    break
            if len(out) >= MAX_FRAGMENTS or looked >= MAX_MATCHES:
                break
        stack.extend(reversed([c for c in cur.children if not c.returned]))
    return out


def _finding(joined: str, lo: int, hi: int, start: int, end: int, source: str, line: int) -> Finding:
    # The paragraph around the match within the window, as one line: a pasted rejection is wrapped at will.
    breaks = [m.end() for m in _PARAGRAPH_BREAK.finditer(joined, lo, start)]
    lo = breaks[-1] if breaks else lo
    after = _PARAGRAPH_BREAK.search(joined, end, hi)
    hi = after.start() if after else hi
    para = joined[lo:hi].replace("\n", " ")
    s, e = start - lo, end - lo
    begin = _sentence_start(para, s)
    stop = _sentence_end(para, e)
    if not rejection_ips(para[s:stop]):
        # The IP is named before the phrase ("messages from [IP] weren't sent ... (S3150)").
        window = para[max(begin - _BEFORE, 0) : s]
        brackets = [m for m in _BRACKETED_IP.finditer(window) if rejection_ips(m.group(0))]
        if brackets:
            begin = _sentence_start(para, max(begin - _BEFORE, 0) + brackets[-1].start())
    text = " ".join(para[begin:stop].split())
    return Finding(reply_code=None, status=None, text=text, ips=tuple(rejection_ips(text)), source=source,
                   line=line)


def _sentence_start(text: str, pos: int) -> int:
    lo = max(0, pos - _BEFORE)
    best = lo
    for m in _SENTENCE_END.finditer(text, lo, pos):
        best = m.end()
    return best


def _sentence_end(text: str, pos: int) -> int:
    # Not a colon right after the phrase: "banned sending IP: 203.0.113.7".
    m = _SENTENCE_END.search(text, pos + 2, min(len(text), pos + _BEFORE))
    return m.end() if m else min(len(text), pos + _BEFORE)
