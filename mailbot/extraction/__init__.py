"""Extraction: raw bytes of a forwarded NDR in, findings out. Pure: no I/O.

Modules, in the order a mail passes through them: `mime` (MIME walk, with
`attachments` for .eml/.msg/winmail.dat, `text` for decoding and `pasted`
for text as people paste it), `dsn` (RFC 3464 fields) and `rejection`
(free-text lines) over `patterns` (codes and IPs), `combine` (one message's
findings), `fragments` (a provider's words without their code), `classify`
(kind and issuer, from the table of `issuers`) and `extract` (the entry
point, with the bounds of `limits`).
"""

from mailbot.extraction.codes import in_family
from mailbot.extraction.extract import extract
from mailbot.extraction.findings import KINDS, Classification, Extraction, Finding, Inferred, Kind
from mailbot.extraction.issuers import IssuerTable, IssuerTableError, default_table, load_table

__all__ = [
    "KINDS",
    "Classification",
    "Extraction",
    "Finding",
    "Inferred",
    "IssuerTable",
    "IssuerTableError",
    "Kind",
    "default_table",
    "extract",
    "in_family",
    "load_table",
]
