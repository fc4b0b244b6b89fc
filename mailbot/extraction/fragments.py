"""Rejections pasted without their code: a provider's words alone.

Contract: `fragment_findings(node, table, budget)` returns, in document order,
one `Finding` per place where an issuer's fragment phrase (issuers.toml,
`[[issuer.fragment]]`: "Access denied, banned sending IP", "(S3150)") occurs
in the readable text of the mail and of the messages in it (never of a
returned original, never past the point where an NDR starts quoting it). Such
a finding has no reply code and no status: none was read. Its text is the
sentence that holds the phrase (from the sentence before, when the IP is
there: "messages from [IP] weren't sent. ... (S3150)"), its IPs those of that
text. At most `MAX_FRAGMENTS`; one regular-expression search per block, and
bounded work around each match.
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
_PARAGRAPH_LINES = 12
"""Lines looked at around a match, each way: a pasted rejection is a few wrapped lines."""
_BEFORE = 300
"""Characters before the phrase in which the IP the rejection names is looked for."""
_SENTENCE_END = re.compile(r"[.!?:;](?:\s|$)|[«»\"“”]")
_BRACKETED_IP = re.compile(r"[\[(]\s*[0-9A-Fa-f:.]{3,45}\s*[\])]")


def fragment_findings(node: Node, table: IssuerTable, budget: Budget) -> list[Finding]:
    rx = table.fragment_regex
    if rx is None:
        return []
    out: list[Finding] = []
    seen: set[tuple[str, tuple[str, ...]]] = set()
    stack = [node]
    while stack and len(out) < MAX_FRAGMENTS:
        if budget.expired():
            break
        cur = stack.pop()
        for block in cur.blocks:
            if block.kind != "text":
                continue
            lines = block.lines
            joined = "\n".join(lines)
            first, limit = region(lines, joined)
            lo = sum(len(ln) + 1 for ln in lines[:first]) if first else 0
            hi = sum(len(ln) + 1 for ln in lines[:limit])
            for m in rx.finditer(joined, lo, hi):
                f = _finding(lines, joined, m.start(), m.end(), block.source)
                key = (f.text, f.ips)
                if key not in seen:
                    seen.add(key)
                    out.append(f)
                if len(out) >= MAX_FRAGMENTS:
                    break
        stack.extend(reversed([c for c in cur.children if not c.returned]))
    return out


def _finding(lines: list[str], joined: str, start: int, end: int, source: str) -> Finding:
    at = joined.count("\n", 0, start)
    # The paragraph around the match, as one line (a pasted rejection is wrapped at will).
    a = at
    while a > max(0, at - _PARAGRAPH_LINES) and lines[a - 1].strip():
        a -= 1
    b = at + 1
    while b < min(len(lines), at + 1 + _PARAGRAPH_LINES) and lines[b].strip():
        b += 1
    head = "\n".join(lines[a:at]) + ("\n" if a < at else "")
    offset = len(head) + (start - (joined.rfind("\n", 0, start) + 1))
    para = " ".join((head + "\n".join(lines[at:b])).split("\n"))
    s, e = offset, offset + (end - start)
    begin = _sentence_start(para, s)
    stop = _sentence_end(para, e)
    if not rejection_ips(para[s:stop]):
        # The IP is named before the phrase ("messages from [IP] weren't sent ... (S3150)").
        window = para[max(begin - _BEFORE, 0) : s]
        brackets = [m for m in _BRACKETED_IP.finditer(window) if rejection_ips(m.group(0))]
        if brackets:
            begin = _sentence_start(para, max(begin - _BEFORE, 0) + brackets[-1].start())
    text = " ".join(para[begin:stop].split())
    return Finding(
        reply_code=None,
        status=None,
        text=text,
        ips=tuple(rejection_ips(text)),
        source=source,
        line=at + 1,
    )


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
