"""The policy table: codes to actions, as data."""

from __future__ import annotations

from mailbot.config import PolicyConfig, RuleConfig
from mailbot.desk.policy import Policy, code_family
from mailbot.extraction import Extraction, Finding

DOCS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")


def ext(*findings: Finding) -> Extraction:
    return Extraction(findings=findings, primary=findings[0] if findings else None)


def f(status: str | None, *ips: str, code: str | None = "550") -> Finding:
    return Finding(reply_code=code, status=status, text=f"{code} {status} x", ips=ips)


policy = Policy(PolicyConfig(allow_ranges=DOCS))


def test_511_opens_a_ticket_with_the_sla_clock() -> None:
    d = policy.decide(ext(f("5.7.511", "203.0.113.45")))
    assert (d.action, d.rule, d.ip, d.sla) == ("ticket", "banned_sender", "203.0.113.45", True)


def test_the_whole_portal_range_redirects_and_its_edges_are_exact() -> None:
    for status in ("5.7.606", "5.7.620", "5.7.649"):
        assert policy.decide(ext(f(status, "198.51.100.1"))).action == "redirect"
    for status in ("5.7.605", "5.7.650", "4.7.606"):
        assert policy.decide(ext(f(status, "198.51.100.1"))).action == "needs_info"


def test_no_code_or_no_ip_asks_for_exactly_what_is_missing() -> None:
    d = policy.decide(ext())
    assert d.action == "needs_info" and len(d.missing) == 2
    d = policy.decide(ext(f("5.7.511")))
    assert d.action == "needs_info" and d.missing == (
        "the IP address named in the rejection line (the notice we read names none)",)


def test_private_and_reserved_ips_are_not_delistable() -> None:
    strict = Policy(PolicyConfig())
    for ip in ("10.1.2.3", "192.168.1.1", "127.0.0.1", "169.254.1.1", "100.64.0.1", "::1", "fe80::1",
               "fd00::1", "203.0.113.45", "2001:db8::25"):
        d = strict.decide(ext(f("5.7.511", ip)))
        assert d.action == "needs_info", ip
        assert "private or reserved" in d.missing[0]
    assert strict.decide(ext(f("5.7.511", "52.101.40.12"))).action == "ticket"
    assert strict.decide(ext(f("5.7.511", "2a01:111:f403::1"))).action == "ticket"


def test_among_several_rejections_the_policy_acts_on_the_one_a_rule_covers() -> None:
    d = policy.decide(ext(f("5.1.1"), f("5.7.511", "203.0.113.9")))
    assert d.action == "ticket" and d.finding is not None and d.finding.status == "5.7.511"


def test_the_table_is_configurable() -> None:
    custom = Policy(PolicyConfig(allow_ranges=DOCS, rules=(
        RuleConfig(name="spamhaus", codes=("5.7.1",), action="ticket", sla=True),)))
    assert custom.decide(ext(f("5.7.1", "192.0.2.7"))).rule == "spamhaus"
    assert custom.decide(ext(f("5.7.511", "192.0.2.7"))).action == "needs_info"


def test_code_families() -> None:
    assert [code_family(s) for s in ("5.7.511", "5.7.606", "5.7.649", "5.1.1", None)] == [
        "5.7.511", "5.7.606-649", "5.7.606-649", "other", "none"]
