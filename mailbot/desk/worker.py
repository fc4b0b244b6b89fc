"""The worker: claims stored messages, every effect of a message in the same transaction.

Claim stored messages (counting the attempt first, so a message that kills
the process is still counted), read each one's outer headers and its NDR,
and has `triage` decide what each does (open or join a ticket, queue the reply,
record the outcome). Fresh messages go in batches (`mailbox.process_batch`)
with one commit per batch; a message that failed or died before is retried
alone. After three failed attempts the message is quarantined: kept, marked,
listed for staff. Processing a processed message does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import false, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import Select

from mailbot import faults
from mailbot.desk.extractor import ExtractorUnavailable
from mailbot.desk.triage import Triage, quarantine
from mailbot.extraction import Extraction
from mailbot.outgoing.sanitize import db_text
from mailbot.store import unit
from mailbot.store.engine import is_fault, is_postgres, transaction
from mailbot.store.locks import MessageClaims
from mailbot.store.states import MessageState
from mailbot.store.tables import StoredMessage, format_ref

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


@dataclass
class ProcessResult:
    processed: int = 0
    quarantined: int = 0
    failed_attempts: int = 0

    def add(self, other: ProcessResult) -> None:
        self.processed += other.processed
        self.quarantined += other.quarantined
        self.failed_attempts += other.failed_attempts


class Processor:
    def __init__(self, triage: Triage, engine: Engine, *, batch_size: int, batch_bytes: int) -> None:
        """`batch_size`, `batch_bytes`: `mailbox.process_batch` and `mailbox.batch_bytes`."""
        self.engine = engine
        self.triage = triage
        self.claims = MessageClaims(engine)
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.after_commit: Callable[[], None] = lambda: None
        """Called after each commit that may have queued replies (the daemon starts sending them)."""
        self.read_ahead: Callable[[Sequence[bytes], Sequence[bytes]], None] = lambda now, later: None
        """Given the mails of a batch and those of the batch expected next, before the batch is
        read: the desk hands them to its extraction workers (`Extractor.ahead`)."""

    # -- claiming ---------------------------------------------------------

    def _claim_fresh(self, after: int, limit: int) -> list[int]:
        """Up to `limit` never-attempted stored messages after `after`, claimed together: their
        attempts are counted in one commit before any is processed, so a batch that kills the
        process is counted against each of its messages (each is then retried on its own)."""
        while True:
            with transaction(self.engine, durable=False) as session:  # lost only with the machine
                stmt = _fresh(after, limit)
                if is_postgres(self.engine):
                    stmt = stmt.with_for_update(skip_locked=True)
                found = self._within_bytes(session.exec(stmt).all())
                if not found:
                    return []
                mine = self.claims.take_many(found)
                if mine:
                    session.execute(update(StoredMessage).where(col(StoredMessage.id).in_(mine))
                                    .values(attempts=StoredMessage.attempts + 1)
                                    .execution_options(synchronize_session=False))
                    return mine
                after = found[-1]  # all taken by other daemons

    def _within_bytes(self, rows: Sequence[tuple[int | None, int, bool]]) -> list[int]:
        """The first rows whose bytes fit `mailbox.batch_bytes` (at least one): a batch's messages
        are in memory together, so their size bounds the batch as it bounds a fetch."""
        out: list[int] = []
        held = 0
        for mid, size, truncated in rows:
            held += 0 if truncated else size  # a truncated message holds its headers only
            if mid is None or (out and held > self.batch_bytes):
                break
            out.append(mid)
        return out

    def _claim_retry(self, skip: set[int]) -> int | None:
        """The next stored message whose earlier attempt failed or died, claimed alone. Fresh mail
        goes first, so a message that kills the daemon cannot hold up the rest, and a daemon killed
        from outside (not by the message) does not pin its in-flight messages for the next life's
        first, riskiest moment. The least-tried go first: a healthy message that died in a batch
        beside a poison one does not wait behind it for every life the poison costs.
        `skip`: failed in this run already (their next attempt is the next run's), or being
        processed by another daemon; ids held by another daemon are added to it."""
        while True:
            with transaction(self.engine) as session:
                tried = col(StoredMessage.attempts) > 0
                if skip:
                    tried = tried & col(StoredMessage.id).not_in(skip)
                stmt = (select(StoredMessage)
                        .options(load_only(StoredMessage.id, StoredMessage.attempts,  # type: ignore[arg-type]
                                           StoredMessage.last_error, StoredMessage.message_id,  # type: ignore[arg-type]
                                           StoredMessage.mailbox, StoredMessage.state))  # type: ignore[arg-type]
                        .where(StoredMessage.state == MessageState.STORED, tried)
                        .order_by(col(StoredMessage.attempts), col(StoredMessage.id)).limit(1))
                if is_postgres(self.engine):
                    stmt = stmt.with_for_update(skip_locked=True)
                msg = session.exec(stmt).first()
                if msg is None:
                    return None
                assert msg.id is not None
                if not self.claims.take(msg.id):
                    skip.add(msg.id)  # another daemon is processing it
                    continue
                msg.attempts += 1
                break
        if msg.attempts > MAX_ATTEMPTS:
            with transaction(self.engine) as session:
                row = session.get(StoredMessage, msg.id)
                assert row is not None
                quarantine(row, f"processing failed {MAX_ATTEMPTS} times: {row.last_error or 'crashed'}")
        return msg.id

    def run(self, should_stop: Callable[[], bool] = lambda: False, limit: int = 1_000_000,
            retries: bool = True, failed: set[int] | None = None) -> ProcessResult:
        """Fresh mail, then (with `retries`) what failed or died before. A message that fails is
        not tried again in this run, nor in later runs given the same `failed` set (one poll's
        runs share one: a message gets one attempt per poll)."""
        try:
            return self._run(should_stop, limit, retries, set() if failed is None else failed)
        finally:
            self.claims.close()

    def _run(self, should_stop: Callable[[], bool], limit: int, retries: bool, skip: set[int]) -> ProcessResult:
        result = ProcessResult()
        budget = limit
        last = 0
        while budget > 0 and not should_stop():
            batch = self._claim_fresh(last, min(self.batch_size, budget))
            if not batch:
                break
            last = batch[-1]
            budget -= len(batch)
            try:
                self._process(batch, result, skip, fresh=True)
            finally:
                self.claims.release_many(batch)
        # then the retries: one message per transaction, so one bad message costs only itself
        while retries and budget > 0 and not should_stop():
            mid = self._claim_retry(skip)
            if mid is None:
                break
            budget -= 1
            try:
                self._process([mid], result, skip)
            finally:
                self.claims.release(mid)
        return result

    def _process(self, ids: list[int], result: ProcessResult, failed: set[int], *, fresh: bool = False) -> None:
        """Claimed messages in one transaction: a fresh batch (one commit, one fsync, one round
        trip for many) or one retry. If a batch raises, it is rolled back and each message is
        done on its own, so the one that raised is recorded and the others land."""
        try:
            outcome, done = self._commit(ids, fresh)
        except Exception as e:
            if is_fault(e) or isinstance(e, ExtractorUnavailable):
                # the database or the extraction worker failed, not these messages: the attempt is
                # not theirs, and the poll fails (and alerts), instead of quarantining good mail
                with suppress(Exception), transaction(self.engine) as session:
                    session.execute(update(StoredMessage).where(col(StoredMessage.id).in_(ids))
                                    .values(attempts=StoredMessage.attempts - 1))
                raise
            if len(ids) > 1:
                log.warning("a batch of %d messages failed; doing them one by one", len(ids), exc_info=True)
                for mid in ids:
                    self._process([mid], result, failed)
                return
            [mid] = ids
            failed.add(mid)
            result.failed_attempts += 1
            log.exception("message id %s: processing failed", mid)
            with transaction(self.engine) as session:
                row = session.get(StoredMessage, mid)
                assert row is not None
                row.last_error = db_text(f"{e.__class__.__name__}: {e}", 2000)
                if row.attempts >= MAX_ATTEMPTS:
                    quarantine(row, f"processing failed {row.attempts} times: {row.last_error}")
                    result.quarantined += 1
            return
        result.add(outcome)
        for msg in done:
            self._logged(msg)
        faults.point("after_commit")
        self.after_commit()

    def _commit(self, ids: list[int], fresh: bool = False) -> tuple[ProcessResult, list[StoredMessage]]:
        """The batch in one transaction: first what needs no database for every message (headers,
        extraction, verdicts, decisions), then what the rules would ask for each asked once
        (`Triage.prepare`), then the rules message by message, whose rows are written together
        at the end, a statement per table (issue #16). A `fresh` batch hands the next fresh
        batch's mails to extraction too, to be read while this one's rules run."""
        outcome = ProcessResult()
        done: list[StoredMessage] = []
        with self.triage.counting(), transaction(self.engine) as session:
            unit.of(session).bulk = True
            stmt = select(StoredMessage).where(col(StoredMessage.id).in_(ids)).order_by(col(StoredMessage.id))
            if is_postgres(self.engine):
                stmt = stmt.with_for_update()
            todo: list[StoredMessage] = []
            for msg in session.exec(stmt.execution_options(populate_existing=True)).all():
                # re-checked under the row lock: another daemon may have finished it since the claim,
                # or it was quarantined at claim time
                if msg.state != MessageState.STORED:
                    outcome.quarantined += 1
                else:
                    todo.append(msg)
            self.read_ahead([m.raw for m in todo if reads_ndr(m)], self._next_fresh(session, ids[-1]) if fresh else [])
            readings = [self.triage.read(msg) for msg in todo]
            faults.point("after_read", ",".join(m.message_id or "" for m in todo) if faults.armed() else None)
            self.triage.prepare(session, readings)
            for msg, reading in zip(todo, readings, strict=True):
                self.triage.apply(session, msg, reading)
                faults.point("after_parse", msg.message_id)
                if msg.state == MessageState.QUARANTINED:
                    outcome.quarantined += 1
                else:
                    outcome.processed += 1
                done.append(msg)
            session.flush()
            faults.point("before_commit")
        return outcome, done

    def _next_fresh(self, session: Session, after: int) -> list[bytes]:
        """The mails `_claim_fresh` would claim next, as it would (without claiming them: their
        attempts are counted when they are claimed), less those whose NDR is not read."""
        ids = self._within_bytes(session.exec(_fresh(after, self.batch_size)).all())
        if not ids:
            return []
        rows = session.execute(sa_select(StoredMessage.raw)  # type: ignore[call-overload]
                               .where(col(StoredMessage.id).in_(ids), col(StoredMessage.truncated) == false(),
                                      StoredMessage.folder_kind != "sent")
                               .order_by(col(StoredMessage.id)))
        return [raw for (raw,) in rows]

    @staticmethod
    def _logged(msg: StoredMessage) -> None:
        log.info("message %s: %s", msg.message_id, msg.outcome, extra={
            "message_id": msg.message_id, "ticket": format_ref(msg.ticket_id) if msg.ticket_id else None})

    @property
    def extract(self) -> Callable[[bytes], Extraction]:
        return self.triage.extract

    @extract.setter
    def extract(self, fn: Callable[[bytes], Extraction]) -> None:
        """Mails are no longer handed ahead (set `read_ahead` again after this, if they should be)."""
        self.triage.extract = fn
        self.read_ahead = lambda now, later: None


def _fresh(after: int, limit: int) -> Select[int | None, int, bool]:
    """(id, size, truncated) of up to `limit` never-attempted stored messages after id `after`, in order."""
    return (select(StoredMessage.id, StoredMessage.size, StoredMessage.truncated)
            .where(StoredMessage.state == MessageState.STORED, col(StoredMessage.id) > after,
                   col(StoredMessage.attempts) == 0)
            .order_by(col(StoredMessage.id)).limit(limit))


def reads_ndr(msg: StoredMessage) -> bool:
    """Whether `Triage.read` reads this message's NDR (kept whole, from the inbox)."""
    return not msg.truncated and msg.folder_kind != "sent"
