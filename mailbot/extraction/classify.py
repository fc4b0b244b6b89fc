"""Classification: what a rejection is (`kind`) and whose block it is (`issuer`), with the evidence.

Contract: `classify(finding, table)` returns the finding with its
`classification` set, and with `inferred` set where no enhanced status code
was read and an issuer's fragment phrase names a family (the code itself is
never invented: `status` and `reply_code` stay as read). Only the
rejection's own words are read: the finding's text (at most
`MAX_CLASSIFY_CHARS` of it) and the host that refused (`Finding.remote`),
never the sender's note or the forwarder's headers.

The issuer is the one whose patterns (issuers.toml: codes, tags, marks, hosts)
the rejection matches with the highest weight; a public block list or a
filter wins over the mailbox provider that only cites it, which becomes
`via`. The kind is decided by the first of: the issuer's own codes, the
fragment's kind, the issuer's own phrases, the unambiguous generic codes
(X.1.1 unknown recipient, X.2.2 mailbox full, X.7.23-X.7.26 authentication,
...), the generic phrases below (the earliest in the text), the issuer's
default kind, then the weakest evidence: the code's subject (5.1.x the
address), a refused recipient, a bare refusal, the code's class (X.7.x
policy, X.6.x content); else `other`. A resolver refusal overrides the words
around it, and a block list or reputation service named in the text decides
before the generic codes and words. Every step is a bounded number of linear
searches over bounded text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from mailbot.extraction.codes import Code, status_key, word_regex
from mailbot.extraction.findings import Classification, Finding, Inferred, Kind
from mailbot.extraction.issuers import (
    CODE,
    HOST,
    CompiledIssuer,
    Fragment,
    IssuerTable,
)

MAX_CLASSIFY_CHARS = 2000
"""Characters of a rejection's text read; the longest real ones (Gmail's, Microsoft's) are under 800."""
MAX_CLASSIFIED = 50
"""Findings of one mail classified; a hostile report repeats thousands, the rest are left unclassified."""

_RANK = {"blocklist": 0, "filter": 1, "provider": 2}

# Multi-line replies joined into one: "... this message is 550-5.7.1 likely unsolicited mail ...".
_CONTINUATION = re.compile(r"(?<=\s)(?:<<<\s*)?[45]\d\d(?:-|\s(?=[45]\.\d))(?:[45]\.\d{1,3}\.\d{1,3}\s)?")

_DECISIVE: dict[tuple[int, int], Kind] = {
    (1, 1): "recipient_unknown", (1, 2): "recipient_unknown", (1, 3): "recipient_unknown",
    (1, 6): "recipient_unknown", (1, 10): "recipient_unknown", (2, 1): "recipient_unknown",
    (7, 13): "recipient_unknown",
    (2, 2): "mailbox_full",
    (7, 8): "auth_failure", (7, 20): "auth_failure", (7, 21): "auth_failure", (7, 22): "auth_failure",
    (7, 23): "auth_failure", (7, 24): "auth_failure", (7, 25): "auth_failure", (7, 26): "auth_failure",
    (7, 27): "auth_failure", (7, 57): "auth_failure",
    (7, 28): "rate_limit",
    (2, 3): "policy", (3, 4): "policy", (5, 3): "policy",
}
"""(subject, detail) of RFC 3463 codes whose meaning does not depend on the words (RFC 3463, RFC 7372,
and Gmail's 4.7.28 for its rate limit)."""

