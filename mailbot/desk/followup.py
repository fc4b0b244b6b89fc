"""What a sender's follow-up says, when it is only a "thank you".

The rule (documented in the README): a sender's follow-up on an answered
ticket reopens it with a fresh clock, except a short thank-you that
carries no new rejection; such a message is recorded on the ticket and
leaves it answered, so staff can close it without it coming back.
"""

from __future__ import annotations

import re
from email import message_from_bytes
from email.message import Message

_THANKS = re.compile(r"\b(thanks?|thank\s+you|thx|many thanks|danke|merci|gracias|grazie|obrigad[oa]|cheers)\b",
                     re.IGNORECASE)
_QUOTE_START = re.compile(
    r"^(?:>|-{2,}\s*(?:Original Message|Forwarded message)|On .{0,200} wrote:|Am .{0,200} schrieb|From:\s|Von:\s)",
    re.IGNORECASE)
MAX_THANKS_CHARS = 300


def _first_text(msg: Message) -> str:
    for part in msg.walk():
        if part.get_content_type() == "text/plain" and not part.get_filename():
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                return payload.decode(part.get_content_charset() or "utf-8", "replace")
    return ""


def own_words(raw: bytes) -> str:
    """The text the sender wrote, without the quoted thread below it."""
    try:
        text = _first_text(message_from_bytes(raw[:1_000_000]))
    except Exception:  # a follow-up we cannot read is simply not a thank-you
        return ""
    lines = []
    for line in text.splitlines():
        if _QUOTE_START.match(line.strip()):
            break
        lines.append(line)
    return "\n".join(lines).strip()


def is_thanks(raw: bytes) -> bool:
    words = own_words(raw)
    return 0 < len(words) <= MAX_THANKS_CHARS and bool(_THANKS.search(words))
