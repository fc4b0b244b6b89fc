"""Intake step 1, fetch: store each new message's raw bytes, one batch per transaction.

After this commit a message cannot be lost, whatever the parser does
later. Fetching again stores nothing: coordinates (mailbox, UIDVALIDITY,
UID) and message identity are unique keys. On a UIDVALIDITY change the
UIDs mean nothing any more, so the cursor restarts and identity alone
decides what is new.

Memory is bounded by configuration, not by the mail: the source lists
sizes first, and a batch holds at most `batch_size` messages and
`batch_bytes` bytes; a message bigger than that is fetched by itself (one
over `mailbox.max_message_bytes` only by its headers, and quarantined by
processing).

No single message stops intake. A batch whose fetch or store fails is
fetched again one message at a time, in the same poll, after the fresh
mail. A message that fails by itself (the server refuses it or breaks the
connection over it, it does not fit in memory, the database refuses it, or
it kills the process) has that attempt counted against its coordinates
(`FetchAttempt`), one attempt per poll; after `MAX_FETCH_ATTEMPTS` it is
quarantined: kept on the server, moved to the quarantine folder, listed
like any quarantined mail. A message the database refuses is first stored
once more without its Message-ID. After a failed fetch the connection is
renewed; only when that fails (the server or the network is at fault, not
the mail), or the connection broke `MAX_BREAKS` times, does the poll fail,
with the server and user named.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from mailbot import clock, faults
from mailbot.outgoing.sanitize import db_text
from mailbot.source import inbound
from mailbot.source.base import HEADER_BYTES, Fetched, Listed, SourceError, SourceSession
from mailbot.source.storing import identity_of, store_batch
from mailbot.store.engine import transaction
from mailbot.store.states import MessageState
from mailbot.store.tables import FetchAttempt, MailboxCursor, StoredMessage

log = logging.getLogger(__name__)

MAX_FETCH_ATTEMPTS = 3
MAX_BREAKS = 3
"""Broken connections in one poll after which it fails: the server or the network is the trouble."""
DEFAULT_BATCH_BYTES = 16 * 1024 * 1024
LOOKUP_CHUNK = 500


@dataclass
class FetchResult:
    stored: int = 0
    duplicates: int = 0
    redone: int = 0
    """Duplicates already processed whose server-side mark was (re)applied."""
    failed: int = 0
    """Attempts of one message that failed (counted against it)."""
    quarantined: int = 0
    """Messages given up on after `MAX_FETCH_ATTEMPTS`: kept, to be moved to the quarantine folder."""


def plan(items: Sequence[Listed], batch_size: int, batch_bytes: int) -> Iterator[list[Listed]]:
    """Batches of at most `batch_size` messages and `batch_bytes` bytes; a larger message alone."""
    batch: list[Listed] = []
    held = 0
    for item in items:
        cost = min(item.size, HEADER_BYTES) if item.truncated else item.size
        if batch and (len(batch) >= batch_size or held + cost > batch_bytes):
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += cost
    if batch:
        yield batch


@dataclass
class _Intake:
    """One fetch of one mailbox: the cursor, what failed before, what failed in this run."""

    engine: Engine
    source: SourceSession
    folder_kind: str
    result: FetchResult = field(default_factory=FetchResult)
    attempts: dict[str, int] = field(default_factory=dict)
    """Keys of messages to fetch alone, with their failed attempts so far."""
    errors: dict[str, str] = field(default_factory=dict)
    """The last error of each of those."""
    tried: set[str] = field(default_factory=set)
    """Failed alone in this run: their next attempt is the next run's (one attempt per poll)."""
    breaks: int = 0
    """Connections that broke in this run."""

    @property
    def uv(self) -> int:
        return self.source.uidvalidity or 0

    def start(self) -> int:
        """Set up the cursor; count a batch that killed the last run; the UID to list after."""
        with transaction(self.engine) as session:
            cursor = session.get(MailboxCursor, self.source.name) or MailboxCursor(mailbox=self.source.name)
            if cursor.uidvalidity is not None and self.source.uidvalidity is not None \
                    and cursor.uidvalidity != self.source.uidvalidity:
                log.warning("mailbox %s: UIDVALIDITY changed from %s to %s; re-reading it and "
                            "deduplicating by Message-ID", self.source.name, cursor.uidvalidity,
                            self.source.uidvalidity)
                cursor.last_uid = 0
                cursor.fetching = None
                session.execute(delete(FetchAttempt).where(col(FetchAttempt.mailbox) == self.source.name,
                                                           col(FetchAttempt.uidvalidity) != self.uv))
            cursor.uidvalidity = self.source.uidvalidity
            cursor.last_poll_at = clock.utcnow()
            died = json.loads(cursor.fetching) if cursor.fetching else {"keys": []}
            cursor.fetching = None
            session.add(cursor)
            after = cursor.last_uid
            rows = session.exec(select(FetchAttempt).where(FetchAttempt.mailbox == self.source.name,
                                                           FetchAttempt.uidvalidity == self.uv)).all()
            self.attempts = {r.key: r.attempts for r in rows}
            self.errors = {r.key: r.last_error or "" for r in rows}
            if died["keys"]:
                # that fetch killed the process: its messages are fetched alone from now on, and one
                # that was alone already has the death counted against it (and is tried again now)
                log.warning("mailbox %s: the last fetch of %d message(s) did not finish (the process died); "
                            "fetching them one at a time", self.source.name, len(died["keys"]))
                self._count(session, died["keys"], "the process died while fetching it" if died.get("alone")
                            else None, tried=False)
        return after

    def _count(self, session: Session, keys: list[str], error: str | None, tried: bool = True) -> list[str]:
        """Record failed keys: with `error` (a failure of one message alone) one more attempt; without
        (a batch failed around them) none, but they are fetched alone from now on. `tried`: that
        attempt was this run's (a death is counted by the next run, which then tries again).
        The keys that reached `MAX_FETCH_ATTEMPTS`."""
        now = clock.utcnow()
        spent = []
        for key in keys:
            row = session.exec(select(FetchAttempt).where(
                FetchAttempt.mailbox == self.source.name, FetchAttempt.uidvalidity == self.uv,
                FetchAttempt.key == key)).first()
            if row is None:
                row = FetchAttempt(mailbox=self.source.name, uidvalidity=self.uv, key=key, updated_at=now)
            if error is not None:
                row.attempts += 1
                row.last_error = db_text(error, 2000)
                self.errors[key] = error
                if tried:
                    self.tried.add(key)
            row.updated_at = now
            session.add(row)
            self.attempts[key] = row.attempts
            if row.attempts >= MAX_FETCH_ATTEMPTS:
                spent.append(key)
        return spent

    def listing(self, after: int, since: date | None) -> tuple[list[Listed], list[Listed]]:
        """(new messages, messages to fetch again alone), neither stored yet."""
        also = [int(k[4:]) for k in self.attempts if k.startswith("uid:")]
        listed = self.source.listing(after, since, also)
        stored = self._stored(listed)
        fresh: list[Listed] = []
        retry: list[Listed] = []
        for item in listed:
            if item.key in stored:
                continue
            if self.attempts.get(item.key, 0) >= MAX_FETCH_ATTEMPTS:  # it killed the process that often
                self._give_up(item, self.errors.get(item.key) or "the process died while fetching it", True)
                continue
            (retry if item.key in self.attempts else fresh).append(item)
        there = {i.key for i in listed if i.key not in stored}
        gone = [k for k in self.attempts if k not in there]
        if gone and since is None:  # stored meanwhile, or taken out of the mailbox by a person
            with transaction(self.engine) as session:
                session.execute(delete(FetchAttempt).where(
                    col(FetchAttempt.mailbox) == self.source.name, col(FetchAttempt.uidvalidity) == self.uv,
                    col(FetchAttempt.key).in_(gone)))
            for k in gone:
                self.attempts.pop(k, None)
        return fresh, retry

    def _stored(self, items: list[Listed]) -> set[str]:
        """Keys of `items` already stored (read again after a backfill, or not yet moved)."""
        out: set[str] = set()
        uids = [i.uid for i in items if i.uid is not None]
        locations = [i.location for i in items if i.uid is None and i.location is not None]
        with Session(self.engine) as session:
            for i in range(0, len(uids), LOOKUP_CHUNK):
                out.update(f"uid:{u}" for u in session.exec(select(StoredMessage.uid).where(
                    StoredMessage.mailbox == self.source.name, StoredMessage.uidvalidity == self.source.uidvalidity,
                    col(StoredMessage.uid).in_(uids[i:i + LOOKUP_CHUNK]))).all())
            for i in range(0, len(locations), LOOKUP_CHUNK):
                out.update(f"loc:{loc}" for loc in session.exec(select(StoredMessage.location).where(
                    StoredMessage.mailbox == self.source.name,
                    col(StoredMessage.location).in_(locations[i:i + LOOKUP_CHUNK]))).all())
        return out

    def take(self, items: list[Listed], alone: bool = False) -> None:
        """Fetch and store one batch. A failure is recorded against its messages (see `_count`):
        counted when they were `alone` (a second try, one message by itself), otherwise they are
        tried alone next. After a fetch failure the connection is renewed: if that fails the
        server is named in the `SourceError` raised; the poll also ends after `MAX_BREAKS`
        broken connections. Any other failure is recorded and the poll goes on."""
        keys = [i.key for i in items]
        with transaction(self.engine, durable=False) as session:
            self._cursor(session).fetching = json.dumps({"alone": alone, "keys": keys})
        try:
            fetched = self.source.fetch(items)
        except Exception as e:  # the connection broke, the server refused, it did not fit in memory, ...
            self._fetch_failed(items, alone, e)
            return
        if faults.armed():
            faults.point("while_fetching", " ".join(identity_of(f.raw[:HEADER_BYTES])[0] or "" for f in fetched))
        try:
            dup_done = self._store(items, fetched)
        except Exception as e:  # the database refused it, or ran out of memory
            log.warning("mailbox %s: storing %s failed: %s", self.source.name, _keys(items), _error(e))
            if not alone:
                del fetched
                self._failed(items, _error(e), counted=False)
                return
            try:
                dup_done = self._store(items, fetched, bare=True)
                log.warning("mailbox %s: %s stored without its Message-ID", self.source.name, _keys(items))
            except Exception as e2:
                del fetched
                self._failed(items, _error(e2), counted=True)
                return
        del fetched
        faults.point("after_fetch")
        self.result.redone += _redo_duplicates(self.engine, self.source, dup_done)

    def _fetch_failed(self, items: list[Listed], alone: bool, e: Exception) -> None:
        broken = isinstance(e, SourceError)
        log.warning("mailbox %s: fetch of %s failed: %s", self.source.name, _keys(items), _error(e))
        try:
            self.source.reset()  # the connection may be mid-response, or gone
        except SourceError as again:
            # the server is gone: a broken connection is then its fault (or the network's), not the mail's
            self._failed(items, _error(e), counted=alone and not broken, readable=False)
            raise SourceError(f"{e}; reconnecting: {again}") from None
        self._failed(items, _error(e), counted=alone)
        if broken:
            self.breaks += 1
            if self.breaks >= MAX_BREAKS:
                raise SourceError(f"{e} (the connection broke {self.breaks} times in this poll; "
                                  "the rest waits for the next poll)")

    def _store(self, items: list[Listed], fetched: list[Fetched], bare: bool = False) -> list[Fetched]:
        # Not waiting for the disk: the server keeps the mail until a durable commit has done it.
        with transaction(self.engine, durable=False) as session:
            stored, dup_done = store_batch(session, self.source.name, self.source.uidvalidity, fetched,
                                            self.folder_kind, bare=bare)
            self._advance(session, items)
            done = [i.key for i in items if i.key in self.attempts]
            if done:
                session.execute(delete(FetchAttempt).where(
                    col(FetchAttempt.mailbox) == self.source.name, col(FetchAttempt.uidvalidity) == self.uv,
                    col(FetchAttempt.key).in_(done)))
        for k in done:
            self.attempts.pop(k, None)
        self.result.stored += stored
        self.result.duplicates += len(dup_done)
        return dup_done

    def _cursor(self, session: Session) -> MailboxCursor:
        cursor = session.get(MailboxCursor, self.source.name)
        assert cursor is not None
        return cursor

    def _advance(self, session: Session, items: list[Listed]) -> None:
        cursor = self._cursor(session)
        cursor.fetching = None
        uids = [i.uid for i in items if i.uid is not None]
        if uids:
            cursor.last_uid = max(cursor.last_uid, *uids)

    def _failed(self, items: list[Listed], error: str, counted: bool, readable: bool = True) -> None:
        """Record a failure: `counted` (one message alone) one more attempt, else none but each is
        fetched alone from now on; give up on a message that failed `MAX_FETCH_ATTEMPTS` times.
        `readable`: the connection still works (the headers of a message given up on are read)."""
        with transaction(self.engine) as session:
            self._advance(session, items)
            spent = self._count(session, [i.key for i in items], error if counted else None)
        if counted:
            self.result.failed += len(items)
        for item in items:
            if item.key in spent:
                self._give_up(item, error, readable)

    def _give_up(self, item: Listed, error: str, readable: bool) -> None:
        """Quarantine a message that cannot be fetched: a row with what can be read of it (its headers,
        or nothing), which the desk moves to the quarantine folder like any quarantined mail."""
        head = b""
        if readable:
            try:
                got = self.source.fetch([item], headers_only=True)
                head = got[0].raw if got else b""
            except Exception as e:
                log.warning("mailbox %s: cannot read the headers of %s either: %s", self.source.name, item.key,
                            _error(e))
                self.source.reset()
        mid, digest = identity_of(head)
        sender = subject = None
        try:
            h = inbound.parse(head)
            sender, subject = h.sender or h.from_header or None, h.subject or None
        except Exception:  # headers a person would not write: the outcome says enough
            pass
        attempts = self.attempts.get(item.key, MAX_FETCH_ATTEMPTS)
        reason = f"fetching failed {attempts} times: {error}"
        now = clock.utcnow()
        with transaction(self.engine) as session:
            session.add(StoredMessage(
                mailbox=self.source.name, uidvalidity=self.source.uidvalidity, uid=item.uid,
                location=item.location, identity=f"unfetched:{self.uv}:{item.key}"[:600], message_id=db_text(mid),
                digest=digest, raw=head, size=item.size, truncated=True, fetched_at=now,
                folder_kind=self.folder_kind, state=MessageState.QUARANTINED, attempts=attempts,
                last_error=db_text(error, 2000), outcome=db_text(f"quarantined: {reason}", 2000), processed_at=now,
                sender=db_text(sender), subject=db_text(subject)))
            session.execute(delete(FetchAttempt).where(
                col(FetchAttempt.mailbox) == self.source.name, col(FetchAttempt.uidvalidity) == self.uv,
                col(FetchAttempt.key) == item.key))
        self.attempts.pop(item.key, None)
        self.result.quarantined += 1
        log.error("message %s (%s in %s) quarantined: %s", mid, item.key, self.source.name, reason,
                  extra={"message_id": mid, "mailbox": self.source.name})


