"""Expected kind and issuer for corpus rows, derived only where unambiguous (the labels carry neither).

Rows whose labels expect no rejection at all (no code) are left out: there is nothing to classify.
Kind, from the first that applies:
  1. the corpus category: ms_ban_511 and ms_ban_606_649 are IP blocks;
  2. Sisimai's `reason` for the sample (tests/corpus/sisimai.jsonl, its first
     record: an independent bounce parser), through `REASONS` below: only the
     reasons that say what the rejection is (userunknown, mailboxfull, blocked,
     ...), never filtered, expired, onhold, systemerror, undefined and the like;
     where Sisimai's reason spans several of mailbot's kinds, any of them counts;
  unless the labelled status code has a meaning of its own that says otherwise
  (X.1.1 unknown recipient, X.2.2 mailbox full): then the row is ambiguous and
  left out.
Issuer, from the first that applies:
  1. the corpus category ms_ban_* and Microsoft's own codes (5.7.5xx, 5.7.6xx,
     5.7.7xx, 4.7.5xx-6xx): microsoft;
  2. a block list's name in Sisimai's diagnostic text (`LISTS`): that list;
  3. Sisimai's `rhost` (the host that refused), where it gave an SMTP reply and
     the mail itself names it as the refusing host (Remote-MTA, "host X",
     "while talking to X", or in the reply), against `HOSTS`: that provider (the
     Outlook.com consumer hosts only where the code is not Microsoft's own); any
     other host: no issuer expected (None), unless the diagnostic text names
     one of the providers of `HOSTS` (then ambiguous, left out);
  without such a host, or with a name the corpus's authors anonymised
  (example.*, neko, nyaan): left out.
These rules are fixed here, apart from mailbot's issuer table, so that the
bench measures the table rather than repeating it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REASONS: dict[str, frozenset[str]] = {
    # Sisimai's reason -> the kinds it can be in mailbot's terms. Sisimai's "blocked" is any refusal of the
    # client's address or name: a listed IP, a missing reverse DNS (mailbot: auth_failure), a deferral for
    # the IP's reputation (rate_limit). Its "rejected" is a refused envelope sender.
    "userunknown": frozenset({"recipient_unknown"}),
    "hasmoved": frozenset({"recipient_unknown"}),
    "suspend": frozenset({"recipient_unknown"}),
    "mailboxfull": frozenset({"mailbox_full"}),
    "blocked": frozenset({"ip_block", "auth_failure", "rate_limit"}),
    "spamdetected": frozenset({"content"}),
    "virusdetected": frozenset({"content"}),
    "contenterror": frozenset({"content", "policy"}),
    "toomanyconn": frozenset({"rate_limit"}),
    "norelaying": frozenset({"policy"}),
    "rejected": frozenset({"sender_block", "auth_failure"}),
    "securityerror": frozenset({"auth_failure"}),
    "mesgtoobig": frozenset({"policy"}),
    "exceedlimit": frozenset({"policy"}),
}
LISTS = {"spamhaus": "spamhaus", "spamcop": "spamcop", "barracudacentral": "barracuda",
         "barracuda reputation": "barracuda", "cloudmark": "cloudmark", "ipcheck.proofpoint": "proofpoint"}
HOSTS = [  # (suffix of the refusing host, issuer); first match wins
    ("olc.protection.outlook.com", "outlook_consumer"),
    ("hotmail.com", "outlook_consumer"),
    ("mail.protection.outlook.com", "microsoft"),
    ("outlook.com", "microsoft"),
    ("google.com", "gmail"),
    ("googlemail.com", "gmail"),
    ("yahoodns.net", "yahoo"),
    ("aol.com", "yahoo"),
    ("yahoo.com", "yahoo"),
    ("icloud.com", "apple"),
    ("me.com", "apple"),
    ("apple.com", "apple"),
    ("gmx.net", "gmx"),
    ("web.de", "gmx"),
    ("t-online.de", "t-online"),
    ("mimecast.com", "mimecast"),
    ("pphosted.com", "proofpoint"),
    ("barracudanetworks.com", "barracuda"),
]
_PROVIDER_WORDS = re.compile(
    r"\b(?:google|gmail|gsmtp|yahoo|aol|icloud|apple|gmx|web\.de|t-online|outlook|hotmail|microsoft|mimecast|"
    r"proofpoint|pphosted|barracuda)\b"
)
_ANONYMISED = re.compile(r"example|\.(?:test|invalid|localdomain)$|^localhost|neko|nyaan")
_MS_CODE = re.compile(r"^(?:5\.7\.(?:5\d\d|6\d\d|7[0-4]\d|750)|4\.7\.[56]\d\d)$")
_STATUS_MEANING = {"1.1": "recipient_unknown", "2.2": "mailbox_full"}
IP_BLOCK = frozenset({"ip_block"})
UNSET = object()
"""Returned where no expectation can be derived (the row is left out)."""


def load_sisimai(corpus: Path) -> dict[str, dict[str, Any]]:
    """Sisimai's first record per sample file."""
    out: dict[str, dict[str, Any]] = {}
    path = corpus / "sisimai.jsonl"
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            d = json.loads(line)
            if d.get("msgidx", 0) == 0:
                out.setdefault(d["file"], d)
    return out


def _sisimai_for(file: str, sisimai: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    # Sisimai was run on the LF copies: the CRLF and CR twins share their records.
    return sisimai.get(file) or sisimai.get(re.sub(r"^maildir/(?:dos|mac)/", "maildir/bsd/", file))


def expected_kind(file: str, category: str, status: str | None, sisimai: dict[str, dict[str, Any]]) -> object:
    """The kinds the row's rejection may be given (a frozenset), or UNSET."""
    if category in ("ms_ban_511", "ms_ban_606_649"):
        return IP_BLOCK
    rec = _sisimai_for(file, sisimai)
    kinds = REASONS.get(str(rec.get("reason"))) if rec else None
    if kinds is None:
        return UNSET
    meaning = _STATUS_MEANING.get(".".join((status or "").split(".")[1:]))
    if meaning and meaning not in kinds:
        return UNSET
    return kinds


def expected_issuer(file: str, category: str, status: str | None, sisimai: dict[str, dict[str, Any]],
                    raw: bytes) -> object:
    if category in ("ms_ban_511", "ms_ban_606_649") or (status and _MS_CODE.match(status)):
        return "microsoft"
    rec = _sisimai_for(file, sisimai)
    if rec is None:
        return UNSET
    text = str(rec.get("diagnosticcode") or "").lower()
    for word, issuer in LISTS.items():
        if word in text:
            return issuer
    host = str(rec.get("rhost") or "").lower().rstrip(".")
    if not host or re.fullmatch(r"[\d.:a-f]+", host) or _ANONYMISED.search(host) or not rec.get("replycode"):
        return UNSET  # no host, only its address, a name the corpus's authors replaced, or no SMTP reply from it
    mail = raw.decode("latin-1").lower()
    named = re.search(rf"(?:remote-mta:\s*dns;\s*|\bhost\s+|while talking to\s+){re.escape(host)}", mail)
    if not named and host not in text:
        return UNSET  # Sisimai's host is not the one the mail says refused (a reporting MTA, a relay)
    for suffix, issuer in HOSTS:
        if host == suffix or host.endswith("." + suffix):
            return issuer
    if _PROVIDER_WORDS.search(text):
        return UNSET
    return None
