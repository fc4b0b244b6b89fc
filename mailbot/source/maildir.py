"""A local Maildir as the mailbox source (the embedded default and the demo).

Messages are read from `new/` and `cur/` and, once their outcome is
committed, renamed into the `.Processed` or `.Quarantine` sub-folder, in
the Maildir++ layout that Dovecot and mail clients read. Nothing is deleted.
Maildir has no UIDs: deduplication is by message identity.
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Sequence
from datetime import date, datetime, time
from pathlib import Path

from mailbot.source.base import HEADER_BYTES, Fetched, Listed, MessageError, Outcome, SourceError


class MaildirSession:
    uidvalidity: int | None = None

    def __init__(self, path: Path, processed: str = "Processed", quarantine: str = "Quarantine",
                 max_bytes: int = 25 * 1024 * 1024) -> None:
        self.path = path
        self.name = f"maildir://{path.resolve()}"
        self.max_bytes = max_bytes
        try:
            box = mailbox.Maildir(str(path), create=True)
            self.folders = {"processed": Path(box.add_folder(processed)._path),
                            "quarantined": Path(box.add_folder(quarantine)._path)}
        except OSError as e:
            raise SourceError(f"Maildir {path}: {e.strerror}") from None

    def _pending(self) -> list[str]:
        out: list[str] = []
        for sub in ("new", "cur"):
            d = self.path / sub
            try:
                names = sorted(n for n in os.listdir(d) if not n.startswith("."))
            except FileNotFoundError:
                continue
            out.extend(f"{sub}/{n}" for n in names)
        return out

    def listing(self, after_uid: int, since: date | None = None, also: Sequence[int] = ()) -> list[Listed]:
        """Every file waiting in new/ and cur/ (Maildir has no cursor; `also` has no meaning here)."""
        cutoff = datetime.combine(since, time.min).timestamp() if since is not None else None
        out: list[Listed] = []
        for loc in self._pending():
            try:
                st = (self.path / loc).stat()
            except FileNotFoundError:
                continue  # taken by someone else meanwhile
            except OSError as e:
                raise SourceError(f"Maildir {self.path}: cannot look at {loc}: {e.strerror}") from None
            if cutoff is None or st.st_mtime >= cutoff:
                out.append(Listed(None, loc, st.st_size, truncated=st.st_size > self.max_bytes))
        return out

    def fetch(self, items: Sequence[Listed], headers_only: bool = False) -> list[Fetched]:
        out: list[Fetched] = []
        for item in items:
            assert item.location is not None
            try:
                with open(self.path / item.location, "rb") as f:
                    if item.truncated or headers_only:
                        head = f.read(HEADER_BYTES)
                        out.append(Fetched(None, item.location, _header_part(head), item.size, truncated=True))
                    else:
                        out.append(Fetched(None, item.location, f.read(), item.size))
            except FileNotFoundError:
                continue  # taken by someone else meanwhile
            except OSError as e:
                raise MessageError(f"Maildir {self.path}: cannot read {item.location}: {e.strerror}") from None
        return out

    def reset(self) -> None:
        pass  # no connection to lose

    def mark_done(self, uid: int | None, location: str | None, outcome: Outcome) -> None:
        if not location:
            return
        src = self.path / location
        name = src.name if ":2," in src.name else src.name + ":2,S"
        try:
            os.rename(src, self.folders[outcome] / "cur" / name)
        except FileNotFoundError:
            pass  # already moved (a restart after the move, before our note of it)
        except OSError as e:
            raise SourceError(f"Maildir {self.path}: cannot move {location}: {e.strerror}") from None

    def mark_done_many(self, items: list[tuple[int | None, str | None]], outcome: Outcome) -> None:
        for uid, location in items:
            self.mark_done(uid, location, outcome)

    def close(self) -> None:
        pass


def _header_part(head: bytes) -> bytes:
    """The header block at the start of `head` (all of it when no blank line ends it there)."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = head.find(sep)
        if i >= 0:
            return head[: i + len(sep)]
    return head
