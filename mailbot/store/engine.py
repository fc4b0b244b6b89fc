"""Database engine and sessions, for SQLite (embedded default) and PostgreSQL.

SQLite runs with `synchronous=FULL` and WAL so that a commit is on disk
before mailbot tells the mail server a message is done. The exceptions are
commits that only record progress: the outbox flush's connection, whose
commits only say a mail was sent (see `outgoing.outbox._marking_connection`),
and the transactions opened with `transaction(engine, durable=False)`.

`is_fault` tells a fault of the database itself (corruption, a lost or
refused connection, a full disk) from an error caused by what was asked of
it (a constraint, a value too long): a fault is never a message's fault,
and every command reports it as one line naming the database (`fault_line`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, create_engine

from mailbot.errors import Unreachable
from mailbot.store import tables  # noqa: F401  (registers the tables)


class DatabaseError(Unreachable):
    """The database cannot be reached or used; the message names it (no password)."""


# SQLite's primary result codes that say the database itself is unusable, not the statement:
# BUSY, LOCKED, READONLY, PERM, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB
_SQLITE_FAULTS = {5, 6, 8, 3, 10, 11, 13, 14, 15, 26}
_SQLITE_DAMAGED = {11, 26}
# PostgreSQL SQLSTATE classes of the same kind: connection exception, insufficient resources,
# operator intervention (shutdown, crash recovery), system error (I/O), internal error (corruption)
_PG_FAULT_CLASSES = ("08", "53", "57", "58", "XX")
_PG_DAMAGED = ("XX001", "XX002")


def _driver_error(exc: BaseException) -> BaseException:
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def is_fault(exc: BaseException) -> bool:
    """Whether `exc` says the database itself is unusable (damaged, unreachable, out of space),
    as opposed to refusing one statement because of the data in it."""
    from sqlalchemy.exc import DBAPIError, DisconnectionError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, DatabaseError | DisconnectionError | PoolTimeout):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    orig = _driver_error(exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_FAULTS
    if type(orig).__module__.startswith("psycopg"):
        state = getattr(orig, "sqlstate", None)
        if state is None:  # raised by the client: a connection that failed or was closed
            return type(orig).__name__ in ("OperationalError", "InterfaceError") or "connection" in str(orig).lower()
        return str(state)[:2] in _PG_FAULT_CLASSES
    return False


def is_damaged(exc: BaseException) -> bool:
    """Whether `exc` says the database is damaged (corrupt pages, not a database file)."""
    orig = _driver_error(exc)
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in _SQLITE_DAMAGED
    return getattr(orig, "sqlstate", None) in _PG_DAMAGED


def where(url: str) -> str:
    """The database for a person: the SQLite file's path, or PostgreSQL user@host:port/dbname
    (never the password)."""
    from sqlalchemy.engine import make_url

    try:
        u = make_url(url)
    except Exception:
        return "<unparseable database url>"
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            return "SQLite in memory"
        return f"SQLite {Path(u.database).resolve()}"
    user = f"{u.username}@" if u.username else ""
    return f"PostgreSQL {user}{u.host or 'localhost'}:{u.port or 5432}/{u.database or ''}"


def fault_line(url: str, exc: BaseException) -> str:
    """One line for a database fault: which database, and what is wrong with it."""
    if isinstance(exc, DatabaseError):
        return " ".join(str(exc).split())
    detail = " ".join(str(_driver_error(exc)).split())[:300] or exc.__class__.__name__
    if is_damaged(exc):
        return (f"database {where(url)} is damaged ({detail}): stop mailbot, and restore it from a backup "
                "(`mailbot check` runs the integrity check)")
    return f"database {where(url)} cannot be used: {detail}"


WAL_CHECKPOINT_PAGES = 10000
"""SQLite copies its write-ahead log into the database once the log holds this many pages (40 MB
at 4 KB), where its default is 1,000 (4 MB). Stored mail goes through the log, some 15 KB a
forward: at 4 MB, a poll of 2,000 forwards checkpointed about 80 times (the first commit past
the mark, and every later one while a reader keeps the log from starting over), each waiting
for the disk twice, in the poll and in the sending process alike (issue #16)."""


def _relax(session: Session) -> None:
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL synchronous_commit = off")  # undone by the commit itself
    elif conn.dialect.name == "sqlite":
        # not allowed inside SQLite's transaction: it runs before any write has begun one
        conn.exec_driver_sql("PRAGMA synchronous=NORMAL")
        conn.info["relaxed"] = True  # the pooled connection's own record: `_sqlite_checkin` undoes it


def _sqlite_checkin(dbapi_conn: Any, record: Any) -> None:
    """Back in the pool (after its rollback): a relaxed connection waits for the disk again."""
    if dbapi_conn is not None and record.info.pop("relaxed", False):
        try:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()
        except Exception:
            record.invalidate()  # never used again as it is: the next checkout connects anew


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database url>"


def make_engine(url: str) -> Engine:
    """`hide_parameters`: a statement's error never quotes its values. They are a stranger's mail
    (whole messages, up to `mailbox.max_message_bytes`): quoted, they would put its text in logs
    and `last_error`, and the quoting alone (a repr of hundreds of MB) runs a poll out of memory
    inside the handler meant to record the failure."""
    if url.startswith("postgresql:"):
        url = "postgresql+psycopg:" + url.removeprefix("postgresql:")
    if url.startswith("sqlite"):
        engine = create_engine(url, hide_parameters=True, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "checkin", _sqlite_checkin)
    else:
        # keepalives bound how long a vanished peer holds locks (see locks.py)
        engine = create_engine(url, pool_pre_ping=True, hide_parameters=True, connect_args={
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3})
    return engine


def require_schema(engine: Engine) -> None:
    """Raise SchemaBehind unless the schema is the newest; a database fault is a DatabaseError."""
    from mailbot.store.schema import require

    try:
        require(engine)
    except SQLAlchemyError as e:
        if is_fault(e):
            raise DatabaseError(fault_line(engine.url.render_as_string(hide_password=False), e)) from None
        detail = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        raise DatabaseError(f"database {where(engine.url.render_as_string(hide_password=False))}: {detail}") from None


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest schema (Alembic migrations)."""
    from mailbot.store.schema import upgrade

    url = engine.url.render_as_string(hide_password=False)
    try:
        upgrade(engine)
    except SQLAlchemyError as e:
        if is_fault(e):
            raise DatabaseError(fault_line(url, e)) from None
        detail = " ".join(str(getattr(e, "orig", None) or e).split())[:300]
        raise DatabaseError(f"database {where(url)}: {detail}") from None


@contextmanager
def transaction(engine: Engine, *, durable: bool = True) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any exception.

    `durable=False`: the commit does not wait for the disk (SQLite `synchronous=NORMAL` in WAL
    mode, PostgreSQL `synchronous_commit = off` for this transaction). It survives mailbot's
    own death (the database has it by then), not a crash of the machine or of the database
    server, and it is on disk at the next durable commit of the same database: both write
    one log in order, and waiting for a commit waits for all written before it. For what only
    records progress, which a crash would have mailbot redo: what is being fetched, mail
    stored that the server keeps until a durable commit has processed it, an attempt
    counted, a move made on the server. A poll's batch then waits for the disk once (its
    processing commit) instead of five times (issue #16)."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            if not durable:
                _relax(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
