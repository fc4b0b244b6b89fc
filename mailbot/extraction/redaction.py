"""What the sender masked before forwarding: an IP written as "x.x.x.x", "1.2.3.xxx", "[IP]",
"[redacted]"... in the rejection lines that were read. Pure and linear: one bounded regex
over the texts already found. A masked IP is never reported as an IP; the desk says that it
was masked instead of asking as if it were missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_REDACTED = 5
# Dotted quads with at least one masked part (digits alone are IPs, read elsewhere), and the
# words people put in brackets where the address was.
_PART = r"(?:\d{1,3}|[xX*#?]{1,3}|[nN]{1,3})"
_DOTTED = re.compile(rf"(?<![\w.]){_PART}(?:\.{_PART}){{3}}(?![\w.])")
_WORD = re.compile(r"[\[<(]\s*(?:ip(?:\s*address)?|ipv[46]|redacted|removed|hidden|masked|my\s+ip|our\s+ip"
                   r"|server\s+ip|x{2,})\s*[\]>)]", re.IGNORECASE)


def redacted(texts: Iterable[str]) -> tuple[str, ...]:
    """The masked addresses in `texts`, as written (at most MAX_REDACTED, each once)."""
    found: list[str] = []
    for text in texts:
        for m in (*_DOTTED.finditer(text), *_WORD.finditer(text)):
            token = m.group(0)
            if token[0].isdigit() and all(p.isdigit() for p in token.split(".")):
                continue  # a real IP
            if token not in found:
                found.append(token[:40])
            if len(found) >= MAX_REDACTED:
                return tuple(found)
    return tuple(found)
