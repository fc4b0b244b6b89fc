"""The daemon: the desk's jobs on an APScheduler 3 schedule.

Jobs: poll (fetch + process + mark done), outbox flush, SLA sweep and the
staff digest (a cron schedule in the desk's time zone). Each runs with
`max_instances=1` and `coalesce=True`: a run that is late after a sleep is
caught up once, not N times. A job that raises is logged and runs again at
its next time; the daemon keeps going. SIGTERM/SIGINT finish the current
message and exit cleanly. The only module that imports apscheduler.

Beside the jobs, a thread writes the daemon's heartbeat (`health.py`), so
`mailbot status` can tell a running daemon from one that is gone. The
daemon's row is written only once it holds the daemon lock: a second daemon
refused on the same SQLite file never appears.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from types import FrameType

from apscheduler.events import EVENT_JOB_ERROR, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from mailbot import metrics
from mailbot.app import Desk
from mailbot.config import database_url
from mailbot.desk.extractor import ExtractorUnavailable
from mailbot.source.idle import IdleWatcher
from mailbot.staffing.health import heartbeat_seconds
from mailbot.store.engine import fault_line, is_fault

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        self.stopping = threading.Event()
        self.poll_lock = threading.Lock()
        self.poll_wanted = threading.Event()
        self.failures = 0
        self.next_poll_at = 0.0
        self.flush_lock = threading.Lock()
        self.flush_wanted = threading.Event()
        self.flusher: threading.Thread | None = None
        # replies go out while the rest of a backlog is still being processed, not after it
        desk.processor.after_commit = self.flush_soon
        desk.renderer.keep_compiled()  # templates are read at start, not looked at again per mail
        desk.keep_inbox = True  # one login, not one per poll
        self.idle = IdleWatcher(desk.config.mailbox, self.poll_now, self.stopping, on_connect=self.server_reachable)
        self.health = desk.health()
        self.scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(2)},
            job_defaults={"max_instances": 1, "coalesce": True, "misfire_grace_time": 3600},
            timezone="UTC",
        )
        self.scheduler.add_listener(self._on_error, EVENT_JOB_ERROR)

    def _on_error(self, event: JobExecutionEvent) -> None:
        log.error("job %s failed: %s (it runs again at its next time)", event.job_id, self._describe(event.exception))

    def _describe(self, e: BaseException) -> str:
        """One line for an error; a database fault names the database (SQL and parameters left out)."""
        return fault_line(database_url(self.desk.config), e) if is_fault(e) else str(e)

    def poll_now(self) -> None:
        """New mail (IDLE said so): poll at once, unless a poll is running already."""
        if self.stopping.is_set():
            return
        try:
            self.poll()
        except Exception as e:
            log.error("poll after IDLE wake-up failed: %s (the interval poll retries)", e)

    def poll(self) -> None:
        # Mail that arrives while a poll runs may come after that poll's fetch: note the
        # wake-up, and the running poll goes round once more instead of leaving the mail
        # to the next interval.
        self.poll_wanted.set()
        while self.poll_wanted.is_set() and not self.stopping.is_set():
            if not self.poll_lock.acquire(blocking=False):
                return  # the running poll sees the wish, here or after it lets go
            try:
                while self.poll_wanted.is_set() and not self.stopping.is_set():
                    self.poll_wanted.clear()
                    self._poll()
            finally:
                self.poll_lock.release()

    def server_reachable(self) -> None:
        """The IDLE connection was (re)established: the server answers again, so a poll that failed
        before need not wait out its backoff (its catch-up poll follows at once). If the poll
        fails again it backs off again; IDLE reconnects are themselves backed off."""
        if self.failures:
            self.next_poll_at = 0.0

    def backoff(self) -> float:
        """Seconds to wait after `self.failures` failed polls in a row: doubling, at most 10 minutes."""
        base = self.desk.config.schedule.poll_seconds
        return float(min(base * 2 ** self.failures, max(base, 600.0)))

    def _poll(self) -> None:
        if time.monotonic() < self.next_poll_at:
            return  # backing off after failures (IDLE wake-ups wait too)
        try:
            r = self.desk.poll(self.stopping.is_set)
        except Exception as e:
            metrics.POLL_ERRORS.inc()
            self.failures += 1
            wait = self.backoff()
            self.next_poll_at = time.monotonic() + wait
            database = is_fault(e)
            log.error("poll failed: %s (try %d; next try in %.0fs)", self._describe(e), self.failures, wait,
                      extra={"mailbox": self.desk.mailbox_name})
            self.health.failed(self._describe(e), database_fault=database)
            if not database:
                self.flush()  # an alert mail may be waiting
            return
        if self.failures:
            log.info("poll works again after %d failed tries", self.failures)
        self.failures, self.next_poll_at = 0, 0.0
        self.health.ok()
        metrics.FETCHED.inc(r.fetch.stored)
        metrics.PROCESSED.inc(r.process.processed)
        metrics.QUARANTINED.inc(r.process.quarantined)
        if r.fetch.stored or r.process.processed or r.process.quarantined:
            log.info("poll: %d stored, %d processed, %d quarantined", r.fetch.stored, r.process.processed,
                     r.process.quarantined)
        if r.process.processed or r.skipped:
            self.flush_soon()  # replies, or an alert about a skipped folder

    def flush_soon(self) -> None:
        """Replies were committed: send them from a thread of our own, beside the processing.
        A wish made while that thread flushes makes it go round once more (as `poll` does)."""
        if self.stopping.is_set():
            return
        self.flush_wanted.set()
        if self.flush_lock.acquire(blocking=False):
            self.flusher = threading.Thread(target=self._flush_while_wanted, name="flush-soon", daemon=True)
            self.flusher.start()

    def _flush_while_wanted(self) -> None:
        while True:
            try:
                while self.flush_wanted.is_set() and not self.stopping.is_set():
                    self.flush_wanted.clear()
                    try:
                        self.flush()
                    except Exception as e:
                        log.error("outbox flush failed: %s (the interval flush retries)", e)
            finally:
                self.flush_lock.release()
            # a wish made between the last check and the release must not be lost
            if not self.flush_wanted.is_set() or self.stopping.is_set() or not self.flush_lock.acquire(blocking=False):
                return

    def flush(self) -> None:
        r = self.desk.flush(self.stopping.is_set, patient=True)
        metrics.ACKS.labels("sent").inc(r.sent)
        metrics.ACKS.labels("failed").inc(r.failed)
        if r.sent or r.retried or r.failed:
            log.info("outbox: %d sent, %d to retry, %d failed", r.sent, r.retried, r.failed)

    def sweep(self) -> None:
        r = self.desk.sweep()
        metrics.ESCALATIONS.inc(len(r.escalated))
        metrics.BREACHES.inc(len(r.breached))
        if r.expired:
            log.info("closed %d request(s) the sender never completed: %s", len(r.expired), " ".join(r.expired))
        if r.not_listed:
            log.info("answered %d ticket(s) whose IP is no longer listed: %s", len(r.not_listed),
                     " ".join(r.not_listed))
        if r.autodelisted:
            log.info("delisted %d first listing(s) automatically: %s", len(r.autodelisted), " ".join(r.autodelisted))
        if r.escalated or r.breached or r.not_listed or r.autodelisted:
            self.flush()

    def digest(self) -> None:
        """The cron slot this run belongs to names the digest, so two daemons send one."""
        job = self.scheduler.get_job("digest")
        slot = _current_slot(job.trigger, datetime.now(UTC)) if job else None
        if slot is not None and self.desk.send_digest(slot.isoformat()):
            self.flush()

    def _signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing the current message, then exiting", signal.Signals(signum).name)
        self.stopping.set()
        threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": True}, daemon=True).start()

    def run(self) -> None:
        s = self.desk.config.schedule
        self.scheduler.add_job(self.poll, "interval", seconds=s.poll_seconds, id="poll", next_run_time=_now())
        self.scheduler.add_job(self.flush, "interval", seconds=s.flush_seconds, id="flush")
        self.scheduler.add_job(self.sweep, "interval", seconds=self.desk.config.sla.sweep_seconds, id="sla",
                               next_run_time=_now())
        d = self.desk.config.digest
        if d.enabled:
            self.scheduler.add_job(self.digest, CronTrigger.from_crontab(d.cron, timezone=self.desk.config.desk.zone),
                                   id="digest")
        signal.signal(signal.SIGTERM, self._signal)
        signal.signal(signal.SIGINT, self._signal)
        log.info("mailbot running: polling %s every %ss%s", self.desk.config.mailbox.source, s.poll_seconds,
                 " (and waiting in IDLE)" if self.desk.config.mailbox.idle else "")
        with self.desk.daemon_lock():
            self.health.start()
            heart = threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True)
            heart.start()
            try:
                m = self.desk.config.metrics
                if m.port:
                    metrics.serve(self.desk.engine, m.address, m.port)
                    log.info("metrics on http://%s:%s/metrics", m.address, m.port)
                try:
                    self.desk.extractor.start()
                except ExtractorUnavailable as e:  # the first mail tries again, and counts it against itself
                    log.error("%s", e)
                self.idle.start()
                self.scheduler.start()
                flusher = self.flusher
                if flusher is not None:
                    flusher.join(timeout=60)  # it stops between two mails once `stopping` is set
            finally:
                self.stopping.set()
                heart.join(timeout=10)
                try:
                    self.health.stop()
                except Exception as e:
                    log.error("could not record that this daemon stops: %s", self._describe(e))
        self.desk.close()
        log.info("mailbot stopped")

    def _heartbeat(self) -> None:
        """Tell `mailbot status` this daemon still runs, whatever its jobs are doing."""
        interval = heartbeat_seconds(self.desk.config.schedule.poll_seconds)
        failing = False
        while not self.stopping.wait(interval):
            try:
                self.health.beat()
            except Exception as e:
                if not failing:  # once per outage: the failed polls say the rest
                    log.error("heartbeat not written: %s", self._describe(e))
                failing = True
            else:
                failing = False


def _now() -> datetime:
    return datetime.now(UTC)


def _current_slot(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time of `trigger` at or before `now` (the slot a late run still belongs to)."""
    probe = trigger.get_next_fire_time(None, now - timedelta(days=8))
    latest = None
    while probe is not None and probe <= now:
        latest = probe
        probe = trigger.get_next_fire_time(probe, probe + timedelta(seconds=1))
    return latest
