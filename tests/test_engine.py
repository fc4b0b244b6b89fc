"""Transactions: durable by default, and on request one whose commit does not wait for the disk,
after which the connection waits for it again (issue #16)."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from mailbot.store.engine import transaction
from mailbot.store.tables import MailboxCursor


def waits_for_disk(session: Session) -> bool:
    """What the connection's next commit does, as the database itself reports it."""
    if session.get_bind().dialect.name == "postgresql":
        return bool(session.execute(text("SHOW synchronous_commit")).scalar_one() == "on")
    return bool(session.execute(text("PRAGMA synchronous")).scalar_one() == 2)  # FULL


def connection_id(session: Session) -> int:
    return id(session.connection().connection.dbapi_connection)


def test_a_relaxed_transaction_commits_without_waiting_for_the_disk_and_the_next_one_waits_again(
        engine: Engine) -> None:
    with transaction(engine) as session:
        assert waits_for_disk(session)
    with transaction(engine, durable=False) as session:
        assert not waits_for_disk(session)
        session.add(MailboxCursor(mailbox="inbox", last_uid=7))
        relaxed = connection_id(session)
    with Session(engine) as session:  # committed: another transaction sees it
        assert session.get(MailboxCursor, "inbox").last_uid == 7  # type: ignore[union-attr]
    with transaction(engine) as session:
        assert connection_id(session) == relaxed  # the same pooled connection, durable again
        assert waits_for_disk(session)


def test_a_relaxed_transaction_that_fails_leaves_nothing_and_its_connection_durable(engine: Engine) -> None:
    with pytest.raises(RuntimeError), transaction(engine, durable=False) as session:
        session.add(MailboxCursor(mailbox="inbox", last_uid=7))
        session.flush()
        relaxed = connection_id(session)
        raise RuntimeError("the batch failed")
    with transaction(engine) as session:
        assert session.get(MailboxCursor, "inbox") is None
        assert connection_id(session) == relaxed
        assert waits_for_disk(session)


def test_sqlite_checkpoints_its_log_every_40_mb_not_every_4(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write-ahead log")
    with transaction(engine) as session:
        assert session.execute(text("PRAGMA wal_autocheckpoint")).scalar_one() == 10000
        assert session.execute(text("PRAGMA journal_mode")).scalar_one() == "wal"
