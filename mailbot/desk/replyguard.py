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

from mailbot.config import DeskConfig, RepliesConfig
from mailbot.identity import aligned, domain_of, person
from mailbot.source.inbound import Inbound

_SYSTEM_LOCALS = re.compile(
    r"^(?:mailer-daemon|postmaster|noreply|no-reply|no_reply|donotreply|do-not-reply|do_not_reply|"
    r"bounces?|bounces?[-=._].*|mail-daemon|maildaemon|daemon|root|nobody|abuse-reports?|"
    r"owner-.*|.*-request|.*-owner|.*-bounces?|"
    # Exchange's system mailbox: MicrosoftExchange followed by a 32-hex-digit GUID
    r"microsoftexchange[0-9a-f]{32})$",
    re.IGNORECASE,
)
_LIST_HEADERS = ("List-Id", "List-Unsubscribe", "List-Post", "List-Help", "List-Subscribe", "List-Owner",
                 "List-Archive", "Mailing-List", "X-Mailing-List")
_PRECEDENCE = ("bulk", "junk", "list", "auto_reply")
_REPORT_HEADERS = ("Feedback-Type", "X-ARF", "Original-Recipient", "Reporting-MTA")
"""Header fields that only machine-made reports (ARF, DSN, MDN) carry at the top."""


def automatic(msg: Inbound) -> str | None:
    """Why the outer message is automatic mail that must never be answered (RFC 3834 and
    common practice), or None for a message a person sent. Every instance of a field counts:
    a second `Auto-Submitted: auto-replied` below an `Auto-Submitted: no` is still one."""
    for value in msg.all("auto-submitted"):
        token = value.split(";", 1)[0].strip().lower()
        if token != "no":
            return f"Auto-Submitted: {token[:40] or '(empty)'}"
    for value in msg.all("precedence"):
        if value.strip().lower() in _PRECEDENCE:
            return f"Precedence: {value.strip().lower()}"
    for name in _LIST_HEADERS:
        if msg.get(name) is not None:
            return f"mailing list or bulk mail ({name})"
    content_type = (msg.get("content-type") or "").strip().lower()
    if content_type.startswith("multipart/report"):
        return "a delivery, feedback or read report (multipart/report)"
    for name in _REPORT_HEADERS:
        if msg.get(name) is not None:
            return f"a machine-made report ({name})"
    for value in msg.all("x-auto-response-suppress"):
        if any(tok.strip().lower() in ("all", "autoreply", "oof") for tok in value.split(",")):
            return f"X-Auto-Response-Suppress: {value.strip()[:40]}"
    if any(msg.get(h) is not None for h in ("x-autoreply", "x-autorespond", "x-auto-reply")):
        return "marked as an automatic reply"
    for value in msg.all("return-path"):
        # `<>`, `< >`, `<(comment)>`, `""`: any spelling of the null reverse-path
        bare = re.sub(r"\([^()]*\)|[\s\"]", "", value)
        if bare in ("<>", ""):
            return "null return path (<>)"
    return None


def system_address(address: str) -> bool:
    """Mail systems' own addresses (bounces, lists, Exchange): never a person, never answered."""
    local = address.rpartition("@")[0]
    return bool(_SYSTEM_LOCALS.match(local) or _SYSTEM_LOCALS.match(local.split("+", 1)[0]))


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

    why = automatic(msg)
    if why is not None:
        return no(why)
    if msg.sender is None:
        return no("From is not one plain address")
    recipient = msg.sender
    if system_address(recipient):
        return no(f"system address {recipient}")
    if person(recipient) in {person(a) for a in own_addresses}:
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


def authentication(msg: Inbound, replies: RepliesConfig) -> str | None:
    """None when the sender may get mail; otherwise why not (the backscatter guard).

    Without trusted Authentication-Results configured there is nothing to check, and every
    plain sender may get an automatic reply (capped); staff mail is another matter: see
    `verified_staff`."""
    if not replies.authserv_ids and not replies.trust_topmost:
        return None  # the operator has not said which server's verdict counts
    return _unverified(msg, replies)


def _unverified(msg: Inbound, replies: RepliesConfig) -> str | None:
    """None when the trusted results vouch for the one From address; otherwise why not."""
    if msg.sender is None:
        return "From is not exactly one plain address"
    ar = trusted_results(msg, replies)
    if ar is None:
        return "no Authentication-Results from a trusted server"
    server = ar.authserv_id or "topmost Authentication-Results"
    from_domain = domain_of(msg.sender)
    # A DMARC failure of any kind is final. A pass speaks for the domain in its header.from: it
    # counts only for exactly this From's domain (a pass for evil.example proves nothing about a
    # From at example.org, and a pass that names no domain proves nothing at all).
    dmarc = [r for r in ar.results if r.method == "dmarc"]
    for r in dmarc:
        if r.result in ("fail", "quarantine", "reject"):
            return f"DMARC {r.result} ({server})"
    if any(r.result == "pass" and domain_of(r.props.get("header.from")) == from_domain for r in dmarc):
        return None
    for r in ar.results:
        if r.result != "pass":
            continue
        if r.method == "spf" and aligned(domain_of(r.props.get("smtp.mailfrom") or r.props.get("smtp.helo")),
                                         from_domain):
            return None
        if r.method == "dkim" and aligned(domain_of(r.props.get("header.d") or r.props.get("header.i")),
                                          from_domain):
            return None
    return f"no DMARC pass for {from_domain} and no SPF or DKIM pass aligned with it ({server})"


def verified_staff(msg: Inbound, desk: DeskConfig, replies: RepliesConfig) -> bool:
    """Whether this message is from staff, proven: a staff address in the one From, vouched
    for by the trusted Authentication-Results. Fail closed: with no trusted results
    configured, no mail ever counts as staff (a From line is anyone's to write)."""
    if msg.sender is None or not desk.is_staff(msg.sender):
        return False
    if not replies.authserv_ids and not replies.trust_topmost:
        return False
    return _unverified(msg, replies) is None
