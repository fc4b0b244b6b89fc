"""What extraction reports: values, never exceptions.

A `Finding` is one rejection read from a forwarded NDR: the SMTP reply code,
the enhanced status code (RFC 3463), the human text of the line, the IPs it
names, and where in the mail it was read (the evidence staff see); and what
the rejection is and whose (`Classification`), and what was inferred rather
than read (`Inferred`: a code family named by the provider's words alone).
An `Extraction` is everything read from one message; `unreadable` says why
nothing could be read, as a value a caller can store and show.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal[
    "ip_block", "sender_block", "content", "rate_limit", "recipient_unknown", "mailbox_full", "auth_failure",
    "policy", "other",
]
KINDS: tuple[Kind, ...] = (
    "ip_block", "sender_block", "content", "rate_limit", "recipient_unknown", "mailbox_full", "auth_failure",
    "policy", "other",
)
"""What a rejection is: a listed IP, a blocked sender (address, domain or tenant), the message's content,
a rate limit, an unknown recipient, a full mailbox, the sender's own authentication (SPF, DKIM, DMARC,
reverse DNS), the receiver's policy, or something else."""

IssuerCategory = Literal["provider", "blocklist", "filter"]


@dataclass(frozen=True)
class Classification:
    """What a rejection is and whose block it is, each with the words or codes that decided it."""

    kind: Kind
    kind_evidence: tuple[str, ...]
    """E.g. ('code 5.1.1',) or ('"blocked using"',): the code or the words as the mail has them."""
    issuer: str | None
    """The issuer's name in the table, lower case ("spamhaus", "gmail", "microsoft"); None when unknown."""
    issuer_is_ours: bool
    """The issuer is this desk's own provider (the table's `ours`)."""
    issuer_evidence: tuple[str, ...] = ()
    issuer_label: str | None = None
    """How to name the issuer to a person ("Spamhaus", "Gmail / Google Workspace")."""
    issuer_category: IssuerCategory | None = None
    removal: str | None = None
    """Where the issuer's removal or lookup process is (URL or address), from the table."""
    via: str | None = None
    """The provider (or filter) whose rejection cites the issuer, e.g. "microsoft" for Spamhaus cited by EOP."""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["kind_evidence"] = list(self.kind_evidence)
        d["issuer_evidence"] = list(self.issuer_evidence)
        return d


@dataclass(frozen=True)
class Inferred:
    """A code family named by a provider's words, not read as a code ("banned sending IP" -> 5.7.606-5.7.649)."""

    family: str
    """As the issuer table writes it: "5.7.511", "5.7.606-5.7.649", "S3150"."""
    evidence: str
    """The words in the mail that name it."""
    issuer: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    reply_code: str | None
    """SMTP reply code, e.g. "550"; None where the line carries none."""
    status: str | None
    """Enhanced status code, e.g. "5.7.511"; None where none is in the mail."""
    text: str
    """The rejection line as the bouncing server wrote it, unwrapped to one line."""
    ips: tuple[str, ...] = ()
    """IPs named in the rejection itself (never relay hosts or Received: headers)."""
    recipient: str | None = None
    """The refused recipient, where the NDR names one."""
    source: str = ""
    """The MIME part the finding was read from, e.g. "1.2 message/rfc822 > 2 message/delivery-status"."""
    line: int | None = None
    """1-based line number within that part's decoded text."""
    remote: str | None = None
    """The host that refused, where the NDR names it (Remote-MTA, "host mx.example[IP] said:")."""
    classification: Classification | None = None
    """What the rejection is and whose; None only past `classify.MAX_CLASSIFIED` findings of one mail."""
    inferred: Inferred | None = None
    """Set only where no enhanced status code was read and the provider's words name a family."""

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ips"] = list(self.ips)
        d["classification"] = self.classification.as_dict() if self.classification else None
        d["inferred"] = self.inferred.as_dict() if self.inferred else None
        return d


@dataclass(frozen=True)
class Extraction:
    findings: tuple[Finding, ...] = ()
    """Every rejection found, first-reported first."""
    primary: Finding | None = None
    """The rejection the mail is about (the first record's, as an NDR reports it)."""
    unreadable: str | None = None
    """"unreadable: <reason>" where the mail could not be read at all."""
    notes: tuple[str, ...] = field(default=())
    """Anything else worth showing staff (a part skipped for size, a parser time-out)."""
    redacted: tuple[str, ...] = ()
    """Addresses the sender masked in the rejection lines ("x.x.x.x", "[IP]"), as written."""
    written: str | None = field(default=None, compare=False, repr=False)
    """`json_text()` once made: the extraction worker makes it, so that it travels with the
    extraction and the desk's one busy process does not spend 70 us a message on it (#16)."""

    def json_text(self) -> str:
        """`as_json()` written as JSON: what a message's row keeps (`StoredMessage.findings`)."""
        if self.written is None:
            object.__setattr__(self, "written", json.dumps(self.as_json()))
        assert self.written is not None
        return self.written

    @property
    def reply_code(self) -> str | None:
        return self.primary.reply_code if self.primary else None

    @property
    def status(self) -> str | None:
        return self.primary.status if self.primary else None

    @property
    def ips(self) -> tuple[str, ...]:
        return self.primary.ips if self.primary else ()

    @property
    def text(self) -> str | None:
        return self.primary.text if self.primary else None

    @property
    def classification(self) -> Classification | None:
        return self.primary.classification if self.primary else None

    @property
    def kind(self) -> Kind | None:
        return self.classification.kind if self.classification else None

    @property
    def issuer(self) -> str | None:
        return self.classification.issuer if self.classification else None

    @property
    def issuer_is_ours(self) -> bool:
        return bool(self.classification and self.classification.issuer_is_ours)

    @property
    def inferred(self) -> Inferred | None:
        return self.primary.inferred if self.primary else None

    def as_json(self, file: str | None = None) -> dict[str, Any]:
        """The shape `mailbot parse --json` prints; scripts rely on these names."""
        return {
            "file": file,
            "reply_code": self.reply_code,
            "status": self.status,
            "ips": list(self.ips),
            "text": self.text,
            "source": self.primary.source if self.primary else None,
            "line": self.primary.line if self.primary else None,
            "findings": [f.as_dict() for f in self.findings],
            "unreadable": self.unreadable,
            "notes": list(self.notes),
            # Added with issue #15; the names above are unchanged.
            "kind": self.kind,
            "issuer": self.issuer,
            "issuer_is_ours": self.issuer_is_ours,
            "issuer_label": c.issuer_label if (c := self.classification) else None,
            "issuer_category": c.issuer_category if c else None,
            "issuer_removal": c.removal if c else None,
            "issuer_via": c.via if c else None,
            "inferred": self.inferred.as_dict() if self.inferred else None,
            "evidence": {"kind": list(c.kind_evidence), "issuer": list(c.issuer_evidence)} if c else None,
            "redacted": list(self.redacted),
        }
