"""What intake needs from a mailbox, whatever serves it (IMAP or Maildir).

A source session lists the messages it holds after a cursor with their
sizes (nothing is read yet), fetches the ones intake asks for, and marks a
message done (moved to the processed or quarantine folder, or flagged) once
its outcome is committed. Intake decides how many bytes to fetch at once.

Errors: `SourceError` means the mailbox cannot be read at all (the server
is unreachable, the connection broke); its message names the server and
user. `MessageError` means the server answered but would not hand over
these messages (an IMAP NO for the FETCH, an unreadable Maildir file):
the connection is still good and the failure belongs to the messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal, Protocol

from mailbot.errors import Unreachable

Outcome = Literal["processed", "quarantined"]
HEADER_BYTES = 256 * 1024
"""At most this much of the headers of a message over the cap is fetched (inbound parsing's cap)."""


class SourceError(Unreachable):
    """The mailbox cannot be read; the message says which server and user."""


class MessageError(Exception):
    """The server would not hand over these messages; the connection is still usable."""


@dataclass(frozen=True)
class Listed:
    """A message in the mailbox before its bytes are read: where it sits and how big it is."""

    uid: int | None
    location: str | None
    size: int
    truncated: bool = False
    """Over the size cap (mailbox.max_message_bytes): only its headers will be fetched."""

    @property
    def key(self) -> str:
        """The message's coordinates as one string (a UID only means something with its UIDVALIDITY)."""
        return f"uid:{self.uid}" if self.uid is not None else f"loc:{self.location}"


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

    def listing(self, after_uid: int, since: date | None = None, also: Sequence[int] = ()) -> list[Listed]:
        """New messages (UID above `after_uid`, or with `since` everything that arrived since that day),
        plus the UIDs in `also` that still exist, in mailbox order. Reads sizes, never bodies."""
        ...

    def fetch(self, items: Sequence[Listed], headers_only: bool = False) -> list[Fetched]:
        """The messages' bytes (headers only for those over the cap, or for all with `headers_only`).
        A message that vanished meanwhile is left out."""
        ...

    def reset(self) -> None:
        """A fresh connection after a failed fetch (the old one may be mid-response)."""
        ...

    def mark_done(self, uid: int | None, location: str | None, outcome: Outcome) -> None: ...
    def mark_done_many(self, items: list[tuple[int | None, str | None]], outcome: Outcome) -> None: ...
    def close(self) -> None: ...
