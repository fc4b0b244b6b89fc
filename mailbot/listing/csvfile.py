"""The listing table as CSV: what `mailbot listing import` reads and `export` writes.

Columns, by header name (only `network` required; `source` is where the listing came from):

    network,category,reason,source,since
    203.0.113.45,spam,"hit our traps 40 times",traps,2026-11-01T09:00:00Z
    198.51.100.0/24,botnet,,complaints,

`since` is ISO 8601 (a date, or a time; UTC when no offset), empty for "now". A file is read
whole and checked before anything is written: one bad row names its line and nothing is
imported. What `export` writes, `import` reads back.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

from mailbot import clock
from mailbot.listing.admin import (
    MAX_CATEGORY,
    MAX_ORIGIN,
    MAX_REASON,
    NewListing,
    TableError,
    checked_text,
    parse_network,
)
from mailbot.outgoing.sanitize import printable
from mailbot.store.listing_tables import ListingEntry

COLUMNS = ("network", "category", "reason", "source", "since")
MAX_ERRORS = 20


class CsvError(TableError):
    """The file cannot be imported; `problems` names each bad line (at most MAX_ERRORS)."""

    def __init__(self, problems: list[str]) -> None:
        more = " ..." if len(problems) > MAX_ERRORS else ""
        super().__init__(f"nothing imported: {len(problems)} problem(s): " + "; ".join(problems[:MAX_ERRORS]) + more)
        self.problems = problems


def parse_since(value: str | None) -> datetime | None:
    if not value or not value.strip():
        return None
    try:
        t = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise TableError(f"since {value!r} is not an ISO 8601 date or time (like 2026-11-01T09:00:00Z)") from None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    if t > clock.utcnow():
        raise TableError(f"since {value!r} is in the future")
    return t


def new_listing(network: str, category: str | None, reason: str | None, origin: str | None,
                since: str | None) -> NewListing:
    """One listing from what staff wrote, checked (a `TableError` says what is wrong)."""
    return NewListing(network=parse_network(network), category=checked_text(category, "category", MAX_CATEGORY),
                      reason=checked_text(reason, "reason", MAX_REASON),
                      origin=checked_text(origin, "source", MAX_ORIGIN), since=parse_since(since))


def read(text: str) -> list[NewListing]:
    """Every row of the file, or `CsvError` naming every bad line."""
    reader = csv.DictReader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    if "network" not in header:
        raise CsvError([f"line 1: the header must name the columns, with at least network ({','.join(COLUMNS)})"])
    unknown = [h for h in header if h not in COLUMNS]
    if unknown:
        raise CsvError([f"line 1: unknown column(s) {', '.join(unknown)} (known: {','.join(COLUMNS)})"])
    reader.fieldnames = header
    rows: list[NewListing] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    try:
        for row in reader:
            line = reader.line_num
            if None in row:
                problems.append(f"line {line}: more fields than columns")
                continue
            try:
                new = new_listing(row.get("network") or "", row.get("category"), row.get("reason"),
                                  row.get("source"), row.get("since"))
            except TableError as e:
                problems.append(f"line {line}: {e}")
                continue
            if str(new.network) in seen:
                problems.append(f"line {line}: {new.network} again (first on line {seen[str(new.network)]})")
                continue
            seen[str(new.network)] = line
            rows.append(new)
    except csv.Error as e:
        problems.append(f"line {reader.line_num}: {e}")
    if problems:
        raise CsvError(problems)
    return rows


def write(entries: Iterable[ListingEntry], out: TextIO) -> int:
    """The entries as CSV; every value passes `printable` (the table holds no control characters,
    as add and import refuse them: this keeps it so on a terminal whatever wrote the rows)."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for e in entries:
        since = e.since if e.since.tzinfo else e.since.replace(tzinfo=UTC)
        writer.writerow([printable(v) for v in (e.network, e.category or "", e.reason or "", e.origin or "",
                         since.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"))])
        n += 1
    return n
