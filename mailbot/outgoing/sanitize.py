"""The one gate between inbound bytes and outgoing headers.

Every value taken from an inbound message that ends up in an outgoing
header (subject, addresses, Message-ID, References) passes through here.
Python's own email package has had header-injection and address-parsing
bugs (CVE-2024-6923, CVE-2023-27043) on the versions we run on, so these
checks do not rely on it: they are strict, and they refuse rather than
repair anything that is not plainly well-formed.
"""

from __future__ import annotations

import re

MAX_HEADER_TEXT = 200
MAX_REFERENCES = 10
MAX_MSGID = 250

# C0/C1 controls, DEL, and the Unicode line/paragraph separators that some
# header folders treat as line breaks.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")
_SPACES = re.compile(r"\s+")

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LOCAL = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
ADDR_RE = re.compile(rf"{_LOCAL}@{_DOMAIN}")
_ADDR_FULL = re.compile(rf"^{_LOCAL}@{_DOMAIN}$")
# A display name without anything that could start a second address.
_DISPLAY = r'(?:"[^"\\\r\n<>@]{0,200}"|[^"<>@,;:()\\\r\n]{0,200})'
_MAILBOX = re.compile(rf"^\s*(?:{_DISPLAY}\s*<\s*({_LOCAL}@{_DOMAIN})\s*>|({_LOCAL}@{_DOMAIN}))\s*$")
_MSGID = re.compile(r"^<[\x21-\x3b\x3d\x3f-\x5a\x5e-\x7e]{1,200}@[\x21-\x3b\x3d\x3f-\x5a\x5e-\x7e]{1,200}>$")


def header_text(value: str | None, limit: int = MAX_HEADER_TEXT) -> str:
    """Free text (a subject) made safe for one header line: no controls, capped."""
    if not value:
        return ""
    text = _SPACES.sub(" ", _CONTROL.sub(" ", value)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def address(value: str | None) -> str | None:
    """A single plain addr-spec, or None. No comments, no groups, one address only."""
    if not value or len(value) > 320:
        return None
    value = value.strip()
    if _ADDR_FULL.match(value):
        return value
    return None


def mailbox_address(header: str | None) -> str | None:
    """The one address of a From/Reply-To header, or None when it is not plainly one.

    `alice@example.org)<bob@example.org>` and friends (the CVE-2023-27043
    shapes) give None: we would rather not reply than reply to the wrong person.
    """
    if not header or len(header) > 1000:
        return None
    unfolded = re.sub(r"\r?\n[ \t]+", " ", header)
    if _CONTROL.search(unfolded):
        return None
    m = _MAILBOX.match(unfolded)
    if not m:
        return None
    return m.group(1) or m.group(2)


def message_id(value: str | None) -> str | None:
    """A strictly well-formed `<left@right>` Message-ID, or None."""
    if not value:
        return None
    value = value.strip()
    if len(value) > MAX_MSGID or not _MSGID.match(value):
        return None
    return value


def references(values: list[str], limit: int = MAX_REFERENCES) -> list[str]:
    """Valid Message-IDs only, duplicates dropped, the last `limit` kept (RFC 5322 3.6.4)."""
    out: list[str] = []
    for v in values:
        mid = message_id(v)
        if mid and mid not in out:
            out.append(mid)
    return out[-limit:]


def split_msgids(header: str | None) -> list[str]:
    """The `<…>` tokens of an In-Reply-To/References header."""
    if not header:
        return []
    return re.findall(r"<[^<>\s]{1,998}>", header[:20000])


def db_text(value: str | None, limit: int = 10000) -> str | None:
    """Text safe to store in any database (PostgreSQL refuses NUL in text)."""
    if value is None:
        return None
    return value.replace("\x00", "\ufffd")[:limit]


# C0 controls but tab and newline, DEL, C1 (which includes the 8-bit CSI that some terminals
# obey), and the bidirectional overrides and isolates that make a terminal show text in
# another order than it is (Trojan Source, CVE-2021-42574).
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(value: object, one_line: bool = False) -> str:
    """Text from mail made safe for a terminal, a log line or a plain-text mail: every control
    character (ESC and the rest, see `_UNPRINTABLE`) shown escaped as `\\x1b` / `\\u202e`, so staff
    see that something was there and nothing is carried out by their terminal. `one_line` also
    escapes line breaks and tabs: a field in a table or a log line cannot forge another row."""
    text = "" if value is None else str(value)
    if one_line:
        text = text.replace("\r", "\\r").replace("\n", "\\n").replace("\t", " ")
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)
