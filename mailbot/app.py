"""The desk: the stages wired to one configuration. `run_once()` is the whole flow once (fetch,
process, mark done on the server, batch by batch, a backlog's replies sent meanwhile by a process
of its own; then flush the outbox); the daemon is that function on a schedule (sending from a
thread beside the processing), and tests call it directly."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import false, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import Session, col

from mailbot import clock, faults
from mailbot.config import Config, database_url
from mailbot.desk.expiry import expire_needs_info
from mailbot.desk.extractor import Extractor
from mailbot.desk.listing_check import recheck
from mailbot.desk.settings import TriageSettings
from mailbot.desk.triage import Triage
from mailbot.desk.worker import Processor, ProcessResult
from mailbot.listing import Lister, open_lister
from mailbot.outgoing.beside import SendingProcess
from mailbot.outgoing.beside import Settings as BesideSettings
from mailbot.outgoing.mailer import Mailer
from mailbot.outgoing.outbox import FlushResult, flush
from mailbot.outgoing.render import Renderer
from mailbot.outgoing.sendhealth import SendHealth
from mailbot.outgoing.transports import Transport, make_transport
from mailbot.source import folders as folder_health
from mailbot.source.base import Outcome, SourceError, SourceSession
from mailbot.source.fetch import FetchResult, fetch
from mailbot.staffing import autodelist, digest, mail_requests, sla
from mailbot.staffing.health import Health
from mailbot.staffing.sla import SweepResult
from mailbot.staffing.staff import StaffSettings
from mailbot.store.engine import create_schema, make_engine, require_schema, transaction
from mailbot.store.locks import DaemonLockError, daemon_lock, mailbox_busy, mailbox_lock
from mailbot.store.states import MessageState
from mailbot.store.tables import StoredMessage

if TYPE_CHECKING:
    from mailbot.source.imap import ImapSession  # imported where used: a Maildir desk never loads imapclient

log = logging.getLogger(__name__)
MARK_CHUNK = 200
HELP_WAIT = 0.2
"""Seconds between looks for freshly stored mail while another daemon fetches."""
HELP_IDLE = 2.0
"""Seconds without fresh mail after which a helping daemon ends its poll, fetcher or not."""
KEEP_INBOX_SECONDS = 60.0
"""A kept inbox connection unused for longer is closed rather than reused: one silent for long
may be gone without a word (a NAT's timeout), and finding out would cost `mailbox.timeout`."""


@dataclass
class PollResult:
    fetch: FetchResult
    process: ProcessResult
    marked: int
    skipped: dict[str, str] = field(default_factory=dict)
    """Folders besides the inbox (sent folders) that could not be read: folder -> error."""


class Desk:
    def __init__(self, config: Config, engine: Engine | None = None, *, migrate: bool = True) -> None:
        """`migrate`: bring the schema to the newest first (what writes); False for what only
        reads: then a schema that is behind raises SchemaBehind and nothing is changed."""
        self.config = config
        self.requests_looked = False
        # Extraction runs in a worker that is killed when a message overruns its time or memory.
        # Made first: a broken issuers file is the operator's error before any connection is open.
        issuers = config.extraction.issuers_file
        self.extractor = Extractor(config.extraction.seconds, config.extraction.memory_mb,
                                   str(config.path(issuers)) if issuers else None, workers=config.extraction.workers)
        self.engine = engine or make_engine(database_url(config))
        if migrate:
            create_schema(self.engine)
        else:
            require_schema(self.engine)
        override = config.path(config.templates.dir) if config.templates.dir else None
        self.renderer = Renderer(override, config.templates.language)
        # Each part is handed the sections it reads (picked out here), never the whole file.
        self.mailer = Mailer(self.renderer, config.outgoing, config.desk)
        self.staffing = StaffSettings(self.mailer, config.own_addresses, config.sla.hours,
                                      config.listing.delist_attempts)
        self.processor = Processor(Triage(triage_settings(config), self.mailer), self.engine,
                                   batch_size=config.mailbox.process_batch, batch_bytes=config.mailbox.batch_bytes)
        self.sending = SendHealth(self.engine, self.mailer)
        self.processor.extract, self.processor.read_ahead = self.extractor.run, self.extractor.ahead
        self.opened_lister: Lister | None = None
        self.processor.triage.listing.lister = self.listing
        self.keep_inbox = False
        """Keep the inbox's IMAP connection from one poll to the next (the daemon): a login per poll
        cost 10 ms on a quiet machine and 40-70 ms on a busy one, before the poll could start."""
        self.kept_inbox: tuple[ImapSession, float] | None = None

    def listing(self) -> Lister | None:
        """The listing source's `Lister`, opened when first needed (a command that never looks
        anything up never reads a token or checks a program); None without a [listing] source."""
        if self.opened_lister is None and self.config.listing.source is not None:
            self.opened_lister = open_listing(self.config, self.engine)
        return self.opened_lister

    def close(self) -> None:
        """End the extraction worker (the daemon and the commands call this on their way out)."""
        self.extractor.close()
        if self.kept_inbox is not None:
            self.kept_inbox[0].close()
            self.kept_inbox = None
        if self.opened_lister is not None:
            self.opened_lister.close()
        self.engine.dispose()

    def open_source(self, folder: str | None = None) -> SourceSession:
        m = self.config.mailbox
        if folder is not None:
            m = m.model_copy(update={"folder": folder})
        if m.source == "maildir":
            from mailbot.source.maildir import MaildirSession

            return MaildirSession(self.config.path(m.maildir_path), m.processed_folder, m.quarantine_folder,
                                  m.max_message_bytes)
        from mailbot.source.imap import ImapSession

        return ImapSession(m)

    def transport(self) -> Transport:
        return make_transport(self.config.outgoing, Path(self.config.base_dir))

    def poll(self, should_stop: Callable[[], bool] = lambda: False, *,
             batch_done: Callable[[], None] = lambda: None, backlog: Callable[[], None] = lambda: None) -> PollResult:
        """Fetch (if no other daemon is fetching this mailbox), process, mark done; then carry out
        what staff asked for by mail that needs the listing source (staffing/mail_requests.py).
        `batch_done` after each batch processed and marked done; `backlog` first, if there are several."""
        self.extractor.warm(1)  # starts while the inbox is opened; the others with a batch of several
        with mailbox_lock(self.engine, self.mailbox_name) as mine:
            if not mine:
                result = PollResult(FetchResult(), self._help(should_stop, batch_done), 0)
            else:
                source, done = self._inbox(), False
                try:
                    result = self._take_in(source, should_stop, sent=True, batch_done=batch_done, backlog=backlog)
                    done = True
                finally:
                    self._put_back(source, done)
        # only when this process recorded one (or at its first poll, for any a crash left): the
        # sweep looks too, so a request recorded by another daemon is never left behind
        if self.processor.triage.staff_requests or not self.requests_looked:
            self.processor.triage.staff_requests = 0
            self.requests_looked = True
            mail_requests.run(self.engine, self.staffing, self.listing())
        return result

    def _inbox(self) -> SourceSession:
        """The kept inbox connection if there is a recent one that still answers, else a new one."""
        kept, self.kept_inbox = self.kept_inbox, None
        if kept is not None:
            session, used = kept
            if time.monotonic() - used < KEEP_INBOX_SECONDS:
                try:
                    session.refresh()
                    return session
                except SourceError as e:
                    log.info("the kept IMAP connection did not answer (%s); opening a new one", e)
            session.close()
        return self.open_source()

    def _put_back(self, source: SourceSession, done: bool) -> None:
        """Keep the connection of a poll that went well (IMAP, in the daemon); close any other."""
        from mailbot.source.imap import ImapSession

        if done and self.keep_inbox and isinstance(source, ImapSession) and source.client is not None:
            self.kept_inbox = (source, time.monotonic())
        else:
            source.close()

    def _help(self, should_stop: Callable[[], bool], batch_done: Callable[[], None]) -> ProcessResult:
        """Another daemon is fetching (PostgreSQL): process what it stores, for as long as it
        fetches, since it hands over a batch at a time and a backlog comes in batch by batch."""
        processed = ProcessResult()
        failed: set[int] = set()  # one attempt per message per poll, as for the fetching daemon
        idle_since = time.monotonic()
        while not should_stop():
            r = self.processor.run(should_stop, failed=failed)
            processed.add(r)
            if r.processed or r.quarantined:
                idle_since = time.monotonic()
                batch_done()
                continue
            # nothing new: stop when the fetcher is done, or has handed nothing over for a while
            if time.monotonic() - idle_since >= HELP_IDLE or not mailbox_busy(self.engine, self.mailbox_name):
                break
            time.sleep(HELP_WAIT)
        return processed

    def backfill(self, since: date, folder: str | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> PollResult:
        """Take in mail that arrived since `since` and is still in `folder` (default: the inbox),
        whatever the cursor says; stored mail is recognised and not taken twice."""
        with mailbox_lock(self.engine, self.mailbox_name) as mine:
            if not mine:
                raise DaemonLockError(f"another daemon is fetching {self.mailbox_name}; try again when it is idle")
            source = self.open_source(folder)
            try:
                return self._take_in(source, should_stop, since=since)
            finally:
                source.close()

    def _take_in(self, source: SourceSession, should_stop: Callable[[], bool], *, since: date | None = None,
                 sent: bool = False, batch_done: Callable[[], None] = lambda: None,
                 backlog: Callable[[], None] = lambda: None) -> PollResult:
        """Each fetched batch is processed and marked done on the server before the next is
        fetched: under a backlog the first replies leave, and the first originals move, after
        one batch instead of after the whole fetch. Retries wait for the end of the poll."""
        processed = ProcessResult()
        failed: set[int] = set()  # one attempt per message per poll
        marked = 0

        def batch_stored() -> None:
            nonlocal marked
            processed.add(self.processor.run(should_stop, retries=False, failed=failed))
            marked += self.mark_done(source)
            batch_done()

        fetched = fetch(self.engine, source, self.config.mailbox.batch_size, should_stop, since=since,
                        after_batch=batch_stored, batch_bytes=self.config.mailbox.batch_bytes, backlog=backlog)
        processed.quarantined += fetched.quarantined  # given up on at fetch: reported like the rest
        skipped: dict[str, str] = {}
        if sent:
            for folder in self.config.mailbox.sent_folders:
                # a sent folder that cannot be read is reported and skipped: the inbox goes on
                try:
                    self._fetch_sent(folder, should_stop)
                except SourceError as e:
                    skipped[folder] = str(e)
                    folder_health.failed(self.engine, self.mailer, self.config.alerts, folder,
                                         self._folder_name(source, folder), str(e))
                else:
                    folder_health.ok(self.engine, self.mailer, self.config.alerts, folder,
                                     self._folder_name(source, folder))
        # what the batches left: sent-folder mail, retries, and mail an earlier poll stored
        processed.add(self.processor.run(should_stop, failed=failed))
        marked += self.mark_done(source)
        return PollResult(fetched, processed, marked, skipped)

    @property
    def mailbox_name(self) -> str:
        m = self.config.mailbox
        if m.source == "maildir":
            return f"maildir://{self.config.path(m.maildir_path).resolve()}"
        return f"imap://{m.user}@{m.host}:{m.port}/{m.folder}"

    def daemon_lock(self) -> AbstractContextManager[None]:
        return daemon_lock(self.engine)

    def _fetch_sent(self, folder: str, should_stop: Callable[[], bool]) -> None:
        """Staff answers in a sent folder are read (never moved or flagged) like the inbox."""
        if self.config.mailbox.source != "imap":
            return
        sent = self.open_source(folder)
        try:
            fetch(self.engine, sent, self.config.mailbox.batch_size, should_stop, folder_kind="sent",
                  batch_bytes=self.config.mailbox.batch_bytes)
        finally:
            sent.close()

    def mark_done(self, source: SourceSession) -> int:
        """Tell the server about every finished message it has not been told about."""
        with Session(self.engine) as session:
            # core select: the rows' raw bytes are not needed here
            rows = session.execute(
                sa_select(StoredMessage.id, StoredMessage.uid, StoredMessage.uidvalidity,  # type: ignore[call-overload]
                          StoredMessage.location, StoredMessage.state, StoredMessage.mailbox)
                .where(col(StoredMessage.mailbox).in_(self._done_mailboxes(source)),
                       col(StoredMessage.server_done) == false(),  # `=`, not IS: indexable
                       StoredMessage.state != MessageState.STORED)
                .order_by(col(StoredMessage.id))
            ).all()
            todo = [tuple(r) for r in rows]
        marked = 0
        # In chunks: one MOVE command and one commit per chunk, not per message. A crash
        # between the two only repeats a MOVE of mail that is already there, which is harmless.
        for i in range(0, len(todo), MARK_CHUNK):
            chunk = todo[i:i + MARK_CHUNK]
            by_outcome: dict[Outcome, list[tuple[int | None, str | None]]] = {"processed": [], "quarantined": []}
            for _mid, uid, uidvalidity, location, state, mailbox in chunk:
                if mailbox != source.name:
                    continue  # a sent folder: read, never moved
                if uid is not None and uidvalidity != source.uidvalidity:
                    continue  # its UID means nothing now; the duplicate check marks its new copy
                by_outcome["processed" if state == MessageState.PROCESSED else "quarantined"].append((uid, location))
            for outcome, items in by_outcome.items():
                if items:
                    faults.point("before_mark")
                    source.mark_done_many(items, outcome)
                    marked += len(items)
                    faults.point("after_mark")
            with transaction(self.engine, durable=False) as session:  # lost: the MOVE is repeated
                session.execute(update(StoredMessage).where(col(StoredMessage.id).in_([r[0] for r in chunk]))
                                .values(server_done=True).execution_options(synchronize_session=False))
        return marked

    def _done_mailboxes(self, source: SourceSession) -> list[str]:
        return [source.name, *(self._folder_name(source, f) for f in self.config.mailbox.sent_folders)]

    def _folder_name(self, source: SourceSession, folder: str) -> str:
        """The name the messages of `folder`, in `source`'s mailbox, are stored under (as
        `open_source(folder)` names it; the inbox's own name may hold a "/" of a subfolder)."""
        m = self.config.mailbox
        if m.source == "imap":
            return f"imap://{m.user}@{m.host}:{m.port}/{folder}"
        return f"{source.name.rsplit('/', 1)[0]}/{folder}"

    def flush(self, should_stop: Callable[[], bool] = lambda: False, *, patient: bool = False) -> FlushResult:
        """Send what is due. A server that cannot be used holds the queue (`FlushResult.fault`);
        `patient` (the daemon) skips the server while this process's wait after such a fault
        runs, where a person's command tries at once. The first flush that gets through ends
        the outage and sends staff its one alert."""
        if patient and self.sending.should_wait():
            return FlushResult(fault=self.sending.last_fault)
        result = flush(self.engine, self.transport(), self.config.outgoing, should_stop)
        if result.fault is not None:
            self.sending.failed(result.fault, result.held)
        elif (result.sent or result.retried or result.failed) and self.sending.works():
            result.add(flush(self.engine, self.transport(), self.config.outgoing, should_stop))
            if result.fault is not None:  # down again already: the alert waits with the rest
                self.sending.failed(result.fault, result.held)
        return result

    def sweep(self) -> SweepResult:
        """Requests left waiting for the sender end (desk/expiry.py); open tickets' IPs looked up
        afresh, those no longer listed answered (desk/listing_check.py), before escalation and
        breach notices for tickets crossing their points (staffing/sla.py)."""
        with transaction(self.engine) as session:
            expired = expire_needs_info(session, self.config.desk.needs_info_days, clock.utcnow())
        lister = self.listing()
        rechecked, answered = (0, []) if lister is None else recheck(
            self.engine, self.config.listing, self.config.own_addresses, self.mailer, lister, clock.utcnow())
        mail_requests.run(self.engine, self.staffing, lister)
        auto = autodelist.run(self.engine, self.staffing, self.config.autodelist, lister, clock.utcnow())
        result = sla.sweep(self.engine, self.mailer, self.config.sla)
        result.expired, result.rechecked, result.not_listed = expired, rechecked, answered
        result.autodelisted = auto.delisted
        return result

    def send_digest(self, slot: str) -> bool:
        return digest.send(self.engine, self.mailer, self.config.sla, slot)

    def render_digest(self, now: datetime | None = None) -> tuple[str, str, str]:
        """(subject, text, html) of the digest as it would be sent now."""
        return digest.render(self.engine, self.renderer, self.config.desk, self.config.sla, now)

    def health(self, name: str | None = None) -> Health:
        """This process's row in the daemons' health table (`mailbot status`), and its alerts."""
        m = self.config.mailbox
        return Health(self.engine, self.mailer, self.config.alerts, poll_seconds=self.config.schedule.poll_seconds,
                      mailbox=f"{m.user}@{m.host}:{m.port}/{m.folder}" if m.source == "imap" else m.maildir_path,
                      database_url=database_url(self.config), transport=self.transport, name=name)

    def run_once(self, should_stop: Callable[[], bool] = lambda: False) -> tuple[PollResult, FlushResult]:
        """One poll, then a flush of what is left. Under a backlog each batch's replies are sent
        beside the next batches by a process of its own (`outgoing.beside`)."""
        beside = SendingProcess(self._beside_settings())
        try:
            polled = self.poll(should_stop, batch_done=beside.batch_done, backlog=beside.start)
        finally:
            early = beside.finish(stop=should_stop())
        if early.sent or early.retried or early.failed:
            self.sending.works()  # an outage open from before ends here (its alert goes next)
        early.add(self.flush(should_stop))
        return polled, early

    def _beside_settings(self) -> BesideSettings | None:
        url = self.engine.url  # None below: a database only this process can open
        if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
            return None
        return BesideSettings(database_url=url.render_as_string(hide_password=False), outgoing=self.config.outgoing,
                              base_dir=str(self.config.base_dir), log_format=self.config.log.format,
                              log_level=logging.getLogger().getEffectiveLevel())


def triage_settings(config: Config) -> TriageSettings:
    return TriageSettings(desk=config.desk, own_addresses=config.own_addresses, policy=config.policy,
                          replies=config.replies, sla=config.sla, listing=config.listing, portal_url=config.portal.url,
                          max_message_bytes=config.mailbox.max_message_bytes)


def open_listing(config: Config, engine: Engine | None, environ: Mapping[str, str] | None = None) -> Lister | None:
    """The `[listing]` source's `Lister` (None without one): `listing.open_lister` given its
    section and the directory the config file's relative paths start from."""
    return open_lister(config.listing, Path(config.base_dir), engine, environ)
