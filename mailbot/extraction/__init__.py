"""Extraction: raw bytes of a forwarded NDR in, findings out. Pure: no I/O.

Modules, in the order a mail passes through them: `mime` (MIME walk, with
`attachments` for .eml/.msg/winmail.dat and `text` for decoding), `dsn`
(RFC 3464 fields) and `rejection` (free-text lines) over `patterns` (codes
and IPs), `combine` (one message's findings) and `extract` (the entry
point, with the bounds of `limits`).
"""

from mailbot.extraction.extract import extract
from mailbot.extraction.findings import Extraction, Finding

__all__ = ["Extraction", "Finding", "extract"]
