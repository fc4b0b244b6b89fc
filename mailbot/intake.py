"""Intake step 1, fetch: store each new message's raw bytes, one batch per transaction.

After this commit a message cannot be lost, whatever the parser does
later. Fetching again stores nothing: coordinates (mailbox, UIDVALIDITY,
UID) and message identity are unique keys. On a UIDVALIDITY change the
UIDs mean nothing any more, so the cursor restarts and identity alone
decides what is new.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from mailbot import clock, faults
from mailbot.db import transaction
from mailbot.inbound import header_block
from mailbot.models import MailboxCursor, StoredMessage
from mailbot.source import Fetched, SourceSession

log = logging.getLogger(__name__)

_MSGID_HEADER = re.compile(rb"^message-id:[ \t]*(.{1,900}?)[ \t]*$", re.IGNORECASE | re.MULTILINE)


@dataclass
class FetchResult:
    stored: int = 0
    duplicates: int = 0
    redone: int = 0
    """Duplicates already processed whose server-side mark was (re)applied."""


def identity_of(raw: bytes) -> tuple[str | None, str]:
    """(Message-ID as written, sha256 digest). Cheap: no MIME parsing."""
    digest = hashlib.sha256(raw).hexdigest()
    m = _MSGID_HEADER.search(header_block(raw))
    mid = m.group(1).decode("utf-8", "replace").replace("\x00", "").strip() if m else None
    return (mid or None), digest


def _store(session: Session, mailbox: str, uidvalidity: int | None, f: Fetched,
           folder_kind: str = "inbox") -> StoredMessage | None:
    """The new row, or None when this message is already stored."""
    if f.uid is not None and session.exec(
        select(StoredMessage.id).where(StoredMessage.mailbox == mailbox,
                                       StoredMessage.uidvalidity == uidvalidity, StoredMessage.uid == f.uid)
    ).first():
        return None
    mid, digest = identity_of(f.raw)
    identity = mid or f"sha256:{digest}"
    same = session.exec(
        select(StoredMessage).where(StoredMessage.mailbox == mailbox, StoredMessage.identity == identity)
    ).first()
    if same is not None:
        if same.digest == digest:
            return None
        # Same Message-ID, different bytes: not the same mail (or a forged id).
        identity = f"{identity[:500]}|{digest}"
        if session.exec(select(StoredMessage.id).where(StoredMessage.mailbox == mailbox,
                                                       StoredMessage.identity == identity)).first():
            return None
    row = StoredMessage(
        mailbox=mailbox, uidvalidity=uidvalidity, uid=f.uid, location=f.location, identity=identity,
        message_id=mid, digest=digest, raw=f.raw, size=f.size, truncated=f.truncated,
        fetched_at=clock.utcnow(), folder_kind=folder_kind,
    )
    session.add(row)
    return row


def fetch(engine: Engine, source: SourceSession, batch_size: int,
          should_stop: Callable[[], bool] = lambda: False, folder_kind: str = "inbox",
          since: date | None = None) -> FetchResult:
    """Store what is new after the cursor (or, with `since`, everything that arrived since that day)."""
    result = FetchResult()
    with transaction(engine) as session:
        cursor = session.get(MailboxCursor, source.name) or MailboxCursor(mailbox=source.name)
        if cursor.uidvalidity is not None and source.uidvalidity is not None \
                and cursor.uidvalidity != source.uidvalidity:
            log.warning("mailbox %s: UIDVALIDITY changed from %s to %s; re-reading it and "
                        "deduplicating by Message-ID", source.name, cursor.uidvalidity, source.uidvalidity)
            cursor.last_uid = 0
        cursor.uidvalidity = source.uidvalidity
        cursor.last_poll_at = clock.utcnow()
        session.add(cursor)
        after = cursor.last_uid
    for batch in source.batches(after, batch_size, since):
        dup_done: list[Fetched] = []
        with transaction(engine) as session:
            for f in batch:
                row = _store(session, source.name, source.uidvalidity, f, folder_kind)
                if row is None:
                    result.duplicates += 1
                    dup_done.append(f)
                else:
                    result.stored += 1
            uids = [f.uid for f in batch if f.uid is not None]
            if uids:
                stored_cursor = session.get(MailboxCursor, source.name)
                assert stored_cursor is not None
                stored_cursor.last_uid = max(stored_cursor.last_uid, *uids)
        faults.point("after_fetch")
        result.redone += _redo_duplicates(engine, source, dup_done)
        if should_stop():
            break
    return result


def _redo_duplicates(engine: Engine, source: SourceSession, dups: list[Fetched]) -> int:
    """A duplicate whose original is finished is done here too (e.g. after a UIDVALIDITY reset)."""
    done = 0
    for f in dups:
        _, digest = identity_of(f.raw)
        with Session(engine) as session:
            original = session.exec(select(StoredMessage).where(
                StoredMessage.mailbox == source.name, StoredMessage.digest == digest,
                StoredMessage.state != "stored")).first()
        if original is not None and (original.uid, original.uidvalidity, original.location) != (
                f.uid, source.uidvalidity, f.location):
            source.mark_done(f.uid, f.location, "processed" if original.state == "processed" else "quarantined")
            done += 1
    return done
