"""The extraction stage: raw bytes of one mail in, an `Extraction` out.

Contract: `extract(raw)` never raises (but for MemoryError: running out of
memory is for the process's owner to handle, see mailbot/desk/extractor.py) and is
linear in the size of the mail, which `limits` bounds; it stops reading at its
time budget (`seconds`, default `limits.TOTAL_SECONDS`) and reports what it
found by then. The budget is looked at between units of work, so a caller
that must be sure of the time runs it where it can be stopped.

It finds the NDR inside the mail (the mail itself, an attached or nested
message, an .eml/.msg/winmail.dat attachment, or an inline forward)
depth-first in document order, and reads its rejections: DSN recipient
records first (their Diagnostic-Code, with the Status field as
the fallback for the enhanced code), then the free-text rejection lines.
The first message in document order that yields a rejection is the one
reported; messages returned inside a report are never read. Where no line
with an enhanced code is found, a provider's words pasted without their code
(`fragments`) are findings too, ahead of lines with a lone reply code. Every
finding is then classified (`classify`) against the issuer table: `issuers`
when given (an operator's extended table), else the one shipped.
"""

from __future__ import annotations

from mailbot.extraction.classify import MAX_CLASSIFIED, classify_all
from mailbot.extraction.combine import findings_of
from mailbot.extraction.findings import Extraction, Finding
from mailbot.extraction.fragments import fragment_findings
from mailbot.extraction.issuers import IssuerTable, default_table
from mailbot.extraction.limits import MAX_INPUT_BYTES, TOTAL_SECONDS, Budget
from mailbot.extraction.mime import Node, read_message
from mailbot.extraction.redaction import redacted


def extract(raw: bytes, *, seconds: float = TOTAL_SECONDS, issuers: IssuerTable | None = None) -> Extraction:
    """Read the rejection(s) from one forwarded NDR; faults become values."""
    budget = Budget(seconds=seconds)
    try:
        table = issuers if issuers is not None else default_table()
        budget.also_read = table.fragment_regex
        return _extract(raw, budget, table)
    except MemoryError:
        raise
    except RecursionError:
        return Extraction(unreadable="unreadable: structure too deeply nested", notes=tuple(budget.notes))
    except Exception as exc:  # the promise is "never raises": a bug must not kill the daemon
        reason = f"unreadable: internal error ({type(exc).__name__})"
        return Extraction(unreadable=reason, notes=tuple(budget.notes))


def _extract(raw: bytes, budget: Budget, table: IssuerTable) -> Extraction:
    if not isinstance(raw, bytes | bytearray | memoryview):
        return Extraction(unreadable="unreadable: not bytes")
    raw = bytes(raw)
    if not raw.strip():
        return Extraction(unreadable="unreadable: empty message")
    if len(raw) > MAX_INPUT_BYTES:
        budget.note(f"message cut to {MAX_INPUT_BYTES} bytes")
        raw = raw[:MAX_INPUT_BYTES]
    node = read_message(raw, budget)
    if node is None:
        return Extraction(unreadable="unreadable: not a MIME message", notes=tuple(budget.notes))
    found = _search(node, budget, 0)
    if not any(f.status for f in found):
        found = _with_fragments(found, fragment_findings(node, table, budget))
    found = classify_all(found, table)
    if budget.expired():
        budget.note("time limit reached; the mail was read in part")
    if not found:
        budget.note("no rejection line found")
    return Extraction(
        findings=tuple(found),
        primary=found[0] if found else None,
        notes=tuple(budget.notes),
        redacted=redacted(f.text for f in found[:MAX_CLASSIFIED]),
    )


def _with_fragments(coded: list[Finding], fragments: list[Finding]) -> list[Finding]:
    """Fragments first: a lone reply code is weaker evidence than a provider's own words. A fragment
    that a coded line already holds is that line (it has the reply code besides)."""
    out = [f for f in fragments if not any(c.source == f.source and f.text in c.text for c in coded)]
    return out + coded


def _search(node: Node, budget: Budget, depth: int) -> list[Finding]:
    # Iterative: a message nested 2,000 deep must not exhaust the stack.
    stack = [node]
    while stack:
        if budget.expired():
            return []
        cur = stack.pop()
        found = findings_of(cur, budget)
        if found:
            return found
        stack.extend(reversed([c for c in cur.children if not c.returned]))
    return []
