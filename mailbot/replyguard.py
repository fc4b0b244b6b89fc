"""May mailbot answer this message automatically? (RFC 3834, and no backscatter)

Decided on the outer message's headers only. The forwarded NDR inside is
automatic by nature; it neither suppresses nor authorises a reply, and no
address found inside it is ever a recipient.

Pure: no database, no network. `verdict()` judges the message; `capped()`
applies the daily caps and the circuit breaker to counts of recent
automatic replies that the caller looked up (`outbox.recent_replies`).

Backscatter guard (RFC 8601): where the mailbox server stamps
`Authentication-Results`, only the topmost such header from a trusted
authserv-id counts (anyone can write one further down, or one naming
another server), and only a sender that passes DMARC, or SPF or DKIM
aligned with the From domain, gets mail. Others still get a ticket,
marked unverified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from mailbot.config import RepliesConfig
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
    verified: bool = True
    """False when a trusted Authentication-Results says the sender did not pass."""


@dataclass(frozen=True)
class RecentReplies:
    """Automatic replies queued lately, as counted by the caller."""

    to_recipient: int = 0
    """To this recipient in the last 24 hours."""
    to_domain: int = 0
    """To this recipient's domain in the last 24 hours."""
    last_hour: int = 0
    """To anyone in the last hour."""


def verdict(msg: Inbound, own_addresses: frozenset[str], replies: RepliesConfig | None = None) -> ReplyVerdict:
    replies = replies or RepliesConfig()

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
    unverified = authentication(msg, replies)
    if unverified is not None:
        return ReplyVerdict(False, None, f"sender not verified: {unverified}", verified=False)
    return ReplyVerdict(True, recipient, "human sender")


def capped(v: ReplyVerdict, recent: RecentReplies, replies: RepliesConfig) -> ReplyVerdict:
    """The verdict after the daily caps and the circuit breaker."""
    if not v.allowed or v.recipient is None:
        return v
    domain = v.recipient.rpartition("@")[2]
    if recent.last_hour >= replies.breaker_per_hour:
        why = (f"circuit breaker: {recent.last_hour} automatic replies in the last hour "
               f"(replies.breaker_per_hour = {replies.breaker_per_hour})")
    elif recent.to_recipient >= replies.per_recipient_daily:
        why = (f"{recent.to_recipient} automatic replies to {v.recipient} in 24 hours "
               f"(replies.per_recipient_daily = {replies.per_recipient_daily})")
    elif recent.to_domain >= replies.per_domain_daily:
        why = (f"{recent.to_domain} automatic replies to {domain} in 24 hours "
               f"(replies.per_domain_daily = {replies.per_domain_daily})")
    else:
        return v
    return replace(v, allowed=False, recipient=None, reason=why)


# -- Authentication-Results (RFC 8601) -------------------------------------------


@dataclass(frozen=True)
class AuthResult:
    method: str
    result: str
    props: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthResults:
    authserv_id: str | None
    """None for Exchange Online's header, which starts with the first result."""
    results: list[AuthResult]

    def first(self, method: str) -> AuthResult | None:
        return next((r for r in self.results if r.method == method), None)


_RESULT = re.compile(r"^([A-Za-z0-9_.-]+)(?:/\d+)?\s*=\s*([A-Za-z0-9_-]+)(.*)$", re.DOTALL)
_PROP = re.compile(r"([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)\s*=\s*(\"(?:[^\"\\]|\\.)*\"|[^\s;]+)")


def _strip_comments(value: str) -> str:
    """The header without (comments), which may nest; quoted strings kept as they are."""
    out: list[str] = []
    depth, quoted, i = 0, False, 0
    while i < len(value):
        c = value[i]
        if c == "\\" and (quoted or depth):
            if not depth:
                out.append(value[i:i + 2])
            i += 2
            continue
        if quoted:
            out.append(c)
            quoted = c != '"'
        elif c == '"' and not depth:
            quoted = True
            out.append(c)
        elif c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif not depth:
            out.append(c)
        i += 1
    return "".join(out)


def parse_auth_results(value: str) -> AuthResults | None:
    """One Authentication-Results header, or None when it cannot be read."""
    text = _strip_comments(re.sub(r"\s+", " ", value[:8000])).strip()
    clauses = [c.strip() for c in text.split(";")]
    if not clauses or not clauses[0]:
        return None
    head = clauses[0]
    authserv_id: str | None
    if _RESULT.match(head):  # no authserv-id (Exchange Online)
        authserv_id, rest = None, clauses
    else:
        authserv_id, rest = head.split(" ", 1)[0].lower(), clauses[1:]
    results = []
    for clause in rest:
        m = _RESULT.match(clause)
        if not m:
            continue  # "none", or something we do not read
        props = {k.lower(): v.strip('"').lower() for k, v in _PROP.findall(m.group(3))}
        results.append(AuthResult(m.group(1).lower(), m.group(2).lower(), props))
    return AuthResults(authserv_id, results)


def trusted_results(msg: Inbound, replies: RepliesConfig) -> AuthResults | None:
    """The topmost Authentication-Results from a trusted server, or None when none is trusted."""
    trusted = {i.lower() for i in replies.authserv_ids}
    for value in msg.all("authentication-results"):
        parsed = parse_auth_results(value)
        if replies.trust_topmost:
            return parsed
        if parsed is not None and parsed.authserv_id in trusted:
            return parsed
    return None


def _aligned(domain: str | None, from_domain: str) -> bool:
    """Relaxed alignment, approximated without the public suffix list: same domain or one inside the other."""
    if not domain:
        return False
    domain = domain.rpartition("@")[2].lower().rstrip(".")
    return domain == from_domain or domain.endswith("." + from_domain) or from_domain.endswith("." + domain)


def authentication(msg: Inbound, replies: RepliesConfig) -> str | None:
    """None when the sender may get mail; otherwise why not."""
    if not replies.authserv_ids and not replies.trust_topmost:
        return None  # the operator has not said which server's verdict counts
    ar = trusted_results(msg, replies)
    if ar is None:
        return "no Authentication-Results from a trusted server"
    from_domain = (msg.sender or "").rpartition("@")[2].lower()
    dmarc = ar.first("dmarc")
    if dmarc is not None and dmarc.result == "pass":
        return None
    if dmarc is not None and dmarc.result in ("fail", "quarantine", "reject"):
        return f"DMARC {dmarc.result} ({ar.authserv_id or 'topmost Authentication-Results'})"
    for r in ar.results:
        if r.result != "pass":
            continue
        if r.method == "spf" and _aligned(r.props.get("smtp.mailfrom") or r.props.get("smtp.helo"), from_domain):
            return None
        if r.method == "dkim" and _aligned(r.props.get("header.d") or r.props.get("header.i"), from_domain):
            return None
    return f"no DMARC pass and no SPF or DKIM pass aligned with {from_domain} ({ar.authserv_id or 'topmost'})"
