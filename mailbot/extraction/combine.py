"""Combining DSN records and free-text lines of one message into findings.

Contract: `findings_of(node, budget)` returns the rejections of one message
(not of the messages nested in it), first-reported first, from the blocks
read before the budget expired. Linear in the size of the blocks. A DSN record's
Diagnostic-Code gives the codes, text and IPs; where it carries no enhanced
code the Status field fills in, so a generic Status (5.0.0) never hides the
real code in the diagnostic text. A record without a diagnostic code borrows
the free-text rejection line of the same message. Without DSN records the
free-text rejection lines are the findings (a line with a reply code alone
only where no line has an enhanced code). Records of delivered recipients
are not rejections. Each finding names the host that refused where the
record (Remote-MTA) or the narration before the code does.
"""

from __future__ import annotations

import re
from bisect import bisect_right

from mailbot.extraction import dsn, rejection
from mailbot.extraction.findings import Finding
from mailbot.extraction.limits import Budget
from mailbot.extraction.mime import Node
from mailbot.extraction.patterns import find_code, rejection_ips

_ANY_CODE = re.compile(r"[45]\d\d|[245]\.\d{1,3}\.\d")
# The lookbehind starts a candidate only where a run of address characters
# starts: a later start in the same run can reach no "@" the first could not,
# and without it every start rescans the run (quadratic on "A" * n).
_ADDR = re.compile(r"<?(?<![^\s<>;:\"'()\[\]])([^\s<>;:\"'()\[\]]+@[\w.\-]+\w)>?")
MAX_RECIPIENT_LOOKUPS = 100
"""Distinct recipients per message matched against its free-text lines; an NDR names a few."""
# The host that refused, as the narration before the code names it: Postfix "host mx.example[IP] said:",
# Exim "host mx.example [IP]", Sendmail "while talking to mx.example.:", Exchange "Server at mx (IP)".
_REMOTE = re.compile(
    r"(?:\bhost|\bserver at|\bwhile talking to|\brelay=)\s*([A-Za-z0-9][A-Za-z0-9.\-]{0,252}[A-Za-z0-9])\.?(?![\w\-])",
    re.I,
)
_NARRATION = 400
"""Characters before the code in which the refusing host is looked for."""


def _remote_in(before: str) -> str | None:
    found = None
    for m in _REMOTE.finditer(before[-_NARRATION:]):
        found = m.group(1)
    return found if found and "." in found else None


def _host(value: str | None) -> str | None:
    first = (value or "")[:300].split()
    return first[0].strip(".") if first and "." in first[0] else None


def _clean(text: str) -> str:
    text = " ".join(text.split())
    # M365 quotes the reply: Remote Server returned '550 5.7.606 ...'
    return text.rstrip("'\"").strip()


def findings_of(node: Node, budget: Budget | None = None) -> list[Finding]:
    records: list[tuple[str, dsn.DsnRecord]] = []
    texts: list[tuple[str, rejection.Rejection]] = []
    for block in node.blocks:
        if budget is not None and budget.expired():
            break  # what the blocks read so far hold is reported
        if block.kind == "headers":
            continue
        text = "\n".join(block.lines)
        if block.kind == "text" and not _ANY_CODE.search(text):
            # Most text parts of a forward (the sender's note) hold no code at all.
            continue
        grouped = dsn.groups(block.lines, text)
        records.extend((block.source, r) for r in dsn.records(grouped))
        if block.kind == "text":
            skip = dsn.field_lines(block.lines, grouped)
            texts.extend((block.source, r) for r in rejection.scan(block.lines, skip, text))
    records = [(s, r) for s, r in records if _is_failure(r)]
    out: list[Finding] = []
    lookup = _TextLookup(texts)
    for source, rec in records:
        f = _from_record(source, rec, lookup)
        if f is not None:
            out.append(f)
    if not out:
        out = [_from_text(source, rej) for source, rej in texts]
        if any(f.status for f in out):
            # A lone reply code beside lines with full codes is a number in the sender's words
            # ("ca. 450 Empfänger", "550 EUR"), not the rejection.
            out = [f for f in out if f.status]
    return _dedupe(out)


