"""A local Maildir as the mailbox source (the embedded default and the demo).

Messages are read from `new/` and `cur/` and, once their outcome is
committed, renamed into the `.Processed` or `.Quarantine` sub-folder, in
the Maildir++ layout that Dovecot and mail clients read. Nothing is deleted.
Maildir has no UIDs: deduplication is by message identity.
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator
from datetime import date, datetime, time
from pathlib import Path

from mailbot.source import Fetched, Outcome, SourceError


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

    def batches(self, after_uid: int, batch_size: int, since: date | None = None) -> Iterator[list[Fetched]]:
        pending = self._pending()
        if since is not None:
            cutoff = datetime.combine(since, time.min).timestamp()
            pending = [p for p in pending if (self.path / p).stat().st_mtime >= cutoff]
        for i in range(0, len(pending), batch_size):
            out: list[Fetched] = []
            for loc in pending[i:i + batch_size]:
                p = self.path / loc
                try:
                    size = p.stat().st_size
                    with open(p, "rb") as f:
                        raw = f.read(self.max_bytes + 1)
                except FileNotFoundError:
                    continue  # taken by someone else meanwhile
                except OSError as e:
                    raise SourceError(f"Maildir {self.path}: cannot read {loc}: {e.strerror}") from None
                if size > self.max_bytes:
                    head = raw.split(b"\n\n", 1)[0]
                    out.append(Fetched(None, loc, head, size, truncated=True))
                else:
                    out.append(Fetched(None, loc, raw, size))
            yield out

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