# Generic words: the earliest in the text decides (a tie: the group listed first). Wording from public bounces:
# Postfix/Exim/Sendmail defaults, Microsoft's, Google's, Yahoo's and the block lists' published texts.
_RESOLVER = ("open resolver", "public resolver", "returnc/pub", "excessive number of queries")
"""A DNS block list refusing the receiver's own resolver: the receiving side's set-up is wrong and nothing
is known about the sender. Overrides the words around it ("blocked using zen.spamhaus.org")."""
_PHRASES: tuple[tuple[Kind, tuple[str, ...]], ...] = (
    ("auth_failure", ("SPF", "DKIM", "DMARC", "unauthenticated", "not authenticated", "authentication",
                      "PTR record", "reverse DNS", "reverse hostname", "rDNS", "cannot find your hostname",
                      "does not resolve to")),
    ("rate_limit", ("rate limit", "rate limited", "ratelimit", "rate-limited", "too many",
                    "temporarily deferred", "deferred due to", "unexpected volume", "unusual rate",
                    "exceeded the rate", "exceeded permitted limits", "sending quota", "submission quota",
                    "daily limit", "message rate", "connection rate", "try again later", "server busy",
                    "relay quota", "sending limit", "sending rate", "throttled", "throttling",
                    # A deferral to see whether the sender retries: nothing to delist either.
                    "greylisted", "greylisting", "graylisted")),
    ("ip_block", ("blocked using", "listed in", "listed on", "listed at", "listed by", "blacklist",
                  "blocklist", "block list", "black list", "block-list", "blocklisted", "blacklisted",
                  "block listed", "RBL", "DNSBL", "reputation", "banned sending IP", "banned sender",
                  "client host blocked", "dynamic IP", "dialup", "dial-up", "open relay", "open proxy",
                  "residential", "your IP", "from your IP", "weren't sent")),
    ("sender_block", ("sender address rejected", "sender rejected", "sender blocked", "blocked sender",
                      "sender is blocked", "sender denied", "sender domain", "envelope blocked",
                      "bad outbound sender", "domain is blocked", "domain has been blocked")),
    ("mailbox_full", ("mailbox full", "mailbox is full", "over quota", "quota exceeded", "exceeded storage",
                      "insufficient storage", "mailbox size", "out of storage", "storage allocation",
                      "quota", "disk full", "full mailbox")),
    ("recipient_unknown", ("user unknown", "unknown user", "no such user", "no such recipient",
                           "unknown recipient", "recipient unknown", "does not exist", "doesn't exist",
                           "not exist", "invalid recipient", "recipient not found", "address not found",
                           "no mailbox", "mailbox not found", "mailbox unavailable", "unrouteable address",
                           "account disabled", "account has been disabled", "is disabled", "user not found",
                           "RecipientNotFound", "unknown address", "no longer",
                           "not a valid", "invalid mailbox", "undeliverable address")),
    ("content", ("spam", "unsolicited", "content", "virus", "malware", "phishing", "attachment",
                 "suspicious", "junk", "message rejected as", "bulk mail")),
    ("policy", ("policy", "not permitted", "prohibited", "relay access denied", "relaying denied",
                "relay not permitted", "message size", "too large", "size limit")),
)
_WEAK_POLICY = ("access denied", "not allowed", "not authorized", "exceeds", "denied", "rejected", "refused",
                "blocked")
"""Words of a refusal that say no more than that, read after the issuer's default kind (Postfix's "Client
host rejected:", "Recipient address rejected:" say at which step, not why)."""
_CODE_CLASS: dict[int, Kind] = {7: "policy", 6: "content"}
"""RFC 3463 subjects that still say something when nothing else did: X.7.x security or policy, X.6.x the
message's content or media."""


def _words(words: Sequence[str]) -> re.Pattern[str]:
    return re.compile("|".join(word_regex(w) for w in words), re.I)


# One alternation, a group per kind: its leftmost match is the earliest words, a tie goes to the group first.
# Written in lower case and run over the lower-cased text: far faster than ignoring case.
_PHRASE_SOURCE = "|".join(f"(?P<g{n}>{_words([w.lower() for w in ws]).pattern})" for n, (_, ws) in enumerate(_PHRASES))
_PHRASE_REGEX = re.compile(_PHRASE_SOURCE)
_PHRASE_REGEX_ANY_CASE = re.compile(_PHRASE_SOURCE, re.I)
_PHRASE_KIND: dict[str, Kind] = {f"g{n}": kind for n, (kind, _) in enumerate(_PHRASES)}
_WEAK_REGEX = _words(_WEAK_POLICY)
_RECIPIENT_REJECTED = _words(["recipient address rejected", "recipient rejected", "invalid address"])
"""A refusal of the recipient that says no more: most often an address the server does not have."""
_OVERRIDE = _words(_RESOLVER)


