"""The outer (human) message's headers: who sent it, what it threads to,
and whether it is automatic. Parsed from the header block only, after cheap
caps, so a hostile header cannot make parsing slow: the block by the standard
library's header parser (0.02-0.03 ms a message, where parsing it with
mail-parser took 0.35-0.48 ms, issue #16), the Subject's encoded words by
mail-parser's decoder, as before.

The forwarded NDR inside is never read here: it is automatic by nature and
must neither suppress nor authorise a reply.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser

import mailparser

from mailbot.outgoing import sanitize

MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_COUNT = 500
MAX_HEADER_LINE = 16 * 1024

_HEADERS = BytesHeaderParser()
"""compat32, as mail-parser parses: the same header values, the body left unread."""


class OverCap(Exception):
    """The message exceeds a parsing cap; it is quarantined with this reason."""


@dataclass(frozen=True)
class Inbound:
    message_id: str | None
    """As written (for identity and display); `reply_msgid` is the strictly valid form."""
    reply_msgid: str | None
    subject: str
    from_header: str
    sender: str | None
    """The one address a reply may go to, or None when From is not plainly one address."""
    reply_to: str | None
    in_reply_to: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    headers: dict[str, list[str]] = field(default_factory=dict)
    """Lower-cased header name → raw values, top first."""

    def get(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


def header_block(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n", b"\r\r"):
        i = raw.find(sep)
        if i >= 0:
            return raw[: i + len(sep)]
    return raw


def check_caps(block: bytes) -> None:
    if len(block) > MAX_HEADER_BYTES:
        raise OverCap(f"header block is {len(block)} bytes (cap {MAX_HEADER_BYTES})")
    lines = re.split(rb"\r\n|\n|\r", block)
    count = sum(1 for ln in lines if ln and ln[:1] not in (b" ", b"\t"))
    if count > MAX_HEADER_COUNT:
        raise OverCap(f"{count} header fields (cap {MAX_HEADER_COUNT})")
    field_len = 0
    for ln in lines:
        field_len = field_len + len(ln) if ln[:1] in (b" ", b"\t") else len(ln)
        if field_len > MAX_HEADER_LINE:
            raise OverCap(f"a header field longer than {MAX_HEADER_LINE} bytes")


def content_hash(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def parse(raw: bytes) -> Inbound:
    """Read the outer headers. Raises `OverCap` for a header a person would not write."""
    block = header_block(raw)
    check_caps(block)
    msg = _HEADERS.parsebytes(block)
    headers: dict[str, list[str]] = {}
    for name, value in msg.items():
        headers.setdefault(name.lower(), []).append(str(value))
    raw_mid = _first(headers, "message-id")
    mid = raw_mid.strip() if raw_mid else None
    from_header = _first(headers, "from") or ""
    reply_to = _first(headers, "reply-to")
    return Inbound(
        message_id=sanitize.db_text(mid, 900) if mid else None,
        reply_msgid=sanitize.message_id(mid),
        # mail-parser's reading of the Subject (its charsets and fallbacks; two Subject fields
        # give a list, shown as such): what `mailparser.parse_from_bytes(...).subject` gave
        subject=sanitize.db_text(str(mailparser.get_header(msg, "subject") or ""), 2000) or "",
        from_header=sanitize.db_text(from_header, 1000) or "",
        # Two From fields are two claims of authorship: believe neither (a forger adds one above
        # or below the real one, and different readers pick different ones).
        sender=_lower_domain(sanitize.mailbox_address(from_header)) if len(headers.get("from", [])) == 1 else None,
        reply_to=_lower_domain(sanitize.mailbox_address(reply_to)) if reply_to else None,
        in_reply_to=sanitize.split_msgids(_first(headers, "in-reply-to")),
        references=sanitize.split_msgids(_first(headers, "references")),
        headers=headers,
    )


def _lower_domain(addr: str | None) -> str | None:
    if not addr:
        return None
    local, _, domain = addr.rpartition("@")
    return f"{local}@{domain.lower()}"


def _first(headers: dict[str, list[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None
