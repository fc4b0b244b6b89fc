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

from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import attributes
from sqlmodel import Session

from mailbot.store.tables import OutboxMail, TicketEvent

WRITE_ONLY: tuple[type[Any], ...] = (TicketEvent, OutboxMail)
_PLANS = {cls: (insert(cls.__table__),
                tuple(c.name for c in cls.__table__.columns if c.name != "id"))
          for cls in WRITE_ONLY}


def write_added(session: Session) -> None:
    """Write the session's pending rows of `WRITE_ONLY` tables; they are then no longer in it.
    Called first thing in a flush (the tickets they name are written before them)."""
    added: dict[type[Any], list[Any]] = {}
    for obj in session.new:
        if type(obj) in _PLANS:
            added.setdefault(type(obj), []).append(obj)
    for cls, rows in added.items():
        rows.sort(key=lambda o: attributes.instance_state(o).insert_order or 0)
        stmt, columns = _PLANS[cls]
        session.connection().execute(stmt, [{name: row.__dict__[name] for name in columns} for row in rows])
        for row in rows:
            session.expunge(row)