def classify(finding: Finding, table: IssuerTable) -> Finding:
    text = _prepared(finding.text)
    lowered = text.lower()
    remote = (finding.remote or "").lower()[:300]
    compiled = table.compiled
    candidates = table.candidates(lowered) | table.candidates(remote)
    key = status_key(finding.status)
    scores = [_score(c, text, n in candidates, key, finding) for n, c in enumerate(compiled)]
    chosen, via = _choose(compiled, scores)
    match = _fragment(finding, text, table)
    inferred = match[0] if match else None
    issuers = [(compiled[n], scores[n][2]) for n in (chosen, via) if n is not None]
    kind, kind_evidence = _kind(finding, text, lowered, issuers, match[1] if match else None, inferred)
    issuer = compiled[chosen].issuer if chosen is not None else None
    classification = Classification(
        kind=kind,
        kind_evidence=kind_evidence,
        issuer=issuer.name if issuer else None,
        issuer_is_ours=bool(issuer and issuer.name == table.ours),
        issuer_evidence=tuple(scores[chosen][1]) if chosen is not None else (),
        issuer_label=issuer.label if issuer else None,
        issuer_category=issuer.category if issuer else None,
        removal=issuer.removal if issuer else None,
        via=compiled[via].issuer.name if via is not None else None,
    )
    return replace(finding, classification=classification, inferred=inferred)


def classify_all(findings: Sequence[Finding], table: IssuerTable) -> list[Finding]:
    """Each of the first `MAX_CLASSIFIED` findings classified; the rest as they are."""
    return [classify(f, table) if n < MAX_CLASSIFIED else f for n, f in enumerate(findings)]


def _prepared(text: str) -> str:
    text = " ".join(text[:MAX_CLASSIFY_CHARS].split())
    return _CONTINUATION.sub("", text)


Score = tuple[int, list[str], bool]
"""An issuer's weight for one rejection, its evidence, and whether it is named by more than a host name."""


def _score(c: CompiledIssuer, text: str, candidate: bool, key: Code | None, finding: Finding) -> Score:
    weight = 0
    evidence: list[str] = []
    if key is not None and c.issuer.has_key(key):
        weight += CODE
        evidence.append(f"code {finding.status}")
    if not candidate:
        # Most issuers are not named in most rejections (IssuerTable.candidates): no pattern is run.
        return weight, evidence, weight > 0
    if c.text_regex is not None:
        seen: set[str] = set()
        for m in c.text_regex.finditer(text):
            group = m.lastgroup or ""
            if group in seen:
                continue
            seen.add(group)
            weight += c.groups[group].weight
            evidence.append(f'"{shown(text, m)}"')
    named = weight > 0
    if c.host_regex is not None:
        if _host_in(c.host_regex, finding.remote or "") is not None:
            weight += HOST
            evidence.append(f"host {finding.remote}")
        elif (h := _host_in(c.host_regex, text)) is not None:
            weight += HOST
            evidence.append(f'"{h}"')
    return weight, evidence, named


def _host_in(rx: re.Pattern[str], text: str) -> str | None:
    """The first host name `rx` matches that is not the domain of an e-mail address, whole."""
    for m in rx.finditer(text):
        # Back to the start of the host name: a bounded look, names are at most 253 characters.
        lo = max(0, m.start() - 253)
        k = m.start()
        while k > lo and (text[k - 1].isalnum() or text[k - 1] in ".-_"):
            k -= 1
        if k > 0 and text[k - 1] == "@":
            continue
        return text[k : m.end()]
    return None


def shown(text: str, m: re.Match[str]) -> str:
    """The matched words as the mail has them, carried on to the end of the code or name they start
    ("AS(1430" -> "AS(1430)", "SC-###" -> "SC-001", "zen" -> "zen.spamhaus.org")."""
    end = m.end()
    stop = min(len(text), end + 24)
    while end < stop and (text[end].isalnum() or text[end] in "-_" or (
            text[end] == "." and end + 1 < len(text) and text[end + 1].isalnum())):
        end += 1
    words = text[m.start() : end]
    opened = words.count("(") + words.count("[") > words.count(")") + words.count("]")
    if opened and end < len(text) and text[end] in ")]":
        words += text[end]
    return words


