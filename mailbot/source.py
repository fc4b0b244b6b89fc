"""What intake needs from a mailbox, whatever serves it (IMAP or Maildir).

A source session lists new messages after a cursor, yields them in
batches with their coordinates, and marks a message done (moved to the
processed or quarantine folder, or flagged) once its outcome is committed.
Sources raise `SourceError`, whose message names the server and user.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol

Outcome = Literal["processed", "quarantined"]


class SourceError(Exception):
    """The mailbox cannot be read; the message says which server and user."""


@dataclass(frozen=True)
class Fetched:
    uid: int | None
    location: str | None
    raw: bytes
    size: int
    truncated: bool = False
    """Over the size cap: `raw` holds the headers only."""


class SourceSession(Protocol):
    name: str
    """Stable identity of the mailbox, e.g. imap://user@host:993/INBOX."""
    uidvalidity: int | None

    def batches(self, after_uid: int, batch_size: int, since: date | None = None) -> Iterator[list[Fetched]]: ...
    def mark_done(self, uid: int | None, location: str | None, outcome: Outcome) -> None: ...
    def mark_done_many(self, items: list[tuple[int | None, str | None]], outcome: Outcome) -> None: ...
    def close(self) -> None: ...
