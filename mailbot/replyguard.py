"""May mailbot answer this message automatically? (RFC 3834)

Decided on the outer message's headers only. The forwarded NDR inside is
automatic by nature; it neither suppresses nor authorises a reply, and no
address found inside it is ever a recipient.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailbot.inbound import Inbound

_SYSTEM_LOCALS = re.compile(
    r"^(?:mailer-daemon|postmaster|noreply|no-reply|no_reply|donotreply|do-not-reply|"
    r"bounce[s]?|mail-daemon|daemon|root|nobody|abuse-reports?|owner-.*|.*-request|.*-owner)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ReplyVerdict:
    allowed: bool
    recipient: str | None
    reason: str
    """Why not (or "human sender"); shown on the ticket."""


def verdict(msg: Inbound, own_addresses: frozenset[str]) -> ReplyVerdict:
    def no(reason: str) -> ReplyVerdict:
        return ReplyVerdict(False, None, reason)

    auto = (msg.get("auto-submitted") or "").strip().lower()
    if auto and not auto.startswith("no"):
        return no(f"Auto-Submitted: {auto[:40]}")
    precedence = (msg.get("precedence") or "").strip().lower()
    if precedence in ("bulk", "junk", "list"):
        return no(f"Precedence: {precedence}")
    if msg.get("list-id") is not None:
        return no("mailing list (List-Id)")
    if msg.get("list-unsubscribe") is not None:
        return no("bulk mail (List-Unsubscribe)")
    suppress = (msg.get("x-auto-response-suppress") or "").lower()
    if any(tok.strip() in ("all", "autoreply", "oof") for tok in suppress.split(",")):
        return no(f"X-Auto-Response-Suppress: {suppress[:40]}")
    if any(msg.get(h) is not None for h in ("x-autoreply", "x-autorespond", "x-auto-reply")):
        return no("marked as an automatic reply")
    return_path = msg.get("return-path")
    if return_path is not None and return_path.strip() in ("<>", ""):
        return no("null return path (<>)")
    if msg.sender is None:
        return no("From is not one plain address")
    recipient = msg.sender
    local = recipient.rpartition("@")[0]
    if _SYSTEM_LOCALS.match(local):
        return no(f"system address {recipient}")
    if recipient.lower() in own_addresses:
        return no("mailbot's own address")
    return ReplyVerdict(True, recipient, "human sender")
