"""How fetched bytes become stored messages: each message's identity (its Message-ID, or a hash
of a long one, or of its content) and the batch insert that stores each new message once.
Pure bookkeeping of rows in the caller's transaction: nothing here talks to a server."""

from __future__ import annotations

import hashlib
import re

from sqlmodel import Session, col, select

from mailbot import clock
from mailbot.source.base import Fetched
from mailbot.source.inbound import header_block
from mailbot.store import bulk
from mailbot.store.tables import StoredMessage

_MSGID_HEADER = re.compile(rb"^message-id:[ \t]*(.{1,900}?)[ \t]*$", re.IGNORECASE | re.MULTILINE)
IDENTITY_BYTES = 250
"""A Message-ID longer than this (UTF-8) is keyed by its hash: the unique key must fit any index."""


def identity_of(raw: bytes) -> tuple[str | None, str]:
    """(Message-ID as written, sha256 digest). Cheap: no MIME parsing."""
    digest = hashlib.sha256(raw).hexdigest()
    m = _MSGID_HEADER.search(header_block(raw))
    mid = m.group(1).decode("utf-8", "replace").replace("\x00", "").strip() if m else None
    return (mid or None), digest


def identity_key(mid: str) -> str:
    """The identity for a Message-ID: itself, or its hash when it is long. The whole Message-ID is
    kept in `StoredMessage.message_id`; the identity only decides what is new."""
    data = mid.encode("utf-8", "surrogatepass")
    if len(data) <= IDENTITY_BYTES:
        return mid
    return "msgid-sha256:" + hashlib.sha256(data).hexdigest()


def store_batch(session: Session, mailbox: str, uidvalidity: int | None, batch: list[Fetched],
                 folder_kind: str = "inbox", bare: bool = False) -> tuple[int, list[Fetched]]:
    """Add the batch's new messages; (how many were new, the ones already stored).

    Two lookups for the whole batch (by coordinates, then by identity) instead of two per
    message, and one INSERT for all: the same rules as one message at a time, in order, so
    a message twice in one batch is stored once. `bare`: without the Message-ID (the database
    refused the message with it), identified by its content.

    The rows are written at once, as the driver's executemany, and not kept in the session:
    nobody here needs their ids, and the unit of work would ask for each (a statement of some
    100 rows x 22 parameters that psycopg re-parses in Python, or a statement a row on SQLite);
    this took a third of the time it took to store a batch (issue #16)."""
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
        if bare:
            mid = None
        candidates.append((f, mid, digest, identity_key(mid) if mid else f"sha256:{digest}"))
    wanted = {c[3] for c in candidates} | {alternate(c[3], c[2]) for c in candidates}
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
            identity = alternate(identity, digest)
            if identity in seen:
                duplicates.append(f)
                continue
        seen[identity] = digest
        rows.append(StoredMessage(
            mailbox=mailbox, uidvalidity=uidvalidity, uid=f.uid, location=f.location, identity=identity,
            message_id=mid, digest=digest, raw=f.raw, size=f.size, truncated=f.truncated,
            fetched_at=now, folder_kind=folder_kind,
        ))
    if rows:
        bulk.write(session, StoredMessage, rows)
    return len(rows), duplicates


def alternate(identity: str, digest: str) -> str:
    """The identity of a message whose Message-ID is already taken by different bytes."""
    return f"{identity[:500]}|{digest}"
