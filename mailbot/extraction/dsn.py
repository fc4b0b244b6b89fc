"""DSN field parsing (RFC 3464), from a delivery-status part or inline text.

Contract: `records(groups(lines))` returns one `DsnRecord` per recipient group found
in `lines`, in order. A group is a run of `Field: value` lines (folded lines
continue the previous field); it is a recipient record when it has a Status
or Diagnostic-Code and names a recipient, an action or a remote MTA. This is
how inline forwards are read too: the mail client pastes the DSN fields as
text. `field_lines(lines, groups(lines))` gives the indexes of every line belonging to such
a record, so the free-text scanner can skip them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FIELD = re.compile(r"^([A-Za-z][\w\-]{1,40})[ \t]*:[ \t]*(.*)$")
_TYPE_PREFIX = re.compile(r"^\s*[\w\-]{2,20}\s*;\s*")
_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
# Starts only where a run of address characters starts (see combine._ADDR): linear on "A" * n.
_RECIPIENT = re.compile(r"(?<![^\s<>;\"])[^\s<>;\"]+@[^\s<>;\"]+")


@dataclass
class DsnRecord:
    recipient: str | None
    status: str | None
    """The Status: field's code (may be generic, e.g. 5.0.0)."""
    diagnostic: str
    """Diagnostic-Code value, unfolded, without its "smtp;" type."""
    line: int
    """1-based line of the Diagnostic-Code field (else of Status)."""
    action: str | None
    remote_mta: str | None = None
    """The Remote-MTA field's host, without its "dns;" type."""


def _groups(lines: list[str]) -> list[list[tuple[int, str, str]]]:
    groups: list[list[tuple[int, str, str]]] = []
    # Field values are collected as parts and joined once: thousands of folded
    # lines appended to a growing string copy it each time.
    cur: list[tuple[int, str, list[str]]] = []
    names: set[str] = set()

    def close() -> None:
        groups.append([(n, name, " ".join(parts)) for n, name, parts in cur])

    for i, line in enumerate(lines):
        if cur and line[:1] in (" ", "\t") and line.strip():
            cur[-1][2].append(line.strip())
            continue
        m = _FIELD.match(line)
        if m and not line.startswith(("http:", "https:")):
            name = m.group(1).lower()
            if name in ("final-recipient", "original-recipient") and name in names:
                close()
                cur, names = [], set()
            cur.append((i, name, [m.group(2).strip()]))
            names.add(name)
            continue
        if cur:
            close()
            cur, names = [], set()
    if cur:
        close()
    return groups


def _is_record(names: set[str]) -> bool:
    has_code = "status" in names or "diagnostic-code" in names
    anchored = bool(names & {"final-recipient", "original-recipient", "action", "remote-mta"})
    return has_code and (anchored or "diagnostic-code" in names)


Group = list[tuple[int, str, str]]


_HAS_FIELDS = re.compile(r"^[ \t]*(?:status|diagnostic-code)[ \t]*:", re.I | re.M)


def groups(lines: list[str], text: str | None = None) -> list[Group]:
    """The field groups of `lines`; parse once, then ask `records` and `field_lines`."""
    joined = "\n".join(lines) if text is None else text
    if not _HAS_FIELDS.search(joined):
        # No recipient record without a Status or Diagnostic-Code field.
        return []
    return _groups(lines)


def records(grouped: list[Group]) -> list[DsnRecord]:
    out: list[DsnRecord] = []
    for group in grouped:
        fields: dict[str, tuple[int, str]] = {}
        for n, name, value in group:
            fields.setdefault(name, (n, value))
        if not _is_record(set(fields)):
            continue
        rcpt = fields.get("final-recipient") or fields.get("original-recipient")
        rm = _RECIPIENT.search(rcpt[1]) if rcpt else None
        st = _STATUS.match(fields["status"][1]) if "status" in fields else None
        diag_line, diag = fields.get("diagnostic-code", (-1, ""))
        line = diag_line if diag_line >= 0 else fields.get("status", (0, ""))[0]
        action = fields.get("action", (0, ""))[1].lower() or None
        out.append(
            DsnRecord(
                recipient=rm.group(0).strip(".,") if rm else None,
                status=st.group(1) if st else None,
                diagnostic=_TYPE_PREFIX.sub("", diag, count=1).strip(),
                line=line + 1,
                action=action,
                remote_mta=_TYPE_PREFIX.sub("", fields.get("remote-mta", (0, ""))[1], count=1).strip() or None,
            )
        )
    return out


def field_lines(lines: list[str], grouped: list[Group]) -> set[int]:
    """Indexes of lines that belong to DSN recipient records (incl. folded ones)."""
    skip: set[int] = set()
    for group in grouped:
        names = {g[1] for g in group}
        if not _is_record(names) and not names & {"reporting-mta", "arrival-date", "received-from-mta"}:
            continue
        first = group[0][0]
        last = group[-1][0]
        # Folded continuation lines follow the last field.
        j = last + 1
        while j < len(lines) and lines[j][:1] in (" ", "\t") and lines[j].strip():
            j += 1
        skip.update(range(first, j))
    return skip