def _is_failure(rec: dsn.DsnRecord) -> bool:
    if rec.action and rec.action.split()[0] in ("delivered", "relayed", "expanded"):
        return False
    return not (rec.status or "").startswith("2.")


def _from_record(source: str, rec: dsn.DsnRecord, lookup: _TextLookup) -> Finding | None:
    code = find_code(rec.diagnostic)
    if code is not None:
        text = _clean(rec.diagnostic[code.start :].lstrip("#"))
        return Finding(
            reply_code=code.reply,
            status=code.status or rec.status,
            text=text,
            ips=tuple(rejection_ips(text)),
            recipient=rec.recipient,
            source=source,
            line=rec.line,
            remote=_host(rec.remote_mta),
        )
    match = lookup.text_for(rec.recipient)
    if match is not None:
        tsource, rej = match
        f = _from_text(tsource, rej)
        return Finding(
            reply_code=f.reply_code,
            status=f.status or rec.status,
            text=f.text,
            ips=f.ips,
            recipient=rec.recipient or f.recipient,
            source=f.source,
            line=f.line,
            remote=_host(rec.remote_mta) or f.remote,
        )
    if rec.status is None and not rec.diagnostic:
        return None
    text = _clean(rec.diagnostic)
    return Finding(
        reply_code=None,
        status=rec.status,
        text=text,
        ips=tuple(rejection_ips(text)),
        recipient=rec.recipient,
        source=source,
        line=rec.line,
        remote=_host(rec.remote_mta),
    )


class _TextLookup:
    """The free-text line that names a recipient: the first whose line contains it (case-insensitive),
    else the first line. All lines are searched as one string, each recipient once: hostile
    reports pair thousands of records with thousands of lines, and a search per pair is quadratic."""

    def __init__(self, texts: list[tuple[str, rejection.Rejection]]) -> None:
        self.texts = texts
        self._joined: str | None = None
        self._starts: list[int] = []
        self._memo: dict[str, tuple[str, rejection.Rejection] | None] = {}

    def text_for(self, recipient: str | None) -> tuple[str, rejection.Rejection] | None:
        if not self.texts:
            return None
        if recipient:
            key = recipient.lower()
            if key not in self._memo and len(self._memo) < MAX_RECIPIENT_LOOKUPS:
                self._memo[key] = self._search(key)
            found = self._memo.get(key)
            if found is not None:
                return found
        return self.texts[0]

    def _search(self, needle: str) -> tuple[str, rejection.Rejection] | None:
        if self._joined is None:
            # A context is one logical line and a recipient holds no whitespace
            # (dsn's pattern), so no match spans two contexts.
            contexts = [item[1].context.lower() for item in self.texts]
            self._joined = "\n".join(contexts)
            at = 0
            for c in contexts:
                self._starts.append(at)
                at += len(c) + 1
        pos = self._joined.find(needle)
        if pos < 0:
            return None
        return self.texts[bisect_right(self._starts, pos) - 1]


def _from_text(source: str, rej: rejection.Rejection) -> Finding:
    text = _clean(rej.text)
    before = rej.context[: len(rej.context) - len(rej.text)]
    m = _ADDR.search(before)
    return Finding(
        reply_code=rej.code.reply,
        status=rej.code.status,
        text=text,
        ips=tuple(rejection_ips(text)),
        recipient=m.group(1) if m else None,
        source=source,
        line=rej.line,
        remote=_remote_in(before),
    )


def _dedupe(found: list[Finding]) -> list[Finding]:
    seen: set[tuple[str | None, str | None, str, str | None]] = set()
    out: list[Finding] = []
    for f in found:
        key = (f.reply_code, f.status, f.text, f.recipient)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
