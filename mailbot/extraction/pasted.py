"""Undoing what pasting did to a rejection, and finding a whole message pasted into a body.

Contract: `unpaste(text)` turns the escapes a rejection picks up on its way
through logs, JSON and web pages back into the text: literal `\\r\\n`, `\\n`,
`\\t`, `\\"`, `\\/` and `\\u003c` sequences (only where the text has a literal
`\\n` or `\\r`), and HTML entities left as text (`&gt;`, `&#39;`), so quote
markers and line breaks are seen as such. `embedded_message(text)` gives the
offset at which a complete message starts inside a text part (its header
block, as a terminal client puts a forward in the body: `From `/`Return-Path:`
/`Received:` ... `Status: RO` ..., with MIME headers that say its body needs
decoding), or None. Both are linear in the text; neither raises.
"""

from __future__ import annotations

import re

from mailbot.extraction.text import unescape

_LITERAL_NEWLINE = re.compile(r"(?<!\\)\\[rn]")
_ESCAPES = {"\\r\\n": "\n", "\\n": "\n", "\\r": "\n", "\\t": "\t", '\\"': '"', "\\/": "/", "\\'": "'"}
_ESCAPE = re.compile(r"\\r\\n|\\[nrt\"/']|\\u([0-9a-fA-F]{4})")
_ENTITY = re.compile(r"&(?:[A-Za-z]{2,8}|#\d{1,7}|#[xX][0-9A-Fa-f]{1,6});")


def unpaste(text: str) -> str:
    if "\\" in text and _LITERAL_NEWLINE.search(text):
        text = _ESCAPE.sub(_unescape_one, text)
    if "&" in text and _ENTITY.search(text):
        text = unescape(text)
    return text


def _unescape_one(m: re.Match[str]) -> str:
    if m.group(1):
        return chr(int(m.group(1), 16))
    return _ESCAPES[m.group(0)]


_HEADER_LINE = re.compile(r"^([A-Za-z][\w\-]{0,60}):[ \t]*(.*)$")
_MBOX_FROM = re.compile(r"^From \S+ +\S")
_ORIGIN = frozenset({"return-path", "received", "from", "date", "message-id", "delivered-to", "x-original-to"})
_NEEDS_DECODING = re.compile(r"^(?:multipart/|message/)|\b(?:base64|quoted-printable)\b", re.I)
_MIME_HEADER = re.compile(r"^content-(?:type|transfer-encoding):[^\n]*?(?:multipart/|message/|base64|quoted-printable)",
                          re.I | re.M)
MIN_HEADERS = 4
"""Header lines a pasted message starts with, at least: a forward's own From/Date/Subject/To are not one."""


def embedded_message(text: str) -> int | None:
    """Where a pasted message (a header block whose MIME headers say the body is encoded) starts."""
    if not _MIME_HEADER.search(text):
        return None  # most text: no header that says a body is encoded, no line-by-line look
    start = 0  # offset of the current line
    block_start: int | None = None
    count = 0
    origin: set[str] = set()
    encoded = False
    pos = 0
    n = len(text)
    while pos <= n:
        nl = text.find("\n", pos)
        end = n if nl < 0 else nl
        line = text[pos:end].rstrip("\r")
        start = pos
        m = _HEADER_LINE.match(line) if line else None
        folded = block_start is not None and line[:1] in (" ", "\t") and line.strip()
        if m:
            if block_start is None:
                block_start, count, origin, encoded = start, 0, set(), False
            count += 1
            name = m.group(1).lower()
            if name in _ORIGIN:
                origin.add(name)
            if name in ("content-type", "content-transfer-encoding") and _NEEDS_DECODING.search(m.group(2)):
                encoded = True
        elif folded:
            pass
        elif _MBOX_FROM.match(line) and block_start is None:
            pass  # the mbox separator line before a header block
        else:
            if block_start is not None and not line.strip() and count >= MIN_HEADERS and encoded and len(origin) >= 2:
                return block_start
            block_start = None
        if nl < 0:
            break
        pos = nl + 1
    return None
