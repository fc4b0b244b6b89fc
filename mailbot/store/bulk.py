"""Rows a batch only adds: written at each flush with one executemany per table (issue #16).

The worker's batch adds, per message, an event or two and a mail to the outbox, and never
reads them back as objects nor changes them. The unit of work would insert each asking for its
id (on SQLite a statement a row; on PostgreSQL one statement of every row's parameters, which
psycopg re-parses in Python), only to keep an identity nobody uses. Here, in a transaction
that asks for it (`unit.Unit.bulk`), the rows of `WRITE_ONLY` tables added since the last flush
are written by the driver's executemany, in the order they were added, and leave the session:
they are in the database from that flush on, as before, so a query that flushes first sees
them, and a unique key they break fails that flush, as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Insert, insert
from sqlalchemy.orm import attributes
from sqlmodel import Session

from mailbot.store.tables import OutboxMail, TicketEvent

WRITE_ONLY: tuple[type[Any], ...] = (TicketEvent, OutboxMail)


_PLANS: dict[tuple[str, bool], tuple[Insert, tuple[str, ...]]] = {}


def _plan(cls: type[Any], ids: bool) -> tuple[Insert, tuple[str, ...]]:
    """The INSERT of `cls`'s table, built once, and the columns it is given (the id too, with `ids`)."""
    table = cls.__table__
    key = (table.name, ids)
    if key not in _PLANS:
        _PLANS[key] = insert(table), tuple(c.name for c in table.columns if ids or c.name != "id")
    return _PLANS[key]


def write(session: Session, cls: type[Any], rows: Sequence[Any], *, ids: bool = False) -> None:
    """Insert `rows` of table class `cls` as they are, in one executemany; the session does not
    track them. A row holds every column in its `__dict__` (store/rows.py); `ids`: with the ids
    they were given, else the database's."""
    stmt, columns = _plan(cls, ids)
    session.connection().execute(stmt, [{name: row.__dict__[name] for name in columns} for row in rows])


def write_added(session: Session) -> None:
    """Write the session's pending rows of `WRITE_ONLY` tables; they are then no longer in it.
    Called first thing in a flush (the tickets they name are written before them)."""
    added: dict[type[Any], list[Any]] = {}
    for obj in session.new:
        if type(obj) in WRITE_ONLY:
            added.setdefault(type(obj), []).append(obj)
    for cls, rows in added.items():
        rows.sort(key=lambda o: attributes.instance_state(o).insert_order or 0)
        write(session, cls, rows)
        for row in rows:
            session.expunge(row)
