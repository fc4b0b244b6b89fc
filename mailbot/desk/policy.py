"""Policy: what the desk does with an extraction. Rules are data.

The default table encodes the provider's published delisting procedure, and answers what
is not this desk's to answer:

| rule          | matches                                          | action      |
|---------------|--------------------------------------------------|-------------|
| banned_sender | 5.7.511, or "banned sender[IP]" without the code | ticket      |
| self_service  | 5.7.606 - 5.7.649, or "banned sending IP [IP]"   | redirect    |
| not_a_block   | unknown recipient, full mailbox, the sender's    | not_a_block |
|               | own authentication, a rate limit                 |             |
| not_ours      | a known list or provider other than ours         | not_ours    |
| ours_other    | our provider's other blocks (5.7.708, 5.7.750...)| ticket      |
| (none)        | nothing recognisable, or no IP for a block       | needs_info  |

A rule matches a rejection when every criterion it gives holds (codes, kinds, issuers,
ours, phrases); the first rule in order that matches any rejection of the mail decides.
A family inferred from the provider's words (no code in the mail) matches a rule's codes,
and is never written as a code. A desk for another provider replaces the table in the
config (`[[policy.rules]]`) and the issuer table's `ours`; nothing else changes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from mailbot.config import PolicyConfig, RuleConfig
from mailbot.extraction import Extraction, Finding
from mailbot.extraction.codes import code_range, status_key
from mailbot.extraction.findings import Classification, Inferred
from mailbot.store.states import MailKind, TicketState

Action = Literal["ticket", "redirect", "needs_info", "not_ours", "not_a_block"]
NEEDS_IP: frozenset[str] = frozenset({"ticket", "redirect"})
"""Actions about a listed IP: without one they ask for it."""

DEFAULT_RULES: tuple[RuleConfig, ...] = (
    RuleConfig(name="banned_sender", codes=("5.7.511",), action="ticket", sla=True),
    RuleConfig(name="self_service", codes=("5.7.606-5.7.649",), action="redirect"),
    RuleConfig(name="not_a_block", kinds=("recipient_unknown", "mailbox_full", "auth_failure", "rate_limit"),
               action="not_a_block"),
    RuleConfig(name="not_ours", ours=False, action="not_ours"),
    RuleConfig(name="ours_other", ours=True, kinds=("ip_block", "sender_block", "policy", "content"),
               action="ticket", sla=True),
)

# Not delistable: nobody can be banned for sending from these. Documentation
# ranges are here too; the demo and tests allow them with `allow_ranges`.
DEFAULT_NON_DELISTABLE: tuple[str, ...] = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
    "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001:db8::/32",
    "fc00::/7", "fe80::/10", "ff00::/8",
)


STATE_OF: dict[str, TicketState] = {
    "ticket": TicketState.OPEN, "redirect": TicketState.REDIRECTED, "needs_info": TicketState.NEEDS_INFO,
    "not_ours": TicketState.NOT_OURS, "not_a_block": TicketState.NOT_A_BLOCK}
"""The state a new ticket starts in, by the policy's action."""
MAIL_OF: dict[str, MailKind] = {
    "ticket": MailKind.ACK, "redirect": MailKind.REDIRECT, "needs_info": MailKind.NEEDS_INFO,
    "not_ours": MailKind.NOT_OURS, "not_a_block": MailKind.NOT_A_BLOCK}
"""The reply the sender gets, by the policy's action."""
AWAITING = frozenset({TicketState.NEEDS_INFO, TicketState.NOT_OURS, TicketState.NOT_A_BLOCK})
"""Tickets a later forward from their sender can still turn into a request for staff or the portal."""


@dataclass(frozen=True)
class Decision:
    action: Action
    rule: str
    """The rule that matched ("default" when none did)."""
    finding: Finding | None
    """The rejection the decision acted on."""
    ip: str | None
    sla: bool
    missing: tuple[str, ...] = ()
    """What the sender must supply, in words they read (needs_info only)."""

    @property
    def classification(self) -> Classification | None:
        return self.finding.classification if self.finding else None

    @property
    def inferred(self) -> Inferred | None:
        """The family the decision rests on when it was inferred from words, not read as a code."""
        f = self.finding
        return f.inferred if f is not None and not f.status else None