def _keys(items: list[Listed]) -> str:
    return items[0].key if len(items) == 1 else f"{len(items)} messages ({items[0].key}..{items[-1].key})"


def _error(e: BaseException) -> str:
    text = str(e)
    return f"{e.__class__.__name__}: {text}" if text else e.__class__.__name__


def fetch(engine: Engine, source: SourceSession, batch_size: int,
          should_stop: Callable[[], bool] = lambda: False, folder_kind: str = "inbox",
          since: date | None = None, after_batch: Callable[[], None] = lambda: None,
          batch_bytes: int = DEFAULT_BATCH_BYTES, backlog: Callable[[], None] = lambda: None) -> FetchResult:
    """Store what is new after the cursor (or, with `since`, everything that arrived since that day),
    in batches of at most `batch_size` messages and `batch_bytes` bytes; then fetch alone, least-tried
    first, the messages whose fetch failed before (or in a batch of this run).
    `after_batch` runs after each batch is committed (the desk processes it there, so a large
    backlog is answered while the rest is still being fetched); `backlog` runs before the first
    batch when there are more (the desk starts sending beside the poll)."""
    run = _Intake(engine, source, folder_kind)
    after = run.start()
    fresh, retry = run.listing(after, since)
    batches = list(plan(fresh, batch_size, batch_bytes))
    if len(batches) > 1:
        backlog()
    for batch in batches:
        run.take(batch)
        after_batch()
        if should_stop():
            return run.result
    # then one at a time: what failed before, and what failed in a batch just now
    again = {i.key: i for i in [*retry, *fresh] if i.key in run.attempts}
    while not should_stop():
        todo = [i for k, i in again.items() if k in run.attempts and k not in run.tried]
        if not todo:
            break
        item = min(todo, key=lambda i: run.attempts[i.key])
        again.pop(item.key)
        run.take([item], alone=True)
        after_batch()
    return run.result


def _redo_duplicates(engine: Engine, source: SourceSession, dups: list[Fetched]) -> int:
    """A duplicate whose original is finished is done here too (e.g. after a UIDVALIDITY reset)."""
    done = 0
    for f in dups:
        _, digest = identity_of(f.raw)
        with Session(engine) as session:
            # the coordinates and state only: not the original's bytes
            original = session.exec(select(StoredMessage.uid, StoredMessage.uidvalidity, StoredMessage.location,
                                           StoredMessage.state).where(
                StoredMessage.mailbox == source.name, StoredMessage.digest == digest,
                StoredMessage.state != MessageState.STORED)).first()
        if original is not None and (original[0], original[1], original[2]) != (
                f.uid, source.uidvalidity, f.location):
            source.mark_done(f.uid, f.location, "processed" if original[3] == MessageState.PROCESSED else "quarantined")
            done += 1
    return done