def _choose(compiled: Sequence[CompiledIssuer], scores: Sequence[Score]) -> tuple[int | None, int | None]:
    """Indexes of the issuer and of the one it was cited through (of another category), if any."""
    ranked = sorted(
        (n for n in range(len(compiled)) if scores[n][0] > 0),
        key=lambda n: (_RANK[compiled[n].issuer.category], -scores[n][0], n),
    )
    if not ranked:
        return None, None
    category = compiled[ranked[0]].issuer.category
    via = next((n for n in ranked[1:] if compiled[n].issuer.category != category), None)
    return ranked[0], via


def _fragment(finding: Finding, text: str, table: IssuerTable) -> tuple[Inferred, Fragment] | None:
    """The family an issuer's words name, where no enhanced status code was read."""
    if finding.status or table.fragment_regex is None:
        return None
    m = table.fragment_regex.search(text)
    if m is None or m.lastgroup is None:
        return None
    issuer, fragment = table.fragment_of(m.lastgroup)
    words = shown(text, m)
    family = fragment.family or words.strip("()[]").upper()
    return Inferred(family=family, evidence=words, issuer=issuer.name), fragment


def _kind(
    finding: Finding,
    text: str,
    lowered: str,
    issuers: Sequence[tuple[CompiledIssuer, bool]],
    fragment: Fragment | None,
    inferred: Inferred | None,
) -> tuple[Kind, tuple[str, ...]]:
    status = finding.status
    key = status_key(status)
    for c, _ in issuers:
        kind = c.issuer.kind_for(status) if status else None
        if kind:
            return kind, (f"code {status} ({c.issuer.name})",)
    if fragment is not None and fragment.kind and inferred is not None:
        return fragment.kind, (f'family {inferred.family} inferred from "{inferred.evidence}"',)
    if m := _OVERRIDE.search(text):
        return "other", (f'"{m.group(0)}"',)
    for c, _ in issuers:
        if c.phrase_kind_regex is not None and c.may_kind(lowered) and (m := c.phrase_kind_regex.search(text)) \
                and m.lastgroup:
            return c.phrase_kinds[m.lastgroup], (f'"{shown(text, m)}" ({c.issuer.name})',)
    for c, named in issuers:
        # A block list or reputation service named in the rejection is why it was refused, whatever
        # generic code and words came with it ("blocked for spamming issues ... csi.cloudmark.com").
        if named and c.issuer.category != "provider" and c.issuer.default_kind:
            return c.issuer.default_kind, (f"named {c.issuer.name}",)
    if key and (kind := _decisive(key)):
        return kind, (f"code {status}",)
    # (A few characters change length in lower case, "İ": then the slower search keeps the offsets true.)
    m = _PHRASE_REGEX.search(lowered) if len(lowered) == len(text) else _PHRASE_REGEX_ANY_CASE.search(text)
    if m and m.lastgroup:
        # The words the rejection starts with say what it is; what follows is often advice ("set up SPF").
        return _PHRASE_KIND[m.lastgroup], (f'"{text[m.start() : m.end()]}"',)
    for c, _ in issuers:
        if c.issuer.default_kind:
            return c.issuer.default_kind, (f"{c.issuer.name}'s rejections",)
    if key and key[0] == 5 and key[1] == 1:
        return "recipient_unknown", (f"code {status}",)  # RFC 3463: X.1.x, the address
    if m := _RECIPIENT_REJECTED.search(text):
        return "recipient_unknown", (f'"{m.group(0)}"',)
    if m := _WEAK_REGEX.search(text):
        return "policy", (f'"{m.group(0)}"',)
    if key and key[1] in _CODE_CLASS:
        return _CODE_CLASS[key[1]], (f"code {status}",)
    return "other", ((f"code {status}",) if status else ())


def _decisive(key: tuple[int, int, int]) -> Kind | None:
    kind = _DECISIVE.get((key[1], key[2]))
    # A temporary X.1.x or X.2.1 is a server's trouble, not an address that does not exist.
    return None if kind == "recipient_unknown" and key[0] == 4 else kind
