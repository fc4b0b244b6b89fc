"""Hostile inputs for extraction: shapes that made it quadratic (issue #12).

Each shape is a content type and a function giving about n bytes of hostile
text that ends in (or holds) a 5.7.511 rejection line; `build(shape, size,
spread)` wraps it into a mail of about `size` bytes: one body, or (`spread`)
parts of `CHUNK` bytes each, so that every byte is read despite the per-part
caps. Used by tests/test_extraction_hostile.py and bench/extraction_scaling.py.
"""

from __future__ import annotations

import random
from collections.abc import Callable

CHUNK = 100_000
REJECTION = (b"550 5.7.511 Access denied, banned sender[203.0.113.45]. To request removal from this list please "
             b"forward this message to delist@example.com")

HEAD = b"From: ops@sender.example\r\nTo: delist@example.com\r\nSubject: fwd: undeliverable\r\nMIME-Version: 1.0\r\n"


def _fill(unit: bytes, n: int) -> bytes:
    return unit * max(1, n // len(unit))


def _junk8(n: int) -> bytes:
    return random.Random(n).randbytes(n).translate(bytes(range(128, 256)) * 2)


# Each shape: (content type and extra part headers, hostile text of about n bytes ending in a rejection).
Body = Callable[[int], bytes]
SHAPES: dict[str, tuple[bytes, Body]] = {
    # The issue's: a run of one character on the rejection line (the address search).
    "a-run": (b"text/plain", lambda n: _fill(b"A", n) + b" " + REJECTION),
    # 8-bit junk declared UTF-8 decodes to a run of U+FFFD on the rejection line.
    "8bit": (b"text/plain; charset=utf-8", lambda n: _junk8(n) + b" " + REJECTION),
    "8bit-html": (b"text/html", lambda n: _junk8(n) + b"<br>" + REJECTION),
    "html-tags": (b"text/html", lambda n: _fill(b"<br", n) + b"<!--<style<script" + b"\n" + REJECTION),
    "ip-like": (b"text/plain", lambda n: REJECTION + b" " + _fill(b"1.2.3.4.", n // 2) + _fill(b"1:", n // 2)),
    "many-ips": (b"text/plain", lambda n: REJECTION + b" " + b" ".join(
        f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}".encode() for i in range(n // 13))),
    "whitespace": (b"text/plain", lambda n: b"x" + _fill(b" \t", n) + b"x " + REJECTION),
    "near-miss": (b"text/plain", lambda n: _fill(b"550 5.7. ", n) + b"\n\n" + REJECTION),
    "at-signs": (b"text/plain", lambda n: _fill(b"@", n // 2) + _fill(b"a@", n // 2) + b" " + REJECTION),
    # A long line of openers that the next line carries on (the unclosed-bracket test).
    "brackets": (b"text/plain", lambda n: REJECTION + b"\n" + _fill(b"(", n) + b")x\nand more"),
    "dsn-records": (b"text/plain", lambda n: _fill(
        b"Status: 5.1.1\nFinal-Recipient: rfc822; u@b.example\n\nx 550 5.1.1 <v@b.example> no\n\n", n) + REJECTION),
    "dsn-recipient": (b"text/plain", lambda n: b"Final-Recipient: rfc822; " + _fill(b"A", n)
                      + b"\nAction: failed\nStatus: 5.7.511\n\n" + REJECTION),
    "html-entities": (b"text/html", lambda n: b"&#" + b"9" * 5000 + b";" + _fill(b"&#", n // 2)
                      + _fill(b"&amp;", n // 2 - 5000) + b"<br>" + REJECTION),
    # A charset whose decoder is quadratic (punycode) is read as an unknown one.
    "punycode": (b"text/plain; charset=punycode", lambda n: b"a-" + _fill(b"b", n) + b"\n" + REJECTION),
    # Tiny MIME parts: the time is the standard library's parser (one step the budget cannot split).
    "mime-parts": (b"multipart/mixed; boundary=in", lambda n: _fill(
        b"--in\r\nContent-Type: text/plain\r\n\r\n550 x\r\n", n) + b"--in\r\nContent-Type: text/plain\r\n\r\n"
        + REJECTION + b"\r\n--in--"),
    # The hostile part is the Content-Type parameter list, not the text.
    "ct-params": (b'text/plain; a="', lambda n: _fill(b";", n)),
    # Text as people paste it (issue #15): quoted forever, escaped by a web page or a log, code blocks,
    # log lines, header blocks that look like a pasted message, one endless multi-line reply.
    "quoted-forever": (b"text/plain", lambda n: _fill(b"> ", n) + REJECTION),
    "entities": (b"text/plain", lambda n: _fill(b"&gt;&#39;&", n) + b"\n" + REJECTION),
    "literal-escapes": (b"text/plain", lambda n: REJECTION + _fill(b"\\r\\n\\u003c\\", n)),
    # (Lines long enough that the part's MAX_LINES keeps the rejection at the end.)
    "pre-blocks": (b"text/html", lambda n: _fill(b"<pre>" + b"a" * 200 + b"\n</pre><pre>", n) + b"</pre><br>"
                   + REJECTION),
    "log-lines": (b"text/plain", lambda n: _fill(b"Jun  3 09:14:03 mx smtpd[1]: connect from x[198.51.100.1]\n", n)
                  + REJECTION),
    "header-blocks": (b"text/plain", lambda n: _fill(
        b"Received: " + b"x" * 100 + b"\nFrom: a\nDate: b\nContent-Type: multipart/mixed; boundary=q\n\n", n)
        + REJECTION),
    "multi-line-reply": (b"text/plain", lambda n: _fill(b"550-5.7.511 " + b"x" * 60 + b"\n", n) + REJECTION),
    "issuer-words": (b"text/plain", lambda n: REJECTION + b" " + _fill(b"AS(1spamhaus S31 mx.google.com ", n)),
}


def build(shape: str, size: int, spread: bool) -> bytes:
    ctype, body = SHAPES[shape]
    params = ctype.endswith(b'"')

    def part(n: int) -> bytes:
        if params:
            return b"Content-Type: " + ctype + body(n) + b'"\r\n\r\n' + REJECTION + b"\r\n"
        charset = b"" if b"charset=" in ctype else b"; charset=iso-8859-1"
        return b"Content-Type: " + ctype + charset + b"\r\n\r\n" + body(n) + b"\r\n"

    room = size - len(HEAD) - 200
    if not spread:
        return HEAD + part(room)
    parts = [part(min(CHUNK, room - at)) for at in range(0, room, CHUNK)]
    out = HEAD + b"Content-Type: multipart/mixed; boundary=b0undary\r\n\r\n"
    for p in parts:
        out += b"--b0undary\r\n" + p
    return out + b"--b0undary--\r\n"


def many_parts(size: int) -> bytes:
    """A mail of about `size` bytes in parts of 48 bytes: the parser alone takes about 0.5 s a MB."""
    part = b"--b\r\nContent-Type: text/plain\r\n\r\n550 5.7.511 x\r\n"
    return (HEAD + b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + part * (size // len(part))
            + b"--b--\r\n")
