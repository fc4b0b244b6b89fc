"""Database engine and sessions, for SQLite (embedded default) and PostgreSQL.

SQLite runs with `synchronous=FULL` and WAL so that a commit is on disk
before mailbot tells the mail server a message is done.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, create_engine

from mailbot import models  # noqa: F401  (registers the tables)


class DatabaseError(Exception):
    """The database cannot be reached or used; the message names it (no password)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
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
    if url.startswith("postgresql:"):
        url = "postgresql+psycopg:" + url.removeprefix("postgresql:")
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        # keepalives bound how long a vanished peer holds locks (see locks.py)
        engine = create_engine(url, pool_pre_ping=True, connect_args={
            "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3})
    return engine


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest schema (Alembic migrations)."""
    from mailbot.schema import upgrade

    try:
        upgrade(engine)
    except SQLAlchemyError as e:
        detail = getattr(e, "orig", None) or e
        raise DatabaseError(f"database {safe_url(str(engine.url))}: {detail}") from None


@contextmanager
def transaction(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
