"""What extraction reports: values, never exceptions.

A `Finding` is one rejection read from a forwarded NDR: the SMTP reply code,
the enhanced status code (RFC 3463), the human text of the line, the IPs it
names, and where in the mail it was read (the evidence staff see).
An `Extraction` is everything read from one message; `unreadable` says why
nothing could be read, as a value a caller can store and show.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ips"] = list(self.ips)
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
        }
