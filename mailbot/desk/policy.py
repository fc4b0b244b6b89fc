"""Policy: what the desk does with an extraction. Rules are data.

The default table encodes the provider's published delisting procedure:

| codes              | action     | meaning                                         |
|--------------------|------------|-------------------------------------------------|
| 5.7.511            | ticket     | banned sender; humans answer within the SLA     |
| 5.7.606 – 5.7.649  | redirect   | self-service portal exists; send instructions   |
| anything else      | needs_info | ask for the full NDR, saying what was missing   |

A desk for another provider replaces the table in the config
(`[[policy.rules]]`); nothing else changes.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from mailbot.config import PolicyConfig, RuleConfig
from mailbot.extraction import Extraction, Finding

Action = Literal["ticket", "redirect", "needs_info"]

DEFAULT_RULES: tuple[RuleConfig, ...] = (
    RuleConfig(name="banned_sender", codes=("5.7.511",), action="ticket", sla=True),
    RuleConfig(name="self_service", codes=("5.7.606-5.7.649",), action="redirect"),
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


def _status_key(status: str) -> tuple[int, int, int] | None:
    parts = status.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def matches(rule: RuleConfig, status: str | None) -> bool:
    if not status:
        return False
    key = _status_key(status)
    for code in rule.codes:
        if "-" in code:
            lo, hi = (_status_key(c.strip()) for c in code.split("-", 1))
            if key and lo and hi and lo <= key <= hi:
                return True
        elif code.strip() == status:
            return True
    return False


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
        return next((r for r in self.rules if matches(r, finding.status)), None)

    def decide(self, extraction: Extraction) -> Decision:
        # Act on the first rejection a rule covers (rule order is priority);
        # otherwise on the primary one, so the reply can say what was read.
        chosen: tuple[RuleConfig, Finding] | None = None
        for rule in self.rules:
            hit = next((f for f in extraction.findings if matches(rule, f.status)), None)
            if hit:
                chosen = (rule, hit)
                break
        if chosen is None:
            finding = extraction.primary
            missing: list[str] = []
            if finding is None or not finding.status:
                missing.append("the full rejection code (for example 550 5.7.511)")
            else:
                missing.append(f"a rejection we handle here (the notice says {_full(finding)})")
            if finding is None or not finding.ips:
                missing.append("the IP address named in the rejection line")
            return Decision("needs_info", "default", finding, _first(finding), False, tuple(missing))
        rule, finding = chosen
        delistable = [ip for ip in finding.ips if self.delistable(ip)]
        if rule.action != "needs_info" and not finding.ips:
            return Decision("needs_info", rule.name, finding, None, False,
                            ("the IP address named in the rejection line (the notice we read names none)",))
        if rule.action != "needs_info" and not delistable:
            return Decision("needs_info", rule.name, finding, finding.ips[0], False,
                            (f"the public IP address of your sending server ({finding.ips[0]} is a "
                             "private or reserved address that cannot be listed)",))
        ip = delistable[0] if delistable else _first(finding)
        return Decision(rule.action, rule.name, finding, ip, rule.sla)


def _first(finding: Finding | None) -> str | None:
    return finding.ips[0] if finding and finding.ips else None


def _full(finding: Finding) -> str:
    return " ".join(p for p in (finding.reply_code, finding.status) if p)


FAMILIES = ("5.7.511", "5.7.606-649", "other", "none")
"""Every value `code_family` returns: the choices of `mailbot tickets --family`."""


def code_family(status: str | None) -> str:
    """"5.7.511" → "5.7.511"; "5.7.6xx" family for the portal range; "other"/"none"."""
    if not status:
        return "none"
    if status == "5.7.511":
        return status
    key = _status_key(status)
    if key and (5, 7, 606) <= key <= (5, 7, 649):
        return "5.7.606-649"
    return "other"
