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
from sqlmodel import Session, col, select

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


def _store_batch(session: Session, mailbox: str, uidvalidity: int | None, batch: list[Fetched],
                 folder_kind: str = "inbox") -> tuple[int, list[Fetched]]:
    """Add the batch's new messages; (how many were new, the ones already stored).

    Two lookups for the whole batch (by coordinates, then by identity) instead of two per
    message, and one multi-row INSERT: the same rules as one message at a time, in order, so
    a message twice in one batch is stored once."""
    uids = [f.uid for f in batch if f.uid is not None]
    known_uids: set[int | None] = set()
    if uids:
        known_uids = set(session.exec(select(StoredMessage.uid).where(
            StoredMessage.mailbox == mailbox, StoredMessage.uidvalidity == uidvalidity,
            col(StoredMessage.uid).in_(uids))).all())
    duplicates: list[Fetched] = []
    candidates: list[tuple[Fetched, str | None, str, str]] = []
    for f in batch:
        if f.uid is not None and f.uid in known_uids:
            duplicates.append(f)
            continue
        mid, digest = identity_of(f.raw)
        candidates.append((f, mid, digest, mid or f"sha256:{digest}"))
    wanted = {c[3] for c in candidates} | {_alternate(c[3], c[2]) for c in candidates}
    seen: dict[str, str] = {}  # identity -> digest, stored before or earlier in this batch
    if wanted:
        seen = {identity: digest for identity, digest in session.exec(
            select(StoredMessage.identity, StoredMessage.digest).where(
                StoredMessage.mailbox == mailbox, col(StoredMessage.identity).in_(wanted))).all()}
    now = clock.utcnow()
    rows: list[StoredMessage] = []
    for f, mid, digest, identity in candidates:
        if identity in seen:
            if seen[identity] == digest:
                duplicates.append(f)
                continue
            # Same Message-ID, different bytes: not the same mail (or a forged id).
            identity = _alternate(identity, digest)
            if identity in seen:
                duplicates.append(f)
                continue
        seen[identity] = digest
        rows.append(StoredMessage(
            mailbox=mailbox, uidvalidity=uidvalidity, uid=f.uid, location=f.location, identity=identity,
            message_id=mid, digest=digest, raw=f.raw, size=f.size, truncated=f.truncated,
            fetched_at=now, folder_kind=folder_kind,
        ))
    session.add_all(rows)
    return len(rows), duplicates


def _alternate(identity: str, digest: str) -> str:
    """The identity of a message whose Message-ID is already taken by different bytes."""
    return f"{identity[:500]}|{digest}"


def fetch(engine: Engine, source: SourceSession, batch_size: int,
          should_stop: Callable[[], bool] = lambda: False, folder_kind: str = "inbox",
          since: date | None = None, after_batch: Callable[[], None] = lambda: None) -> FetchResult:
    """Store what is new after the cursor (or, with `since`, everything that arrived since that day).
    `after_batch` runs after each batch is committed (the desk processes it there, so a large
    backlog is answered while the rest is still being fetched)."""
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
        with transaction(engine) as session:
            stored, dup_done = _store_batch(session, source.name, source.uidvalidity, batch, folder_kind)
            result.stored += stored
            result.duplicates += len(dup_done)
            uids = [f.uid for f in batch if f.uid is not None]
            if uids:
                stored_cursor = session.get(MailboxCursor, source.name)
                assert stored_cursor is not None
                stored_cursor.last_uid = max(stored_cursor.last_uid, *uids)
        faults.point("after_fetch")
        result.redone += _redo_duplicates(engine, source, dup_done)
        after_batch()
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
