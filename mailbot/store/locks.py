"""Who may do what when several daemons share one database.

- SQLite: one daemon per database file. A second `mailbot run` on the same
  file is refused with a message naming the file and the holder's pid.
- PostgreSQL: any number of daemons. One of them fetches a given mailbox at
  a time (a session advisory lock keyed by the mailbox name, held for the
  poll); the lock goes with the holder's connection, and TCP keepalives
  bound how long a dead holder's lock outlives it (about a minute).
  Processing and sending are shared through `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from mailbot.errors import CommandFailed


class DaemonLockError(CommandFailed):
    """Another daemon holds what this one needs; the message says which."""


@contextmanager
def daemon_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name != "sqlite" or not engine.url.database or engine.url.database == ":memory:":
        yield
        return
    path = Path(engine.url.database).resolve().with_suffix(".daemon.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise DaemonLockError(
                f"another mailbot daemon (pid {holder}) is running on {Path(engine.url.database).resolve()}; "
                "SQLite takes one daemon: stop it, or use PostgreSQL to run several") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def _key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def mailbox_lock(engine: Engine, mailbox: str) -> Iterator[bool]:
    """Yields whether this daemon may fetch `mailbox` now (always, on SQLite)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    with engine.connect() as conn:
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": _key(mailbox)}).scalar())
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _key(mailbox)})
                conn.commit()


def mailbox_busy(engine: Engine, mailbox: str) -> bool:
    """Whether some daemon holds `mailbox`'s fetch lock now (PostgreSQL; never on SQLite)."""
    if engine.dialect.name != "postgresql":
        return False
    key = _key(mailbox) & 0xFFFFFFFFFFFFFFFF  # a bigint advisory key shows as two oids in pg_locks
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
            " AND classid = CAST(:hi AS oid) AND objid = CAST(:lo AS oid))"),
            {"hi": key >> 32, "lo": key & 0xFFFFFFFF}).scalar())


_CLAIMS = 0x636C  # "cl": the advisory-lock namespace of message claims


class MessageClaims:
    """Which stored messages this daemon is processing (PostgreSQL; SQLite has one daemon).

    A claim is a session advisory lock held on a connection of our own: it
    lasts while we process, and dies with us, so a killed daemon's message is
    taken over at once by the next claim (whose attempt count records the crash).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None

    def take(self, message_id: int) -> bool:
        return message_id in self.take_many([message_id])

    def take_many(self, message_ids: list[int]) -> list[int]:
        """The ids of `message_ids` this daemon now holds (one round trip for the lot)."""
        if self.engine.dialect.name != "postgresql":
            return list(message_ids)
        if self.conn is None or self.conn.closed:
            self.conn = self.engine.connect()
        got = self.conn.execute(text("SELECT id FROM unnest(CAST(:ids AS integer[])) WITH ORDINALITY AS t(id, n) "
                                     "WHERE pg_try_advisory_lock(:ns, id) ORDER BY n"),
                                {"ns": _CLAIMS, "ids": list(message_ids)}).scalars().all()
        self.conn.commit()
        return [int(i) for i in got]

    def release_many(self, message_ids: list[int]) -> None:
        if self.conn is None or self.conn.closed or not message_ids:
            return
        try:
            self.conn.execute(text("SELECT pg_advisory_unlock(:ns, id) FROM unnest(CAST(:ids AS integer[])) AS id"),
                              {"ns": _CLAIMS, "ids": list(message_ids)})
            self.conn.commit()
        except Exception:
            self.conn.invalidate()  # a broken connection took its locks with it
            self.conn = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()  # ends the session: any claim still held goes with it
            self.conn = None

    def release(self, message_id: int) -> None:
        self.release_many([message_id])


class SendLock:
    """Who may send the next outbox mail, on SQLite: one sender at a time per database file.

    PostgreSQL claims an outbox row with `FOR UPDATE SKIP LOCKED`, a lock that
    lasts while the mail is sent and dies with the sender. SQLite has no row
    locks, and its write lock, held across an SMTP conversation, would stall
    every other writer (processing, `mailbot reply`) for as long as a slow
    server takes. So every SQLite sender (the daemon, `mailbot flush`, `reply`,
    `digest --send`, in any process) takes this lock on a file beside the
    database around each mail's claim, send and commit: the claim is atomic
    among senders, and the database stays free for the others meanwhile. It is
    an flock: the kernel lets go when the holder dies, so a killed sender's mail
    is taken over at once. A no-op on PostgreSQL and for in-memory databases.
    """

    def __init__(self, engine: Engine) -> None:
        database = engine.url.database
        self.path: Path | None = None
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self.path = Path(database).resolve().with_suffix(".send.lock")
        self.fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        """Hold the lock for one mail (waits while another sender has it)."""
        if self.path is None:
            yield
            return
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