@lru_cache(maxsize=4096)  # a rule's codes against the few codes mail carries: asked per rule per message
def code_matches(codes: tuple[str, ...], status: str) -> bool:
    """Whether `status` (a code, or an inferred family such as "5.7.606-5.7.649") lies within one
    of `codes`. A family that is not a code ("S3150") matches only its own name."""
    mine = code_range(status)
    for code in codes:
        if code.strip() == status:
            return True
        theirs = code_range(code.strip())
        if mine and theirs and theirs[0] <= mine[0] and mine[1] <= theirs[1]:
            return True
    return False


def matches(rule: RuleConfig, finding: Finding) -> bool:
    c = finding.classification
    if rule.codes:
        if finding.status:
            if not code_matches(rule.codes, finding.status):
                return False
        elif not (rule.inferred and finding.inferred and code_matches(rule.codes, finding.inferred.family)):
            return False
    if rule.kinds and (c is None or c.kind not in rule.kinds):
        return False
    if rule.issuers and (c is None or c.issuer not in rule.issuers):
        return False
    # `ours` speaks of known issuers only: an unknown one is neither ours nor someone else's
    if rule.ours is not None and (c is None or c.issuer is None or c.issuer_is_ours != rule.ours):
        return False
    return not rule.phrases or any(p.casefold() in finding.text.casefold() for p in rule.phrases)


class Policy:
    def __init__(self, config: PolicyConfig) -> None:
        self.rules = config.rules if config.rules is not None else DEFAULT_RULES
        ranges = config.non_delistable if config.non_delistable is not None else DEFAULT_NON_DELISTABLE
        self.blocked = [ipaddress.ip_network(r, strict=False) for r in ranges]
        self.allowed = [ipaddress.ip_network(r, strict=False) for r in config.allow_ranges]
        self.portal_url = config.portal_url

    def delistable(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if any(addr in net for net in self.allowed if net.version == addr.version):
            return True
        return not any(addr in net for net in self.blocked if net.version == addr.version)

    def rule_for(self, finding: Finding) -> RuleConfig | None:
        return next((r for r in self.rules if matches(r, finding)), None)

    def decide(self, extraction: Extraction) -> Decision:
        # Act on the first rejection a rule covers (rule order is priority);
        # otherwise on the primary one, so the reply can say what was read.
        chosen: tuple[RuleConfig, Finding] | None = None
        for rule in self.rules:
            hit = next((f for f in extraction.findings if matches(rule, f)), None)
            if hit:
                chosen = (rule, hit)
                break
        if chosen is None:
            finding = extraction.primary
            missing: list[str] = []
            if finding is None or not (finding.status or finding.inferred):
                missing.append("the full rejection code (for example 550 5.7.511)")
            else:
                missing.append(f"a rejection we handle here (the notice says {_full(finding)})")
            if finding is None or not finding.ips:
                missing.append("the IP address named in the rejection line")
            return Decision("needs_info", "default", finding, _first(finding), False, tuple(missing))
        rule, finding = chosen
        delistable = [ip for ip in finding.ips if self.delistable(ip)]
        if rule.action in NEEDS_IP and not finding.ips:
            why = (f"your mail shows it masked as {extraction.redacted[0]}" if extraction.redacted
                   else "the notice we read names none")
            return Decision("needs_info", rule.name, finding, None, False,
                            (f"the IP address named in the rejection line ({why})",))
        if rule.action in NEEDS_IP and not delistable:
            return Decision("needs_info", rule.name, finding, finding.ips[0], False,
                            (f"the public IP address of your sending server ({finding.ips[0]} is a "
                             "private or reserved address that cannot be listed)",))
        ip = delistable[0] if delistable else _first(finding)
        return Decision(rule.action, rule.name, finding, ip, rule.sla)


def _first(finding: Finding | None) -> str | None:
    return finding.ips[0] if finding and finding.ips else None


def _full(finding: Finding) -> str:
    read = " ".join(p for p in (finding.reply_code, finding.status) if p)
    return read or (f"{finding.inferred.family}, from its words" if finding.inferred else "no code")


FAMILIES = ("5.7.511", "5.7.606-649", "other", "none")
"""Every value `code_family` returns: the choices of `mailbot tickets --family`."""


def code_family(status: str | None) -> str:
    """"5.7.511" → "5.7.511"; "5.7.6xx" family for the portal range; "other"/"none"."""
    if not status:
        return "none"
    if status == "5.7.511":
        return status
    key = status_key(status)
    if key and (5, 7, 606) <= key <= (5, 7, 649):
        return "5.7.606-649"
    return "other"
